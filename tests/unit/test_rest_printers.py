"""Server-side Tables: Kubernetes' columns per kind and cells as kubectl shows them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.apiserver.rest import printers as pr
from skiff.api.kinds import KINDS, lookup

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def _ago(**delta: float) -> str:
    return (NOW - timedelta(**delta)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _meta(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": "default", "creationTimestamp": _ago(minutes=5),
            **extra}


def _names(kind: str) -> list[str]:
    return [c["name"] for c in pr.column_definitions(kind)]


def _wide(kind: str) -> list[str]:
    return [c["name"] for c in pr.column_definitions(kind) if c["priority"] == 1]


def _cells(kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    return dict(zip(_names(kind), pr.table_row(kind, obj, now=NOW)["cells"], strict=True))


# ---- durations ----


@pytest.mark.parametrize(("seconds", "text"), [
    (-5, "<invalid>"), (-1, "0s"), (0, "0s"), (1, "1s"), (70, "70s"), (119, "119s"),
    (120, "2m"), (190, "3m10s"), (70 * 60, "70m"), (179 * 60, "179m"), (3 * 3600, "3h"),
    (7 * 3600 + 59 * 60, "7h59m"), (47 * 3600, "47h"), (49 * 3600, "2d1h"),
    (8 * 86400 + 2 * 3600, "8d"), (367 * 86400, "367d"), (730 * 86400 + 86400, "2y1d"),
    (8 * 365 * 86400 + 7200, "8y"),
])
def test_human_duration_is_kubernetes(seconds: int, text: str) -> None:
    assert pr.human_duration(seconds) == text


def test_age_of_an_unset_timestamp() -> None:
    assert pr.age(None, NOW) == "<unknown>"
    assert pr.age(_ago(seconds=5), NOW) == "5s"
    assert pr.age("2024-05-01T11:59:00.123456Z", NOW) == "59s"


# ---- pods ----


def _pod(*statuses: dict[str, Any], init: tuple[dict[str, Any], ...] = (),
         phase: str = "Running", **extra: Any) -> dict[str, Any]:
    return {"metadata": _meta("web", **extra.pop("metadata", {})),
            "spec": {"containers": [{"name": s["name"]} for s in statuses],
                     "initContainers": [{"name": s["name"]} for s in init],
                     "nodeName": "node-1"},
            "status": {"phase": phase, "containerStatuses": list(statuses),
                       "initContainerStatuses": list(init), **extra}}


def _running(name: str, ready: bool = True, restarts: int = 0) -> dict[str, Any]:
    return {"name": name, "ready": ready, "restartCount": restarts,
            "state": {"running": {"startedAt": _ago(minutes=1)}}}


def _waiting(name: str, reason: str) -> dict[str, Any]:
    return {"name": name, "state": {"waiting": {"reason": reason}}}


def _terminated(name: str, reason: str = "", exit_code: int = 0,
                signal: int = 0) -> dict[str, Any]:
    return {"name": name, "state": {"terminated": {"reason": reason, "exitCode": exit_code,
                                                   "signal": signal}}}


def test_pod_columns() -> None:
    assert _names("Pod") == ["Name", "Ready", "Status", "Restarts", "Age", "IP", "Node",
                             "Nominated Node", "Readiness Gates"]
    assert _wide("Pod") == ["IP", "Node", "Nominated Node", "Readiness Gates"]


def test_running_pod_row() -> None:
    pod = _pod(_running("a"), _running("b", ready=False), podIP="10.244.0.5",
               podIPs=[{"ip": "10.244.0.5"}])
    assert _cells("Pod", pod) == {
        "Name": "web", "Ready": "1/2", "Status": "Running", "Restarts": "0", "Age": "5m",
        "IP": "10.244.0.5", "Node": "node-1", "Nominated Node": "<none>",
        "Readiness Gates": "<none>"}


@pytest.mark.parametrize(("pod", "status"), [
    (_pod(_waiting("a", "ContainerCreating"), phase="Pending"), "ContainerCreating"),
    (_pod(_running("a"), _waiting("b", "CrashLoopBackOff")), "CrashLoopBackOff"),
    (_pod(_terminated("a", "Completed"), phase="Succeeded"), "Completed"),
    (_pod(_terminated("a", exit_code=3), phase="Failed"), "ExitCode:3"),
    (_pod(_terminated("a", signal=9), phase="Failed"), "Signal:9"),
    (_pod(_terminated("a", "Error", exit_code=1), phase="Failed"), "Error"),
    (_pod(_waiting("a", "PodInitializing"), init=(_running("i", ready=False),),
          phase="Pending"), "Init:0/1"),
    (_pod(_waiting("a", "PodInitializing"),
          init=(_terminated("i", "Completed"), _waiting("j", "CrashLoopBackOff")),
          phase="Pending"), "Init:CrashLoopBackOff"),
    (_pod(_waiting("a", "PodInitializing"), init=(_terminated("i", exit_code=2),),
          phase="Pending"), "Init:ExitCode:2"),
    (_pod(_running("a"), metadata={"deletionTimestamp": _ago(seconds=3)}), "Terminating"),
    (_pod(_terminated("a", "Completed"), phase="Succeeded",
          metadata={"deletionTimestamp": _ago(seconds=3)}), "Completed"),
    (_pod(_running("a"), reason="NodeLost", metadata={"deletionTimestamp": _ago(seconds=3)}),
     "Unknown"),
    (_pod(phase="Pending", conditions=[{"type": "PodScheduled", "status": "False",
                                        "reason": "SchedulingGated"}]), "SchedulingGated"),
    (_pod(phase="Pending"), "Pending"),
    (_pod(_running("a"), reason="Evicted", phase="Failed"), "Evicted"),
])
def test_pod_status_as_kubectl_shows_it(pod: dict[str, Any], status: str) -> None:
    assert _cells("Pod", pod)["Status"] == status


def test_completed_container_beside_a_running_one() -> None:
    ready = [{"type": "Ready", "status": "True"}]
    assert _cells("Pod", _pod(_terminated("a", "Completed"), _running("b"),
                              conditions=ready))["Status"] == "Running"
    assert _cells("Pod", _pod(_running("b"), _terminated("a", "Completed")))["Status"] == \
        "NotReady"


def test_restarts_say_when_the_last_one_was() -> None:
    crashed = _running("a", restarts=3)
    crashed["lastState"] = {"terminated": {"exitCode": 1, "finishedAt": _ago(seconds=42)}}
    cells = _cells("Pod", _pod(crashed, _running("b", restarts=1)))
    assert cells["Restarts"] == "4 (42s ago)"
    assert _cells("Pod", _pod(_running("a", restarts=2)))["Restarts"] == "2"


def test_finished_pods_carry_a_completed_row_condition() -> None:
    row = pr.table_row("Pod", _pod(_terminated("a", "Completed"), phase="Succeeded"), now=NOW)
    assert row["conditions"][0]["type"] == "Completed"
    assert "conditions" not in pr.table_row("Pod", _pod(_running("a")), now=NOW)


# ---- nodes, services, endpoints ----


def _node(**status: Any) -> dict[str, Any]:
    return {"metadata": _meta("node-1", labels={"node-role.kubernetes.io/control-plane": "",
                                                "kubernetes.io/role": "worker"}),
            "spec": status.pop("spec", {}),
            "status": {"conditions": [{"type": "MemoryPressure", "status": "False"},
                                      {"type": "Ready", "status": "True"}],
                       "addresses": [{"type": "InternalIP", "address": "10.0.0.1"},
                                     {"type": "Hostname", "address": "node-1"}],
                       "nodeInfo": {"kubeletVersion": "v1.32.0-skiff", "osImage": "Debian",
                                    "kernelVersion": "6.1.0",
                                    "containerRuntimeVersion": "docker://24.0"}, **status}}


def test_node_row() -> None:
    assert _names("Node")[:5] == ["Name", "Status", "Roles", "Age", "Version"]
    assert _cells("Node", _node()) == {
        "Name": "node-1", "Status": "Ready", "Roles": "control-plane,worker", "Age": "5m",
        "Version": "v1.32.0-skiff", "Internal-IP": "10.0.0.1", "External-IP": "<none>",
        "OS-Image": "Debian", "Kernel-Version": "6.1.0",
        "Container-Runtime": "docker://24.0"}


def test_node_status_variants() -> None:
    cordoned = _node(spec={"unschedulable": True})
    assert _cells("Node", cordoned)["Status"] == "Ready,SchedulingDisabled"
    not_ready = _node(conditions=[{"type": "Ready", "status": "Unknown"}])
    assert _cells("Node", not_ready)["Status"] == "NotReady"
    assert _cells("Node", _node(conditions=[]))["Status"] == "Unknown"
    assert pr.node_roles({}) == []


def _service(**spec: Any) -> dict[str, Any]:
    status = spec.pop("status", {})
    return {"metadata": _meta("web"), "spec": spec, "status": status}


def test_service_rows() -> None:
    assert _names("Service") == ["Name", "Type", "Cluster-IP", "External-IP", "Port(s)",
                                 "Age", "Selector"]
    svc = _service(type="NodePort", clusterIP="10.96.0.10", clusterIPs=["10.96.0.10"],
                   ports=[{"port": 80, "protocol": "TCP", "nodePort": 30080},
                          {"port": 53, "protocol": "UDP"}], selector={"app": "web", "a": "b"})
    assert _cells("Service", svc) == {
        "Name": "web", "Type": "NodePort", "Cluster-IP": "10.96.0.10", "External-IP": "<none>",
        "Port(s)": "80:30080/TCP,53/UDP", "Age": "5m", "Selector": "a=b,app=web"}
    pending = _service(type="LoadBalancer", clusterIP="10.96.0.11", ports=[{"port": 80}])
    assert _cells("Service", pending)["External-IP"] == "<pending>"
    assert _cells("Service", pending)["Port(s)"] == "80/TCP"
    served = _service(type="LoadBalancer", status={"loadBalancer": {"ingress": [
        {"ip": "10.112.0.1"}]}})
    assert _cells("Service", served)["External-IP"] == "10.112.0.1"
    headless = _service(type="ExternalName", externalName="example.com")
    assert _cells("Service", headless)["External-IP"] == "example.com"
    assert _cells("Service", headless)["Cluster-IP"] == "<none>"
    assert _cells("Service", headless)["Selector"] == "<none>"


def test_endpoints_formatting() -> None:
    ep = {"metadata": _meta("web"), "subsets": [
        {"addresses": [{"ip": "10.244.0.1"}, {"ip": "10.244.0.2"}],
         "ports": [{"port": 80}, {"port": 443}]}]}
    assert _cells("Endpoints", ep)["Endpoints"] == \
        "10.244.0.1:80,10.244.0.2:80,10.244.0.1:443 + 1 more..."
    headless = {"subsets": [{"addresses": [{"ip": "10.244.0.3"}]}]}
    assert pr.format_endpoints(headless) == "10.244.0.3"
    assert pr.format_endpoints({}) == "<none>"


# ---- workloads ----


_TEMPLATE = {"spec": {"containers": [{"name": "app", "image": "nginx:1"},
                                     {"name": "log", "image": "busybox"}]}}


def test_deployment_row() -> None:
    assert _names("Deployment") == ["Name", "Ready", "Up-to-date", "Available", "Age",
                                    "Containers", "Images", "Selector"]
    dep = {"metadata": _meta("web"),
           "spec": {"replicas": 3, "template": _TEMPLATE, "selector": {
               "matchLabels": {"app": "web"},
               "matchExpressions": [{"key": "env", "operator": "In",
                                     "values": ["prod", "dev"]},
                                    {"key": "canary", "operator": "DoesNotExist"}]}},
           "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}}
    assert _cells("Deployment", dep) == {
        "Name": "web", "Ready": "2/3", "Up-to-date": 3, "Available": 2, "Age": "5m",
        "Containers": "app,log", "Images": "nginx:1,busybox",
        "Selector": "app=web,!canary,env in (dev,prod)"}  # requirements sorted by key
    new = {"metadata": _meta("new"), "spec": {"template": _TEMPLATE}}
    assert _cells("Deployment", new)["Ready"] == "0/1"


def test_replicaset_and_rc_rows() -> None:
    assert _names("ReplicaSet") == ["Name", "Desired", "Current", "Ready", "Age",
                                    "Containers", "Images", "Selector"]
    rs = {"metadata": _meta("web-abc"), "spec": {"replicas": 2, "template": _TEMPLATE,
                                                 "selector": {"matchLabels": {"app": "web"}}},
          "status": {"replicas": 2, "readyReplicas": 1}}
    assert list(_cells("ReplicaSet", rs).values()) == [
        "web-abc", 2, 2, 1, "5m", "app,log", "nginx:1,busybox", "app=web"]
    rc = {"metadata": _meta("old"), "spec": {"replicas": 1, "selector": {"app": "old"},
                                             "template": _TEMPLATE}}
    assert list(_cells("ReplicationController", rc).values()) == [
        "old", 1, 0, 0, "5m", "app,log", "nginx:1,busybox", "app=old"]


# ---- namespaces, events, leases, others ----


def test_namespace_lease_and_default_rows() -> None:
    ns = {"metadata": _meta("kube-system"), "status": {"phase": "Active"}}
    assert list(_cells("Namespace", ns).values()) == ["kube-system", "Active", "5m"]
    lease = {"metadata": _meta("node-1"), "spec": {"holderIdentity": "node-1"}}
    assert list(_cells("Lease", lease).values()) == ["node-1", "node-1", "5m"]
    assert pr.printer_for("Widget") is pr.DEFAULT_PRINTER
    assert pr.table_row("Widget", {"metadata": _meta("w")}, now=NOW)["cells"] == ["w", "5m"]


def test_config_map_secret_and_service_account_rows() -> None:
    cm = {"metadata": _meta("conf"), "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}}
    assert list(_cells("ConfigMap", cm).values()) == ["conf", 3, "5m"]
    secret = {"metadata": _meta("tls"), "type": "kubernetes.io/tls",
              "data": {"tls.crt": "Y3J0", "tls.key": "a2V5"}}
    assert list(_cells("Secret", secret).values()) == ["tls", "kubernetes.io/tls", 2, "5m"]
    sa = {"metadata": _meta("default")}
    assert list(_cells("ServiceAccount", sa).values()) == ["default", 0, "5m"]


def test_event_row() -> None:
    assert _names("Event") == ["Last Seen", "Type", "Reason", "Object", "Subobject", "Source",
                               "Message", "First Seen", "Count", "Name"]
    event = {"metadata": _meta("web.17a"), "type": "Warning", "reason": "BackOff",
             "message": " Back-off restarting failed container \n",
             "involvedObject": {"kind": "Pod", "name": "web",
                                "fieldPath": "spec.containers{app}"},
             "source": {"component": "kubelet", "host": "node-1"},
             "firstTimestamp": _ago(hours=1), "lastTimestamp": _ago(seconds=30), "count": 7}
    assert _cells("Event", event) == {
        "Last Seen": "30s", "Type": "Warning", "Reason": "BackOff", "Object": "pod/web",
        "Subobject": "spec.containers{app}", "Source": "kubelet, node-1",
        "Message": "Back-off restarting failed container", "First Seen": "60m", "Count": 7,
        "Name": "web.17a"}
    new_style = {"metadata": _meta("e"), "eventTime": _ago(seconds=9),
                 "involvedObject": {"kind": "Node"}, "reportingComponent": "scheduler"}
    cells = _cells("Event", new_style)
    assert (cells["Last Seen"], cells["First Seen"], cells["Count"], cells["Object"],
            cells["Source"]) == ("9s", "9s", 1, "node", "scheduler")


# ---- the Table ----


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_every_kind_has_a_name_column_and_rows_as_wide(kind: Any) -> None:
    table = pr.to_table(kind, [{"metadata": _meta("x")}], now=NOW)
    assert any(c["format"] == "name" for c in table["columnDefinitions"])
    assert len(table["rows"][0]["cells"]) == len(table["columnDefinitions"])


def test_table_shape_and_include_object() -> None:
    pod = _pod(_running("a"))
    table = pr.to_table(lookup("pods"), [pod], now=NOW, resource_version="42",
                        continue_token="next")
    assert table["kind"] == "Table" and table["apiVersion"] == "meta.k8s.io/v1"
    assert table["metadata"] == {"resourceVersion": "42", "continue": "next"}
    assert set(table["columnDefinitions"][0]) == {"name", "type", "format", "description",
                                                  "priority"}
    assert table["rows"][0]["object"] == {"kind": "PartialObjectMetadata",
                                          "apiVersion": "meta.k8s.io/v1",
                                          "metadata": pod["metadata"]}
    full = pr.to_table("Pod", [pod], now=NOW, include_object=pr.INCLUDE_OBJECT)
    assert full["rows"][0]["object"] == pod
    bare = pr.to_table("Pod", [pod], now=NOW, include_object=pr.INCLUDE_NONE,
                       no_headers=True)
    assert "object" not in bare["rows"][0] and bare["columnDefinitions"] == []
    with pytest.raises(ValueError, match="includeObject"):
        pr.to_table("Pod", [pod], now=NOW, include_object="All")
