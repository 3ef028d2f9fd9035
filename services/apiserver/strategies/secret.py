"""Secrets: data as bytes, a type that says which keys it must hold.

As Kubernetes: ``stringData`` is write-only, folded into ``data`` on create and update
(its keys win) and never stored; ``type`` defaults to ``Opaque`` and may not change;
the key and size rules are ConfigMaps' (``config_map.py``); the well-known types
require their keys (``kubernetes.io/tls``: ``tls.crt`` and ``tls.key``, and so on).
Skiff stores Secrets unencrypted for now.
"""

from __future__ import annotations

import json

from google.protobuf.message import Message

from services.apiserver.strategies.config_map import too_big, validate_immutable, validate_keys
from services.apiserver.strategy import Strategy
from skiff.api.errors import FieldError
from skiff.api.v1 import core_pb2
from skiff.api.validation import Path

OPAQUE = "Opaque"
TLS = "kubernetes.io/tls"
DOCKER_CONFIG_JSON = "kubernetes.io/dockerconfigjson"
DOCKER_CONFIG = "kubernetes.io/dockercfg"
BASIC_AUTH = "kubernetes.io/basic-auth"
SSH_AUTH = "kubernetes.io/ssh-auth"
SERVICE_ACCOUNT_TOKEN = "kubernetes.io/service-account-token"
SERVICE_ACCOUNT_NAME_ANNOTATION = "kubernetes.io/service-account.name"

#: The keys each type requires.
_REQUIRED_KEYS: dict[str, tuple[str, ...]] = {
    TLS: ("tls.crt", "tls.key"),
    DOCKER_CONFIG_JSON: (".dockerconfigjson",),
    DOCKER_CONFIG: (".dockercfg",),
    SSH_AUTH: ("ssh-privatekey",),
}
_DATA = Path("data")
_REQUIRED = "Required value"


def fold_string_data(secret: core_pb2.Secret) -> None:
    """``stringData`` into ``data`` (its values win), then cleared: it is write-only."""
    for key, value in secret.string_data.items():
        secret.data[key] = value.encode()
    secret.ClearField("string_data")


def _type_errors(secret: core_pb2.Secret) -> list[FieldError]:
    errors = [FieldError(str(_DATA.key(key)), _REQUIRED)
              for key in _REQUIRED_KEYS.get(secret.type, ()) if key not in secret.data]
    if secret.type == BASIC_AUTH and "username" not in secret.data \
            and "password" not in secret.data:
        errors += [FieldError(str(_DATA.key("username")), _REQUIRED),
                   FieldError(str(_DATA.key("password")), _REQUIRED)]
    if secret.type in (DOCKER_CONFIG_JSON, DOCKER_CONFIG):
        key = ".dockerconfigjson" if secret.type == DOCKER_CONFIG_JSON else ".dockercfg"
        if key in secret.data:
            try:
                json.loads(secret.data[key])
            except ValueError as e:
                errors.append(FieldError(str(_DATA.key(key)),
                                         f"Invalid value: \"<secret contents redacted>\": {e}"))
    if secret.type == SERVICE_ACCOUNT_TOKEN \
            and not secret.metadata.annotations.get(SERVICE_ACCOUNT_NAME_ANNOTATION):
        errors.append(FieldError(
            str(Path("metadata", "annotations").key(SERVICE_ACCOUNT_NAME_ANNOTATION)),
            _REQUIRED))
    return errors


def validate_secret(secret: core_pb2.Secret) -> list[FieldError]:
    """Keys, total size, and the keys the type requires."""
    errors = validate_keys(_DATA, secret.data)
    errors += too_big(_DATA, sum(len(k) + len(v) for k, v in secret.data.items()))
    return errors + _type_errors(secret)


class SecretStrategy(Strategy):
    """Secrets: stringData folded, type defaulted and fixed, keys and size checked."""

    def default(self, obj: Message) -> None:
        obj.type = obj.type or OPAQUE  # type: ignore[attr-defined]

    def prepare_for_create(self, obj: Message) -> None:
        super().prepare_for_create(obj)
        fold_string_data(obj)  # type: ignore[arg-type]

    def prepare_for_update(self, new: Message, old: Message) -> None:
        super().prepare_for_update(new, old)
        fold_string_data(new)  # type: ignore[arg-type]

    def validate(self, obj: Message) -> list[FieldError]:
        return validate_secret(obj)  # type: ignore[arg-type]

    def validate_update(self, new: Message, old: Message) -> list[FieldError]:
        errors = []
        if new.type != old.type:  # type: ignore[attr-defined]
            errors.append(FieldError("type", "Invalid value: field is immutable"))
        return errors + validate_immutable(new, old, (("data", "data"),))
