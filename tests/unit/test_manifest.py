"""Manifests: Kubernetes-shaped YAML/JSON to protobuf and back."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skiff.api.kinds import KINDS, Kind
from skiff.api.manifest import (
    ManifestError,
    dump_json,
    dump_yaml,
    from_dict,
    load_documents,
    to_dict,
)
from skiff.api.v1 import apps_pb2, core_pb2, meta_pb2, services_pb2

DEPLOYMENT_AND_SERVICE = """\
# The guestbook front end, as in the Kubernetes docs.
apiVersion: apps/v1
kind: Deployment
metadata:
  name: frontend
  namespace: default
  labels:
    app.kubernetes.io/name: guestbook
    tier: frontend
  annotations:
    deployment.kubernetes.io/revision: "3"
spec:
  replicas: 3
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      app.kubernetes.io/name: guestbook
    matchExpressions:
    - {key: tier, operator: In, values: [frontend]}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 25%
      maxUnavailable: 0
  template:
    metadata:
      labels:
        app.kubernetes.io/name: guestbook
        tier: frontend
    spec:
      terminationGracePeriodSeconds: 30
      nodeSelector:
        kubernetes.io/os: linux
      tolerations:
      - key: node.kubernetes.io/unreachable
        operator: Exists
        effect: NoExecute
        tolerationSeconds: 300
      containers:
      - name: php-redis
        image: us-docker.pkg.dev/google-samples/containers/gke/gb-frontend:v5
        imagePullPolicy: IfNotPresent
        args: ["--port", "80"]
        env:
        - name: GET_HOSTS_FROM
          value: dns
        ports:
        - name: http
          containerPort: 80
          protocol: TCP
        resources:
          requests:
            cpu: 100m
            memory: 100Mi
          limits:
            cpu: 1
            memory: 0.5Gi
        readinessProbe:
          httpGet:
            path: /healthz
            port: http
            httpHeaders:
            - {name: X-Probe, value: "yes"}
          initialDelaySeconds: 5
          periodSeconds: 10
        livenessProbe:
          tcpSocket:
            port: 80
          failureThreshold: 3
---
apiVersion: v1
kind: Service
metadata:
  name: frontend
  labels:
    app.kubernetes.io/name: guestbook
spec:
  type: NodePort
  selector:
    app.kubernetes.io/name: guestbook
    tier: frontend
  sessionAffinity: ClientIP
  sessionAffinityConfig:
    clientIP:
      timeoutSeconds: 10800
  ports:
  - name: http
    protocol: TCP
    port: 80
    targetPort: http
    nodePort: 30080
  - name: metrics
    port: 9090
    targetPort: 9091
