"""A container's environment: ``env`` (value or valueFrom) and ``envFrom``.

Kubernetes' ``validateEnv``/``validateEnvFrom``: a variable has a value or one source,
never both; a source names its ConfigMap or Secret and a valid key; fieldRef names a
supported pod field (``skiff.api.downward``); resourceFieldRef a container's resource.
envFrom names one ConfigMap or Secret and a prefix that keeps names valid.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from services.apiserver.strategies.config_map import config_key_errors
from skiff.api import validation
from skiff.api.downward import ENV_FIELD_PATHS, ENV_RESOURCES, SUBSCRIPTED_PATH
from skiff.api.errors import FieldError
from skiff.api.labels import validate_label_key
from skiff.api.quantity import parse_quantity
from skiff.api.v1 import core_pb2
from skiff.api.validation import Path, quote

ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
ENV_NAME_MESSAGE = ("a valid environment variable name must consist of alphabetic "
                    "characters, digits, '_', '-', or '.', and must not start with a digit")
_SOURCES = ("fieldRef", "resourceFieldRef", "configMapKeyRef", "secretKeyRef")
_ONE_OF = "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or " \
          "`secretKeyRef`"


def _err(path: Path, detail: str) -> list[FieldError]:
    return [FieldError(str(path), detail)]


def default_env(container: core_pb2.Container) -> None:
    """fieldRef's apiVersion is v1 unless set (Kubernetes' SetDefaults_ObjectFieldSelector)."""
    for var in container.env:
        if var.value_from.HasField("field_ref") and not var.value_from.field_ref.api_version:
            var.value_from.field_ref.api_version = "v1"


def validate_env(env: Iterable[core_pb2.EnvVar], p: Path,
                 container_names: Iterable[str]) -> list[FieldError]:
    """Names, and each valueFrom's one source, under ``p`` (``...containers[0].env``)."""
    names = set(container_names)
    errors: list[FieldError] = []
    for i, var in enumerate(env):
        field = p.index(i).child("name")
        errors += validation.required(field, var.name)
        if var.name and (not ENV_NAME.match(var.name) or var.name in (".", "..")):
            errors += _err(field, ENV_NAME_MESSAGE)
        if var.HasField("value_from"):
            errors += _validate_value_from(var, p.index(i).child("valueFrom"), names)
    return errors


def _validate_value_from(var: core_pb2.EnvVar, p: Path, names: set[str]) -> list[FieldError]:
    source = var.value_from
    set_sources = [s for s, f in zip(_SOURCES, ("field_ref", "resource_field_ref",
                                                "config_map_key_ref", "secret_key_ref"),
                                     strict=True) if source.HasField(f)]
    if not set_sources:
        return _err(p, _ONE_OF)
    if len(set_sources) > 1:
        return _err(p, "may not have more than one field specified at a time")
    errors: list[FieldError] = []
    if var.value:
        errors += _err(p, "may not be specified when `value` is not empty")
    if source.HasField("field_ref"):
        errors += _validate_field_ref(source.field_ref, p.child("fieldRef"))
    elif source.HasField("resource_field_ref"):
        errors += _validate_resource_ref(source.resource_field_ref,
                                         p.child("resourceFieldRef"), names)
    else:
        ref = source.config_map_key_ref if source.HasField("config_map_key_ref") \
            else source.secret_key_ref
        errors += _validate_key_ref(ref, p.child(set_sources[0]))
    return errors


def _validate_field_ref(ref: core_pb2.ObjectFieldSelector, p: Path) -> list[FieldError]:
    path = p.child("fieldPath")
    if not ref.field_path:
        return _err(path, "Required value")
    if ref.api_version not in ("", "v1"):
        return _err(p.child("apiVersion"), f"Unsupported value: {quote(ref.api_version)}")
    subscripted = SUBSCRIPTED_PATH.match(ref.field_path)
    if subscripted:
        return [FieldError(str(path), f"Invalid value: {quote(ref.field_path)}: {detail}")
                for detail in validate_label_key(subscripted[2])]
    if ref.field_path not in ENV_FIELD_PATHS:
        supported = ", ".join(quote(f) for f in sorted(ENV_FIELD_PATHS))
        return _err(path, f"Unsupported value: {quote(ref.field_path)}: supported values: "
                          f"{supported}")
    return []


def _validate_resource_ref(ref: core_pb2.ResourceFieldSelector, p: Path,
                           names: set[str]) -> list[FieldError]:
    errors: list[FieldError] = []
    if ref.container_name and ref.container_name not in names:
        errors += _err(p.child("containerName"),
                       f"Invalid value: {quote(ref.container_name)}: must be the name of a "
                       "container in this pod")
    if not ref.resource:
        errors += _err(p.child("resource"), "Required value")
    elif ref.resource not in ENV_RESOURCES:
        supported = ", ".join(quote(r) for r in sorted(ENV_RESOURCES))
        errors += _err(p.child("resource"), f"Unsupported value: {quote(ref.resource)}: "
                                            f"supported values: {supported}")
    if ref.divisor:
        try:
            if parse_quantity(ref.divisor) <= 0:
                raise ValueError
        except ValueError:
            errors += _err(p.child("divisor"), f"Invalid value: {quote(ref.divisor)}: "
                                               "must be a positive quantity")
    return errors


def _validate_key_ref(ref: core_pb2.ConfigMapKeySelector | core_pb2.SecretKeySelector,
                      p: Path) -> list[FieldError]:
    errors = validation.required(p.child("name"), ref.name)
    if not ref.key:
        return errors + _err(p.child("key"), "Required value")
    return errors + [FieldError(str(p.child("key")), f"Invalid value: {quote(ref.key)}: {d}")
                     for d in config_key_errors(ref.key)]


def validate_env_from(sources: Iterable[core_pb2.EnvFromSource], p: Path) -> list[FieldError]:
    """Each envFrom: one of configMapRef/secretRef, its name, a usable prefix."""
    errors: list[FieldError] = []
    for i, source in enumerate(sources):
        sp = p.index(i)
        refs = [n for n, f in (("configMapRef", "config_map_ref"), ("secretRef", "secret_ref"))
                if source.HasField(f)]
        if len(refs) != 1:
            errors += _err(sp, "must specify one of: `configMapRef` or `secretRef`" if not refs
                           else "may not have more than one field specified at a time")
            continue
        ref = source.config_map_ref if refs[0] == "configMapRef" else source.secret_ref
        errors += validation.required(sp.child(refs[0], "name"), ref.name)
        if source.prefix and not ENV_NAME.match(source.prefix):
            errors += _err(sp.child("prefix"), ENV_NAME_MESSAGE)
    return errors
