"""Translating a pod's containers into Docker's create bodies, and reading inspect output."""

from services.kubelet.runtime import (
    CPU_PERIOD,
    container_config,
    from_inspect,
    group_by_pod,
    parse_docker_time,
    sandbox_config,
)
from skiff.api.v1 import core_pb2, meta_pb2
from skiff.kubelet import labels as L


def _pod(*containers: core_pb2.Container) -> core_pb2.Pod:
    return core_pb2.Pod(metadata=meta_pb2.ObjectMeta(name="p", namespace="ns", uid="u1"),
                        spec=core_pb2.PodSpec(containers=list(containers)))


def test_command_overrides_entrypoint_and_args_override_cmd():
    c = core_pb2.Container(name="a", image="img", command=["httpd"], args=["-f"])
    config = container_config(_pod(c), c, node="n1", sandbox_id="sb", restart_count=2)
    assert config["Entrypoint"] == ["httpd"] and config["Cmd"] == ["-f"]
    only_args = core_pb2.Container(name="a", image="img", args=["x"])
    config = container_config(_pod(only_args), only_args, node="n1", sandbox_id="sb",
                              restart_count=0)
    assert "Entrypoint" not in config and config["Cmd"] == ["x"]
    only_command = core_pb2.Container(name="a", image="img", command=["sh"])
    config = container_config(_pod(only_command), only_command, node="n1", sandbox_id="sb",
                              restart_count=0)
    assert config["Entrypoint"] == ["sh"] and config["Cmd"] == []  # the image's CMD dropped


def test_settings_labels_and_network_of_an_app_container():
    c = core_pb2.Container(
        name="web", image="img", working_dir="/srv",
        env=[core_pb2.EnvVar(name="A", value="1")],
        ports=[core_pb2.ContainerPort(container_port=8080, protocol="TCP")],
        resources=core_pb2.ResourceRequirements(limits={"cpu": "500m", "memory": "64Mi"}))
    config = container_config(_pod(c), c, node="n1", sandbox_id="sb", restart_count=3)
    assert config["Env"] == ["A=1"] and config["WorkingDir"] == "/srv"
    assert "ExposedPorts" not in config  # Docker refuses them with a joined network
    assert sandbox_config(_pod(c), node="n1", network="net", image="pause",
                          attempt=0)["ExposedPorts"] == {"8080/tcp": {}}
    host = config["HostConfig"]
    assert host["NetworkMode"] == "container:sb"
    assert host["Memory"] == 64 * 1024 * 1024
    assert (host["CpuPeriod"], host["CpuQuota"]) == (CPU_PERIOD, CPU_PERIOD // 2)
    assert config["Labels"] == L.container_labels(node="n1", uid="u1", namespace="ns",
                                                  pod="p", container="web", restart_count=3)
    assert L.docker_name(config["Labels"]) == "k8s_web_p_ns_u1_3"


def test_the_pods_resolv_conf_is_mounted_over_the_containers_and_env_given_is_used():
    c = core_pb2.Container(name="web", image="img", env=[core_pb2.EnvVar(name="A", value="1")])
    mount = {"Type": "bind", "Source": "/k/pods/u1/resolv.conf", "Target": "/etc/resolv.conf",
             "ReadOnly": True}
    config = container_config(_pod(c), c, node="n1", sandbox_id="sb", restart_count=0,
                              env=["WEB_SERVICE_HOST=10.96.0.5", "A=1"],
                              resolv_conf="/k/pods/u1/resolv.conf")
    assert config["Env"] == ["WEB_SERVICE_HOST=10.96.0.5", "A=1"]
    assert config["HostConfig"]["Mounts"] == [mount]
    sandbox = sandbox_config(_pod(c), node="n1", network="none", image="pause", attempt=0,
                             resolv_conf="/k/pods/u1/resolv.conf")
    assert sandbox["HostConfig"]["Mounts"] == [mount]
    # Without a file, Docker's own resolv.conf is left alone.
    assert "Mounts" not in container_config(_pod(c), c, node="n1", sandbox_id="sb",
                                            restart_count=0)["HostConfig"]
    assert "Mounts" not in sandbox_config(_pod(c), node="n1", network="none", image="pause",
                                          attempt=0)["HostConfig"]


def test_sandbox_on_the_node_network():
    config = sandbox_config(_pod(), node="n1", network="skiff-n1", image="skiff/pause:latest",
                            attempt=1)
    assert config["HostConfig"]["NetworkMode"] == "skiff-n1"
    assert config["Labels"][L.CONTAINER_TYPE] == L.SANDBOX
    assert config["Labels"][L.CONTAINER_NAME] == L.SANDBOX_NAME


def test_inspect_and_grouping():
    assert parse_docker_time("0001-01-01T00:00:00Z") == 0.0
    assert parse_docker_time("1970-01-01T00:00:10.5Z") == 10.5
    labels = L.container_labels(node="n1", uid="u1", namespace="ns", pod="p", container="a",
                                restart_count=1)
    data = {"Id": "c1", "Created": "1970-01-01T00:00:01Z", "Image": "sha256:1",
            "Config": {"Labels": labels, "Image": "img"},
            "State": {"Status": "exited", "ExitCode": 3, "StartedAt": "1970-01-01T00:00:02Z",
                      "FinishedAt": "1970-01-01T00:00:04Z"},
            "NetworkSettings": {"Networks": {"skiff-n1": {"IPAddress": "10.0.0.2"}}}}
    c = from_inspect(data, "skiff-n1")
    assert (c.name, c.pod_uid, c.restart_count, c.exit_code, c.started_at, c.finished_at,
            c.ip) == ("a", "u1", 1, 3, 2.0, 4.0, "10.0.0.2")
    newer = from_inspect({**data, "Id": "c2", "Config": {"Labels": {**labels,
                          L.RESTART_COUNT: "2"}}}, "skiff-n1")
    pods = group_by_pod([c, newer])
    assert [x.id for x in pods["u1"].instances("a")] == ["c2", "c1"]
