"""skiffctl's logs, exec and top: argument parsing, requests and printing (no server)."""

from __future__ import annotations

import grpc
import pytest

from skiff.api import errors
from skiff.api.v1 import core_pb2
from skiff.cli.skiffctl import execute, logs, top
from skiff.cli.skiffctl.common import CommandError
from skiff.cli.skiffctl.kubelet import kubelet_address, kubelet_error, pod_name
from skiff.cli.skiffctl.main import build_parser, parse
from skiff.cli.skiffctl.printers import render_table
from skiff.kubelet.v1 import kubelet_pb2


def args_of(*argv: str):
    return parse(build_parser(), list(argv))


# ---- logs ----


def test_logs_flags_make_the_request():
    args = args_of("logs", "pod/web", "-c", "app", "--tail", "5", "-f", "--timestamps",
                   "-p")
    request = logs.logs_request(args, "prod")
    assert request == kubelet_pb2.LogsRequest(namespace="prod", pod="web", container="app",
                                              tail_lines=5, follow=True, timestamps=True,
                                              previous=True)
    assert args.func is logs.run


def test_logs_tail_defaults_to_everything():
    request = logs.logs_request(args_of("logs", "web"), "default")
    assert not request.HasField("tail_lines") and not request.follow
    assert logs.logs_request(args_of("logs", "web", "--tail=0"), "d").tail_lines == 0
    with pytest.raises(CommandError, match="--tail"):
        logs.logs_request(args_of("logs", "web", "--tail", "-2"), "default")


def test_logs_takes_namespace_after_the_command():
    args = args_of("logs", "web", "-n", "prod", "--previous")
    assert args.namespace == "prod" and args.previous


# ---- exec ----


def exec_request(*argv: str, namespace: str = "default"):
    args, given = execute.split_command(args_of("exec", *argv))
    return execute.exec_request(args, given or namespace), given


def test_exec_command_after_double_dash_keeps_its_flags():
    request, given = exec_request("web", "-c", "app", "--", "sh", "-c", "echo hi")
    assert list(request.command) == ["sh", "-c", "echo hi"]
    assert request.container == "app" and request.pod == "web" and given is None
    request, _ = exec_request("-c", "app", "pod/web", "--", "ls", "-l", "-n", "x")
    assert (request.container, list(request.command)) == ("app", ["ls", "-l", "-n", "x"])


def test_exec_flags_between_pod_and_double_dash():
    request, given = exec_request("web", "-n", "prod", "--timeout", "5s", "-c", "db",
                                  "--", "date")
    assert given == "prod" and request.namespace == "prod"
    assert request.timeout == 5.0 and request.container == "db"
    assert list(request.command) == ["date"]


def test_exec_without_double_dash_and_refusals():
    request, _ = exec_request("web", "ls", "/")
    assert list(request.command) == ["ls", "/"]
    with pytest.raises(CommandError, match="at least one command"):
        exec_request("web")
    with pytest.raises(CommandError, match="at least one command"):
        exec_request("web", "--")
    with pytest.raises(CommandError, match="not interactive"):
        exec_request("-it", "web", "--", "sh")
    with pytest.raises(CommandError, match="unknown flags before --: --bogus"):
        exec_request("web", "--bogus", "--", "sh")


# ---- finding the kubelet ----


def node(name: str = "n1", ip: str = "127.0.1.1", port: int = 10251) -> core_pb2.Node:
    obj = core_pb2.Node()
    obj.metadata.name = name
    obj.status.addresses.add(type="Hostname", address="host")
    if ip:
        obj.status.addresses.add(type="InternalIP", address=ip)
    obj.status.daemon_endpoints.kubelet_endpoint.port = port
    return obj


def test_kubelet_address_from_the_node_status():
    assert kubelet_address(node()) == "127.0.1.1:10251"
    assert kubelet_address(node(ip="::1")) == "[::1]:10251"
    with pytest.raises(CommandError, match='node "n1" has no kubelet address'):
        kubelet_address(node(ip=""))
    with pytest.raises(CommandError, match="no kubelet address"):
        kubelet_address(node(port=0))


def test_pod_names():
    assert pod_name("web") == pod_name("po/web") == pod_name("pods/web") == "web"
    with pytest.raises(CommandError, match="not a pod"):
        pod_name("svc/web")


def rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


