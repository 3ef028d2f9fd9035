"""Malformed objects and requests are refused with INVALID_ARGUMENT naming the field.

Hypothesis builds, for Pods, Services, Deployments and Namespaces, objects that are
valid but for one planted mistake (a bad name, namespace, label, annotation, image,
port, quantity, restartPolicy, service type, maxSurge, apiVersion or kind), and
requests with one bad option (a label or field selector that does not parse or names
an unsupported field, a resource version that is no revision, a continue token that is
not ours, an unknown propagation policy). Every case carries the field path of its
mistake (``spec.template.spec.containers[1].ports[0].containerPort``), built
alongside it by the strategy. Against one real apiserver on three store replicas
(started once for the module), then on a real three-member etcd, every case must:

- fail with INVALID_ARGUMENT, the details naming that path as a field
  (``... is invalid: <path>: <what>`` or ``<path>: <what>``);
- leave the server healthy;
- change nothing: the store's revision and key count, and a consistent List of the
  kind, are exactly what they were before the first case (nothing else writes here).

Updates are tried on seed objects created at the start; names are only tried on
create (an update finds its object by name, so a bad one is NotFound there).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skiff.api import labels, manifest
from skiff.api.fields import supported_fields
from skiff.api.kinds import lookup
from skiff.api.quantity import parse_quantity
from skiff.api.v1 import meta_pb2
from skiff.health import grpc_healthy
from skiff.store.v1 import rpc_pb2, rpc_pb2_grpc
from skiff.testing.fixtures import BACKENDS, new_store
from skiff.testing.processes import APIServer, ProcessCluster

#: A call that takes longer has failed (a Watch that was accepted would hang until then).
CALL_TIMEOUT = 10.0
#: Starting three replicas and an apiserver on a busy machine can take a while.
HEALTHY_TIMEOUT = 60.0
KINDS = ("Pod", "Service", "Deployment", "Namespace")
SEED = "seed"

SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
#: What the DefaultTolerationSeconds admission adds to a pod: a pod update must carry
#: them back (a pod's tolerations can only grow).
DEFAULT_TOLERATIONS = [{"key": f"node.kubernetes.io/{taint}", "operator": "Exists",
                        "effect": "NoExecute", "tolerationSeconds": 300}
                       for taint in ("not-ready", "unreachable")]


# ============================================================================ documents


def container(i: int) -> dict[str, Any]:
    return {"name": f"c{i}", "image": "busybox:1.36",
            "ports": [{"name": f"p{i}-{j}", "containerPort": 8000 + 10 * i + j}
                      for j in range(2)],
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"},
                          "limits": {"cpu": "200m", "memory": "128Mi"}}}


def pod_spec(containers: int) -> dict[str, Any]:
    return {"containers": [container(i) for i in range(containers)],
            "restartPolicy": "Always"}


def document(kind: str, name: str = SEED, *, containers: int = 2) -> dict[str, Any]:
    """A valid object of ``kind``: the seeds are these, and every mistake is planted in one."""
    k = lookup(kind)
    doc: dict[str, Any] = {"apiVersion": k.api_version, "kind": kind,
                           "metadata": {"name": name, "labels": {"app": "seed"},
                                        "annotations": {"example.com/note": "seed"}}}
    if k.namespaced:
        doc["metadata"]["namespace"] = "default"
    if kind == "Pod":
        doc["spec"] = {**pod_spec(containers), "tolerations": DEFAULT_TOLERATIONS}
    elif kind == "Service":
        doc["spec"] = {"type": "NodePort", "selector": {"app": "seed"},
                       "ports": [{"name": f"p{i}", "port": 80 + i, "targetPort": 8080 + i}
                                 for i in range(3)]}
    elif kind == "Deployment":
        doc["spec"] = {"replicas": 2, "selector": {"matchLabels": {"app": "seed"}},
                       "template": {"metadata": {"labels": {"app": "seed"}},
                                    "spec": pod_spec(containers)},
                       "strategy": {"type": "RollingUpdate",
                                    "rollingUpdate": {"maxSurge": "25%",
                                                      "maxUnavailable": 1}}}
    return doc


# ============================================================================== cases


@dataclass(frozen=True)
class Case:
    """One bad call: ``verb`` on ``kind``'s service; its details must name ``field``."""

    kind: str
    verb: str  # Create, Update, Get, List, Watch, Delete
    request: Message
    field: str
    #: Update: carry the seed's current resource_version (filled in at run time).
    seed_version: bool = False

    def __repr__(self) -> str:
        text = str(self.request).replace("\n", " ")
        return (f"Case({self.verb} {self.kind}, field={self.field!r}, "
                f"seed_version={self.seed_version}, request={text[:400]!r})")