"""


def _load_pair() -> tuple[apps_pb2.Deployment, core_pb2.Service]:
    deployment, service = load_documents(DEPLOYMENT_AND_SERVICE, source="frontend.yaml")
    assert isinstance(deployment, apps_pb2.Deployment)
    assert isinstance(service, core_pb2.Service)
    return deployment, service


def test_loads_a_realistic_deployment() -> None:
    deployment, _ = _load_pair()
    assert deployment.api_version == "apps/v1" and deployment.kind == "Deployment"
    assert deployment.metadata.name == "frontend"
    assert deployment.metadata.labels["tier"] == "frontend"
    assert deployment.metadata.annotations["deployment.kubernetes.io/revision"] == "3"
    spec = deployment.spec
    assert spec.HasField("replicas") and spec.replicas == 3
    assert spec.revision_history_limit == 5
    assert spec.selector.match_expressions[0].values == ["frontend"]
    surge, unavailable = spec.strategy.rolling_update.max_surge, \
        spec.strategy.rolling_update.max_unavailable
    assert (surge.type, surge.str_val) == (meta_pb2.IntOrString.STRING, "25%")
    assert spec.strategy.rolling_update.HasField("max_unavailable")
    assert (unavailable.type, unavailable.int_val) == (meta_pb2.IntOrString.INT, 0)
    pod = spec.template.spec
    assert pod.termination_grace_period_seconds == 30
    assert pod.node_selector == {"kubernetes.io/os": "linux"}
    assert pod.tolerations[0].toleration_seconds == 300
    [container] = pod.containers
    assert container.args == ["--port", "80"]
    assert container.ports[0].container_port == 80
    assert dict(container.resources.requests) == {"cpu": "100m", "memory": "100Mi"}
    assert dict(container.resources.limits) == {"cpu": "1", "memory": "0.5Gi"}
    probe = container.readiness_probe.http_get
    assert (probe.path, probe.port.type, probe.port.str_val) == (
        "/healthz", meta_pb2.IntOrString.STRING, "http")
    assert probe.http_headers[0].value == "yes"  # quoted in YAML: a string, not a bool
    assert container.liveness_probe.tcp_socket.port.int_val == 80


def test_loads_a_realistic_service() -> None:
    _, service = _load_pair()
    assert service.spec.type == "NodePort"
    assert service.spec.session_affinity_config.client_ip.timeout_seconds == 10800
    http, metrics = service.spec.ports
    assert (http.port, http.target_port.str_val, http.node_port) == (80, "http", 30080)
    assert metrics.target_port.type == meta_pb2.IntOrString.INT
    assert metrics.target_port.int_val == 9091


def test_to_dict_is_kubernetes_shaped() -> None:
    deployment, service = _load_pair()
    d = to_dict(deployment)
    assert list(d)[:4] == ["apiVersion", "kind", "metadata", "spec"]
    rolling = d["spec"]["strategy"]["rollingUpdate"]
    assert rolling == {"maxUnavailable": 0, "maxSurge": "25%"}
    container = d["spec"]["template"]["spec"]["containers"][0]
    assert container["ports"] == [{"name": "http", "containerPort": 80, "protocol": "TCP"}]
    assert container["readinessProbe"]["httpGet"]["port"] == "http"
    assert container["livenessProbe"]["tcpSocket"]["port"] == 80
    assert container["resources"]["limits"] == {"cpu": "1", "memory": "0.5Gi"}
    # int64 fields are numbers, as in Kubernetes (protobuf's JSON makes them strings).
    assert d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 30
    assert d["spec"]["template"]["spec"]["tolerations"][0]["tolerationSeconds"] == 300
    assert "status" not in d  # unset: omitted
    s = to_dict(service)
    assert s["spec"]["sessionAffinityConfig"] == {"clientIP": {"timeoutSeconds": 10800}}
    assert s["spec"]["ports"][1]["targetPort"] == 9091


def test_documents_round_trip_through_dicts_yaml_and_json() -> None:
    objects = list(_load_pair())
    assert [from_dict(to_dict(o)) for o in objects] == objects
    assert load_documents(dump_yaml(objects), source="out.yaml") == objects
    assert load_documents(dump_json(objects), source="out.json") == objects
    assert load_documents(dump_yaml(objects[0]), source="one.yaml") == objects[:1]
    assert load_documents(dump_json(objects[1]), source="one.json") == objects[1:]


def test_dumps() -> None:
    _, service = _load_pair()
    text = dump_yaml(service)
    assert text.startswith("apiVersion: v1\nkind: Service\nmetadata:\n  name: frontend\n")
    assert "---" not in text
    assert dump_yaml([service, service]).count("---") == 1
    assert json.loads(dump_json(service))["kind"] == "Service"
    listed = json.loads(dump_json([service, service]))
    assert (listed["apiVersion"], listed["kind"], len(listed["items"])) == ("v1", "List", 2)
    assert yaml.safe_load(dump_yaml({"kind": "Anything", "a": 1})) == {"kind": "Anything",
                                                                      "a": 1}


def test_field_names_are_kubernetes_spellings() -> None:
    pod = core_pb2.Pod(status=core_pb2.PodStatus(
        pod_ip="10.0.0.5", host_ip="127.0.1.1", pod_ips=[core_pb2.PodIP(ip="10.0.0.5")],
        container_statuses=[core_pb2.ContainerStatus(name="c", container_id="docker://1",
                                                     image_id="sha256:ab")]))
    status = to_dict(pod)["status"]
    assert status["podIP"] == "10.0.0.5" and status["hostIP"] == "127.0.1.1"
    assert status["podIPs"] == [{"ip": "10.0.0.5"}]
    assert status["containerStatuses"][0]["containerID"] == "docker://1"
    assert status["containerStatuses"][0]["imageID"] == "sha256:ab"
    node = to_dict(core_pb2.Node(spec=core_pb2.NodeSpec(pod_cidr="10.1.0.0/24",
                                                        provider_id="skiff://n1")))
    assert node["spec"] == {"podCIDR": "10.1.0.0/24", "providerID": "skiff://n1"}
    listed = to_dict(services_pb2.PodList(metadata=meta_pb2.ListMeta(continue_token="t")))
    assert listed["metadata"] == {"continue": "t"}  # the .proto's json_name wins
    # Kubernetes' spelling and the .proto's are accepted on the way in; nothing else.
    for spelled in ("podIP", "pod_ip"):
        doc = {"apiVersion": "v1", "kind": "Pod", "status": {spelled: "1.2.3.4"}}
        assert from_dict(doc).status.pod_ip == "1.2.3.4"
    with pytest.raises(ManifestError, match=r"status\.podIp: unknown field"):
        from_dict({"apiVersion": "v1", "kind": "Pod", "status": {"podIp": "1.2.3.4"}})


def test_to_dict_fills_in_api_version_and_kind() -> None:
    assert to_dict(core_pb2.Pod()) == {"apiVersion": "v1", "kind": "Pod"}
    assert to_dict(apps_pb2.ReplicaSet()) == {"apiVersion": "apps/v1", "kind": "ReplicaSet"}
    assert to_dict(core_pb2.EndpointsObject())["kind"] == "Endpoints"
    kept = to_dict(core_pb2.Pod(api_version="v1", kind="Pod", metadata=meta_pb2.ObjectMeta(
        name="p", generation=7, deletion_grace_period_seconds=0)))
    assert kept == {"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": "p", "generation": 7,
                                 "deletionGracePeriodSeconds": 0}}
    # Lists and their items, so a list loads back.
    pods = services_pb2.PodList(metadata=meta_pb2.ListMeta(resource_version="9",
                                                           remaining_item_count=2),
                                items=[core_pb2.Pod(metadata=meta_pb2.ObjectMeta(name="a"))])
    d = to_dict(pods)
    assert d == {"apiVersion": "v1", "kind": "PodList",
                 "metadata": {"resourceVersion": "9", "remainingItemCount": 2},
                 "items": [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"}}]}
    assert load_documents(dump_yaml(pods), source="list.yaml") == [
        core_pb2.Pod(api_version="v1", kind="Pod", metadata=meta_pb2.ObjectMeta(name="a"))]
    # Messages that are not kinds are converted without a header.
    assert to_dict(meta_pb2.ObjectMeta(name="x")) == {"name": "x"}


def test_quantities_accept_numbers() -> None:
    doc = yaml.safe_load("""
