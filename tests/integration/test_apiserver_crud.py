"""Create, get, list, update, update status and delete of every kind, through a real
apiserver on three real store replicas, with Kubernetes' semantics: system fields and
defaults on create, resourceVersion and generation on update, status only through
UpdateStatus, optimistic concurrency, delete preconditions, and the gRPC codes of each
failure (INVALID_ARGUMENT naming the offending field).

The objects come from Kubernetes-style YAML read by ``skiff.api.manifest``.
"""

from __future__ import annotations

import ipaddress
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from apiclient import (
    ABORTED,
    ALREADY_EXISTS,
    INVALID_ARGUMENT,
    NOT_FOUND,
    Client,
    fails,
    pod,
    rv,
    unique,
)
from backends import ON_BOTH_BACKENDS
from google.protobuf.message import Message

from skiff.api.kinds import lookup
from skiff.api.manifest import load_documents
from skiff.api.v1 import core_pb2, meta_pb2

pytestmark = ON_BOTH_BACKENDS

# One object of every kind, as a user would write it for Kubernetes. $ns is the test's
# namespace and $id makes cluster-scoped names unique.
MANIFESTS = string.Template("""
apiVersion: v1
kind: Namespace
metadata:
  name: crud-$id
  labels: {team: a}
---
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: $ns
  labels: {app: web}
spec:
  containers:
  - name: nginx
    image: nginx:1.25
    ports:
    - containerPort: 80
      name: http
    resources:
      limits: {cpu: 500m, memory: 128Mi}
status:
  phase: Running
---
apiVersion: v1
kind: Node
metadata:
  name: node-$id
  labels: {kubernetes.io/hostname: node-$id}
spec:
  podCIDR: 10.244.1.0/24
status:
  capacity: {cpu: 4, memory: 8Gi, pods: 110}
  allocatable: {cpu: 4, memory: 8Gi, pods: 110}
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: $ns
spec:
  selector: {app: web}
  ports:
  - port: 80
---
apiVersion: v1
kind: Endpoints
metadata:
  name: web
  namespace: $ns
subsets:
- addresses:
  - ip: 127.0.1.5
  ports:
  - port: 80
---
apiVersion: v1
kind: ReplicationController
metadata:
  name: web-rc
  namespace: $ns
spec:
  template:
    metadata:
      labels: {app: web-rc}
    spec:
      containers:
      - name: nginx
        image: nginx
---
apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: web-rs
  namespace: $ns
spec:
  selector:
    matchLabels: {app: web-rs}
  template:
    metadata:
      labels: {app: web-rs}
    spec:
      containers:
      - name: nginx
        image: nginx:1.25
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web-deploy
  namespace: $ns
  labels: {app: web-deploy}
spec:
  replicas: 2
  selector:
    matchExpressions:
    - {key: app, operator: In, values: [web-deploy]}
  template:
    metadata:
      labels: {app: web-deploy}
    spec:
      containers:
      - name: nginx
        image: nginx:1.25
---
apiVersion: v1
kind: Event
metadata:
  name: web.17a
  namespace: $ns
involvedObject:
  kind: Pod
  name: web
  namespace: $ns
reason: Scheduled
message: Successfully assigned web to node-1
type: Normal
count: 1
---
apiVersion: coordination.k8s.io/v1
kind: Lease
metadata:
  name: node-$id
  namespace: $ns
spec:
  holderIdentity: node-$id
  leaseDurationSeconds: 40
  renewTime: "2024-05-01T10:00:00Z"
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: web-config
  namespace: $ns
data:
  nginx.conf: "worker_processes 1;"
binaryData:
  logo.bin: AAEC
---
apiVersion: v1
kind: Secret
metadata:
  name: web-secret
  namespace: $ns
type: kubernetes.io/basic-auth
stringData:
  username: admin
data:
  password: czNjcmV0
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: web-sa
  namespace: $ns
imagePullSecrets:
- name: regcred
automountServiceAccountToken: false
""")


def manifests(ns: str) -> dict[str, Message]:
    objects = load_documents(MANIFESTS.substitute(ns=ns, id=unique("x")), source="crud.yaml")
    return {obj.kind: obj for obj in objects}  # type: ignore[attr-defined]


# ---- per kind: the defaults to expect, a spec change and a status change ----


def _pod_defaults(obj: core_pb2.Pod) -> None:
    spec = obj.spec
    assert spec.restart_policy == "Always" and spec.scheduler_name == "default-scheduler"
    assert spec.termination_grace_period_seconds == 30
    container = spec.containers[0]
    assert container.image_pull_policy == "IfNotPresent"
    assert container.termination_message_path == "/dev/termination-log"
    assert container.ports[0].protocol == "TCP"
    assert dict(container.resources.requests) == {"cpu": "500m", "memory": "128Mi"}
    # Status is the server's: the manifest's "Running" is not taken on create.
    assert obj.status.phase == "Pending" and obj.status.qos_class == "Guaranteed"
    assert {(t.key, t.effect, t.toleration_seconds) for t in spec.tolerations} == {
        ("node.kubernetes.io/not-ready", "NoExecute", 300),
        ("node.kubernetes.io/unreachable", "NoExecute", 300)}


