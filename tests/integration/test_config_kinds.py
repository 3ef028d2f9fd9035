"""ConfigMaps, Secrets and ServiceAccounts through a real apiserver on real store
replicas: Kubernetes' validation (INVALID_ARGUMENT naming the field, nothing stored),
stringData folded and never returned, immutability, pods' env references checked; and
the serviceaccounts controller (run in this process with shared informers) making a
``default`` ServiceAccount in each namespace, again after it is deleted.
"""

from __future__ import annotations

import asyncio
import base64
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from apiclient import INVALID_ARGUMENT, NOT_FOUND, Client, fails, unique

from services.controller_manager.serviceaccounts import ServiceAccountsController
from skiff.api import errors
from skiff.api.manifest import from_dict
from skiff.api.v1 import core_pb2
from skiff.client.client import Client as SkiffClient
from skiff.client.events import EventRecorder
from skiff.client.informer import SharedInformerFactory

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "config" / "env.yaml"
IMMUTABLE = "Forbidden: field is immutable when `immutable` is set"


def obj(kind: str, ns: str, name: str, **fields: Any) -> Any:
    return from_dict({"apiVersion": "v1", "kind": kind,
                      "metadata": {"name": name, "namespace": ns}, **fields})


async def test_config_map_validation_names_the_field(api: Client, ns: str) -> None:
    cases = [
        ({"data": {"a/b": "x"}}, "data[a/b]", "a valid config key"),
        ({"data": {"..": "x"}}, "data[..]", "must not be '..'"),
        ({"data": {"k": "x"}, "binaryData": {"k": "eA=="}}, "data[k]",
         "duplicate of key present in binaryData"),
        ({"data": {"big": "x" * (1024 * 1024)}}, "data", "Too long: must have at most 1048576"),
    ]
    for i, (fields, field, text) in enumerate(cases):
        name = f"bad-{i}"
        details = await fails(INVALID_ARGUMENT, api.configmaps.create(
            obj("ConfigMap", ns, name, **fields)), text)
        assert field in details, details
        await fails(NOT_FOUND, api.configmaps.get(name, ns))


async def test_immutable_config_map(api: Client, ns: str) -> None:
    created = await api.configmaps.create(obj("ConfigMap", ns, "frozen", data={"k": "1"},
                                              immutable=True))
    changed = core_pb2.ConfigMap()
    changed.CopyFrom(created)
    changed.data["k"] = "2"
    await fails(INVALID_ARGUMENT, api.configmaps.update(changed), f"data: {IMMUTABLE}")
    thawed = core_pb2.ConfigMap()
    thawed.CopyFrom(created)
    thawed.immutable = False
    await fails(INVALID_ARGUMENT, api.configmaps.update(thawed), f"immutable: {IMMUTABLE}")
    assert await api.configmaps.get("frozen", ns) == created
    # Metadata still changes; and deletion is allowed.
    labelled = core_pb2.ConfigMap()
    labelled.CopyFrom(created)
    labelled.metadata.labels["a"] = "b"
    assert (await api.configmaps.update(labelled)).metadata.labels["a"] == "b"
    await api.configmaps.delete("frozen", ns)


async def test_secret_string_data_and_types(api: Client, ns: str) -> None:
    created = await api.secrets.create(obj(
        "Secret", ns, "creds", stringData={"user": "admin", "pass": "pw"},
        data={"pass": base64.b64encode(b"old").decode()}))
    assert created.type == "Opaque"
    assert dict(created.data) == {"user": b"admin", "pass": b"pw"}
    got = await api.secrets.get("creds", ns)
    assert not got.string_data and got == created
    # An update's stringData is folded too.
    update = core_pb2.Secret()
    update.CopyFrom(got)
    update.string_data["pass"] = "new"
    updated = await api.secrets.update(update)
    assert updated.data["pass"] == b"new" and not updated.string_data
    # The type is fixed, and the well-known types need their keys.
    retyped = core_pb2.Secret()
    retyped.CopyFrom(updated)
    retyped.type = "kubernetes.io/ssh-auth"
    await fails(INVALID_ARGUMENT, api.secrets.update(retyped), "type: Invalid value")
    details = await fails(INVALID_ARGUMENT, api.secrets.create(obj(
        "Secret", ns, "tls", type="kubernetes.io/tls", stringData={"tls.crt": "c"})),
        "data[tls.key]: Required value")
    assert "tls.crt" not in details
    await fails(INVALID_ARGUMENT, api.secrets.create(obj(
        "Secret", ns, "reg", type="kubernetes.io/dockerconfigjson")),
        "data[.dockerconfigjson]: Required value")
    await fails(NOT_FOUND, api.secrets.get("tls", ns))


async def test_immutable_secret(api: Client, ns: str) -> None:
    created = await api.secrets.create(obj("Secret", ns, "frozen", stringData={"k": "1"},
                                           immutable=True))
    changed = core_pb2.Secret()
    changed.CopyFrom(created)
    changed.string_data["k"] = "2"
    await fails(INVALID_ARGUMENT, api.secrets.update(changed), f"data: {IMMUTABLE}")
    assert (await api.secrets.get("frozen", ns)).data["k"] == b"1"


