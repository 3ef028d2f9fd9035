"""ConfigMaps, Secrets and ServiceAccounts through a real apiserver on real store
replicas: Kubernetes' validation (INVALID_ARGUMENT naming the field, nothing stored),
stringData folded and never returned, immutability, pods' env references checked; and
the serviceaccounts controller (run in this process with shared informers) making a
``default`` ServiceAccount in each namespace, again after it is deleted.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from apiclient import INVALID_ARGUMENT, NOT_FOUND, Client, fails, unique

from services.controller_manager.serviceaccounts import ServiceAccountsController
from skiff.api import errors
from skiff.api.manifest import from_dict
from skiff.api.v1 import core_pb2
from skiff.client.client import Client as SkiffClient
from skiff.client.events import EventRecorder
from skiff.client.informer import SharedInformerFactory

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