def _node_defaults(obj: core_pb2.Node) -> None:
    assert list(obj.spec.pod_cidrs) == ["10.244.1.0/24"]
    assert obj.status.capacity["cpu"] == "4"  # a kubelet registers with its status


def _service_defaults(obj: core_pb2.Service) -> None:
    spec = obj.spec
    assert spec.type == "ClusterIP" and spec.session_affinity == "None"
    assert ipaddress.IPv4Address(spec.cluster_ip) in ipaddress.IPv4Network("10.96.0.0/12")
    assert list(spec.cluster_ips) == [spec.cluster_ip]
    assert spec.ports[0].protocol == "TCP" and spec.ports[0].target_port.int_val == 80


def _endpoints_defaults(obj: core_pb2.EndpointsObject) -> None:
    assert obj.subsets[0].ports[0].protocol == "TCP"


def _rc_defaults(obj: core_pb2.ReplicationController) -> None:
    assert obj.spec.replicas == 1
    assert dict(obj.spec.selector) == {"app": "web-rc"} == dict(obj.metadata.labels)
    template = obj.spec.template.spec
    assert template.restart_policy == "Always"
    assert template.containers[0].image_pull_policy == "Always"  # no tag: latest


def _rs_defaults(obj: Any) -> None:
    assert obj.spec.replicas == 1
    assert obj.spec.template.spec.containers[0].image_pull_policy == "IfNotPresent"


def _deployment_defaults(obj: Any) -> None:
    spec = obj.spec
    assert spec.replicas == 2 and spec.strategy.type == "RollingUpdate"
    rolling = spec.strategy.rolling_update
    assert (rolling.max_surge.str_val, rolling.max_unavailable.str_val) == ("25%", "25%")
    assert spec.revision_history_limit == 10 and spec.progress_deadline_seconds == 600


def _namespace_defaults(obj: core_pb2.Namespace) -> None:
    assert obj.status.phase == "Active" and list(obj.spec.finalizers) == ["kubernetes"]
    assert obj.metadata.labels["kubernetes.io/metadata.name"] == obj.metadata.name


def _config_map_defaults(obj: core_pb2.ConfigMap) -> None:
    assert dict(obj.binary_data) == {"logo.bin": b"\x00\x01\x02"}


def _secret_defaults(obj: core_pb2.Secret) -> None:
    # stringData is folded into data and not stored.
    assert dict(obj.data) == {"username": b"admin", "password": b"s3cret"}
    assert not obj.string_data and obj.type == "kubernetes.io/basic-auth"


def _nothing(obj: Any) -> None:
    pass


def _set_replicas(obj: Any) -> None:
    obj.spec.replicas = 3


def _set_status_replicas(obj: Any) -> None:
    obj.status.replicas = 2
    obj.status.observed_generation = obj.metadata.generation


@dataclass(frozen=True)
class Case:
    kind: str
    defaults: Callable[[Any], None]
    #: Changes the spec (generation goes up), or None for kinds without a spec.
    change_spec: Callable[[Any], None] | None
    #: Changes the status, or None for kinds without a status.
    change_status: Callable[[Any], None] | None


CASES = [
    Case("Namespace", _namespace_defaults, None,
         lambda o: o.status.conditions.add(type="NamespaceDeletionDiscoveryFailure",
                                           status="False")),
    Case("Pod", _pod_defaults, lambda o: setattr(o.spec.containers[0], "image", "nginx:1.26"),
         lambda o: (setattr(o.status, "phase", "Running"),
                    setattr(o.status, "pod_ip", "127.0.1.9"))),
    Case("Node", _node_defaults, lambda o: setattr(o.spec, "unschedulable", True),
         lambda o: o.status.conditions.add(type="Ready", status="True")),
    Case("Service", _service_defaults, lambda o: o.spec.selector.update(tier="front"),
         lambda o: o.status.load_balancer.ingress.add(ip="127.0.0.9")),
    Case("Endpoints", _endpoints_defaults, None, None),
    Case("ReplicationController", _rc_defaults, _set_replicas, _set_status_replicas),
    Case("ReplicaSet", _rs_defaults, _set_replicas, _set_status_replicas),
    Case("Deployment", _deployment_defaults, _set_replicas, _set_status_replicas),
    Case("Event", _nothing, None, None),
    Case("Lease", _nothing, lambda o: setattr(o.spec, "holder_identity", "someone-else"),
         None),
    Case("ConfigMap", _config_map_defaults, None, None),
    Case("Secret", _secret_defaults, None, None),
    Case("ServiceAccount", _nothing, None, None),
]


