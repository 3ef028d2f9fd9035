"""The pod strategy's rules for env valueFrom and envFrom (naming the field), the
serviceAccountName default, and the serviceaccounts controller's pure plan."""

from __future__ import annotations

from typing import Any

import pytest

from services.apiserver.strategies import STRATEGIES
from services.controller_manager.serviceaccounts import missing_accounts
from skiff.api import manifest
from skiff.api.errors import FieldError
from skiff.api.v1 import core_pb2

C0 = "spec.containers[0]"


def pod_errors(container: dict[str, Any], **spec: Any) -> tuple[core_pb2.Pod, list[FieldError]]:
    pod = manifest.from_dict({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"},
        "spec": {"containers": [{"name": "web", "image": "busybox", **container}], **spec}})
    strategy = STRATEGIES["Pod"]
    strategy.default(pod)
    strategy.prepare_for_create(pod)
    return pod, strategy.validate(pod)  # type: ignore[return-value]


def errors_by_field(container: dict[str, Any]) -> dict[str, str]:
    return {e.field: e.detail for e in pod_errors(container)[1]}


def ref(kind: str, **fields: Any) -> dict[str, Any]:
    return {"name": "X", "valueFrom": {kind: fields}}


def test_service_account_name_defaults_to_default() -> None:
    assert pod_errors({})[0].spec.service_account_name == "default"
    assert pod_errors({}, serviceAccountName="builder")[0].spec.service_account_name == \
        "builder"


def test_field_ref_api_version_defaulted() -> None:
    pod, errors = pod_errors({"env": [ref("fieldRef", fieldPath="metadata.name")]})
    assert errors == [] and pod.spec.containers[0].env[0].value_from.field_ref.api_version == "v1"


@pytest.mark.parametrize("env", [
    ref("configMapKeyRef", name="cm", key="k"),
    ref("secretKeyRef", name="s", key="a.b", optional=True),
    ref("fieldRef", fieldPath="status.podIP"),
    ref("fieldRef", fieldPath="metadata.labels['app.kubernetes.io/name']"),
    ref("fieldRef", fieldPath="spec.serviceAccountName"),
    ref("resourceFieldRef", resource="limits.memory", divisor="1Mi"),
    ref("resourceFieldRef", resource="requests.cpu", containerName="web"),
])
def test_good_value_from(env: dict[str, Any]) -> None:
    assert pod_errors({"env": [env]})[1] == []


@pytest.mark.parametrize(("env", "field", "text"), [
    ({"name": "X", "valueFrom": {}}, "env[0].valueFrom", "must specify one of"),
    ({"name": "X", "value": "v", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
     "env[0].valueFrom", "may not be specified when `value` is not empty"),
    ({"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"},
                                 "configMapKeyRef": {"name": "a", "key": "b"}}},
     "env[0].valueFrom", "may not have more than one field specified at a time"),
    (ref("fieldRef", fieldPath="spec.containers"), "env[0].valueFrom.fieldRef.fieldPath",
     'Unsupported value: "spec.containers"'),
    (ref("fieldRef", fieldPath=""), "env[0].valueFrom.fieldRef.fieldPath", "Required value"),
    (ref("fieldRef", fieldPath="metadata.labels['bad key']"),
     "env[0].valueFrom.fieldRef.fieldPath", "Invalid value"),
    (ref("configMapKeyRef", name="cm"), "env[0].valueFrom.configMapKeyRef.key",
     "Required value"),
    (ref("configMapKeyRef", key="k"), "env[0].valueFrom.configMapKeyRef.name", "required"),
    (ref("secretKeyRef", name="s", key="a/b"), "env[0].valueFrom.secretKeyRef.key",
     "a valid config key"),
    (ref("resourceFieldRef", resource="limits.gpu"),
     "env[0].valueFrom.resourceFieldRef.resource", "Unsupported value"),
    (ref("resourceFieldRef", resource="limits.cpu", containerName="nope"),
     "env[0].valueFrom.resourceFieldRef.containerName", "must be the name of a container"),
    (ref("resourceFieldRef", resource="limits.cpu", divisor="-1"),
     "env[0].valueFrom.resourceFieldRef.divisor", "must be a positive quantity"),
])
def test_bad_value_from(env: dict[str, Any], field: str, text: str) -> None:
    errors = errors_by_field({"env": [env]})
    assert text in errors[f"{C0}.{field}"], errors


@pytest.mark.parametrize(("source", "field", "text"), [
    ({}, "envFrom[0]", "must specify one of: `configMapRef` or `secretRef`"),
    ({"configMapRef": {"name": "a"}, "secretRef": {"name": "b"}}, "envFrom[0]",
     "may not have more than one field"),
    ({"configMapRef": {}}, "envFrom[0].configMapRef.name", "required"),
    ({"secretRef": {"name": "s"}, "prefix": "1BAD"}, "envFrom[0].prefix",
     "a valid environment variable name"),
])
def test_bad_env_from(source: dict[str, Any], field: str, text: str) -> None:
    errors = errors_by_field({"envFrom": [source]})
    assert text in errors[f"{C0}.{field}"], errors


def test_good_env_from() -> None:
    assert pod_errors({"envFrom": [{"configMapRef": {"name": "a"}, "prefix": "A_"},
                                   {"secretRef": {"name": "b", "optional": True}}]})[1] == []


def namespace(name: str, *, terminating: bool = False) -> core_pb2.Namespace:
    ns = core_pb2.Namespace()
    ns.metadata.name = name
    if terminating:
        ns.metadata.deletion_timestamp.GetCurrentTime()
        ns.status.phase = "Terminating"
    return ns


def test_missing_accounts() -> None:
    assert missing_accounts(namespace("a"), []) == ["default"]
    assert missing_accounts(namespace("a"), ["default", "other"]) == []
    assert missing_accounts(namespace("a", terminating=True), []) == []
    assert missing_accounts(namespace("a"), ["x"], wanted=("default", "x")) == ["default"]
