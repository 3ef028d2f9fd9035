"""Per-kind strategies: Kubernetes' defaults, validation rules and update rules.

Objects are written as Kubernetes manifests (camelCase dicts parsed with protobuf's
JSON mapping) and run through the strategy in the order the registry calls it; each
rule is checked good and bad, with the exact field path of the error.
"""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import json_format
from google.protobuf.message import Message

from services.apiserver.strategies import STRATEGIES
from services.apiserver.strategies.deployment import DeploymentStrategy
from services.apiserver.strategies.pod import (
    UPDATE_FORBIDDEN,
    PodStrategy,
    qos_class,
    validate_pod_spec,
)
from services.apiserver.strategy import Strategy
from skiff.api.errors import FieldError
from skiff.api.kinds import KINDS, lookup
from skiff.api.v1 import core_pb2

# ---- helpers ----


def make(kind: str, manifest: dict[str, Any]) -> Message:
    """An object of ``kind`` from a manifest dict (as a YAML file would hold it)."""
    obj = lookup(kind).new()
    json_format.ParseDict(manifest, obj)
    return obj


def created(kind: str, manifest: dict[str, Any]) -> Message:
    """What create does before the metadata checks: default, then prepare_for_create."""
    obj = make(kind, manifest)
    STRATEGIES[kind].default(obj)
    STRATEGIES[kind].prepare_for_create(obj)
    return obj


def errors_of(kind: str, manifest: dict[str, Any]) -> list[FieldError]:
    return STRATEGIES[kind].validate(created(kind, manifest))


def update_errors(kind: str, old: Message, new_manifest: dict[str, Any]) -> list[FieldError]:
    """The registry's update sequence: default -> prepare_for_update -> validate(_update)."""
    strategy = STRATEGIES[kind]
    new = make(kind, new_manifest)
    strategy.default(new)
    strategy.prepare_for_update(new, old)
    return strategy.validate(new) + strategy.validate_update(new, old)


def fields(errors: list[FieldError]) -> list[str]:
    return [e.field for e in errors]


def detail(errors: list[FieldError], field: str) -> str:
    matching = [e.detail for e in errors if e.field == field]
    assert matching, f"no error on {field}: {errors}"
    return matching[0]


def num(n: int) -> dict[str, Any]:
    return {"intVal": n}


def name(text: str) -> dict[str, Any]:
    return {"type": "STRING", "strVal": text}


def pod(**spec: Any) -> dict[str, Any]:
    containers = spec.pop("containers", [{"name": "web", "image": "nginx:1.25"}])
    return {"metadata": {"name": "web-0", "namespace": "default"},
            "spec": {"containers": containers, **spec}}


def container(**fields_: Any) -> dict[str, Any]:
    return {"name": "web", "image": "nginx:1.25", **fields_}


# ---- the table ----


def test_every_kind_has_a_strategy_for_itself():
    assert set(STRATEGIES) == {k.kind for k in KINDS}
    for kind in KINDS:
        assert isinstance(STRATEGIES[kind.kind], Strategy)
        assert STRATEGIES[kind.kind].kind is kind
    assert isinstance(STRATEGIES["Pod"], PodStrategy)
    assert isinstance(STRATEGIES["Deployment"], DeploymentStrategy)


# ---- Pod: defaults ----


def test_pod_defaults():
    obj = created("Pod", pod(
        containers=[container(ports=[{"containerPort": 80}],
                              livenessProbe={"httpGet": {"port": num(80)}})],
        tolerations=[{"key": "dedicated", "value": "web"}]))
    spec = obj.spec
    assert spec.restart_policy == "Always"
    assert spec.scheduler_name == "default-scheduler"
    assert spec.termination_grace_period_seconds == 30
    assert spec.HasField("priority") and spec.priority == 0
    c = spec.containers[0]
    assert c.image_pull_policy == "IfNotPresent"
    assert c.ports[0].protocol == "TCP"
    assert c.termination_message_path == "/dev/termination-log"
    probe = c.liveness_probe
    assert (probe.timeout_seconds, probe.period_seconds, probe.success_threshold,
            probe.failure_threshold) == (1, 10, 1, 3)
    assert (probe.http_get.path, probe.http_get.scheme) == ("/", "HTTP")
    assert not c.HasField("readiness_probe")  # defaulting does not invent probes
    assert spec.tolerations[0].operator == "Equal"
    assert STRATEGIES["Pod"].validate(obj) == []


def test_pod_defaults_keep_what_is_set_and_are_idempotent():
    obj = created("Pod", pod(restartPolicy="Never", schedulerName="custom",
                             terminationGracePeriodSeconds=0, priority=7,
                             containers=[container(imagePullPolicy="Never")]))
    once = type(obj)()
    once.CopyFrom(obj)
    STRATEGIES["Pod"].default(obj)
    assert obj == once
    assert (obj.spec.restart_policy, obj.spec.scheduler_name) == ("Never", "custom")
    assert obj.spec.termination_grace_period_seconds == 0
    assert obj.spec.priority == 7
    assert obj.spec.containers[0].image_pull_policy == "Never"


def test_a_limit_without_a_request_becomes_the_request():
    obj = created("Pod", pod(containers=[container(resources={
        "limits": {"cpu": "500m", "memory": "128Mi"}, "requests": {"cpu": "100m"}})]))
    requests = obj.spec.containers[0].resources.requests
    assert dict(requests) == {"cpu": "100m", "memory": "128Mi"}


def test_create_resets_the_status_to_pending_with_the_qos_class():
    obj = make("Pod", pod())
    obj.status.phase = "Running"
    obj.status.pod_ip = "10.0.0.9"
    STRATEGIES["Pod"].default(obj)
    STRATEGIES["Pod"].prepare_for_create(obj)
    assert obj.status == core_pb2.PodStatus(phase="Pending", qos_class="BestEffort")


# ---- Pod: QoS ----


def spec_with(*resources: dict[str, Any], init: dict[str, Any] | None = None) -> core_pb2.PodSpec:
    manifest = {"containers": [container(name=f"c{i}", resources=r)
                               for i, r in enumerate(resources)]}
    if init is not None:
        manifest["initContainers"] = [container(name="init", resources=init)]
    spec = core_pb2.PodSpec()
    json_format.ParseDict(manifest, spec)
    return spec


GUARANTEED = {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "1", "memory": "1Gi"}}


@pytest.mark.parametrize(("resources", "expected"), [
    ([{}], "BestEffort"),
    ([{}, {}], "BestEffort"),
    ([{"requests": {"cpu": "0", "memory": "0"}}], "BestEffort"),
    ([{"requests": {"ephemeral-storage": "1Gi"}}], "BestEffort"),
    ([{"requests": {"cpu": "100m"}}], "Burstable"),
    ([{"limits": {"memory": "1Gi"}}], "Burstable"),
    ([GUARANTEED], "Guaranteed"),
    ([GUARANTEED, GUARANTEED], "Guaranteed"),
    ([GUARANTEED, {}], "Burstable"),
    ([{"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "500m",
                                                             "memory": "1Gi"}}], "Burstable"),
    ([{"limits": {"cpu": "1000m", "memory": "1024Mi"},
       "requests": {"cpu": "1", "memory": "1Gi"}}], "Guaranteed"),
    ([{"limits": {"cpu": "1", "memory": "1Gi"}}], "Burstable"),  # before defaulting
    ([{"requests": {"cpu": "lots"}}], "BestEffort"),  # invalid: validation's business
])
def test_qos_class(resources, expected):
    assert qos_class(spec_with(*resources)) == expected


