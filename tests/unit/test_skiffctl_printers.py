"""skiffctl's printers: ages, pod and node status, tables and -o forms (pure; no server)."""

from __future__ import annotations

import io
import json

import pytest
import yaml

from skiff.api import manifest
from skiff.api.kinds import lookup
from skiff.api.v1 import apps_pb2, core_pb2, meta_pb2
from skiff.cli.skiffctl import printers
from skiff.cli.skiffctl.describe import Related, describe
from skiff.cli.skiffctl.printers import (
    TableOptions,
    format_objects,
    human_duration,
    pod_status,
    render_table,
    table_header,
    table_row,
    tabwrite,
)

NOW = 1_700_000_000.0
POD = lookup("pod")


def stamp(seconds_ago: float) -> dict[str, int]:
    return {"seconds": int(NOW - seconds_ago)}


def make_pod(name: str = "web", *, phase: str = "Running", statuses: list[dict] | None = None,
             containers: int = 1, deleting: bool = False, **status: object) -> core_pb2.Pod:
    pod = core_pb2.Pod(
        api_version="v1", kind="Pod",
        metadata=meta_pb2.ObjectMeta(name=name, namespace="default",
                                     creation_timestamp=stamp(300), labels={"app": "web"}),
        spec=core_pb2.PodSpec(containers=[core_pb2.Container(name=f"c{i}", image="busybox")
                                          for i in range(containers)]),
        status=core_pb2.PodStatus(phase=phase, **status))
    for s in statuses or []:
        pod.status.container_statuses.add().CopyFrom(core_pb2.ContainerStatus(**s))
    if deleting:
        pod.metadata.deletion_timestamp.FromSeconds(int(NOW) + 30)
    return pod


# ---- ages ----


@pytest.mark.parametrize(("seconds", "text"), [
    (-5, "<invalid>"), (-1, "0s"), (0, "0s"), (5, "5s"), (119, "119s"), (120, "2m"),
    (200, "3m20s"), (600, "10m"), (179 * 60, "179m"), (3 * 3600, "3h"),
    (3 * 3600 + 20 * 60, "3h20m"), (8 * 3600, "8h"), (47 * 3600, "47h"), (2 * 86400, "2d"),
    (2 * 86400 + 5 * 3600, "2d5h"), (8 * 86400, "8d"), (400 * 86400, "400d"),
    (2 * 365 * 86400, "2y"), (3 * 365 * 86400 + 10 * 86400, "3y10d"),
    (9 * 365 * 86400, "9y"),
])
def test_human_duration_is_kubectls_human_duration(seconds: int, text: str) -> None:
    assert human_duration(seconds) == text


def test_age_of_an_unset_timestamp_is_unknown() -> None:
    assert printers.age(meta_pb2.ObjectMeta().creation_timestamp, NOW) == "<unknown>"
    assert printers.age(meta_pb2.ObjectMeta(creation_timestamp=stamp(42)).creation_timestamp,
                        NOW) == "42s"


# ---- pod status ----


def test_pod_status_is_the_phase_when_nothing_else_is_known() -> None:
    assert pod_status(make_pod(phase="Pending")) == "Pending"
    assert pod_status(make_pod(phase="Running")) == "Running"


def test_a_waiting_containers_reason_wins_over_the_phase() -> None:
    pod = make_pod(phase="Running", statuses=[
        {"name": "c0", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}])
    assert pod_status(pod) == "CrashLoopBackOff"
    creating = make_pod(phase="Pending", statuses=[
        {"name": "c0", "state": {"waiting": {"reason": "ContainerCreating"}}}])
    assert pod_status(creating) == "ContainerCreating"


def test_terminated_containers_show_reason_signal_or_exit_code() -> None:
    def status(**terminated: object) -> str:
        return pod_status(make_pod(statuses=[{"name": "c0",
                                              "state": {"terminated": terminated}}]))

    assert status(reason="Completed") == "Completed"
    assert status(signal=9) == "Signal:9"
    assert status(exit_code=3) == "ExitCode:3"


def test_completed_with_a_running_ready_container_is_running_or_not_ready() -> None:
    statuses = [{"name": "c0", "ready": True, "state": {"running": {}}},
                {"name": "c1", "state": {"terminated": {"reason": "Completed"}}}]
    assert pod_status(make_pod(containers=2, statuses=statuses)) == "NotReady"
    ready = make_pod(containers=2, statuses=statuses,
                     conditions=[core_pb2.PodCondition(type="Ready", status="True")])
    assert pod_status(ready) == "Running"


