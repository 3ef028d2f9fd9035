"""Env from ConfigMaps, Secrets and the pod itself, run by the real kubelet on Docker:
``valueFrom`` (configMapKeyRef, secretKeyRef, fieldRef), ``envFrom`` with a prefix,
``$(VAR)`` in args; and a pod whose ConfigMap does not exist yet waiting with
``CreateContainerConfigError`` until it is created, then starting.

Each pod prints its environment and exits; the test reads the container's log.
"""

from __future__ import annotations

import json
import math

from e2e_pods import BUSYBOX, container, pod, status_of, wait_pod

from skiff.api.manifest import from_dict
from skiff.api.v1 import core_pb2
from skiff.kubelet import labels as L


def _finished(name: str):  # type: ignore[no-untyped-def]
    def check(p) -> bool:  # type: ignore[no-untyped-def]
        s = status_of(p, name)
        return s is not None and s.state.HasField("terminated")
    return check


async def _log(docker, node: str, uid: str) -> str:  # type: ignore[no-untyped-def]
    found = await docker.containers.list(all=True, filters=json.dumps(
        {"label": [f"{L.NODE}={node}", f"{L.POD_UID}={uid}", f"{L.CONTAINER_TYPE}={L.CONTAINER}"]}))
    return "".join(await found[0].log(stdout=True, stderr=True)) if found else ""


def _env_lines(log: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in log.splitlines() if "=" in line)


async def _config(api, ns: str) -> None:  # type: ignore[no-untyped-def]
    await api.config_maps.create(from_dict({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app", "namespace": ns},
        "data": {"mode": "fast", "level": "3"}}))
    await api.secrets.create(from_dict({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": ns},
        "stringData": {"password": "s3cret"}}))


def _env_pod(ns: str, node: str) -> core_pb2.Pod:
    """Prints its environment, then ``ARG=`` its first argument ($(VAR) expanded)."""
    return from_dict({"apiVersion": "v1", "kind": "Pod",
                      "metadata": {"name": "env", "namespace": ns},
                      "spec": {"nodeName": node, "restartPolicy": "Never", "containers": [{
                          "name": "show", "image": BUSYBOX, "imagePullPolicy": "IfNotPresent",
                          # A shell's $0 is the first argument after -c's script.
                          "command": ["sh", "-c", 'env; echo "ARG=$0"'],
                          "args": ["$(GREETING)-$(POD_NAME)"],
                          "env": [
        {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "app", "key": "mode"}}},
        {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "SA", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
        {"name": "MEM_MI", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory",
                                                              "divisor": "1Mi"}}},
        {"name": "CPUS", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
        {"name": "GREETING", "value": "hi-$(MODE)"}],
                          "resources": {"limits": {"memory": "64Mi"}},
                          "envFrom": [{"configMapRef": {"name": "app"}, "prefix": "CFG_"}]}]}})


async def test_env_from_config_map_secret_and_fields(api, ns, node, docker):
    await _config(api, ns)
    created = await api.pods.create(_env_pod(ns, node.name))
    done = await wait_pod(api, ns, "env", _finished("show"), what="show finished")
    log = await _log(docker, node.name, created.metadata.uid)
    assert status_of(done, "show").state.terminated.exit_code == 0, log
    env = _env_lines(log)
    assert env["MODE"] == "fast" and env["DB_PASSWORD"] == "s3cret"
    assert env["CFG_mode"] == "fast" and env["CFG_level"] == "3"
    assert env["POD_NAME"] == "env" and env["SA"] == "default"
    assert env["POD_IP"] and env["POD_IP"] == done.status.pod_ip
    assert env["GREETING"] == "hi-fast"
    # A set limit in the divisor's units; an unset one is the node's allocatable.
    assert env["MEM_MI"] == "64"
    node_cpus = (await api.nodes.get(node.name, "")).status.allocatable["cpu"]
    assert env["CPUS"] == str(math.ceil(float(node_cpus.rstrip("m")) /
                                         (1000 if node_cpus.endswith("m") else 1)))
    assert env["ARG"] == "hi-fast-env"


async def test_missing_config_map_waits_then_starts(api, ns, node, docker):
    shown = container("show", "sh", "-c", "echo LATE=$LATE")
    shown.env.add(name="LATE").value_from.config_map_key_ref.CopyFrom(
        core_pb2.ConfigMapKeySelector(name="late", key="value"))
    await api.pods.create(pod("late", ns, node.name, shown, restart_policy="Never"))

    def config_error(p: core_pb2.Pod) -> bool:
        s = status_of(p, "show")
        return s is not None and s.state.waiting.reason == "CreateContainerConfigError"

    waiting = await wait_pod(api, ns, "late", config_error, what="CreateContainerConfigError")
    assert status_of(waiting, "show").state.waiting.message == 'configmap "late" not found'
    assert waiting.status.phase == "Pending"
    # A ConfigMap without the key: the message names the key now.
    await api.config_maps.create(from_dict({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "late", "namespace": ns},
        "data": {"other": "x"}}))
    await wait_pod(api, ns, "late", lambda p: status_of(p, "show").state.waiting.message
                   == f"couldn't find key value in ConfigMap {ns}/late", what="key named")
    cm = await api.config_maps.get("late", ns)
    cm.data["value"] = "arrived"
    await api.config_maps.update(cm)
    done = await wait_pod(api, ns, "late", _finished("show"), what="show finished")
    log = await _log(docker, node.name, done.metadata.uid)
    assert "LATE=arrived" in log, log


async def test_missing_secret_waits_then_starts(api, ns, node, docker):
    shown = container("show", "sh", "-c", "echo TOKEN=$APP_token")
    shown.env_from.add(prefix="APP_").secret_ref.name = "late"
    await api.pods.create(pod("late-secret", ns, node.name, shown, restart_policy="Never"))

    def config_error(p: core_pb2.Pod) -> bool:
        s = status_of(p, "show")
        return s is not None and s.state.waiting.reason == "CreateContainerConfigError"

    waiting = await wait_pod(api, ns, "late-secret", config_error,
                             what="CreateContainerConfigError")
    assert status_of(waiting, "show").state.waiting.message == 'secret "late" not found'
    await api.secrets.create(from_dict({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "late", "namespace": ns},
        "stringData": {"token": "t0k3n"}}))
    done = await wait_pod(api, ns, "late-secret", _finished("show"), what="show finished")
    log = await _log(docker, node.name, done.metadata.uid)
    assert "TOKEN=t0k3n" in log, log