def test_kubelet_errors_blame_the_node_or_pass_the_api_error():
    unreachable = kubelet_error("n1", "127.0.1.1:10251",
                                rpc_error(grpc.StatusCode.UNAVAILABLE, "connection refused"))
    assert isinstance(unreachable, CommandError)
    assert 'kubelet of node "n1" at 127.0.1.1:10251' in str(unreachable)
    slow = kubelet_error("n1", "a", rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "late"))
    assert isinstance(slow, CommandError)  # not the apiserver's Unavailable
    missing = kubelet_error("n1", "a", rpc_error(grpc.StatusCode.NOT_FOUND, 'pods "x"'))
    assert isinstance(missing, errors.NotFound) and str(missing) == 'pods "x"'
    bad = kubelet_error("n1", "a", rpc_error(grpc.StatusCode.INVALID_ARGUMENT,
                                             "container: choose one of: [a b]"))
    assert isinstance(bad, errors.BadRequest)


# ---- top ----


def test_top_parsing():
    args = args_of("top", "pods", "-A", "--containers")
    assert args.func is top.run_pods and args.all_namespaces and args.containers
    args = args_of("top", "po", "web", "-n", "prod")
    assert args.name == "web" and args.namespace == "prod"
    args = args_of("top", "nodes", "n1")
    assert args.func is top.run_nodes and args.name == "n1"
    with pytest.raises(SystemExit):
        args_of("top", "services")


def test_cpu_and_memory_as_kubectl_prints_them():
    assert top.format_cpu(0) == "0m"
    assert top.format_cpu(1) == "1m"  # rounded up, as MilliValue
    assert top.format_cpu(2_500_000_000) == "2500m"
    assert top.format_memory(5 * 1024 * 1024 + 1) == "5Mi"
    assert top.format_memory(1000) == "0Mi"


def make_pod(name: str, uid: str, namespace: str = "default") -> core_pb2.Pod:
    pod = core_pb2.Pod()
    pod.metadata.name, pod.metadata.uid, pod.metadata.namespace = name, uid, namespace
    return pod


def pod_stats(uid: str, *containers: tuple[str, int, int]) -> kubelet_pb2.PodStats:
    stats = kubelet_pb2.PodStats(uid=uid)
    for name, cpu, memory in containers:
        stats.containers.add(name=name, cpu_nanocores=cpu, memory_working_set_bytes=memory)
        stats.cpu_nanocores += cpu
        stats.memory_working_set_bytes += memory
    return stats


def test_top_pods_table():
    pods = [make_pod("web", "u1"), make_pod("db", "u2", "data"), make_pod("pending", "u3")]
    stats = {"u1": pod_stats("u1", ("app", 3_000_000, 10 * 1024 * 1024),
                             ("side", 1_000_000, 2 * 1024 * 1024)),
             "u2": pod_stats("u2", ("pg", 250_000_000, 300 * 1024 * 1024))}
    text = render_table(top.pod_header(), top.pod_rows(pods, stats))
    assert text == ("NAME   CPU(cores)   MEMORY(bytes)\n"
                    "web    4m           12Mi\n"
                    "db     250m         300Mi\n")
    rows = top.pod_rows(pods, stats, all_namespaces=True, containers=True)
    assert top.pod_header(all_namespaces=True, containers=True) == [
        "NAMESPACE", "POD", "NAME", "CPU(cores)", "MEMORY(bytes)"]
    assert rows == [["default", "web", "app", "3m", "10Mi"],
                    ["default", "web", "side", "1m", "2Mi"],
                    ["data", "db", "pg", "250m", "300Mi"]]


def test_top_nodes_table_with_percentages_and_unknown():
    n1, n2, n3 = node("n1"), node("n2"), node("n3")
    n1.status.allocatable["cpu"] = "2"
    n1.status.allocatable["memory"] = "1Gi"
    stats = {"n1": kubelet_pb2.NodeStats(name="n1", cpu_nanocores=500_000_000,
                                         memory_working_set_bytes=256 * 1024 * 1024),
             # No allocatable in the Node: what the kubelet saw of the machine.
             "n3": kubelet_pb2.NodeStats(name="n3", cpu_nanocores=100_000_000,
                                         memory_working_set_bytes=512 * 1024 * 1024,
                                         cpu_capacity_nanocores=4_000_000_000,
                                         memory_capacity_bytes=2 * 1024 ** 3)}
    rows = top.node_rows([n1, n2, n3], stats)
    assert rows == [["n1", "500m", "25%", "256Mi", "25%"],
                    ["n2", "<unknown>", "<unknown>", "<unknown>", "<unknown>"],
                    ["n3", "100m", "2%", "512Mi", "25%"]]
    assert render_table(top.NODE_HEADER, rows).splitlines()[0] == (
        "NAME   CPU(cores)   CPU%        MEMORY(bytes)   MEMORY%")