def test_qos_counts_init_containers():
    assert qos_class(spec_with(GUARANTEED, init={})) == "Burstable"
    assert qos_class(spec_with({}, init={"requests": {"memory": "64Mi"}})) == "Burstable"
    assert qos_class(spec_with(GUARANTEED, init=GUARANTEED)) == "Guaranteed"


def test_limits_alone_make_a_created_pod_guaranteed():
    obj = created("Pod", pod(containers=[container(resources={
        "limits": {"cpu": "1", "memory": "1Gi"}})]))
    assert obj.status.qos_class == "Guaranteed"


# ---- Pod: validation ----


def test_a_full_valid_pod_has_no_errors():
    manifest = pod(
        initContainers=[container(name="setup", image="busybox")],
        containers=[container(
            ports=[{"name": "http", "containerPort": 8080, "hostPort": 80},
                   {"name": "metrics", "containerPort": 9090, "protocol": "UDP"}],
            env=[{"name": "MY_VAR.name-1", "value": "x"}],
            resources={"limits": {"cpu": "1", "memory": "256Mi"},
                       "requests": {"cpu": "250m", "memory": "256Mi"}},
            livenessProbe={"tcpSocket": {"port": name("http")}},
            readinessProbe={"exec": {"command": ["true"]}, "successThreshold": 3},
            startupProbe={"httpGet": {"port": num(8080), "path": "/healthz"}})],
        nodeSelector={"disktype": "ssd", "kubernetes.io/os": "linux"},
        tolerations=[{"operator": "Exists"},
                     {"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                      "effect": "NoExecute", "tolerationSeconds": 300}],
        affinity={"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]},
                                      {"key": "cores", "operator": "Gt", "values": ["3"]},
                                      {"key": "gpu", "operator": "DoesNotExist"}],
                 "matchFields": [{"key": "metadata.name", "operator": "In",
                                  "values": ["node-1"]}]}]},
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 10, "preference": {"matchExpressions": [
                    {"key": "zone", "operator": "NotIn", "values": ["b"]}]}}]}},
        activeDeadlineSeconds=600,
        hostname="web-0")
    assert errors_of("Pod", manifest) == []