def test_init_containers_show_progress() -> None:
    pod = make_pod(phase="Pending")
    pod.spec.init_containers.add(name="init", image="busybox")
    pod.spec.init_containers.add(name="init2", image="busybox")
    assert pod_status(pod) == "Pending"  # no init statuses yet
    pod.status.init_container_statuses.add(name="init",
                                           state={"terminated": {"exit_code": 0}})
    pod.status.init_container_statuses.add(name="init2", state={"running": {}})
    assert pod_status(pod) == "Init:1/2"
    pod.status.init_container_statuses[1].state.CopyFrom(
        core_pb2.ContainerState(terminated={"exit_code": 1, "reason": "Error"}))
    assert pod_status(pod) == "Init:Error"


def test_a_pod_being_deleted_is_terminating_unless_finished() -> None:
    assert pod_status(make_pod(deleting=True)) == "Terminating"
    assert pod_status(make_pod(phase="Succeeded", deleting=True)) == "Succeeded"
    assert pod_status(make_pod(deleting=True, reason="NodeLost")) == "Unknown"


def test_pod_ready_and_restarts() -> None:
    finished = {"finished_at": stamp(180)}
    pod = make_pod(containers=2, statuses=[
        {"name": "c0", "ready": True, "state": {"running": {}}, "restart_count": 2,
         "last_state": {"terminated": finished}},
        {"name": "c1", "ready": False, "state": {"running": {}}, "restart_count": 1}])
    assert printers.pod_ready(pod) == "1/2"
    assert printers.pod_restarts(pod, NOW) == "3 (3m ago)"
    assert printers.pod_restarts(make_pod(), NOW) == "0"


# ---- other kinds' columns ----


def test_node_status_roles_and_scheduling() -> None:
    node = core_pb2.Node(metadata=meta_pb2.ObjectMeta(
        name="n1", labels={"node-role.kubernetes.io/control-plane": "", "kubernetes.io/role": "x"}))
    assert printers.node_status(node) == "Unknown"
    node.status.conditions.add(type="Ready", status="True")
    assert printers.node_status(node) == "Ready"
    node.status.conditions[0].status = "Unknown"
    node.spec.unschedulable = True
    assert printers.node_status(node) == "NotReady,SchedulingDisabled"
    assert printers.node_roles(node) == "control-plane,x"
    assert printers.node_roles(core_pb2.Node()) == "<none>"


def test_service_ports_and_external_ip() -> None:
    service = core_pb2.Service(spec=core_pb2.ServiceSpec(type="NodePort", ports=[
        core_pb2.ServicePort(port=80, node_port=30080, protocol="TCP"),
        core_pb2.ServicePort(port=53, protocol="UDP")]))
    assert printers.service_ports(service) == "80:30080/TCP,53/UDP"
    assert printers.service_ports(core_pb2.Service()) == "<none>"
    assert printers.service_external_ip(service) == "<none>"
    alias = core_pb2.Service(spec=core_pb2.ServiceSpec(type="ExternalName",
                                                       external_name="db.example.org"))
    assert printers.service_external_ip(alias) == "db.example.org"


def test_endpoints_show_three_then_how_many_more() -> None:
    endpoints = core_pb2.EndpointsObject(subsets=[core_pb2.EndpointSubset(
        addresses=[core_pb2.EndpointAddress(ip=f"10.0.0.{i}") for i in range(1, 6)],
        ports=[core_pb2.EndpointPort(port=80)])])
    assert printers.format_endpoints(endpoints) == (
        "10.0.0.1:80,10.0.0.2:80,10.0.0.3:80 + 2 more...")
    assert printers.format_endpoints(core_pb2.EndpointsObject()) == "<none>"


def test_event_last_seen_counts_repeats() -> None:
    event = core_pb2.Event(count=5, first_timestamp=stamp(600), last_timestamp=stamp(60))
    assert printers.event_times(event, NOW) == ("60s (x5 over 10m)", "10m")


# ---- tables ----


def test_a_pod_table_is_kubectls_layout() -> None:
    options = TableOptions()
    rows = [table_row(POD, make_pod("web-1"), options, NOW),
            table_row(POD, make_pod("a", phase="Pending"), options, NOW)]
    text = render_table(table_header(POD, options), rows)
    assert text == ("NAME    READY   STATUS    RESTARTS   AGE\n"
                    "web-1   0/1     Running   0          5m\n"
                    "a       0/1     Pending   0          5m\n")