def _copy(obj: Message) -> Any:
    result = type(obj)()
    result.CopyFrom(obj)
    return result


@pytest.mark.parametrize("case", CASES, ids=[c.kind for c in CASES])
async def test_crud_of_every_kind(api: Client, ns: str, case: Case):
    kind = lookup(case.kind)
    resource = api.of(kind)
    sent = manifests(ns)[case.kind]
    name = sent.metadata.name  # type: ignore[attr-defined]
    where = ns if kind.namespaced else ""

    # Create: system fields, apiVersion/kind, defaults.
    created = await resource.create(sent)
    md = created.metadata
    assert (created.api_version, created.kind) == (kind.api_version, kind.kind)
    assert md.name == name and md.namespace == where
    assert len(md.uid) == 36 and md.creation_timestamp.seconds > 0
    assert rv(created) > 0 and md.generation == 1
    assert not md.HasField("deletion_timestamp")
    case.defaults(created)
    await fails(ALREADY_EXISTS, resource.create(sent), f'"{name}" already exists')

    # Get and list return what was stored.
    assert await resource.get(name, where) == created
    listed = await resource.list(where)
    assert listed.kind == f"{kind.kind}List" and listed.api_version == kind.api_version
    assert [o for o in listed.items if o.metadata.name == name] == [created]
    assert int(listed.metadata.resource_version) >= rv(created)

    # A metadata change bumps resourceVersion, not generation.
    labelled = _copy(created)
    labelled.metadata.labels["touched"] = "yes"
    updated = await resource.update(labelled)
    assert rv(updated) > rv(created) and updated.metadata.generation == 1
    assert updated.metadata.labels["touched"] == "yes"
    assert updated.metadata.uid == md.uid
    assert updated.metadata.creation_timestamp == md.creation_timestamp
    assert await resource.get(name, where) == updated

    # An update that changes nothing writes nothing.
    same = await resource.update(updated)
    assert rv(same) == rv(updated)

    # A spec change bumps generation too.
    if case.change_spec is not None:
        changed = _copy(updated)
        case.change_spec(changed)
        respec = await resource.update(changed)
        assert respec.metadata.generation == 2 and rv(respec) > rv(updated)
        assert respec.spec == changed.spec
        updated = respec

    # A stale resourceVersion is a conflict and changes nothing.
    stale = _copy(created)
    stale.metadata.labels["stale"] = "yes"
    await fails(ABORTED, resource.update(stale), "the object has been modified")
    assert await resource.get(name, where) == updated

    # Status goes only through UpdateStatus, which changes nothing else.
    if case.change_status is not None:
        with_status = _copy(updated)
        case.change_status(with_status)
        ignored = await resource.update(with_status)
        assert ignored.status == updated.status and rv(ignored) == rv(updated)

        with_status.metadata.labels["sneaky"] = "yes"
        if case.change_spec is not None:
            case.change_spec(with_status)
            with_status.metadata.generation = 99
        status_only = await resource.update_status(with_status)
        assert status_only.status == with_status.status != updated.status
        assert rv(status_only) > rv(updated)
        assert status_only.spec == updated.spec
        assert status_only.metadata.generation == updated.metadata.generation
        assert "sneaky" not in status_only.metadata.labels
        await fails(ABORTED, resource.update_status(with_status))  # now stale
        updated = status_only

    # Without a resourceVersion an update applies to the latest version.
    unconditional = _copy(created)
    unconditional.metadata.resource_version = ""
    unconditional.metadata.labels["last"] = "write"
    latest = await resource.update(unconditional)
    assert rv(latest) > rv(updated) and latest.metadata.labels["last"] == "write"
    assert latest.status == updated.status if kind.has_status else True
    if case.change_spec is not None:  # the client sent the old spec: that is a change
        assert latest.spec == created.spec
        assert latest.metadata.generation == updated.metadata.generation + 1

    # Delete.
    if kind.kind == "Namespace":
        return  # namespaces terminate: test_apiserver_namespaces.py
    deleted = await resource.delete(name, where)
    assert deleted.metadata.uid == md.uid
    await fails(NOT_FOUND, resource.get(name, where), f'"{name}" not found')
    await fails(NOT_FOUND, resource.delete(name, where))
    await fails(NOT_FOUND, resource.update(latest))
    assert name not in await resource.names(where)