async def test_pod_env_references_validated(api: Client, ns: str) -> None:
    bad = from_dict({"apiVersion": "v1", "kind": "Pod",
                     "metadata": {"name": "env", "namespace": ns},
                     "spec": {"containers": [{"name": "c", "image": "busybox", "env": [
                         {"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "spec.foo"}}}],
                         "envFrom": [{"prefix": "P_"}]}]}})
    details = await fails(INVALID_ARGUMENT, api.pods.create(bad))
    assert "spec.containers[0].env[0].valueFrom.fieldRef.fieldPath" in details
    assert "spec.containers[0].envFrom[0]" in details
    good = from_dict({"apiVersion": "v1", "kind": "Pod",
                      "metadata": {"name": "env", "namespace": ns},
                      "spec": {"containers": [{"name": "c", "image": "busybox", "env": [
                          {"name": "X", "valueFrom": {"secretKeyRef": {"name": "s",
                                                                       "key": "k"}}}]}]}})
    created = await api.pods.create(good)
    assert created.spec.service_account_name == "default"


async def eventually(check: Callable[[], Awaitable[Any]], *, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout}s")
        await asyncio.sleep(0.1)


async def test_default_service_account_per_namespace(apiserver) -> None:
    async with SkiffClient(apiserver.address, retry_deadline=15.0) as client:
        existing = core_pb2.Namespace(api_version="v1", kind="Namespace")
        existing.metadata.name = unique("before")
        await client.namespaces.create(existing)
        factory = SharedInformerFactory(client)
        controller = ServiceAccountsController(
            client, factory, EventRecorder(client, "controller-manager"), None)
        await factory.start_all()
        task = asyncio.create_task(controller.run())
        try:
            async def default_in(ns: str) -> Any:
                try:
                    return await client.service_accounts.get("default", ns)
                except errors.NotFound:
                    return None

            # Namespaces from before the controller, the built-in ones, and new ones.
            for ns in (existing.metadata.name, "default", "kube-system"):
                await eventually(lambda ns=ns: default_in(ns))
            fresh = core_pb2.Namespace(api_version="v1", kind="Namespace")
            fresh.metadata.name = unique("after")
            await client.namespaces.create(fresh)
            first = await eventually(lambda: default_in(fresh.metadata.name))
            # Deleted: made again (a new object).
            await client.service_accounts.delete("default", fresh.metadata.name)
            again = await eventually(lambda: default_in(fresh.metadata.name))
            assert again.metadata.uid != first.metadata.uid
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await factory.stop_all()


async def _skiffctl(server: str, *args: str) -> str:
    """Run skiffctl (a subprocess, with a deadline) against ``server``; its stdout."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "skiff.cli.skiffctl", "--server", server, *args,
        env={**os.environ, "SKIFF_CONFIG": "/nonexistent"}, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(process.communicate(), 30)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode == 0, err.decode()
    return out.decode()


async def test_skiffctl_apply_get_describe_delete(api_cluster, api: Client, ns: str) -> None:
    server = api_cluster.apiserver.address
    applied = await _skiffctl(server, "apply", "-n", ns, "-f", str(EXAMPLE))
    assert applied.splitlines() == ["configmap/app-config created", "secret/app-db created",
                                    "pod/config-demo created"]
    again = await _skiffctl(server, "apply", "-n", ns, "-f", str(EXAMPLE))
    assert all(line.endswith(" unchanged") for line in again.splitlines()), again
    cms = [line.split() for line in (await _skiffctl(server, "get", "cm", "-n", ns))
           .splitlines()]
    assert cms[0] == ["NAME", "DATA", "AGE"] and cms[1][:2] == ["app-config", "2"]
    secrets = [line.split() for line in (await _skiffctl(server, "get", "secrets", "-n", ns))
               .splitlines()]
    assert secrets[0] == ["NAME", "TYPE", "DATA", "AGE"]
    assert secrets[1][:3] == ["app-db", "kubernetes.io/basic-auth", "2"]
    described = await _skiffctl(server, "describe", "secret", "app-db", "-n", ns)
    assert "password:" in described and "6 bytes" in described and "s3cret" not in described
    as_yaml = yaml.safe_load(await _skiffctl(server, "get", "secret", "app-db", "-n", ns,
                                             "-o", "yaml"))
    assert base64.b64decode(as_yaml["data"]["password"]) == b"s3cret"
    assert "stringData" not in as_yaml
    await api.serviceaccounts.create(obj("ServiceAccount", ns, "builder"))
    accounts = await _skiffctl(server, "get", "sa", "-n", ns, "-o", "name")
    assert accounts == "serviceaccount/builder\n"
    deleted = await _skiffctl(server, "delete", "cm/app-config", "sa/builder", "-n", ns)
    assert deleted.splitlines() == ['configmap "app-config" deleted',
                                    'serviceaccount "builder" deleted']
    await fails(NOT_FOUND, api.configmaps.get("app-config", ns))
