"""ConfigMap, Secret and ServiceAccount strategies: Kubernetes' key, size, type and
immutability rules, and stringData folded into data; each rule good and bad with the
field path of its error. Objects come from manifests as skiffctl reads them."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from google.protobuf.message import Message

from services.apiserver.strategies import STRATEGIES
from services.apiserver.strategies.config_map import MAX_DATA_BYTES, config_key_errors
from skiff.api import manifest
from skiff.api.errors import FieldError
from skiff.api.kinds import lookup

META = {"name": "conf", "namespace": "default"}


def b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def created(kind: str, **fields: Any) -> Message:
    """The registry's create sequence up to validation: default, prepare_for_create."""
    obj = manifest.from_dict({"apiVersion": "v1", "kind": kind, "metadata": META, **fields})
    STRATEGIES[kind].default(obj)
    STRATEGIES[kind].prepare_for_create(obj)
    return obj


def errors_of(kind: str, **fields: Any) -> list[FieldError]:
    return STRATEGIES[kind].validate(created(kind, **fields))


def update_errors(kind: str, old: Message, **fields: Any) -> tuple[Message, list[FieldError]]:
    strategy = STRATEGIES[kind]
    new = manifest.from_dict({"apiVersion": "v1", "kind": kind, "metadata": META, **fields})
    strategy.default(new)
    strategy.prepare_for_update(new, old)
    return new, strategy.validate(new) + strategy.validate_update(new, old)


def by_field(errors: list[FieldError]) -> dict[str, str]:
    return {e.field: e.detail for e in errors}


def test_kinds_are_served_with_short_names() -> None:
    assert lookup("cm").kind == "ConfigMap"
    assert lookup("sa").kind == "ServiceAccount"
    assert lookup("secrets").kind == "Secret"
    assert all(lookup(k).namespaced and lookup(k).api_version == "v1"
               for k in ("ConfigMap", "Secret", "ServiceAccount"))


@pytest.mark.parametrize("key", ["a", "key.name", "KEY_NAME", "key-name", ".hidden",
                                 "a" * 253, "tls.crt"])
def test_good_config_keys(key: str) -> None:
    assert config_key_errors(key) == []


@pytest.mark.parametrize(("key", "text"), [
    (".", "must not be '.'"), ("..", "must not be '..'"), ("..a", "must not start with '..'"),
    ("a/b", "regex used for validation is '[-._a-zA-Z0-9]+'"), ("", "a valid config key"),
    ("a b", "a valid config key"), ("a" * 254, "must be no more than 253 characters"),
])
def test_bad_config_keys(key: str, text: str) -> None:
    assert any(text in e for e in config_key_errors(key))


def test_config_map_good() -> None:
    assert errors_of("ConfigMap", data={"a.conf": "x=1"},
                     binaryData={"logo.png": b64(b"\x89PNG")}) == []
    assert errors_of("ConfigMap") == []


def test_config_map_bad_keys_named() -> None:
    errors = by_field(errors_of("ConfigMap", data={"a/b": "x"}, binaryData={"..": b64("y")}))
    assert "a valid config key" in errors["data[a/b]"]
    assert "must not be '..'" in errors["binaryData[..]"]


def test_config_map_key_in_both_maps() -> None:
    errors = by_field(errors_of("ConfigMap", data={"k": "x"}, binaryData={"k": b64("y")}))
    assert "duplicate of key present in binaryData" in errors["data[k]"]


def test_config_map_size_limit() -> None:
    # Keys count toward the limit as Kubernetes counts them: exactly 1 MiB passes.
    assert errors_of("ConfigMap", data={"k": "x" * (MAX_DATA_BYTES - 1)}) == []
    errors = by_field(errors_of("ConfigMap", data={"k": "x" * MAX_DATA_BYTES}))
    assert errors["data"] == "Too long: must have at most 1048576 bytes"
    errors = by_field(errors_of("ConfigMap", data={"k": "x" * 600_000},
                                binaryData={"b": b64(b"y" * 600_000)}))
    assert "Too long" in errors["data"]


def test_config_map_immutable() -> None:
    old = created("ConfigMap", data={"k": "1"}, immutable=True)
    _, errors = update_errors("ConfigMap", old, data={"k": "2"}, immutable=True)
    assert by_field(errors) == {"data": "Forbidden: field is immutable when `immutable` is set"}
    _, errors = update_errors("ConfigMap", old, data={"k": "1"}, immutable=False)
    assert list(by_field(errors)) == ["immutable"]
    _, errors = update_errors("ConfigMap", old, data={"k": "1"})
    assert list(by_field(errors)) == ["immutable"]
    _, errors = update_errors("ConfigMap", old, data={"k": "1"}, binaryData={"b": b64("x")},
                              immutable=True)
    assert list(by_field(errors)) == ["binaryData"]
    # Labels may still change; and a mutable ConfigMap may become immutable.
    assert update_errors("ConfigMap", old, data={"k": "1"}, immutable=True)[1] == []
    mutable = created("ConfigMap", data={"k": "1"})
    assert update_errors("ConfigMap", mutable, data={"k": "2"}, immutable=True)[1] == []


