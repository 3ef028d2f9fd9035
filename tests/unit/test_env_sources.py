"""A container's environment as the kubelet builds it: envFrom, valueFrom (ConfigMap
and Secret keys, pod fields, resources), $(VAR) expansion in env, command and args,
and the ConfigError a missing required reference raises (pure; fake sources only)."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import json_format

from services.kubelet.env_sources import (
    ConfigError,
    Sources,
    expand,
    expand_command,
    resolve_env,
)
from services.kubelet.envvars import container_env
from skiff.api.v1 import core_pb2


def config_map(name: str, data: dict[str, str], binary: dict[str, bytes] | None = None
               ) -> core_pb2.ConfigMap:
    cm = core_pb2.ConfigMap(data=data, binary_data=binary or {})
    cm.metadata.name, cm.metadata.namespace = name, "team"
    return cm


def secret(name: str, data: dict[str, bytes]) -> core_pb2.Secret:
    s = core_pb2.Secret(data=data)
    s.metadata.name, s.metadata.namespace = name, "team"
    return s


CONFIG_MAPS = {("team", "app"): config_map("app", {"mode": "fast", "level": "3",
                                                    "bad key": "x"}, {"bin": b"\x01"})}
SECRETS = {("team", "db"): secret("db", {"password": b"s3cret", "user": b"admin"})}
SOURCES = Sources(config_map=lambda ns, n: CONFIG_MAPS.get((ns, n)),
                  secret=lambda ns, n: SECRETS.get((ns, n)),
                  allocatable={"cpu": "4", "memory": "8Gi"})


def pod(container: dict[str, Any]) -> tuple[core_pb2.Pod, core_pb2.Container]:
    p = core_pb2.Pod()
    json_format.ParseDict({
        "metadata": {"name": "web-0", "namespace": "team", "uid": "u-1",
                     "labels": {"app": "web"}, "annotations": {"team.io/owner": "ops"}},
        "spec": {"nodeName": "node-1", "serviceAccountName": "default",
                 "containers": [{"name": "web", "image": "busybox", **container}]},
        "status": {"podIP": "10.244.1.5", "hostIP": "127.0.0.1"}}, p)
    return p, p.spec.containers[0]


def env_of(container: dict[str, Any], services: list[tuple[str, str]] | None = None
           ) -> dict[str, str]:
    p, c = pod(container)
    return dict(resolve_env(p, c, services or [], SOURCES))


@pytest.mark.parametrize(("text", "expected"), [
    ("$(A)-$(B)", "1-two"), ("$$(A)", "$(A)"), ("$(MISSING)", "$(MISSING)"),
    ("a$b", "a$b"), ("$", "$"), ("$(A", "$(A"), ("$()", "$()"), ("$$$$", "$$"),
    ("x$(A)y$(A)", "x1y1"),
])
def test_expand(text: str, expected: str) -> None:
    assert expand(text, {"A": "1", "B": "two"}.get) == expected


def test_config_map_and_secret_keys() -> None:
    env = env_of({"env": [
        {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "app", "key": "mode"}}},
        {"name": "BIN", "valueFrom": {"configMapKeyRef": {"name": "app", "key": "bin"}}},
        {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}]})
    assert env == {"MODE": "fast", "BIN": "\x01", "PW": "s3cret"}


def test_env_from_with_prefix_skips_invalid_names() -> None:
    env = env_of({"envFrom": [{"configMapRef": {"name": "app"}, "prefix": "CFG_"},
                              {"secretRef": {"name": "db"}}]})
    assert env == {"CFG_level": "3", "CFG_mode": "fast", "password": "s3cret",
                   "user": "admin"}


def test_env_wins_over_env_from_and_services() -> None:
    env = env_of({"envFrom": [{"configMapRef": {"name": "app"}}],
                  "env": [{"name": "mode", "value": "slow"}, {"name": "S", "value": "mine"}]},
                 services=[("S", "svc"), ("T", "svc")])
    assert env["mode"] == "slow" and env["S"] == "mine" and env["T"] == "svc"


@pytest.mark.parametrize(("path", "value"), [
    ("metadata.name", "web-0"), ("metadata.namespace", "team"), ("metadata.uid", "u-1"),
    ("metadata.labels['app']", "web"), ("metadata.annotations['team.io/owner']", "ops"),
    ("metadata.labels['none']", ""), ("spec.nodeName", "node-1"),
    ("spec.serviceAccountName", "default"), ("status.podIP", "10.244.1.5"),
    ("status.hostIP", "127.0.0.1"),
])
def test_field_refs(path: str, value: str) -> None:
    env = env_of({"env": [{"name": "V", "valueFrom": {"fieldRef": {"fieldPath": path}}}]})
    assert env == {"V": value}


def test_resource_field_refs() -> None:
    env = env_of({"resources": {"limits": {"memory": "256Mi"}, "requests": {"cpu": "250m"}},
                  "env": [
        {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory",
                                                           "divisor": "1Mi"}}},
        {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu"}}},
        {"name": "CPU_M", "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu",
                                                             "divisor": "1m"}}},
        {"name": "LIM_CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}}]})
    # requests.cpu 250m in cores rounds up to 1; an unset limit is the node's allocatable.
    assert env == {"MEM": "256", "CPU": "1", "CPU_M": "250", "LIM_CPU": "4"}


def test_expansion_in_env_sees_earlier_values_only() -> None:
    env = env_of({"env": [
        {"name": "A", "value": "$(B)"},
        {"name": "B", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "C", "value": "$(B).$(SVC)/$(A)"},
        {"name": "D", "value": "$$(B)"}]}, services=[("SVC", "10.96.0.1")])
    assert env == {"A": "$(B)", "B": "web-0", "C": "web-0.10.96.0.1/$(B)", "D": "$(B)",
                   "SVC": "10.96.0.1"}


def test_command_and_args_expanded() -> None:
    _, c = pod({"command": ["sh", "-c", "echo $(GREETING) $$(HOME) $(NOPE)"],
                "args": ["$(GREETING)"]})
    assert expand_command(c, [("GREETING", "hi")]) == (
        ["sh", "-c", "echo hi $(HOME) $(NOPE)"], ["hi"])


@pytest.mark.parametrize(("container", "message"), [
    ({"env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k"}}}]},
     'configmap "gone" not found'),
    ({"env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "app", "key": "k"}}}]},
     "couldn't find key k in ConfigMap team/app"),
    ({"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k"}}}]},
     'secret "gone" not found'),
    ({"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "db", "key": "k"}}}]},
     "couldn't find key k in Secret team/db"),
    ({"envFrom": [{"secretRef": {"name": "gone"}}]}, 'secret "gone" not found'),
    ({"envFrom": [{"configMapRef": {"name": "gone"}}]}, 'configmap "gone" not found'),
])
def test_missing_required_reference(container: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        env_of(container)


def test_missing_optional_reference_is_skipped() -> None:
    env = env_of({
        "envFrom": [{"configMapRef": {"name": "gone", "optional": True}}],
        "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "db", "key": "k",
                                                             "optional": True}}},
                {"name": "Y", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k",
                                                                "optional": True}}},
                {"name": "Z", "value": "$(X)"}]})
    assert env == {"Z": "$(X)"}


def test_container_env_formats_for_docker() -> None:
    p, c = pod({"env": [{"name": "A", "value": "1"}]})
    assert container_env(p, c, []) == ["A=1"]