#: A planted mistake: it changes a document in place and names the field it broke.
Mistake = tuple[Callable[[dict[str, Any]], None], str]


def setter(path: list[str | int], value: Any) -> Callable[[dict[str, Any]], None]:
    def plant(doc: dict[str, Any]) -> None:
        target: Any = doc
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value

    return plant


# ---- values that are wrong wherever they go ----

def _subdomain_ok(text: str) -> bool:
    return not labels.validate_dns1123_subdomain(text)


lowercase = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=10)

#: Names wrong for every kind (a subdomain is the loosest rule).
bad_names = st.one_of(
    st.sampled_from(["", "_", "a_b", "-a", "a-", ".a", "a..b", "Web", "WEB", "é", "a b",
                     "a/b", "a:b", "web!"]),
    st.builds(lambda a, b: f"{a}{b.upper()}", lowercase, st.text("abcxyz", min_size=1)),
    st.integers(254, 300).map(lambda n: ("ab" * n)[:n]),  # too long for a subdomain
    st.text(min_size=1, max_size=20).filter(lambda s: not _subdomain_ok(s)),
)
#: Names a subdomain allows but a DNS label (Namespaces, Services) does not.
bad_label_names = st.one_of(
    bad_names, st.sampled_from(["a.b", "web.default"]),
    st.integers(64, 120).map(lambda n: "a" * n))


def _bad_key(key: str) -> bool:
    return bool(labels.validate_label_key(key))


def _bad_value(value: str) -> bool:
    return bool(labels.validate_label_value(value))


bad_label_keys = st.one_of(
    st.sampled_from(["", "_a", "a_", "-a", "a-", "a b", "a/b/c", "/a", "a/", ".a",
                     "Example.com/a", "é", "a" * 64, "x" * 254 + "/a", "a=b"]),
    st.text(min_size=1, max_size=70).filter(_bad_key),
)
bad_label_values = st.one_of(
    st.sampled_from(["-v", "v-", "a b", "é", "x" * 64, "_v", "v.", "a/b", ".v"]),
    st.text(min_size=1, max_size=70).filter(_bad_value),
)
bad_ports = st.one_of(st.sampled_from([0, 65536, 70000, -1]),
                      st.integers(-2**31, 0), st.integers(65536, 2**31 - 1))


def _bad_quantity(text: str) -> bool:
    try:
        return parse_quantity(text) < 0
    except ValueError:
        return True


bad_quantities = st.one_of(
    st.sampled_from(["1.2.3", "abc", "", "1..", "--1", "1Qi", "one", ".", "1e", "-1",
                     "-100m", "1 Gi", "Mi", "0x10", "1_000", "1e1000000"]),
    st.text("0123456789.eEimkKMGTP+- ", max_size=8).filter(_bad_quantity),
)
bad_restart_policies = st.one_of(
    st.sampled_from(["Sometimes", "always", "never", "ALWAYS", "OnFailure ", "Always,Never"]),
    st.text(min_size=1, max_size=12).filter(lambda s: s not in ("Always", "OnFailure",
                                                                "Never")))