def test_wide_all_namespaces_and_labels_add_columns() -> None:
    pod = make_pod()
    pod.spec.node_name, pod.status.pod_ip = "n1", "10.1.0.7"
    options = TableOptions(wide=True, namespace_column=True, show_labels=True,
                           label_columns=("app",))
    assert table_header(POD, options) == [
        "NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE",
        "NOMINATED NODE", "APP", "LABELS"]
    assert table_row(POD, pod, options, NOW) == [
        "default", "web", "0/1", "Running", "0", "5m", "10.1.0.7", "n1", "<none>", "web",
        "app=web"]


def test_several_kinds_name_rows_by_kind() -> None:
    deploy = apps_pb2.Deployment(metadata=meta_pb2.ObjectMeta(name="web"),
                                 spec=apps_pb2.DeploymentSpec(replicas=3),
                                 status=apps_pb2.DeploymentStatus(ready_replicas=2))
    row = table_row(lookup("deploy"), deploy, TableOptions(with_kind=True), NOW)
    assert row == ["deployment.apps/web", "2/3", "0", "0", "<unknown>"]


def test_cluster_scoped_kinds_have_no_namespace_column() -> None:
    assert table_header(lookup("ns"), TableOptions(namespace_column=True)) == [
        "NAME", "STATUS", "AGE"]


def test_bold_header_on_a_terminal() -> None:
    text = render_table(["NAME", "AGE"], [["web", "5s"]], bold=True)
    assert text.splitlines()[0] == f"{printers.BOLD}NAME   AGE{printers.RESET}"


def test_table_printer_remembers_widths_for_rows_that_come_later() -> None:
    out = io.StringIO()
    table = printers.TablePrinter(out)
    table.print(["NAME", "STATUS"], [["a", "Pending"]])
    table.print(["NAME", "STATUS"], [["a-much-longer-name", "Running"], ["b", "Running"]])
    assert out.getvalue().splitlines() == [
        "NAME   STATUS",
        "a      Pending",
        "a-much-longer-name   Running",
        "b                    Running",
    ]


def test_tabwrite_aligns_column_blocks_as_go_does() -> None:
    text = "Name:\tweb\nNamespace:\tdefault\nContainers:\n  c:\n    Image:\tbusybox\n    Port:\t80"
    assert tabwrite(text) == ("Name:       web\nNamespace:  default\nContainers:\n  c:\n"
                              "    Image:  busybox\n    Port:   80")


# ---- -o forms ----


def test_output_name_json_and_yaml() -> None:
    pods = [make_pod("a"), make_pod("b")]
    assert format_objects(pods, "name", single=False) == "pod/a\npod/b\n"
    listed = json.loads(format_objects(pods, "json", single=False))
    assert listed["kind"] == "List" and listed["apiVersion"] == "v1"
    assert [i["metadata"]["name"] for i in listed["items"]] == ["a", "b"]
    one = json.loads(format_objects(pods[:1], "json", single=True))
    assert one["kind"] == "Pod" and one["metadata"]["creationTimestamp"].endswith("Z")
    as_yaml = yaml.safe_load(format_objects(pods[:1], "yaml", single=True))
    assert manifest.from_dict(as_yaml) == pods[0]
    empty = json.loads(format_objects([], "json", single=False))
    assert empty["items"] == []


def test_watched_yaml_objects_are_separate_documents() -> None:
    text = printers.format_watched(make_pod("a"), "yaml")
    assert text.startswith("---\n")
    (document,) = yaml.safe_load_all(text)
    assert document["metadata"]["name"] == "a"


def test_describe_node_shows_pod_cidrs_once_set() -> None:
    node = core_pb2.Node(metadata=meta_pb2.ObjectMeta(name="n1"))
    assert "PodCIDR" not in describe(lookup("node"), node, Related(), NOW)
    node.spec.pod_cidr = "10.244.3.0/24"
    node.spec.pod_cidrs.append("10.244.3.0/24")
    lines = describe(lookup("node"), node, Related(), NOW).splitlines()
    assert [line.split() for line in lines if line.startswith("PodCIDR")] == [
        ["PodCIDR:", "10.244.3.0/24"], ["PodCIDRs:", "10.244.3.0/24"]]