async def test_generate_name_makes_unique_names(api: Client, ns: str):
    first = await api.pods.create(pod(generate_name="web-", namespace=ns))
    second = await api.pods.create(pod(generate_name="web-", namespace=ns))
    for created in (first, second):
        name = created.metadata.name
        assert name.startswith("web-") and len(name) == len("web-") + 5
        assert created.metadata.generate_name == "web-"
    assert first.metadata.name != second.metadata.name
    assert sorted(await api.pods.names(ns)) == sorted([first.metadata.name,
                                                       second.metadata.name])
    # A name given with generateName wins.
    named = await api.pods.create(pod("fixed", generate_name="web-", namespace=ns))
    assert named.metadata.name == "fixed"
    await fails(INVALID_ARGUMENT, api.pods.create(pod(generate_name="Web_", namespace=ns)),
                "metadata.generateName")


async def test_invalid_objects_name_the_field(api: Client, ns: str):
    details = await fails(INVALID_ARGUMENT, api.pods.create(pod("bad", ns, image="")))
    assert "spec.containers[0].image: required" in details

    broken = pod("Bad_Name", ns, labels={"app": "-x"}, restart_policy="Sometimes")
    broken.spec.containers.add(name="main", image="x")  # a duplicate container name
    details = await fails(INVALID_ARGUMENT, api.pods.create(broken))
    for field in ("metadata.name", "metadata.labels", "spec.restartPolicy",
                  "spec.containers[1].name"):
        assert field in details, details
    assert not await api.pods.exists("Bad_Name", ns)

    await fails(INVALID_ARGUMENT, api.pods.create(pod(namespace=ns)), "metadata.name: required")
    await fails(INVALID_ARGUMENT, api.services.create(core_pb2.Service(
        metadata=meta_pb2.ObjectMeta(name="svc", namespace=ns),
        spec=core_pb2.ServiceSpec(ports=[core_pb2.ServicePort(port=70000)]))),
        "spec.ports[0].port")
    wrong_kind = pod("p", ns)
    wrong_kind.kind = "Service"
    await fails(INVALID_ARGUMENT, api.pods.create(wrong_kind), "kind")

    # Updates are checked too, with their own rules (immutable fields).
    created = await api.pods.create(pod("ok", ns))
    changed = _copy(created)
    changed.spec.restart_policy = "Never"
    await fails(INVALID_ARGUMENT, api.pods.update(changed), "pod updates may not change")
    changed = _copy(created)
    changed.spec.containers[0].image = ""
    await fails(INVALID_ARGUMENT, api.pods.update(changed), "spec.containers[0].image")
    rs = manifests(ns)["ReplicaSet"]
    rs = await api.replicasets.create(rs)
    rs.spec.selector.match_labels["app"] = "other"
    rs.spec.template.metadata.labels["app"] = "other"
    await fails(INVALID_ARGUMENT, api.replicasets.update(rs), "spec.selector: field is immutable")


async def test_delete_preconditions(api: Client, ns: str):
    created = await api.pods.create(pod("p", ns))
    await fails(ABORTED, api.pods.delete("p", ns, uid="not-its-uid"), "Precondition failed")
    await fails(ABORTED, api.pods.delete("p", ns, resource_version=str(rv(created) - 1)),
                "Precondition failed")
    assert await api.pods.get("p", ns) == created
    await api.pods.delete("p", ns, uid=created.metadata.uid,
                          resource_version=created.metadata.resource_version)
    assert not await api.pods.exists("p", ns)

    # A precondition names one object: a new one of the same name is another.
    again = await api.pods.create(pod("p", ns))
    await fails(ABORTED, api.pods.delete("p", ns, uid=created.metadata.uid))
    assert await api.pods.get("p", ns) == again


async def test_requests_without_a_namespace_mean_default(api: Client):
    name = unique("nsless")
    created = await api.pods.create(pod(name, namespace=""))
    assert created.metadata.namespace == "default"
    assert await api.pods.get(name, "") == created
    created.metadata.labels["x"] = "y"
    created.metadata.namespace = ""
    updated = await api.pods.update(created)
    assert updated.metadata.namespace == "default" and updated.metadata.labels["x"] == "y"
    await api.pods.delete(name, "")
    assert not await api.pods.exists(name, "default")


async def test_default_tolerations_are_added_only_when_missing(api: Client, ns: str):
    own = core_pb2.Toleration(key="node.kubernetes.io/not-ready", operator="Exists",
                              effect="NoExecute", toleration_seconds=10)
    created = await api.pods.create(pod("own", ns, tolerations=[own]))
    assert [(t.key, t.toleration_seconds) for t in created.spec.tolerations] == [
        ("node.kubernetes.io/not-ready", 10), ("node.kubernetes.io/unreachable", 300)]
    everything = core_pb2.Toleration(operator="Exists")
    created = await api.pods.create(pod("all", ns, tolerations=[everything]))
    assert list(created.spec.tolerations) == [everything]
    # Only pods get them.
    rs = await api.replicasets.create(manifests(ns)["ReplicaSet"])
    assert not rs.spec.template.spec.tolerations