def test_secret_defaults_to_opaque() -> None:
    secret = created("Secret", data={"k": b64("v")})
    assert secret.type == "Opaque"
    assert STRATEGIES["Secret"].validate(secret) == []


def test_string_data_folded_into_data_and_wins() -> None:
    secret = created("Secret", data={"user": b64("old"), "other": b64("o")},
                     stringData={"user": "admin", "pass": "s3cret"})
    assert dict(secret.data) == {"user": b"admin", "pass": b"s3cret", "other": b"o"}
    assert not secret.string_data
    assert "stringData" not in manifest.to_dict(secret)


def test_string_data_folded_on_update() -> None:
    old = created("Secret", data={"k": b64("1")})
    new, errors = update_errors("Secret", old, stringData={"k": "2"})
    assert errors == []
    assert dict(new.data) == {"k": b"2"} and not new.string_data


def test_secret_bad_keys_from_string_data_named() -> None:
    errors = by_field(errors_of("Secret", stringData={"bad key": "v"}))
    assert "a valid config key" in errors["data[bad key]"]


def test_secret_size_limit() -> None:
    errors = by_field(errors_of("Secret", stringData={"k": "x" * MAX_DATA_BYTES}))
    assert errors["data"] == "Too long: must have at most 1048576 bytes"


@pytest.mark.parametrize(("type_", "data", "missing"), [
    ("kubernetes.io/tls", {"tls.crt": "c"}, ["data[tls.key]"]),
    ("kubernetes.io/tls", {}, ["data[tls.crt]", "data[tls.key]"]),
    ("kubernetes.io/dockerconfigjson", {}, ["data[.dockerconfigjson]"]),
    ("kubernetes.io/basic-auth", {}, ["data[username]", "data[password]"]),
    ("kubernetes.io/ssh-auth", {}, ["data[ssh-privatekey]"]),
    ("kubernetes.io/service-account-token", {},
     ["metadata.annotations[kubernetes.io/service-account.name]"]),
])
def test_secret_type_requires_keys(type_: str, data: dict[str, str], missing: list[str]) -> None:
    errors = errors_of("Secret", type=type_, stringData=data)
    assert sorted(e.field for e in errors) == sorted(missing)
    assert all(e.detail == "Required value" for e in errors)


@pytest.mark.parametrize(("type_", "data"), [
    ("kubernetes.io/tls", {"tls.crt": "c", "tls.key": "k"}),
    ("kubernetes.io/dockerconfigjson", {".dockerconfigjson": '{"auths": {}}'}),
    ("kubernetes.io/basic-auth", {"username": "u"}),
    ("kubernetes.io/ssh-auth", {"ssh-privatekey": "k"}),
    ("example.com/custom", {}),
])
def test_secret_type_satisfied(type_: str, data: dict[str, str]) -> None:
    assert errors_of("Secret", type=type_, stringData=data) == []


def test_dockerconfigjson_must_be_json() -> None:
    errors = by_field(errors_of("Secret", type="kubernetes.io/dockerconfigjson",
                                stringData={".dockerconfigjson": "{not json"}))
    assert "Invalid value" in errors["data[.dockerconfigjson]"]


def test_secret_type_and_immutable_data_fixed() -> None:
    old = created("Secret", data={"k": b64("1")}, immutable=True)
    _, errors = update_errors("Secret", old, type="kubernetes.io/basic-auth",
                              stringData={"k": "2", "username": "u"}, immutable=True)
    assert by_field(errors) == {
        "type": "Invalid value: field is immutable",
        "data": "Forbidden: field is immutable when `immutable` is set"}
    _, errors = update_errors("Secret", old, data={"k": b64("1")})
    assert list(by_field(errors)) == ["immutable"]


def test_service_account() -> None:
    assert errors_of("ServiceAccount", secrets=[{"name": "token"}],
                     imagePullSecrets=[{"name": "regcred"}],
                     automountServiceAccountToken=False) == []
    errors = by_field(errors_of("ServiceAccount", imagePullSecrets=[{"name": "Bad_Name"}]))
    assert "imagePullSecrets[0].name" in errors


def test_binary_data_round_trips_as_base64() -> None:
    cm = created("ConfigMap", binaryData={"b": b64(b"\x00\xff")})
    assert cm.binary_data["b"] == b"\x00\xff"
    assert manifest.to_dict(cm)["binaryData"] == {"b": "AP8="}
