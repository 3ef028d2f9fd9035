"""``pods/log`` through the REST API: the apiserver fetches a container's log from the
pod's real kubelet (Docker underneath), for the Python client and for ``kubectl logs``."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator

import pytest
from e2e_pods import container, pod, status_of, wait_pod
from kubernetes import client, config

from services.apiserver.rest import codec
from skiff.api.kinds import lookup
from skiff.testing.fixtures import rest_apiserver
from skiff.testing.processes import APIServer


@pytest.fixture(scope="module")
def server(shared_cluster, tmp_path_factory) -> Iterator[APIServer]:
    with rest_apiserver(tmp_path_factory.mktemp("rest-e2e"),
                        shared_cluster.store.endpoints) as api:
        yield api


def _terminated(p) -> bool:  # type: ignore[no-untyped-def]
    s = status_of(p, "talk")
    return s is not None and s.state.HasField("terminated")


async def test_pod_log_from_the_kubelet(server, api, ns, node, tmp_path):
    created = pod("talker", ns, node.name,
                  container("talk", "sh", "-c", "for i in 1 2 3 4; do echo line-$i; done"),
                  restart_policy="Never")
    rest = config.new_client_from_config(config_file=str(server.kubeconfig))
    core = client.CoreV1Api(rest)
    body = codec.encode(created, lookup("Pod"))
    await asyncio.to_thread(core.create_namespaced_pod, ns, body)
    await wait_pod(api, ns, "talker", _terminated, what="talker finished")

    text = await asyncio.to_thread(core.read_namespaced_pod_log, "talker", ns)
    assert text.split() == ["line-1", "line-2", "line-3", "line-4"]
    tail = await asyncio.to_thread(core.read_namespaced_pod_log, "talker", ns, tail_lines=2,
                                   container="talk")
    assert tail.split() == ["line-3", "line-4"]
    rest.close()

    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return
    env = {**os.environ, "KUBECONFIG": str(server.kubeconfig),
           "KUBECACHEDIR": str(tmp_path / "cache"), "HOME": str(tmp_path)}
    process = await asyncio.create_subprocess_exec(
        kubectl, "logs", "talker", "-n", ns, "--tail", "1", "-c", "talk", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()
    assert out.decode().split() == ["line-4"]