apiVersion: v1
kind: Node
metadata: {name: n1}
status:
  capacity: {cpu: 4, memory: 8Gi, pods: 110}
  allocatable: {cpu: 3.5, memory: 1e9}
""")
    node = from_dict(doc)
    assert dict(node.status.capacity) == {"cpu": "4", "memory": "8Gi", "pods": "110"}
    assert dict(node.status.allocatable) == {"cpu": "3.5", "memory": "1e9"}


def test_int_or_string_shapes() -> None:
    def port(value: Any) -> meta_pb2.IntOrString:
        svc = from_dict({"apiVersion": "v1", "kind": "Service",
                         "spec": {"ports": [{"port": 80, "targetPort": value}]}})
        return svc.spec.ports[0].target_port

    assert port(8080) == meta_pb2.IntOrString(type=meta_pb2.IntOrString.INT, int_val=8080)
    assert port("8080") == meta_pb2.IntOrString(type=meta_pb2.IntOrString.STRING,
                                                str_val="8080")
    assert port("http").str_val == "http"
    for bad in (True, 1.5, [80], {"intVal": 80}, 2**31):
        with pytest.raises(ManifestError, match=r"spec\.ports\[0\]\.targetPort"):
            port(bad)


def test_timestamps_stay_strings_from_yaml() -> None:
    [pod] = load_documents("""
