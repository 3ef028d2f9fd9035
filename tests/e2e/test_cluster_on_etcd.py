"""``skiff up --etcd-servers`` end to end: the local cluster on a real three-member
etcd 3.4 (Debian's) that the test starts on free loopback ports in a directory apart
from the cluster's data directory.

``skiff up --etcd-servers URLS --no-demo --nodes 1`` starts no store replica; a
Deployment applied with skiffctl gets its pod running through the real kubelet and
Docker, and its objects are in etcd under /registry/ (read with etcdctl, etcd's own
client); ``skiff status`` shows the etcd members. ``skiff down --purge`` then removes
the cluster's data directory and leaves etcd alone: its members still run and still
hold the objects.

Like tests/e2e/test_cluster.py it uses the cluster's default ports (6443, 10250, ...,
but not the store's), so nothing else may run a local cluster on this machine meanwhile.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from skiff.client.client import Client
from skiff.health import wait_for
from skiff.testing.etcd import EtcdCluster
from skiff.testing.fixtures import failed

REPO = Path(__file__).resolve().parents[2]
APISERVER = "127.0.0.1:6443"
NAMESPACE = "on-etcd"
MANIFEST = f"""\
apiVersion: v1
kind: Namespace
metadata:
  name: {NAMESPACE}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: {NAMESPACE}
spec:
  replicas: 1
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      terminationGracePeriodSeconds: 1
      containers:
        - name: sleeper
          image: skiff/busybox   # built locally by skiff up
          imagePullPolicy: IfNotPresent
          command: ["sleep", "3600"]
"""

pytestmark = [
    pytest.mark.timeout(420),
    pytest.mark.skipif(shutil.which("etcd") is None or shutil.which("etcdctl") is None,
                       reason="Debian's etcd-server and etcd-client are not installed"),
]


def _run(argv: list[str], *, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          check=False)


def _skiff(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return _run([sys.executable, "-m", "skiff.cli.cluster", *args], timeout=timeout)


def _skiffctl(*args: str) -> subprocess.CompletedProcess[str]:
    return _run([sys.executable, "-m", "skiff.cli.skiffctl", "--server", APISERVER, *args],
                timeout=60)


def _etcd_keys(etcd: EtcdCluster, prefix: str) -> list[str]:
    """The keys under ``prefix``, read by etcdctl (etcd's own v3 client)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL")}
    done = subprocess.run(["etcdctl", "--endpoints", ",".join(etcd.endpoints), "get",
                           "--prefix", prefix, "--keys-only"], capture_output=True,
                          text=True, timeout=30, check=True, env={**env, "ETCDCTL_API": "3"})
    return [line for line in done.stdout.splitlines() if line]


@pytest.fixture
def etcd(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[EtcdCluster]:
    """Three etcd members, healthy, under their own directory; stopped after the test."""
    members = EtcdCluster(tmp_path / "etcd")
    members.start()
    try:
        asyncio.run(members.wait_healthy())
        yield members
    finally:
        members.stop()
        if failed(request):
            print(members.logs(20))


async def _pod_running(namespace: str) -> bool:
    async with Client(APISERVER, retry_deadline=5.0) as client:
        pods = await client.pods.list(namespace)
    return any(p.status.phase == "Running" for p in pods.items)


async def test_skiff_up_on_an_existing_etcd_and_down_leaves_it_alone(
        etcd: EtcdCluster, tmp_path: Path, request: pytest.FixtureRequest):
    data_dir = tmp_path / "data"
    urls = ",".join(f"http://{endpoint}" for endpoint in etcd.endpoints)
    manifest = tmp_path / "web.yaml"
    manifest.write_text(MANIFEST)
    try:
        up = _skiff("up", "--etcd-servers", urls, "--no-demo", "--nodes", "1",
                    "--data-dir", str(data_dir), "--timeout", "200", timeout=260)
        assert up.returncode == 0, f"skiff up failed:\n{up.stdout}\n{up.stderr}"
        assert f"etcd (existing, not managed):   {urls}" in up.stdout
        assert "[program:store-" not in (data_dir / "supervisord.conf").read_text()

        status = _skiff("status", "--data-dir", str(data_dir), timeout=60)
        assert status.returncode == 0, status.stdout + status.stderr
        for url in urls.split(","):
            assert f"etcd {url}: healthy, " in status.stdout
        assert "store-" not in status.stdout
        assert "node node-1: Ready=True" in status.stdout

        applied = _skiffctl("apply", "-f", str(manifest))
        assert applied.returncode == 0, applied.stdout + applied.stderr
        await wait_for(lambda: _pod_running(NAMESPACE), timeout=120, interval=0.5,
                       what="the Deployment's pod Running")
        assert _etcd_keys(etcd, f"/registry/deployments/{NAMESPACE}/") == [
            f"/registry/deployments/{NAMESPACE}/web"]
        pods = _etcd_keys(etcd, f"/registry/pods/{NAMESPACE}/")
        assert len(pods) == 1 and pods[0].startswith(f"/registry/pods/{NAMESPACE}/web-")
    finally:
        if failed(request) and (data_dir / "logs").is_dir():
            for log in sorted((data_dir / "logs").glob("*.log")):
                print(f"--- {log.name}\n" + "\n".join(log.read_text().splitlines()[-30:]))
        down = _skiff("down", "--purge", "--data-dir", str(data_dir), timeout=120)

    assert down.returncode == 0, down.stdout + down.stderr
    assert f"left alone: the etcd at {urls}" in down.stdout
    assert not data_dir.exists()
    # etcd's members still run, on their data, and still hold what the cluster wrote.
    assert all(member.daemon.alive for member in etcd.members)
    assert all((member.data_dir / "member").is_dir() for member in etcd.members)
    assert _etcd_keys(etcd, f"/registry/deployments/{NAMESPACE}/") == [
        f"/registry/deployments/{NAMESPACE}/web"]
    assert _etcd_keys(etcd, f"/registry/namespaces/{NAMESPACE}") == [
        f"/registry/namespaces/{NAMESPACE}"]