bad_service_types = st.one_of(
    st.sampled_from(["loadbalancer", "externalname", "clusterip", "nodeport", "Cluster IP"]),
    st.text(min_size=1, max_size=12).filter(
        lambda s: s not in ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")))
bad_surges = st.one_of(
    st.sampled_from(["200x", "x%", "%", "1.5%", "-1%", "25 %", "abc", "%25", "1e2%", "0"]),
    st.from_regex(r"[0-9]{1,3}[a-z]{1,2}", fullmatch=True),
    st.integers(-1000, -1))
#: Resource versions: anything but "" and a plain decimal within int64.
bad_versions = st.one_of(
    st.sampled_from(["abc", "-1", "1.5", "0x10", " 1", "1 ", "+1", "1_0", "1e3", "\uff11",
                     "99999999999999999999999"]),
    st.text(min_size=1, max_size=12).filter(lambda s: not re.fullmatch(r"[0-9]+", s)),
)


# ---- mistakes in objects ----

@st.composite
def metadata_mistakes(draw: st.DrawFn, kind: str, *, create: bool) -> Mistake:
    """A bad name (on create), namespace, label key or value, or annotation key."""
    k = lookup(kind)
    choices = ["label_key", "label_value", "annotation"]
    if create:
        choices.append("name")
        if k.namespaced:
            choices.append("namespace")
    which = draw(st.sampled_from(choices))
    if which == "name":
        names = bad_label_names if kind in ("Namespace", "Service") else bad_names
        return setter(["metadata", "name"], draw(names)), "metadata.name"
    if which == "namespace":
        namespace = draw(bad_label_names.filter(bool))  # "" means "default"
        return setter(["metadata", "namespace"], namespace), "metadata.namespace"
    if which == "label_key":
        key = draw(bad_label_keys)
        return setter(["metadata", "labels", key], "v"), f"metadata.labels[{key}]"
    if which == "label_value":
        key = draw(st.sampled_from(["app", "tier", "example.com/role"]))
        value = draw(bad_label_values)
        return setter(["metadata", "labels", key], value), f"metadata.labels[{key}]"
    key = draw(bad_label_keys)
    return setter(["metadata", "annotations", key], "x"), f"metadata.annotations[{key}]"


@st.composite
def pod_spec_mistakes(draw: st.DrawFn, base: list[str | int], containers: int) -> Mistake:
    """A mistake in the PodSpec at ``base`` (a path into the document)."""
    prefix = ".".join(str(step) for step in base)
    i = draw(st.integers(0, containers - 1))
    c: list[str | int] = [*base, "containers", i]
    at = f"{prefix}.containers[{i}]"
    which = draw(st.sampled_from(["image", "port", "host_port", "quantity",
                                  "restart_policy", "container_name", "no_containers"]))
    if which == "image":
        return setter([*c, "image"], draw(st.sampled_from(["", " busybox"]))), f"{at}.image"
    if which in ("port", "host_port"):
        j = draw(st.integers(0, 1))
        field = "containerPort" if which == "port" else "hostPort"
        port = draw(bad_ports.filter(bool) if which == "host_port" else bad_ports)
        return setter([*c, "ports", j, field], port), f"{at}.ports[{j}].{field}"
    if which == "quantity":
        group = draw(st.sampled_from(["limits", "requests"]))
        resource = draw(st.sampled_from(["cpu", "memory"]))
        value = draw(bad_quantities)
        return (setter([*c, "resources", group, resource], value),
                f"{at}.resources.{group}[{resource}]")
    if which == "restart_policy":
        return (setter([*base, "restartPolicy"], draw(bad_restart_policies)),
                f"{prefix}.restartPolicy")
    if which == "container_name":
        if containers > 1 and i > 0 and draw(st.booleans()):
            return setter([*c, "name"], "c0"), f"{at}.name"  # a duplicate of the first
        return setter([*c, "name"], draw(bad_label_names)), f"{at}.name"
    return setter([*base, "containers"], []), f"{prefix}.containers"


@st.composite
def spec_mistakes(draw: st.DrawFn, kind: str, containers: int) -> Mistake:
    if kind == "Pod":
        return draw(pod_spec_mistakes(["spec"], containers))
    if kind == "Service":
        which = draw(st.sampled_from(["type", "port", "protocol", "selector", "node_port"]))
        k = draw(st.integers(0, 2))
        if which == "type":
            return setter(["spec", "type"], draw(bad_service_types)), "spec.type"
        if which == "port":
            return setter(["spec", "ports", k, "port"], draw(bad_ports)), f"spec.ports[{k}].port"
        if which == "protocol":
            protocol = draw(st.sampled_from(["tcp", "HTTP", "ICMP", "TCP "]))
            return (setter(["spec", "ports", k, "protocol"], protocol),
                    f"spec.ports[{k}].protocol")
        if which == "selector":
            key = draw(bad_label_keys)
            return setter(["spec", "selector", key], "v"), f"spec.selector[{key}]"
        node_port = draw(st.one_of(st.integers(1, 29999), st.integers(32768, 65535)))
        return (setter(["spec", "ports", k, "nodePort"], node_port),
                f"spec.ports[{k}].nodePort")
    # Deployment
    which = draw(st.sampled_from(["surge", "unavailable", "replicas", "strategy_type",
                                  "template"]))
    rolling = ["spec", "strategy", "rollingUpdate"]
    if which == "surge":
        return setter([*rolling, "maxSurge"], draw(bad_surges)), \
            "spec.strategy.rollingUpdate.maxSurge"
    if which == "unavailable":
        return setter([*rolling, "maxUnavailable"], draw(bad_surges)), \
            "spec.strategy.rollingUpdate.maxUnavailable"
    if which == "replicas":
        return setter(["spec", "replicas"], draw(st.integers(-2**31, -1))), "spec.replicas"
    if which == "strategy_type":
        kind_name = draw(st.sampled_from(["Rolling", "recreate", "BlueGreen"]))
        return setter(["spec", "strategy", "type"], kind_name), "spec.strategy.type"
    return draw(pod_spec_mistakes(["spec", "template", "spec"], containers))


WRONG_API_VERSIONS = {"v1": ["v2", "apps/v1", "core/v1", "V1", "v1beta1"],
                      "apps/v1": ["v1", "apps/v2", "extensions/v1beta1", "Apps/v1"]}


@st.composite
def object_cases(draw: st.DrawFn, verb: str, kind: str) -> Case:
    """Create or Update of ``kind`` with one mistake planted in a valid document."""
    k = lookup(kind)
    containers = draw(st.integers(1, 3)) if verb == "Create" else 2
    doc = document(kind, SEED if verb == "Update" else draw(lowercase.map("new-{}".format)),
                   containers=containers)
    wheres = ["metadata", "type"] + (["spec", "spec"] if kind != "Namespace" else [])
    where = draw(st.sampled_from(wheres + (["resource_version"] if verb == "Update" else [])))
    seed_version = verb == "Update" and draw(st.booleans())
    if where == "metadata":
        plant, field = draw(metadata_mistakes(kind, create=verb == "Create"))
        plant(doc)
    elif where == "spec":
        plant, field = draw(spec_mistakes(kind, containers))
        plant(doc)
    obj = manifest.from_dict(doc)
    if where == "type":
        if draw(st.booleans()):
            obj.api_version = draw(st.sampled_from(WRONG_API_VERSIONS[k.api_version]))
            field = "apiVersion"
        else:
            others = ["Pods", "pod", "POD", *(n for n in KINDS if n != kind)]
            obj.kind = draw(st.sampled_from([n for n in others if n != kind]))
            field = "kind"
    elif where == "resource_version":
        obj.metadata.resource_version = draw(bad_versions)
        field, seed_version = "metadata.resourceVersion", False
    return Case(kind, verb, obj, field, seed_version)


# ---- mistakes in requests ----

def _bad_label_selector(text: str) -> bool:
    try:
        labels.parse_selector(text)
    except Exception:
        return True
    return False


bad_label_selectors = st.one_of(
    st.sampled_from(["a=(", "x in (a", "!", "a=b=c", "A/B/c=1", "_a=b", "a=" + "x" * 64,
                     "a in (b,", "a notin", "(", "a,,b", "a=b,", ",", "a in b", "a>b", "a<",
                     "a!", "a=-v", "a==b c", "a in (b) c"]),
    st.builds("{}=v".format, bad_label_keys).filter(_bad_label_selector),
    st.builds("app={}".format, bad_label_values).filter(_bad_label_selector),
    st.builds("app in (ok, {})".format, bad_label_values).filter(_bad_label_selector),
)


@st.composite
def bad_field_selectors(draw: st.DrawFn, kind: str) -> str:
    supported = supported_fields(kind)
    unsupported = st.one_of(
        st.sampled_from(["spec.foo", "metadata.labels", "metadata.uid", "Metadata.name",
                         "metadata.name.x", "", "status.podIP", "spec.nodeName",
                         "spec.unschedulable", "status.replicas"]),
        st.from_regex(r"[a-z]{1,8}(\.[a-zA-Z]{1,8}){0,2}", fullmatch=True),
    ).filter(lambda f: f not in supported)
    return draw(st.one_of(
        st.builds("{}={}".format, unsupported, lowercase),
        st.builds("metadata.name=ok,{}!=x".format, unsupported),
        st.sampled_from(["a", "metadata.name", "metadata.name=a=b", "metadata.name=\\q",
                         "metadata.name=a,b", "metadata.name=a\\"]),
    ))


def _token(data: Any) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).decode()


@st.composite
def bad_continue_tokens(draw: st.DrawFn, kind: str) -> str:
    """Tokens that are not base64 JSON, lack fields, or point outside the kind's keys."""
    own = f"/registry/{lookup(kind).plural}/"
    other = "/registry/nodes/" if kind != "Node" else "/registry/pods/"
    return draw(st.one_of(
        st.text(min_size=1, max_size=30),
        st.binary(min_size=1, max_size=40).map(_token),
        st.sampled_from([_token([]), _token("x"), _token(None), _token({"v": 1}),
                         _token({"v": 1, "rv": "abc", "start": own}),
                         _token({"v": 1, "rv": 5, "start": other}),
                         _token({"v": 1, "rv": 5, "start": "/"}),
                         _token({"v": 1, "rv": 0, "start": own}),
                         _token({"v": 1, "rv": -3, "start": own}),
                         _token({"v": 1, "rv": 2**64, "start": own})]),
    ))


@st.composite
def request_cases(draw: st.DrawFn, verb: str) -> Case:
    """``verb`` (Get, List, Watch or Delete) on some kind, with one bad option."""
    kind = draw(st.sampled_from(KINDS))
    k = lookup(kind)
    namespace = "default" if k.namespaced else ""
    if verb == "Get":
        version = draw(bad_versions)
        return Case(kind, verb, meta_pb2.GetRequest(namespace=namespace, name=SEED,
                                                    resource_version=version),
                    "resourceVersion")
    if verb == "Delete":
        policy = draw(st.one_of(
            st.sampled_from(["orphan", "Sideways", "background", "foreground", "None"]),
            st.text(min_size=1, max_size=12).filter(
                lambda s: s not in ("Orphan", "Background", "Foreground"))))
        return Case(kind, verb, meta_pb2.DeleteRequest(namespace=namespace, name=SEED,
                                                       propagation_policy=policy),
                    "propagationPolicy")
    options = meta_pb2.ListOptions(namespace=draw(st.sampled_from(["", namespace])))
    which = draw(st.sampled_from(["label", "field", "version"]
                                 + (["continue"] if verb == "List" else [])))
    if which == "label":
        options.label_selector, field = draw(bad_label_selectors), "labelSelector"
    elif which == "field":
        options.field_selector, field = draw(bad_field_selectors(kind)), "fieldSelector"
    elif which == "version":
        options.resource_version, field = draw(bad_versions), "resourceVersion"
    else:
        options.continue_token, field = draw(bad_continue_tokens(kind)), "continue"
        options.limit = draw(st.integers(0, 5))
    return Case(kind, verb, options, field)


# ============================================================================= server


@dataclass
class Server:
    """The module's apiserver, its seeds, and the state nothing may change."""

    address: str
    store_endpoint: str
    seeds: dict[str, Message]
    revision: int
    keys: int
    lists: dict[str, Message]


async def _store_state(endpoint: str) -> tuple[int, int]:
    """The store's revision and number of keys (a linearizable read)."""
    async with grpc.aio.insecure_channel(endpoint) as channel:
        reply = await rpc_pb2_grpc.KVStub(channel).Range(
            rpc_pb2.RangeRequest(key=b"\0", range_end=b"\0", count_only=True),
            timeout=CALL_TIMEOUT)
    return reply.header.revision, reply.count


async def _list(channel: grpc.aio.Channel, kind: str) -> Message:
    return await lookup(kind).stub(channel).List(meta_pb2.ListOptions(),
                                                 timeout=CALL_TIMEOUT)


async def _prepare(api: APIServer, cluster: ProcessCluster) -> Server:
    await api.wait_healthy(timeout=HEALTHY_TIMEOUT)
    async with grpc.aio.insecure_channel(api.address) as channel:
        seeds = {kind: await lookup(kind).stub(channel).Create(
                     manifest.from_dict(document(kind)), timeout=CALL_TIMEOUT)
                 for kind in KINDS}
        lists = {kind: await _list(channel, kind) for kind in KINDS}
    revision, keys = await _store_state(cluster.endpoints[0])
    for reply in lists.values():
        assert reply.metadata.resource_version == str(revision)
    return Server(api.address, cluster.endpoints[0], seeds, revision, keys, lists)


@pytest.fixture(scope="module", params=BACKENDS)
def server(tmp_path_factory: pytest.TempPathFactory,
           request: pytest.FixtureRequest) -> Iterator[Server]:
    """One apiserver on three store members (Skiff's store, then a real etcd) for the
    whole module, with seed objects.

    Module-scoped, so set up with its own short-lived event loops (the tests' loops are
    per function); logs are printed if any test of the module failed.
    """
    if request.param == "etcd" and shutil.which("etcd") is None:
        pytest.skip("no etcd on PATH (Debian: apt-get install etcd-server)")
    base: Path = tmp_path_factory.mktemp(f"apiserver-bad-input-{request.param}")
    failed_before = request.session.testsfailed
    cluster = new_store(request.param, base / "store")
    # No kubernetes Service lease renewing in the background: the test compares the
    # store's revision before and after each refused call.
    api = APIServer(base / "apiserver", cluster.endpoints,
                    extra_args=["--endpoint-reconciler-type", "none"])
    cluster.start()
    try:
        asyncio.run(cluster.wait_healthy(timeout=HEALTHY_TIMEOUT))
        api.start()
        yield asyncio.run(_prepare(api, cluster))
    finally:
        api.stop()
        cluster.stop()
        if request.session.testsfailed > failed_before:
            print(api.logs(40))
            print(cluster.logs(10))


# ============================================================================== check


def names_field(details: str, field: str) -> bool:
    """Whether ``details`` report an error at exactly ``field``: at the start, or after
    ``is invalid: `` / ``; `` (the Invalid message lists ``path: detail`` pairs)."""
    return re.search(rf"(?:^|: |; ){re.escape(field)}: ", details) is not None


async def _call(channel: grpc.aio.Channel, case: Case, server: Server) -> Message:
    stub = lookup(case.kind).stub(channel)
    request = case.request
    if case.seed_version:
        request = copy.deepcopy(request)
        request.metadata.resource_version = \
            server.seeds[case.kind].metadata.resource_version
    if case.verb == "Watch":
        stream = stub.Watch(request, timeout=CALL_TIMEOUT)
        try:
            return await stream.read()
        finally:
            stream.cancel()
    return await getattr(stub, case.verb)(request, timeout=CALL_TIMEOUT)


async def check_refused(server: Server, case: Case) -> None:
    """The case fails with INVALID_ARGUMENT naming its field; nothing changed; server up."""
    async with grpc.aio.insecure_channel(server.address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            answer = await _call(channel, case, server)
            print("accepted:", answer)
        error = caught.value
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
        assert names_field(error.details() or "", case.field), \
            f"{case.field!r} not named in: {error.details()}"
        assert await grpc_healthy(server.address)
        after = await _list(channel, case.kind)
    assert after.metadata.resource_version == server.lists[case.kind].metadata.resource_version
    assert list(after.items) == list(server.lists[case.kind].items)
    assert await _store_state(server.store_endpoint) == (server.revision, server.keys)


# ============================================================================== tests


# One test per kind or verb, so that 40 examples cover each one's mistakes.


@pytest.mark.parametrize("kind", KINDS)
@SETTINGS
@given(data=st.data())
async def test_creating_a_malformed_object_is_refused(server: Server, kind: str,
                                                      data: st.DataObject) -> None:
    await check_refused(server, data.draw(object_cases("Create", kind), label="case"))


@pytest.mark.parametrize("kind", ["Pod", "Service", "Deployment"])
@SETTINGS
@given(data=st.data())
async def test_updating_to_a_malformed_object_is_refused(server: Server, kind: str,
                                                         data: st.DataObject) -> None:
    await check_refused(server, data.draw(object_cases("Update", kind), label="case"))


@pytest.mark.parametrize("verb", ["List", "Watch", "Get", "Delete"])
@SETTINGS
@given(data=st.data())
async def test_malformed_request_options_are_refused(server: Server, verb: str,
                                                     data: st.DataObject) -> None:
    await check_refused(server, data.draw(request_cases(verb), label="case"))


async def test_an_update_without_a_mistake_is_accepted(server: Server) -> None:
    """The update cases fail for their planted mistake only: the same body without it is
    accepted (and, being what is stored, writes nothing)."""
    async with grpc.aio.insecure_channel(server.address) as channel:
        for kind in ("Pod", "Service", "Deployment"):
            got = await lookup(kind).stub(channel).Update(manifest.from_dict(document(kind)),
                                                          timeout=CALL_TIMEOUT)
            assert got == server.seeds[kind]
    assert await _store_state(server.store_endpoint) == (server.revision, server.keys)


async def test_the_seeds_are_untouched(server: Server) -> None:
    """After every case above: each seed reads back exactly as created."""
    async with grpc.aio.insecure_channel(server.address) as channel:
        for kind, seed in server.seeds.items():
            k = lookup(kind)
            got = await k.stub(channel).Get(meta_pb2.GetRequest(
                namespace=seed.metadata.namespace, name=SEED), timeout=CALL_TIMEOUT)
            assert got == seed