apiVersion: v1
kind: Pod
metadata:
  name: p
  creationTimestamp: 2024-05-06T07:08:09Z
  deletionTimestamp: 2024-05-06T07:08:09.5+02:00
""", source="p.yaml")
    assert pod.metadata.creation_timestamp.seconds == 1714979289
    assert pod.metadata.deletion_timestamp.nanos == 500_000_000
    assert to_dict(pod)["metadata"]["creationTimestamp"] == "2024-05-06T07:08:09Z"


def test_nulls_are_unset_and_integral_floats_are_integers() -> None:
    pod = from_dict({"apiVersion": "v1", "kind": "Pod",
                     "metadata": {"name": "p", "labels": None},
                     "spec": {"containers": None, "priority": 3.0}})
    assert pod.metadata.name == "p" and not pod.metadata.labels
    assert pod.spec.priority == 3 and pod.spec.HasField("priority")


# ---- errors ----


def _error(text: str, source: str = "bad.yaml") -> str:
    with pytest.raises(ManifestError) as caught:
        load_documents(text, source=source)
    assert isinstance(caught.value, ValueError)
    return str(caught.value)


POD = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n"


@pytest.mark.parametrize(("text", "message"), [
    (POD + "spec:\n  containers:\n  - name: c\n    ports:\n    - containerPort: http\n",
     'bad.yaml: spec.containers[0].ports[0].containerPort: expected an integer, got "http"'),
    (POD + "spec: {foo: 1}\n", "bad.yaml: spec.foo: unknown field"),
    (POD + "spec: {containers: [{name: c, imagee: x}]}\n",
     "bad.yaml: spec.containers[0].imagee: unknown field"),
    (POD + "status: {phase: 1}\n", "bad.yaml: status.phase: expected a string, got 1"),
    ("apiVersion: v1\nkind: Pod\nmetadata: {labels: {version: 1.0}}\n",
     "bad.yaml: metadata.labels[version]: expected a string, got 1.0"),
    (POD + "spec: {hostNetwork: 'true'}\n",
     'bad.yaml: spec.hostNetwork: expected a boolean, got "true"'),
    (POD + "spec: {containers: {name: c}}\n",
     "bad.yaml: spec.containers: expected a list, got an object"),
    (POD + "spec: [1]\n", "bad.yaml: spec: expected an object, got a list"),
    (POD + "spec: {priority: 3000000000}\n",
     "bad.yaml: spec.priority: 3000000000 is out of range for int32"),
    (POD + "spec: {priority: 1.5}\n", "bad.yaml: spec.priority: expected an integer, got 1.5"),
    (POD + "spec: {containers: [{name: c, resources: {limits: {cpu: [1]}}}]}\n",
     "bad.yaml: spec.containers[0].resources.limits[cpu]: expected a string or a number, "
     "got a list"),
    (POD.replace("{name: p}", "{creationTimestamp: yesterday}"),
     'bad.yaml: metadata.creationTimestamp: expected an RFC 3339 time'),
    (POD + "spec: {nodeName: a, node_name: b}\n",
     'bad.yaml: spec.node_name: duplicate field: also given as "nodeName"'),
    ("apiVersion: v1\nkind: Deployment\n",
     'bad.yaml: kind Deployment is in apiVersion "apps/v1", not "v1"'),
    ("apiVersion: apps/v2\nkind: Deployment\n",
     'bad.yaml: kind Deployment is in apiVersion "apps/v1", not "apps/v2"'),
    ("kind: Pod\n", 'bad.yaml: apiVersion not set (kind Pod is "v1")'),
    ("apiVersion: v1\nkind: Widget\n", 'bad.yaml: unknown kind "Widget" (Skiff serves Namespace'),
    ("apiVersion: v1\n", "bad.yaml: kind not set"),
    ("- a\n- b\n", "bad.yaml: expected an object, got a list"),
    ("just a string\n", 'bad.yaml: expected an object, got "just a string"'),
    ("a: [\n", "bad.yaml: invalid YAML at line 2, column 1: did not find expected node content"),
    ("a: b\n  c: d\n", "bad.yaml: invalid YAML at line 2"),
    ('{"apiVersion": "v1",\n "kind": }', "bad.yaml: invalid JSON at line 2, column 10"),
    ('{"kind": "List", "items": {}}', "bad.yaml: items: expected a list, got an object"),
    ('{"kind": "List", "items": [{"apiVersion": "v1", "kind": "Pod", "spec": {"x": 1}}]}',
     "bad.yaml: items[0]: spec.x: unknown field"),
])
def test_errors_name_the_source_and_the_field(text: str, message: str) -> None:
    assert _error(text).startswith(message)


def test_errors_name_the_document() -> None:
    text = POD + "---\n" + POD + "---\n" + POD + "spec: {containers: [{name: c, ports: " \
        "[{containerPort: 80}, {containerPort: http}]}]}\n"
    assert _error(text, "web.yaml") == (
        "web.yaml (document 3): spec.containers[0].ports[1].containerPort: "
        'expected an integer, got "http"')
    # Empty documents count: the number is the one a reader counts in the file.
    assert _error("---\n---\n" + POD + "spec: {x: 1}\n", "w.yaml").startswith(
        "w.yaml (document 2): spec.x")


def test_manifest_error_carries_its_parts() -> None:
    with pytest.raises(ManifestError) as caught:
        from_dict({"apiVersion": "v1", "kind": "Pod", "spec": {"nodeName": 1}}, source="s")
    assert (caught.value.source, caught.value.path, caught.value.detail) == (
        "s", "spec.nodeName", "expected a string, got 1")
    with pytest.raises(ManifestError) as caught:
        from_dict({"apiVersion": "v1", "kind": "Pod", "spec": {"nodeName": 1}})
    assert str(caught.value) == "spec.nodeName: expected a string, got 1"


# ---- documents and lists ----


def test_empty_documents_are_skipped() -> None:
    assert load_documents("", source="e.yaml") == []
    assert load_documents("# only a comment\n", source="e.yaml") == []
    assert len(load_documents("---\n" + POD + "---\n---\n# nothing\n---\n" + POD,
                              source="e.yaml")) == 2
    assert load_documents("  \n", source="e.json") == []


def test_lists() -> None:
    text = """
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Namespace
  metadata: {name: prod}
