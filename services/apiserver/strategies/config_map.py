"""ConfigMaps: configuration as keys and values (``data``, ``binaryData``).

Kubernetes' ``ValidateConfigMap``: every key a config key (``[-._a-zA-Z0-9]+``, not
``.`` or ``..``, at most 253 characters), no key in both maps, at most 1 MiB of keys
and values together. An ``immutable`` ConfigMap refuses changes to its data and the
un-setting of ``immutable``; deleting and recreating it is the way to change it.
The key rules are shared with Secrets (``secret.py``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from google.protobuf.message import Message

from services.apiserver.strategy import Strategy
from skiff.api.errors import FieldError
from skiff.api.v1 import core_pb2
from skiff.api.validation import Path, quote

#: The most a ConfigMap's or Secret's keys and values may hold together.
MAX_DATA_BYTES = 1024 * 1024
KEY_MAX_LENGTH = 253
_KEY = re.compile(r"[-._a-zA-Z0-9]+")
KEY_MESSAGE = ("a valid config key must consist of alphanumeric characters, '-', '_' or "
               "'.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for "
               "validation is '[-._a-zA-Z0-9]+')")
IMMUTABLE_MESSAGE = "Forbidden: field is immutable when `immutable` is set"


def config_key_errors(key: str) -> list[str]:
    """What is wrong with ``key`` as a ConfigMap/Secret key (Kubernetes' IsConfigMapKey)."""
    errors: list[str] = []
    if len(key) > KEY_MAX_LENGTH:
        errors.append(f"must be no more than {KEY_MAX_LENGTH} characters")
    if not _KEY.fullmatch(key):
        errors.append(KEY_MESSAGE)
    if key == ".":
        errors.append("must not be '.'")
    elif key == "..":
        errors.append("must not be '..'")
    elif key.startswith(".."):
        errors.append("must not start with '..'")
    return errors


def validate_keys(path: Path, keys: Iterable[str]) -> list[FieldError]:
    """Each key of the map at ``path`` checked, the error at ``path[key]``."""
    return [FieldError(str(path.key(key)), f"Invalid value: {quote(key)}: {detail}")
            for key in keys for detail in config_key_errors(key)]


def too_big(path: Path, total: int) -> list[FieldError]:
    """The size check: ``Too long: must have at most 1048576 bytes``."""
    if total > MAX_DATA_BYTES:
        return [FieldError(str(path), f"Too long: must have at most {MAX_DATA_BYTES} bytes")]
    return []


def validate_config_map(cm: core_pb2.ConfigMap) -> list[FieldError]:
    """Keys, duplicates across data and binaryData, and the total size."""
    errors = validate_keys(Path("data"), cm.data)
    errors += validate_keys(Path("binaryData"), cm.binary_data)
    for key in cm.binary_data:
        if key in cm.data:
            errors.append(FieldError(str(Path("data").key(key)),
                                     f"Invalid value: {quote(key)}: duplicate of key "
                                     "present in binaryData"))
    total = sum(len(k) + len(v.encode()) for k, v in cm.data.items())
    total += sum(len(k) + len(v) for k, v in cm.binary_data.items())
    return errors + too_big(Path("data"), total)


def validate_immutable(new: Message, old: Message,
                       data_fields: Iterable[tuple[str, str]]) -> list[FieldError]:
    """An immutable old object: the data fields unchanged and ``immutable`` still true.

    ``data_fields`` pairs each proto field with its JSON name (``binary_data``,
    ``binaryData``) for the message.
    """
    if not (old.HasField("immutable") and old.immutable):  # type: ignore[attr-defined]
        return []
    errors = []
    if not (new.HasField("immutable") and new.immutable):  # type: ignore[attr-defined]
        errors.append(FieldError("immutable", IMMUTABLE_MESSAGE))
    for field, json_name in data_fields:
        if dict(getattr(new, field)) != dict(getattr(old, field)):
            errors.append(FieldError(json_name, IMMUTABLE_MESSAGE))
    return errors


class ConfigMapStrategy(Strategy):
    """ConfigMaps: key names, size, immutability."""

    def validate(self, obj: Message) -> list[FieldError]:
        return validate_config_map(obj)  # type: ignore[arg-type]

    def validate_update(self, new: Message, old: Message) -> list[FieldError]:
        return validate_immutable(new, old, (("data", "data"), ("binary_data", "binaryData")))