BAD_PODS = [
    (pod(containers=[]), "spec.containers", "required"),
    (pod(containers=[container(name="Web_1")]), "spec.containers[0].name", "RFC 1123"),
    (pod(containers=[container(name="")]), "spec.containers[0].name", "required"),
    (pod(containers=[container(), container(image="redis")]), "spec.containers[1].name",
     'Duplicate value: "web"'),
    (pod(initContainers=[container(image="busybox")]), "spec.containers[0].name",
     'Duplicate value: "web"'),
    (pod(containers=[container(image="")]), "spec.containers[0].image", "required"),
    (pod(containers=[container(image=" nginx")]), "spec.containers[0].image",
     "whitespace"),
    (pod(containers=[container(imagePullPolicy="Sometimes")]),
     "spec.containers[0].imagePullPolicy", 'Unsupported value: "Sometimes"'),
    (pod(containers=[container(ports=[{"containerPort": 0}])]),
     "spec.containers[0].ports[0].containerPort", "must be between 1 and 65535, inclusive"),
    (pod(containers=[container(ports=[{"containerPort": 70000}])]),
     "spec.containers[0].ports[0].containerPort", "must be between 1 and 65535, inclusive"),
    (pod(containers=[container(ports=[{"containerPort": 80, "hostPort": 65536}])]),
     "spec.containers[0].ports[0].hostPort", "must be between 1 and 65535, inclusive"),
    (pod(containers=[container(ports=[{"containerPort": 80, "protocol": "HTTP"}])]),
     "spec.containers[0].ports[0].protocol",
     'Unsupported value: "HTTP": supported values: "TCP", "UDP", "SCTP"'),
    (pod(containers=[container(ports=[{"containerPort": 80, "name": "a-very-long-port-name"}])]),
     "spec.containers[0].ports[0].name", "must be no more than 15 characters"),
    (pod(containers=[container(ports=[{"containerPort": 80, "name": "8080"}])]),
     "spec.containers[0].ports[0].name", "at least one letter"),
    (pod(containers=[container(ports=[{"containerPort": 80, "name": "Http"}])]),
     "spec.containers[0].ports[0].name", "alpha-numeric"),
    (pod(containers=[container(ports=[{"containerPort": 80, "name": "web--x"}])]),
     "spec.containers[0].ports[0].name", "consecutive hyphens"),
    (pod(containers=[container(ports=[{"containerPort": 80, "name": "http"},
                                      {"containerPort": 81, "name": "http"}])]),
     "spec.containers[0].ports[1].name", 'Duplicate value: "http"'),
    (pod(containers=[container(ports=[{"containerPort": 80, "hostPort": 80}]),
                     container(name="side", ports=[{"containerPort": 81, "hostPort": 80}])]),
     "spec.containers[1].ports[0].hostPort", "Duplicate value"),
    (pod(hostNetwork=True, containers=[container(ports=[{"containerPort": 80,
                                                         "hostPort": 8080}])]),
     "spec.containers[0].ports[0].containerPort", "must match `hostPort`"),
    (pod(containers=[container(env=[{"name": "1BAD"}])]), "spec.containers[0].env[0].name",
     "environment variable name"),
    (pod(containers=[container(env=[{"value": "x"}])]), "spec.containers[0].env[0].name",
     "required"),
    (pod(containers=[container(resources={"limits": {"cpu": "lots"}})]),
     "spec.containers[0].resources.limits[cpu]", "quantities must match"),
    (pod(containers=[container(resources={"requests": {"memory": "-1Gi"}})]),
     "spec.containers[0].resources.requests[memory]", "must be greater than or equal to 0"),
    (pod(containers=[container(resources={"requests": {"gpu": "1"}})]),
     "spec.containers[0].resources.requests[gpu]", "standard resource"),
    (pod(containers=[container(resources={"limits": {"cpu": "1"},
                                          "requests": {"cpu": "1500m"}})]),
     "spec.containers[0].resources.requests[cpu]",
     "must be less than or equal to cpu limit of 1"),
    (pod(containers=[container(resources={"limits": {"memory": "1Gi"},
                                          "requests": {"memory": "2Gi"}})]),
     "spec.containers[0].resources.requests[memory]",
     "must be less than or equal to memory limit of 1Gi"),
    (pod(containers=[container(livenessProbe={"periodSeconds": 5})]),
     "spec.containers[0].livenessProbe", "must specify a handler type"),
    (pod(containers=[container(readinessProbe={"exec": {"command": ["true"]},
                                               "tcpSocket": {"port": num(80)}})]),
     "spec.containers[0].readinessProbe.tcpSocket", "may not specify more than 1 handler type"),
    (pod(containers=[container(livenessProbe={"httpGet": {"port": num(0)}})]),
     "spec.containers[0].livenessProbe.httpGet.port", "must be between 1 and 65535, inclusive"),
    (pod(containers=[container(livenessProbe={"tcpSocket": {"port": name("HTTP")}})]),
     "spec.containers[0].livenessProbe.tcpSocket.port", "alpha-numeric"),
    (pod(containers=[container(livenessProbe={"httpGet": {"port": num(80),
                                                          "scheme": "FTP"}})]),
     "spec.containers[0].livenessProbe.httpGet.scheme", 'Unsupported value: "FTP"'),
    (pod(containers=[container(livenessProbe={"exec": {"command": ["true"]},
                                              "successThreshold": 2})]),
     "spec.containers[0].livenessProbe.successThreshold", "must be 1"),
    (pod(containers=[container(readinessProbe={"exec": {"command": ["true"]},
                                               "initialDelaySeconds": -1})]),
     "spec.containers[0].readinessProbe.initialDelaySeconds",
     "must be greater than or equal to 0"),
    (pod(initContainers=[container(name="setup", readinessProbe={"exec": {"command": ["x"]}})]),
     "spec.initContainers[0].readinessProbe", "may not be set for init containers"),
    (pod(restartPolicy="Sometimes"), "spec.restartPolicy",
     'Unsupported value: "Sometimes": supported values: "Always", "OnFailure", "Never"'),
    (pod(nodeSelector={"-bad": "x"}), "spec.nodeSelector[-bad]", "name part"),
    (pod(nodeSelector={"disk": "not valid"}), "spec.nodeSelector[disk]", "a valid label"),
    (pod(tolerations=[{"key": "k", "operator": "Exists", "value": "v"}]),
     "spec.tolerations[0].operator", "value must be empty when `operator` is 'Exists'"),
    (pod(tolerations=[{"key": "k", "operator": "Like"}]), "spec.tolerations[0].operator",
     'Unsupported value: "Like": supported values: "Equal", "Exists"'),
    (pod(tolerations=[{"value": "v"}]), "spec.tolerations[0].operator",
     "operator must be Exists when `key` is empty"),
    (pod(tolerations=[{"key": "k", "effect": "NoWay"}]), "spec.tolerations[0].effect",
     'Unsupported value: "NoWay": supported values: "NoSchedule", "PreferNoSchedule", '
     '"NoExecute"'),
    (pod(tolerations=[{"key": "k", "effect": "NoSchedule", "tolerationSeconds": 60}]),
     "spec.tolerations[0].effect", "effect must be 'NoExecute' when `tolerationSeconds` is set"),
    (pod(tolerations=[{"key": "bad key"}]), "spec.tolerations[0].key", "name part"),
    (pod(affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {}}}),
     "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
     ".nodeSelectorTerms", "must have at least one node selector term"),
    (pod(affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In"}]}]}}}),
     "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
     ".nodeSelectorTerms[0].matchExpressions[0].values",
     "must be specified when `operator` is 'In' or 'NotIn'"),
    (pod(affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "Near"}]}]}}}),
     "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
     ".nodeSelectorTerms[0].matchExpressions[0].operator", 'Unsupported value: "Near"'),
    (pod(affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [
            {"key": "gpu", "operator": "Exists", "values": ["x"]}]}]}}}),
     "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
     ".nodeSelectorTerms[0].matchExpressions[0].values",
     "may not be specified when `operator` is 'Exists' or 'DoesNotExist'"),
    (pod(affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [
            {"key": "cores", "operator": "Gt", "values": ["1", "2"]}]}]}}}),
     "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
     ".nodeSelectorTerms[0].matchExpressions[0].values", "must be specified single value"),
    (pod(affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [
            {"key": "cores", "operator": "Lt", "values": ["many"]}]}]}}}),
     "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
     ".nodeSelectorTerms[0].matchExpressions[0].values[0]", "must be an integer"),
    (pod(affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchFields": [
            {"key": "metadata.name", "operator": "In", "values": ["a", "b"]}]}]}}}),
     "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
     ".nodeSelectorTerms[0].matchFields[0].values", "must be only one value"),
    (pod(affinity={"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 0, "preference": {}}]}}),
     "spec.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight",
     "must be between 1 and 100, inclusive"),
    (pod(terminationGracePeriodSeconds=-1), "spec.terminationGracePeriodSeconds",
     "must be greater than or equal to 0"),
    (pod(activeDeadlineSeconds=0), "spec.activeDeadlineSeconds",
     "must be between 1 and 2147483647, inclusive"),
    (pod(nodeName="Node_1"), "spec.nodeName", "RFC 1123 subdomain"),
]


@pytest.mark.parametrize(("manifest", "field", "text"), BAD_PODS,
                         ids=[f"{i}-{case[1]}" for i, case in enumerate(BAD_PODS)])
def test_pod_validation_rejects(manifest, field, text):
    errors = errors_of("Pod", manifest)
    assert text in detail(errors, field)


def test_duplicate_container_names_are_reported_once_each():
    errors = errors_of("Pod", pod(containers=[container(), container(), container()]))
    assert fields(errors) == ["spec.containers[1].name", "spec.containers[2].name"]


def test_validate_pod_spec_places_errors_under_the_given_path():
    spec = core_pb2.PodSpec()
    json_format.ParseDict({"containers": [{"name": "web"}], "restartPolicy": "Always"}, spec)
    errors = validate_pod_spec(spec, "spec.template.spec")
    assert "spec.template.spec.containers[0].image" in fields(errors)


# ---- Pod: updates ----


@pytest.fixture
def running_pod() -> Message:
    obj = created("Pod", pod(
        containers=[container()],
        tolerations=[{"key": "k", "operator": "Exists", "effect": "NoExecute",
                      "tolerationSeconds": 300}],
        activeDeadlineSeconds=600, nodeName="node-1"))
    obj.status.phase = "Running"
    return obj


def updated(old: Message, change) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    manifest = json_format.MessageToDict(old)
    manifest.pop("status", None)
    change(manifest["spec"])
    return manifest


def test_pod_update_may_change_the_mutable_fields(running_pod):
    def change(spec: dict[str, Any]) -> None:
        spec["containers"][0]["image"] = "nginx:1.26"
        spec["activeDeadlineSeconds"] = "300"
        spec["terminationGracePeriodSeconds"] = "5"
        spec["tolerations"][0]["tolerationSeconds"] = "60"
        spec["tolerations"].append({"key": "extra", "operator": "Exists"})

    assert update_errors("Pod", running_pod, updated(running_pod, change)) == []


@pytest.mark.parametrize("change", [
    lambda s: s.update(restartPolicy="Never"),
    lambda s: s["containers"].append(container(name="side")),
    lambda s: s["containers"][0].update(env=[{"name": "A", "value": "1"}]),
    lambda s: s.update(nodeSelector={"disk": "ssd"}),
    lambda s: s["containers"][0].update(name="other"),
])
def test_pod_update_may_not_change_anything_else(running_pod, change):
    errors = update_errors("Pod", running_pod, updated(running_pod, change))
    assert errors == [FieldError("spec", UPDATE_FORBIDDEN)]


def test_pod_update_may_only_add_tolerations(running_pod):
    errors = update_errors("Pod", running_pod,
                           updated(running_pod, lambda s: s.update(tolerations=[])))
    assert detail(errors, "spec.tolerations") == (
        "existing toleration can not be modified except its tolerationSeconds")


def test_active_deadline_may_only_shrink(running_pod):
    grown = update_errors("Pod", running_pod, updated(
        running_pod, lambda s: s.update(activeDeadlineSeconds="900")))
    assert detail(grown, "spec.activeDeadlineSeconds") == (
        "must be less than or equal to previous value")
    removed = update_errors("Pod", running_pod, updated(
        running_pod, lambda s: s.pop("activeDeadlineSeconds")))
    assert detail(removed, "spec.activeDeadlineSeconds") == (
        "must not update from a positive integer to nil value")


def test_node_name_is_set_once(running_pod):
    moved = update_errors("Pod", running_pod, updated(
        running_pod, lambda s: s.update(nodeName="node-2")))
    assert moved == [FieldError("spec.nodeName", "field is immutable")]
    unbound = created("Pod", pod())
    bound = update_errors("Pod", unbound, updated(unbound, lambda s: s.update(nodeName="node-1")))
    assert bound == []


def test_pod_update_keeps_the_status_and_status_update_keeps_the_spec(running_pod):
    strategy = STRATEGIES["Pod"]
    new = make("Pod", updated(running_pod, lambda s: s["containers"][0].update(image="x:2")))
    new.status.phase = "Failed"
    strategy.prepare_for_update(new, running_pod)
    assert new.status.phase == "Running"

    status = make("Pod", updated(running_pod, lambda s: s.update(restartPolicy="Never")))
    status.status.phase = "Succeeded"
    strategy.prepare_for_status_update(status, running_pod)
    assert status.spec == running_pod.spec
    assert status.status.phase == "Succeeded"


# ---- Node ----


def node(**spec: Any) -> dict[str, Any]:
    """A Node manifest. NodeSpec's proto has no json_name for podCIDR/providerID, so
    protobuf's JSON spells them podCidr/providerId; error paths use Kubernetes' names."""
    return {"metadata": {"name": "node-1"}, "spec": spec,
            "status": {"capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                       "allocatable": {"cpu": "3800m", "memory": "7Gi", "pods": "110"}}}


def test_node_keeps_its_registered_status_on_create():
    obj = created("Node", node(podCIDR="10.244.1.0/24"))
    assert obj.status.capacity["cpu"] == "4"
    assert list(obj.spec.pod_cidrs) == ["10.244.1.0/24"]
    assert STRATEGIES["Node"].validate(obj) == []


def test_node_accepts_distinct_taints():
    taints = [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"},
              {"key": "dedicated", "value": "gpu", "effect": "NoExecute"},
              {"key": "example.com/maintenance", "effect": "PreferNoSchedule"}]
    assert errors_of("Node", node(taints=taints)) == []


@pytest.mark.parametrize(("manifest", "field", "text"), [
    (node(taints=[{"key": "k"}]), "spec.taints[0].effect", "required"),
    (node(taints=[{"key": "k", "effect": "Sometimes"}]), "spec.taints[0].effect",
     'Unsupported value: "Sometimes": supported values: "NoSchedule", "PreferNoSchedule", '
     '"NoExecute"'),
    (node(taints=[{"effect": "NoSchedule"}]), "spec.taints[0].key", "required"),
    (node(taints=[{"key": "a/b/c", "effect": "NoSchedule"}]), "spec.taints[0].key",
     "qualified name"),
    (node(taints=[{"key": "k", "value": "not valid", "effect": "NoSchedule"}]),
     "spec.taints[0].value", "a valid label"),
    (node(taints=[{"key": "k", "value": "1", "effect": "NoSchedule"},
                  {"key": "k", "value": "2", "effect": "NoSchedule"}]),
     "spec.taints[1]", "taints must be unique by key and effect pair"),
    (node(podCIDR="10.244.1.0"), "spec.podCIDR", "must be a valid CIDR"),
    (node(podCIDR="10.244.1.0/33"), "spec.podCIDR", "must be a valid CIDR"),
    (node(podCIDRs=["10.244.1.0/24", "10.245.1.0/24"]), "spec.podCIDRs",
     "no more than one CIDR for each IP family"),
])
def test_node_validation_rejects(manifest, field, text):
    assert text in detail(errors_of("Node", manifest), field)


def test_node_capacity_must_be_quantities_of_known_resources():
    manifest = node()
    manifest["status"]["capacity"] = {"cpu": "four", "memory": "-1", "gpus": "1",
                                      "example.com/gpu": "2"}
    errors = errors_of("Node", manifest)
    assert fields(errors) == ["status.capacity[cpu]", "status.capacity[gpus]",
                              "status.capacity[memory]"]
    assert "standard resource" in detail(errors, "status.capacity[gpus]")
    obj = created("Node", node())
    status = make("Node", manifest)
    assert fields(STRATEGIES["Node"].validate_status_update(status, obj)) == fields(errors)


def test_node_pod_cidr_and_provider_id_are_set_once():
    old = created("Node", node())
    assert update_errors("Node", old, node(podCIDR="10.244.1.0/24", providerID="skiff://1")) == []
    old = created("Node", node(podCIDR="10.244.1.0/24", providerID="skiff://1"))
    errors = update_errors("Node", old, node(podCIDR="10.244.2.0/24", providerID="skiff://2"))
    assert fields(errors) == ["spec.podCIDR", "spec.podCIDRs", "spec.providerID"]
    assert detail(errors, "spec.podCIDR") == (
        'node updates may not change podCIDR except from "" to valid')
    assert detail(errors, "spec.providerID") == (
        'node updates may not change providerID except from "" to valid')
    assert update_errors("Node", old, node(podCIDR="10.244.1.0/24", providerID="skiff://1",
                                           unschedulable=True)) == []


def test_node_pod_cidr_changed_alone_is_refused_not_ignored():
    # A client that copies the node and sets only podCIDR (podCIDRs still the old one)
    # is told no on spec.podCIDR; the old podCIDRs[0] does not silently win.
    old = created("Node", node(podCIDR="10.244.1.0/24"))
    errors = update_errors("Node", old, node(podCIDR="10.244.2.0/24",
                                             podCIDRs=["10.244.1.0/24"]))
    assert "spec.podCIDRs" not in fields(errors)
    assert 'node updates may not change podCIDR except from "" to valid' in [
        e.detail for e in errors if e.field == "spec.podCIDR"]
    # Clearing it is a change too.
    assert "spec.podCIDR" in fields(update_errors("Node", old, node()))


def test_node_pod_cidr_and_pod_cidrs_fill_each_other_and_must_agree():
    assert created("Node", node(podCIDRs=["10.244.3.0/24"])).spec.pod_cidr == "10.244.3.0/24"
    errors = errors_of("Node", node(podCIDR="10.244.1.0/24", podCIDRs=["10.244.2.0/24"]))
    assert detail(errors, "spec.podCIDR") == "must be the first of spec.podCIDRs (10.244.2.0/24)"


# ---- Service ----


def service(**spec: Any) -> dict[str, Any]:
    spec.setdefault("ports", [{"port": 80}])
    spec.setdefault("selector", {"app": "web"})
    return {"metadata": {"name": "web", "namespace": "default"}, "spec": spec}


def test_service_defaults():
    obj = created("Service", service(ports=[{"name": "http", "port": 80},
                                            {"name": "dns", "port": 53, "protocol": "UDP",
                                             "targetPort": name("dns-port")}]))
    spec = obj.spec
    assert (spec.type, spec.session_affinity) == ("ClusterIP", "None")
    assert not spec.HasField("session_affinity_config")
    assert spec.ports[0].protocol == "TCP"
    assert spec.ports[0].target_port.int_val == 80
    assert spec.ports[1].protocol == "UDP"
    assert spec.ports[1].target_port.str_val == "dns-port"
    assert spec.external_traffic_policy == ""
    assert STRATEGIES["Service"].validate(obj) == []


def test_service_client_ip_affinity_and_node_port_defaults():
    obj = created("Service", service(type="NodePort", sessionAffinity="ClientIP",
                                     clusterIP="127.10.0.5"))
    spec = obj.spec
    assert spec.session_affinity_config.client_ip.timeout_seconds == 10800
    assert spec.external_traffic_policy == "Cluster"
    assert list(spec.cluster_ips) == ["127.10.0.5"]
    assert STRATEGIES["Service"].validate(obj) == []


def test_headless_service_may_have_no_ports():
    assert errors_of("Service", service(clusterIP="None", ports=[])) == []


@pytest.mark.parametrize(("manifest", "field", "text"), [
    (service(ports=[]), "spec.ports", "required"),
    (service(ports=[{"port": 0}]), "spec.ports[0].port",
     "must be between 1 and 65535, inclusive"),
    (service(ports=[{"port": 80, "name": "http"}, {"port": 443}]), "spec.ports[1].name",
     "required"),
    (service(ports=[{"port": 80, "name": "web"}, {"port": 443, "name": "web"}]),
     "spec.ports[1].name", 'Duplicate value: "web"'),
    (service(ports=[{"port": 80, "name": "Web"}]), "spec.ports[0].name", "RFC 1123 label"),
    (service(ports=[{"port": 80, "name": "a"}, {"port": 80, "name": "b"}]), "spec.ports[1]",
     'Duplicate value: "80/TCP"'),
    (service(ports=[{"port": 80, "protocol": "ICMP"}]), "spec.ports[0].protocol",
     'Unsupported value: "ICMP"'),
    (service(ports=[{"port": 80, "targetPort": num(70000)}]), "spec.ports[0].targetPort",
     "must be between 1 and 65535, inclusive"),
    (service(ports=[{"port": 80, "targetPort": name("web_port")}]), "spec.ports[0].targetPort",
     "alpha-numeric"),
    (service(ports=[{"port": 80, "nodePort": 30080}]), "spec.ports[0].nodePort",
     "may not be used when `type` is 'ClusterIP'"),
    (service(type="NodePort", ports=[{"port": 80, "nodePort": 8080}]),
     "spec.ports[0].nodePort", "The range of valid ports is 30000-32767"),
    (service(type="NodePort", ports=[{"port": 80, "name": "a", "nodePort": 30080},
                                     {"port": 81, "name": "b", "nodePort": 30080}]),
     "spec.ports[1].nodePort", 'Duplicate value: "30080"'),
    (service(type="loadbalancer"), "spec.type",
     'Unsupported value: "loadbalancer": supported values: "ClusterIP", "NodePort", '
     '"LoadBalancer", "ExternalName"'),
    (service(type="ClusterIP", ports=[{"port": 80, "nodePort": 30080}]),
     "spec.ports[0].nodePort", "may not be used when `type` is 'ClusterIP'"),
    (service(type="ExternalName", ports=[]), "spec.externalName", "required"),
    (service(type="ExternalName", externalName="Not_A.Name"), "spec.externalName",
     "RFC 1123 subdomain"),
    (service(type="ExternalName", externalName="db.example.org", clusterIP="10.0.0.1"),
     "spec.clusterIP", "may not be set for ExternalName services"),
    (service(sessionAffinity="Sticky"), "spec.sessionAffinity",
     'Unsupported value: "Sticky": supported values: "None", "ClientIP"'),
    (service(sessionAffinity="ClientIP",
             sessionAffinityConfig={"clientIP": {"timeoutSeconds": 0}}),
     "spec.sessionAffinityConfig.clientIP.timeoutSeconds", "must be greater than 0"),
    (service(sessionAffinityConfig={"clientIP": {"timeoutSeconds": 60}}),
     "spec.sessionAffinityConfig", "must not be set when session affinity is None"),
    (service(clusterIP="10.0.0.300"), "spec.clusterIP", "valid IPv4 address"),
    (service(clusterIP="fd00::1"), "spec.clusterIP", "valid IPv4 address"),
    (service(clusterIP="10.0.0.1", clusterIPs=["10.0.0.2"]), "spec.clusterIPs[0]",
     "must match `clusterIP`"),
    (service(type="NodePort", clusterIP="None"), "spec.clusterIP",
     "may not be set to 'None' for NodePort services"),
    (service(externalTrafficPolicy="Local"), "spec.externalTrafficPolicy",
     "externally-accessible"),
    (service(selector={"app": "not valid"}), "spec.selector[app]", "a valid label"),
])
def test_service_validation_rejects(manifest, field, text):
    assert text in detail(errors_of("Service", manifest), field)


def allocated_service() -> Message:
    obj = created("Service", service(type="NodePort", ports=[
        {"name": "http", "port": 80, "nodePort": 30080},
        {"name": "https", "port": 443, "nodePort": 30443}]))
    obj.spec.cluster_ip = "127.10.0.7"  # what the registry's allocator does
    obj.spec.cluster_ips.append("127.10.0.7")
    return obj


def test_service_update_keeps_the_allocated_cluster_ip_and_node_ports():
    old = allocated_service()
    new = make("Service", service(type="NodePort", ports=[
        {"name": "http", "port": 8080}, {"name": "https", "port": 443, "nodePort": 30444},
        {"name": "admin", "port": 9000}]))
    strategy = STRATEGIES["Service"]
    strategy.default(new)
    strategy.prepare_for_update(new, old)
    assert (new.spec.cluster_ip, list(new.spec.cluster_ips)) == ("127.10.0.7", ["127.10.0.7"])
    assert [p.node_port for p in new.spec.ports] == [30080, 30444, 0]
    assert strategy.validate(new) + strategy.validate_update(new, old) == []


def test_service_node_ports_are_not_kept_when_the_type_drops_them():
    old = allocated_service()
    errors = update_errors("Service", old, service(type="ClusterIP", ports=[
        {"name": "http", "port": 80}, {"name": "https", "port": 443}]))
    assert errors == []


def test_service_update_may_not_change_a_set_cluster_ip():
    old = allocated_service()
    errors = update_errors("Service", old, service(type="NodePort", clusterIP="127.10.0.8",
                                                   ports=[{"name": "http", "port": 80}]))
    assert errors == [FieldError("spec.clusterIP", "field is immutable")]


def test_service_without_a_cluster_ip_may_get_one():
    old = created("Service", service())
    assert update_errors("Service", old, service(clusterIP="127.10.0.9")) == []


def test_external_name_service_needs_no_ports_and_may_end_in_a_dot():
    assert errors_of("Service", service(type="ExternalName", ports=[],
                                        externalName="db.example.org.")) == []


def test_service_becoming_an_external_name_gives_up_its_cluster_ip():
    old = allocated_service()
    errors = update_errors("Service", old, service(type="ExternalName",
                                                   externalName="db.example.org"))
    assert errors == []


# ---- Endpoints ----


def endpoints(*subsets: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "web", "namespace": "default"}, "subsets": list(subsets)}


def test_endpoints_default_and_accept_good_subsets():
    obj = created("Endpoints", endpoints(
        {"addresses": [{"ip": "127.0.1.2", "nodeName": "node-2",
                        "targetRef": {"kind": "Pod", "name": "web-0"}}],
         "notReadyAddresses": [{"ip": "10.1.0.3", "hostname": "web-1"}],
         "ports": [{"name": "http", "port": 8080}, {"name": "dns", "port": 53,
                                                     "protocol": "UDP"}]}))
    assert [p.protocol for p in obj.subsets[0].ports] == ["TCP", "UDP"]
    assert STRATEGIES["Endpoints"].validate(obj) == []


@pytest.mark.parametrize(("manifest", "field", "text"), [
    (endpoints({"addresses": [{"ip": "10.1.0.256"}], "ports": [{"port": 80}]}),
     "subsets[0].addresses[0].ip", "must be a valid IPv4 address"),
    (endpoints({"notReadyAddresses": [{"ip": ""}], "ports": [{"port": 80}]}),
     "subsets[0].notReadyAddresses[0].ip", "must be a valid IPv4 address"),
    (endpoints({}, {"addresses": [{"ip": "10.1.0.1"}], "ports": [{"port": 0}]}),
     "subsets[1].ports[0].port", "must be between 1 and 65535, inclusive"),
    (endpoints({"ports": [{"port": 80, "protocol": "IP"}]}), "subsets[0].ports[0].protocol",
     'Unsupported value: "IP"'),
    (endpoints({"ports": [{"name": "a", "port": 80}, {"name": "a", "port": 81}]}),
     "subsets[0].ports[1].name", 'Duplicate value: "a"'),
    (endpoints({"ports": [{"name": "a", "port": 80}, {"port": 81}]}),
     "subsets[0].ports[1].name", "required"),
])
def test_endpoints_validation_rejects(manifest, field, text):
    assert text in detail(errors_of("Endpoints", manifest), field)


# ---- ReplicationController ----


def template(labels: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    containers = spec.pop("containers", [container()])
    return {"metadata": {"labels": {"app": "web"} if labels is None else labels},
            "spec": {"containers": containers, **spec}}


def rc(**spec: Any) -> dict[str, Any]:
    spec.setdefault("template", template())
    return {"metadata": {"name": "web", "namespace": "default"}, "spec": spec}


def test_rc_defaults_selector_labels_and_replicas_from_the_template():
    obj = created("ReplicationController", rc())
    assert dict(obj.spec.selector) == {"app": "web"}
    assert dict(obj.metadata.labels) == {"app": "web"}
    assert obj.spec.HasField("replicas") and obj.spec.replicas == 1
    assert obj.spec.template.spec.restart_policy == "Always"
    assert obj.spec.template.spec.containers[0].image_pull_policy == "IfNotPresent"
    assert not obj.spec.template.spec.HasField("priority")  # a pod's, not a template's
    assert STRATEGIES["ReplicationController"].validate(obj) == []


def test_rc_keeps_an_explicit_selector_and_zero_replicas():
    obj = created("ReplicationController", rc(replicas=0, selector={"app": "web"},
                                              template=template({"app": "web", "v": "2"})))
    assert (dict(obj.spec.selector), obj.spec.replicas) == ({"app": "web"}, 0)
    assert STRATEGIES["ReplicationController"].validate(obj) == []


@pytest.mark.parametrize(("manifest", "field", "text"), [
    (rc(replicas=-1), "spec.replicas", "must be greater than or equal to 0"),
    (rc(minReadySeconds=-5), "spec.minReadySeconds", "must be greater than or equal to 0"),
    (rc(template=template({})), "spec.selector", "required"),
    (rc(selector={"app": "db"}), "spec.template.metadata.labels",
     "`selector` does not match template `labels`"),
    (rc(selector={"app": "web"}, template=None), "spec.template", "required"),
    (rc(template=template(restartPolicy="OnFailure")), "spec.template.spec.restartPolicy",
     'Unsupported value: "OnFailure": supported values: "Always"'),
    (rc(template=template(activeDeadlineSeconds=30)),
     "spec.template.spec.activeDeadlineSeconds",
     "activeDeadlineSeconds in ReplicationController is not Supported"),
    (rc(template=template(containers=[container(image="")])),
     "spec.template.spec.containers[0].image", "required"),
    (rc(template=template({"app": "bad value"})), "spec.template.metadata.labels[app]",
     "a valid label"),
])
def test_rc_validation_rejects(manifest, field, text):
    if manifest["spec"].get("template", ...) is None:
        del manifest["spec"]["template"]
    assert text in detail(errors_of("ReplicationController", manifest), field)


# ---- ReplicaSet ----


def rs(**spec: Any) -> dict[str, Any]:
    spec.setdefault("selector", {"matchLabels": {"app": "web"}})
    spec.setdefault("template", template())
    return {"metadata": {"name": "web", "namespace": "default"}, "spec": spec}


def test_replica_set_defaults_and_accepts_set_based_selectors():
    obj = created("ReplicaSet", rs(selector={"matchExpressions": [
        {"key": "app", "operator": "In", "values": ["web", "api"]},
        {"key": "canary", "operator": "DoesNotExist"}]}))
    assert obj.spec.replicas == 1
    assert obj.spec.template.spec.scheduler_name == "default-scheduler"
    assert STRATEGIES["ReplicaSet"].validate(obj) == []


@pytest.mark.parametrize(("manifest", "field", "text"), [
    ({"metadata": {"name": "web"}, "spec": {"template": template()}}, "spec.selector",
     "required"),
    (rs(selector={}), "spec.selector", "empty selector is invalid"),
    (rs(selector={"matchLabels": {"app": "api"}}), "spec.template.metadata.labels",
     "`selector` does not match template `labels`"),
    (rs(selector={"matchExpressions": [{"key": "app", "operator": "NotIn",
                                        "values": ["web"]}]}),
     "spec.template.metadata.labels", "`selector` does not match template `labels`"),
    (rs(selector={"matchExpressions": [{"key": "app", "operator": "Gt", "values": ["1"]}]}),
     "spec.selector.matchExpressions[0].operator",
     'Unsupported value: "Gt": supported values: "In", "NotIn", "Exists", "DoesNotExist"'),
    (rs(selector={"matchExpressions": [{"key": "app", "operator": "In"}]}),
     "spec.selector.matchExpressions[0].values",
     "must be specified when `operator` is 'In' or 'NotIn'"),
    (rs(selector={"matchLabels": {"bad key": "web"}}), "spec.selector.matchLabels[bad key]",
     "name part"),
    ({"metadata": {"name": "web"}, "spec": {"selector": {"matchLabels": {"app": "web"}}}},
     "spec.template", "required"),
    (rs(template=template(restartPolicy="Never")), "spec.template.spec.restartPolicy",
     'Unsupported value: "Never": supported values: "Always"'),
    (rs(template=template(containers=[])), "spec.template.spec.containers", "required"),
    (rs(replicas=-1), "spec.replicas", "must be greater than or equal to 0"),
])
def test_replica_set_validation_rejects(manifest, field, text):
    assert text in detail(errors_of("ReplicaSet", manifest), field)


def test_replica_set_selector_is_immutable():
    old = created("ReplicaSet", rs())
    assert update_errors("ReplicaSet", old, rs(replicas=5)) == []
    errors = update_errors("ReplicaSet", old, rs(
        selector={"matchLabels": {"app": "web", "tier": "fe"}},
        template=template({"app": "web", "tier": "fe"})))
    assert errors == [FieldError("spec.selector", "field is immutable")]


# ---- Deployment ----


def deployment(**spec: Any) -> dict[str, Any]:
    return rs(**spec)


def test_deployment_defaults():
    obj = created("Deployment", deployment())
    spec = obj.spec
    assert spec.replicas == 1
    assert spec.strategy.type == "RollingUpdate"
    for value in (spec.strategy.rolling_update.max_unavailable,
                  spec.strategy.rolling_update.max_surge):
        assert json_format.MessageToDict(value) == {"type": "STRING", "strVal": "25%"}
    assert (spec.revision_history_limit, spec.progress_deadline_seconds) == (10, 600)
    assert spec.template.spec.restart_policy == "Always"
    assert STRATEGIES["Deployment"].validate(obj) == []


def test_deployment_defaults_keep_explicit_values():
    obj = created("Deployment", deployment(
        replicas=0, revisionHistoryLimit=0, progressDeadlineSeconds=60,
        strategy={"rollingUpdate": {"maxSurge": num(0), "maxUnavailable": num(1)}}))
    spec = obj.spec
    assert (spec.replicas, spec.revision_history_limit, spec.progress_deadline_seconds) == (
        0, 0, 60)
    assert spec.strategy.rolling_update.max_surge.int_val == 0
    assert spec.strategy.rolling_update.max_unavailable.int_val == 1
    assert STRATEGIES["Deployment"].validate(obj) == []


def test_recreate_gets_no_rolling_update():
    obj = created("Deployment", deployment(strategy={"type": "Recreate"}))
    assert not obj.spec.strategy.HasField("rolling_update")
    assert STRATEGIES["Deployment"].validate(obj) == []


def test_max_surge_may_exceed_one_hundred_percent():
    obj = created("Deployment", deployment(strategy={"rollingUpdate": {
        "maxSurge": name("200%"), "maxUnavailable": name("100%")}}))
    assert STRATEGIES["Deployment"].validate(obj) == []


ROLLING = "spec.strategy.rollingUpdate"


@pytest.mark.parametrize(("manifest", "field", "text"), [
    (deployment(strategy={"type": "Recreate", "rollingUpdate": {"maxSurge": num(1)}}),
     f"{ROLLING}", "may not be specified when strategy `type` is 'Recreate'"),
    (deployment(strategy={"type": "BlueGreen"}), "spec.strategy.type",
     'Unsupported value: "BlueGreen": supported values: "RollingUpdate", "Recreate"'),
    (deployment(strategy={"rollingUpdate": {"maxSurge": num(0), "maxUnavailable": num(0)}}),
     f"{ROLLING}.maxUnavailable", "may not be 0 when `maxSurge` is 0"),
    (deployment(strategy={"rollingUpdate": {"maxSurge": name("0%"),
                                            "maxUnavailable": num(0)}}),
     f"{ROLLING}.maxUnavailable", "may not be 0 when `maxSurge` is 0"),
    (deployment(strategy={"rollingUpdate": {"maxUnavailable": name("110%")}}),
     f"{ROLLING}.maxUnavailable", "must not be greater than 100%"),
    (deployment(strategy={"rollingUpdate": {"maxSurge": name("25")}}),
     f"{ROLLING}.maxSurge", "a valid percent string"),
    (deployment(strategy={"rollingUpdate": {"maxUnavailable": name("-5%")}}),
     f"{ROLLING}.maxUnavailable", "a valid percent string"),
    (deployment(strategy={"rollingUpdate": {"maxSurge": num(-1)}}),
     f"{ROLLING}.maxSurge", "must be greater than or equal to 0"),
    (deployment(revisionHistoryLimit=-1), "spec.revisionHistoryLimit",
     "must be greater than or equal to 0"),
    (deployment(minReadySeconds=600), "spec.progressDeadlineSeconds",
     "must be greater than minReadySeconds"),
    (deployment(selector={}), "spec.selector", "empty selector is invalid"),
    (deployment(selector={"matchLabels": {"app": "api"}}), "spec.template.metadata.labels",
     "`selector` does not match template `labels`"),
    (deployment(template=template(activeDeadlineSeconds=5)),
     "spec.template.spec.activeDeadlineSeconds", "in Deployment is not Supported"),
])
def test_deployment_validation_rejects(manifest, field, text):
    assert text in detail(errors_of("Deployment", manifest), field)


def test_deployment_selector_is_immutable():
    old = created("Deployment", deployment())
    assert update_errors("Deployment", old, deployment(
        replicas=3, template=template(containers=[container(image="nginx:1.26")]))) == []
    errors = update_errors("Deployment", old, deployment(
        selector={"matchExpressions": [{"key": "app", "operator": "Exists"}]}))
    assert errors == [FieldError("spec.selector", "field is immutable")]


# ---- Namespace ----


def test_namespace_create_is_active_with_the_kubernetes_finalizer():
    obj = make("Namespace", {"metadata": {"name": "team-a"},
                             "status": {"phase": "Terminating"}})
    STRATEGIES["Namespace"].default(obj)
    STRATEGIES["Namespace"].prepare_for_create(obj)
    assert obj.status.phase == "Active"
    assert list(obj.spec.finalizers) == ["kubernetes"]
    assert obj.metadata.labels["kubernetes.io/metadata.name"] == "team-a"
    assert STRATEGIES["Namespace"].validate(obj) == []
    other = created("Namespace", {"metadata": {"name": "b"},
                                  "spec": {"finalizers": ["example.com/cleanup"]}})
    assert list(other.spec.finalizers) == ["example.com/cleanup", "kubernetes"]


@pytest.mark.parametrize(("manifest", "field", "text"), [
    ({"metadata": {"name": "team.a"}}, "metadata.name", "RFC 1123 label"),
    ({"metadata": {"name": "x" * 64}}, "metadata.name", "must be no more than 63 characters"),
    ({"metadata": {"name": "a"}, "spec": {"finalizers": ["cleanup"]}}, "spec.finalizers[0]",
     "neither a standard finalizer name nor is it fully qualified"),
])
def test_namespace_validation_rejects(manifest, field, text):
    assert text in detail(errors_of("Namespace", manifest), field)


def test_namespace_update_keeps_finalizers_and_status():
    old = created("Namespace", {"metadata": {"name": "team-a"}})
    new = make("Namespace", {"metadata": {"name": "team-a", "labels": {"team": "a"}},
                             "spec": {"finalizers": []}, "status": {"phase": "Terminating"}})
    STRATEGIES["Namespace"].default(new)
    STRATEGIES["Namespace"].prepare_for_update(new, old)
    assert list(new.spec.finalizers) == ["kubernetes"]
    assert new.status.phase == "Active"
    assert new.metadata.labels["team"] == "a"


def test_namespace_status_phase_follows_deletion():
    strategy = STRATEGIES["Namespace"]
    old = created("Namespace", {"metadata": {"name": "team-a"}})
    terminating = make("Namespace", {"metadata": {"name": "team-a"},
                                     "status": {"phase": "Terminating"}})
    assert fields(strategy.validate_status_update(terminating, old)) == ["status.phase"]
    terminating.metadata.deletion_timestamp.FromSeconds(1_700_000_000)
    assert strategy.validate_status_update(terminating, old) == []
    active = make("Namespace", {"metadata": {"name": "team-a"}, "status": {"phase": "Active"}})
    assert strategy.validate_status_update(active, old) == []


# ---- Event ----


def event(**fields_: Any) -> dict[str, Any]:
    return {"metadata": {"name": "web-0.17a", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web-0", "namespace": "default"},
            "reason": "Scheduled", "message": "assigned to node-1", **fields_}


def test_event_accepts_normal_and_cluster_scoped_objects():
    assert errors_of("Event", event(type="Normal", count=1)) == []
    assert errors_of("Event", event(involvedObject={"kind": "Node", "name": "node-1"},
                                    type="Warning")) == []
    assert errors_of("Event", event()) == []


@pytest.mark.parametrize(("manifest", "field", "text"), [
    (event(involvedObject={}), "involvedObject.kind", "required"),
    (event(involvedObject={"kind": "Pod"}), "involvedObject.name", "required"),
    (event(involvedObject={"kind": "Pod", "name": "x", "namespace": "other"}),
     "involvedObject.namespace", "does not match event.namespace"),
    (event(type="Error"), "type",
     'Unsupported value: "Error": supported values: "Normal", "Warning"'),
    (event(count=-1), "count", "must be greater than or equal to 0"),
])
def test_event_validation_rejects(manifest, field, text):
    assert text in detail(errors_of("Event", manifest), field)


# ---- Lease ----


def lease(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "node-1", "namespace": "skiff-node-lease"}, "spec": spec}


def test_lease_accepts_sensible_specs():
    assert errors_of("Lease", lease()) == []
    assert errors_of("Lease", lease(holderIdentity="node-1", leaseDurationSeconds=40,
                                    leaseTransitions=0)) == []


@pytest.mark.parametrize(("manifest", "field", "text"), [
    (lease(leaseDurationSeconds=0), "spec.leaseDurationSeconds", "must be greater than 0"),
    (lease(leaseDurationSeconds=-10), "spec.leaseDurationSeconds", "must be greater than 0"),
    (lease(leaseTransitions=-1), "spec.leaseTransitions", "must be greater than or equal to 0"),
])
def test_lease_validation_rejects(manifest, field, text):
    assert text in detail(errors_of("Lease", manifest), field)


# ---- Pod: DNS ----


def test_pod_dns_defaults():
    spec = created("Pod", pod()).spec
    assert spec.dns_policy == "ClusterFirst"
    assert spec.HasField("enable_service_links") and spec.enable_service_links
    kept = created("Pod", pod(dnsPolicy="Default", enableServiceLinks=False)).spec
    assert (kept.dns_policy, kept.enable_service_links) == ("Default", False)


def test_pod_dns_none_with_its_own_config_is_valid():
    errors = errors_of("Pod", pod(dnsPolicy="None", dnsConfig={
        "nameservers": ["10.0.0.53", "fd00::53"], "searches": ["corp.example.", "example"],
        "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}))
    assert errors == []


def _long_searches(count: int, length: int) -> list[str]:
    return [f"{i:02d}" + "a" * (length - 2) for i in range(count)]


BAD_DNS = [
    (pod(dnsPolicy="ClusterLast"), "spec.dnsPolicy", 'Unsupported value: "ClusterLast"'),
    (pod(dnsPolicy="None"), "spec.dnsConfig", "must provide `dnsConfig`"),
    (pod(dnsPolicy="None", dnsConfig={"searches": ["example"]}), "spec.dnsConfig.nameservers",
     "at least one DNS nameserver"),
    (pod(dnsConfig={"nameservers": ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]}),
     "spec.dnsConfig.nameservers", "must not have more than 3 nameservers"),
    (pod(dnsConfig={"nameservers": ["10.0.0.300"]}), "spec.dnsConfig.nameservers[0]",
     "must be a valid IP address"),
    (pod(dnsConfig={"searches": [f"s{i}.example" for i in range(33)]}),
     "spec.dnsConfig.searches", "must not have more than 32 search paths"),
    (pod(dnsConfig={"searches": _long_searches(9, 250)}), "spec.dnsConfig.searches",
     "must not have more than 2048 characters"),
    (pod(dnsConfig={"searches": ["Not_A_Domain"]}), "spec.dnsConfig.searches[0]",
     "RFC 1123 subdomain"),
    (pod(dnsConfig={"options": [{"value": "2"}]}), "spec.dnsConfig.options[0].name",
     "required"),
]


@pytest.mark.parametrize(("manifest", "field", "text"), BAD_DNS,
                         ids=[f"{i}-{case[1]}" for i, case in enumerate(BAD_DNS)])
def test_pod_dns_validation_rejects(manifest, field, text):
    errors = errors_of("Pod", manifest)
    assert text in detail(errors, field)


def test_pod_dns_search_list_at_the_limits_is_valid():
    # 8 paths of 250 characters and their 7 spaces: 2007 characters, 32 short paths.
    assert errors_of("Pod", pod(dnsConfig={"searches": _long_searches(8, 250)})) == []
    assert errors_of("Pod", pod(dnsConfig={
        "searches": [f"s{i}.example" for i in range(32)]})) == []


def test_pod_template_dns_is_validated_too():
    rs = {"metadata": {"name": "web", "namespace": "default"},
          "spec": {"selector": {"matchLabels": {"app": "web"}},
                   "template": {"metadata": {"labels": {"app": "web"}},
                                "spec": {"containers": [container()], "dnsPolicy": "None"}}}}
    errors = errors_of("ReplicaSet", rs)
    assert "must provide `dnsConfig`" in detail(errors, "spec.template.spec.dnsConfig")
