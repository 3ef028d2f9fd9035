"""Debian's kubectl 1.20 (package ``kubernetes-client``) against the REST API: ``get``,
``apply`` and ``delete``.

Debian's package ships /usr/bin/kubectl, the path of the kubectl 1.32 the other tests
use, so it is not installed here: point ``SKIFF_KUBECTL_1_20`` at its binary (e.g.
extracted with ``apt-get download kubernetes-client && dpkg-deb -x``); without it the
test is skipped. kubectl 1.20 validates against OpenAPI v2, which Skiff does not serve:
``apply`` needs ``--validate=false``.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from skiff.testing.fixtures import rest_apiserver
from skiff.testing.processes import APIServer

KUBECTL = os.environ.get("SKIFF_KUBECTL_1_20", "")
pytestmark = pytest.mark.skipif(not KUBECTL or not Path(KUBECTL).exists(),
                                reason="SKIFF_KUBECTL_1_20 names no kubectl 1.20 binary")


@pytest.fixture(scope="module")
def server(shared_cluster, tmp_path_factory) -> Iterator[APIServer]:
    with rest_apiserver(tmp_path_factory.mktemp("rest-kubectl-1-20"),
                        shared_cluster.store.endpoints) as api:
        yield api


async def kubectl(server: APIServer, home: Path, *args: str,
                  stdin: str | None = None) -> tuple[int, str, str]:
    env = {**os.environ, "KUBECONFIG": str(server.kubeconfig), "HOME": str(home),
           "KUBECACHEDIR": str(home / "cache")}
    process = await asyncio.create_subprocess_exec(
        KUBECTL, *args, env=env, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(
        process.communicate(stdin.encode() if stdin is not None else None), 30)
    return process.returncode or 0, out.decode(), err.decode()


async def test_get_apply_delete(server, tmp_path):
    async def ok(*args: str, stdin: str | None = None) -> str:
        code, out, err = await kubectl(server, tmp_path, *args, stdin=stdin)
        assert code == 0, f"kubectl {' '.join(args)}: {err}"
        return out

    _, version, _ = await kubectl(server, tmp_path, "version", "--client", "--short")
    assert "v1.20" in version
    ns = f"kc20-{secrets.token_hex(3)}"
    await ok("create", "namespace", ns)
    cm = {"apiVersion": "v1", "kind": "Pod",
          "metadata": {"name": "p", "labels": {"app": "old"}},
          "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
    assert (await ok("apply", "--validate=false", "-n", ns, "-f", "-",
                     stdin=json.dumps(cm))).strip() == "pod/p created"
    cm["metadata"]["labels"] = {"app": "new"}
    assert (await ok("apply", "--validate=false", "-n", ns, "-f", "-",
                     stdin=json.dumps(cm))).strip() == "pod/p configured"
    got = json.loads(await ok("get", "pod", "p", "-n", ns, "-o", "json"))
    assert got["metadata"]["labels"] == {"app": "new"}
    table = (await ok("get", "pods", "-n", ns)).splitlines()
    assert table[0].split()[:3] == ["NAME", "READY", "STATUS"] and table[1].split()[0] == "p"
    await ok("delete", "pod", "p", "-n", ns, "--grace-period=0", "--force")
    assert (await ok("get", "pods", "-n", ns, "-o", "name")).strip() == ""
    await ok("delete", "namespace", ns, "--wait=false")