- apiVersion: apps/v1
  kind: ReplicaSet
  metadata: {name: rs, namespace: prod}
---
apiVersion: v1
kind: PodList
metadata: {resourceVersion: "10"}
items:
- metadata: {name: a}
- {apiVersion: v1, kind: Pod, metadata: {name: b}}
"""
    objects = load_documents(text, source="lists.yaml")
    assert [(type(o).__name__, o.metadata.name) for o in objects] == [
        ("Namespace", "prod"), ("ReplicaSet", "rs"), ("Pod", "a"), ("Pod", "b")]
    assert objects[2].kind == "Pod" and objects[2].api_version == "v1"  # from the list's kind
    assert load_documents("apiVersion: v1\nkind: List\nitems: []\n", source="x") == []
    message = _error("apiVersion: v1\nkind: List\nitems:\n- metadata: {name: a}\n", "l.yaml")
    assert message == "l.yaml: items[0]: kind not set"


def test_json_documents() -> None:
    one = load_documents('{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"}}',
                         source="a.json")
    assert [o.metadata.name for o in one] == ["a"]
    stream = load_documents('{"apiVersion": "v1", "kind": "Node"}\n'
                            '{"apiVersion": "v1", "kind": "Namespace"}\n', source="s.json")
    assert [type(o).__name__ for o in stream] == ["Node", "Namespace"]
    listed = load_documents(json.dumps({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Service", "spec": {"ports": [{"port": 53,
                                                                     "targetPort": "dns"}]}},
    ]}), source="l.json")
    assert listed[0].spec.ports[0].target_port.str_val == "dns"
    assert _error('[{"kind": "Pod"}]', "arr.json") == "arr.json: expected an object, got a list"


# ---- properties: random objects of every kind survive the round trips ----

_INT_BOUNDS = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
}
_text = st.text(max_size=6)


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    if field.type == FieldDescriptor.TYPE_STRING:
        return _text
    if field.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if field.type == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=6)
    if field.type in _INT_BOUNDS:
        return st.integers(*_INT_BOUNDS[field.type])
    raise AssertionError(f"no strategy for {field.full_name}")


def _fill(draw: st.DrawFn, message: Message, depth: int) -> None:
    name = message.DESCRIPTOR.full_name
    if name == "skiff.api.v1.IntOrString":
        if draw(st.booleans()):
            message.type, message.int_val = message.INT, draw(st.integers(-(2**31), 2**31 - 1))
        else:
            message.type, message.str_val = message.STRING, draw(_text)
        return
    if name == "google.protobuf.Timestamp":
        message.seconds = draw(st.integers(0, 253402300799))
        message.nanos = draw(st.integers(0, 999_999_999))
        return
    for field in message.DESCRIPTOR.fields:
        if not draw(st.booleans()):
            continue
        is_message = field.type == FieldDescriptor.TYPE_MESSAGE
        if is_message and field.message_type.GetOptions().map_entry:
            values = _scalar(field.message_type.fields_by_name["value"])
            getattr(message, field.name).update(draw(st.dictionaries(_text, values, max_size=2)))
        elif field.is_repeated:
            container = getattr(message, field.name)
            for _ in range(draw(st.integers(0, 2 if depth < 3 else 0))):
                if is_message:
                    _fill(draw, container.add(), depth + 1)
                else:
                    container.append(draw(_scalar(field)))
        elif is_message:
            if depth < 4:
                sub = getattr(message, field.name)
                sub.SetInParent()
                _fill(draw, sub, depth + 1)
        else:
            setattr(message, field.name, draw(_scalar(field)))


@st.composite
def objects(draw: st.DrawFn) -> Message:
    kind: Kind = draw(st.sampled_from(KINDS))
    message = kind.message()
    _fill(draw, message, 0)
    message.api_version, message.kind = kind.api_version, kind.kind
    return message


_slow = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_slow
@given(objects())
def test_random_objects_round_trip_through_dicts(obj: Message) -> None:
    d = to_dict(obj)
    assert from_dict(d) == obj
    assert json.loads(json.dumps(d)) == d  # plain JSON types only


@_slow
@given(objects())
def test_random_objects_round_trip_through_yaml_and_json(obj: Message) -> None:
    assert load_documents(dump_yaml(obj), source="r.yaml") == [obj]
    assert load_documents(dump_json(obj), source="r.json") == [obj]


@_slow
@given(st.lists(objects(), max_size=3))
def test_random_documents_round_trip(objs: list[Message]) -> None:
    assert load_documents(dump_yaml(objs), source="r.yaml") == objs
    assert load_documents(dump_json(objs), source="r.json") == objs


@_slow
@given(objects())
def test_to_dict_never_writes_int64_as_strings_or_int_or_string_as_objects(obj: Message) -> None:
    def walk(descriptor: Any, data: Any) -> None:
        fields = {f.json_name: f for f in descriptor.fields}
        for key, value in data.items():
            field = fields[key]
            values = value if isinstance(value, list) else [value]
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                if field.message_type.GetOptions().map_entry:
                    continue
                for item in values:
                    if field.message_type.full_name == "skiff.api.v1.IntOrString":
                        assert isinstance(item, int | str)
                    elif field.message_type.full_name != "google.protobuf.Timestamp":
                        walk(field.message_type, item)
            elif field.type == FieldDescriptor.TYPE_INT64:
                assert all(isinstance(item, int) for item in values)

    walk(obj.DESCRIPTOR, to_dict(obj))
