"""``skiff up --etcd-servers``' own checks against a real three-member etcd 3.4, without
starting a cluster: an etcd that does not answer is named before anything starts, and
``skiff status`` reports each etcd member's health instead of the store replicas'.
(The whole ``skiff up`` on etcd is in tests/e2e/test_cluster_on_etcd.py.)"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator

import pytest

from skiff.cli import cluster
from skiff.health import wait_for
from skiff.testing.etcd import EtcdCluster
from skiff.testing.fixtures import failed
from skiff.testing.processes import free_port

pytestmark = pytest.mark.skipif(shutil.which("etcd") is None,
                                reason="no etcd on PATH (Debian: apt-get install etcd-server)")


@pytest.fixture
async def etcd(tmp_path, request) -> AsyncIterator[EtcdCluster]:
    members = EtcdCluster(tmp_path / "etcd")
    members.start()
    try:
        await members.wait_healthy()
        yield members
    finally:
        members.stop()
        if failed(request):
            print(members.logs())


def _urls(etcd: EtcdCluster) -> tuple[str, ...]:
    return tuple(f"http://{endpoint}" for endpoint in etcd.endpoints)


async def test_an_answering_etcd_passes_the_check(etcd):
    await cluster.check_etcd(_urls(etcd))


async def test_an_etcd_that_does_not_answer_is_named(etcd):
    silent = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(cluster.UpFailed) as refused:
        await cluster.check_etcd((*_urls(etcd), silent), timeout=1.0)
    message = str(refused.value)
    assert f"{silent} does not answer as an etcd v3 server" in message
    assert not any(url in message for url in _urls(etcd))  # only the silent one


async def test_an_etcd_without_quorum_has_no_leader(etcd):
    etcd.kill(1)
    etcd.kill(2)
    lonely = _urls(etcd)[0]

    async def refused() -> str:
        try:
            await cluster.check_etcd((lonely,), timeout=1.0)
        except cluster.UpFailed as e:
            return str(e)
        return ""

    # Once the survivor's election timeout has passed, it knows no leader.
    message = await wait_for(refused, timeout=20.0, interval=0.2, what="no leader")
    assert f"{lonely} answers but has no leader" in message


async def test_status_shows_each_etcd_member_instead_of_the_replicas(etcd):
    lines = await cluster.status_report([], _urls(etcd))
    members = [line for line in lines if line.startswith("etcd ")]
    assert [line.split(": ", 1)[0] for line in members] == [f"etcd {url}" for url in _urls(etcd)]
    assert all("healthy, " in line and ", term " in line for line in members)
    assert sum(", leader," in line for line in members) == 1
    assert not any(line.startswith("store-") for line in lines)
    etcd.kill(2)
    lines = await cluster.status_report([], _urls(etcd))
    assert lines[2] == f"etcd {_urls(etcd)[2]}: unreachable (UNAVAILABLE)"
