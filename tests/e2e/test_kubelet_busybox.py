"""The local busybox image inside a pod run by the kubelet: ``wget``, ``nc`` and
``nslookup`` fetch and resolve, by address, by ``/etc/hosts`` name and through DNS.

Nothing leaves the machine: the pod fetches from its own httpd (its containers share a
network namespace), resolves its own host name from ``/etc/hosts`` and asks a resolver
this test starts on the pod's loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from e2e_pods import container, http_server, pod, status_of, wait_pod

from skiff.health import wait_for
from skiff.kubelet import labels as L

RESPONDER = Path(__file__).with_name("dns_responder.py")
#: The name the resolver in the pod knows, and its address (never contacted).
NAME, ADDRESS = "skiff-e2e.test", "10.1.2.3"


def _finished(name: str):  # type: ignore[no-untyped-def]
    def check(p) -> bool:  # type: ignore[no-untyped-def]
        s = status_of(p, name)
        return s is not None and s.state.HasField("terminated")
    return check


async def _logs(docker, node: str, uid: str, name: str) -> str:  # type: ignore[no-untyped-def]
    found = await docker.containers.list(all=True, filters=json.dumps(
        {"label": [f"{L.NODE}={node}", f"{L.POD_UID}={uid}", f"{L.CONTAINER_NAME}={name}"]}))
    return "".join(await found[0].log(stdout=True, stderr=True)) if found else ""


async def test_wget_and_nc_fetch_by_address_and_by_host_name(api, ns, node, docker):
    # wget by IP (bounded by timeout(1): this busybox's wget -T crashes), then by the
    # pod's host name (Docker's /etc/hosts, NSS "files"); nc speaks HTTP to the same
    # server. Each step retries while httpd starts; a crash (SIGSEGV: 139) ends the
    # script with its status.
    script = """
        set -o pipefail
        retry() { for _ in $(seq 50); do "$@" && return 0; sleep 0.1; done; "$@"; }
        retry sh -c 'timeout 5 wget -q -O- http://127.0.0.1:8080/ | grep -q fetched' \\
          || exit $?
        retry sh -c "wget -q -O- http://$(hostname):8080/ | grep -q fetched" || exit $?
        printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc 127.0.0.1 8080 | grep -q fetched || exit $?
        echo all-fetched
    """
    created = await api.pods.create(pod("fetch", ns, node.name, http_server(body="fetched"),
                                        container("client", "sh", "-c", script),
                                        restart_policy="Never"))
    done = await wait_pod(api, ns, "fetch", _finished("client"), what="client finished")
    finished = status_of(done, "client").state.terminated
    logs = await _logs(docker, node.name, created.metadata.uid, "client")
    assert (finished.exit_code, finished.reason) == (0, "Completed"), logs
    assert "all-fetched" in logs


@contextlib.asynccontextmanager
async def resolver_in(pid: int) -> AsyncIterator[None]:
    """:data:`NAME` resolvable at 127.0.0.1:53 in the network namespace of ``pid``."""
    process = await asyncio.create_subprocess_exec(
        "nsenter", f"--net=/proc/{pid}/ns/net", sys.executable, str(RESPONDER), NAME,
        ADDRESS, stdout=asyncio.subprocess.PIPE)
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), timeout=10)
        assert line.strip() == b"ready", line
        yield
    finally:
        process.kill()
        await process.wait()


@pytest.mark.skipif(os.geteuid() != 0, reason="nsenter into the pod's namespace needs root")
async def test_nslookup_resolves_from_a_resolver_in_the_pod(api, ns, node, docker):
    script = (f"until nslookup {NAME} 127.0.0.1 > /tmp/answer; do sleep 0.2; done; "
              "cat /tmp/answer")
    created = await api.pods.create(pod("resolve", ns, node.name,
                                        container("lookup", "sh", "-c", script),
                                        restart_policy="Never"))
    uid = created.metadata.uid

    async def sandbox_pid() -> int | None:
        found = await docker.containers.list(filters=json.dumps(
            {"label": [f"{L.NODE}={node.name}", f"{L.POD_UID}={uid}",
                       f"{L.CONTAINER_TYPE}={L.SANDBOX}"]}))
        if not found:
            return None
        return (await found[0].show())["State"]["Pid"] or None  # 0 until it runs

    pid = await wait_for(sandbox_pid, timeout=60, interval=0.1, what="the pod's sandbox")
    async with resolver_in(pid):
        done = await wait_pod(api, ns, "resolve", _finished("lookup"), what="lookup done")
    finished = status_of(done, "lookup").state.terminated
    logs = await _logs(docker, node.name, uid, "lookup")
    assert finished.exit_code == 0, logs
    assert f"Name:\t{NAME}\nAddress: {ADDRESS}" in logs
