"""The kubelet's pod address allocation: round-robin in the podCIDR, the gateway and
the ends skipped, persisted across a restart, reconciled against running sandboxes."""

from __future__ import annotations

import json

import pytest

from services.kubelet.ipam import IPAM, PoolExhausted, gateway, next_free


def test_the_gateway_is_the_first_host_address():
    assert gateway("10.244.3.0/24") == "10.244.3.1"


def test_next_free_skips_the_gateway_and_what_is_taken():
    assert next_free("10.244.3.0/24", set()) == "10.244.3.2"
    assert next_free("10.244.3.0/24", {"10.244.3.2", "10.244.3.3"}) == "10.244.3.4"


def test_next_free_goes_round_robin_after_the_last_and_wraps():
    assert next_free("10.244.3.0/24", set(), last="10.244.3.7") == "10.244.3.8"
    # .254 is the last host address (.255 is the broadcast address): wrap to .2.
    assert next_free("10.244.3.0/24", set(), last="10.244.3.254") == "10.244.3.2"


def test_a_full_pool_says_so():
    with pytest.raises(PoolExhausted, match=r"10\.244\.3\.0/30"):
        next_free("10.244.3.0/30", {"10.244.3.2"})


async def test_allocations_survive_a_restart_and_are_never_handed_out_twice(tmp_path):
    path = tmp_path / "ipam.json"
    ipam = IPAM(path, "10.244.3.0/24")
    a = await ipam.allocate("sandbox-a", pod_uid="u1", pod="ns/a", now=1.0)
    assert await ipam.allocate("sandbox-a", pod_uid="u1", pod="ns/a", now=2.0) == a
    b = await ipam.allocate("sandbox-b", pod_uid="u2", pod="ns/b", now=1.0)
    assert a != b

    again = IPAM(path, "10.244.3.0/24")  # a restarted kubelet
    assert again.ip_of("sandbox-a") == a and again.ip_of("sandbox-b") == b
    c = await again.allocate("sandbox-c", pod_uid="u3", pod="ns/c", now=3.0)
    assert c not in (a, b)
    assert json.loads(path.read_text())["last"] == c


async def test_a_released_address_is_not_reused_at_once(tmp_path):
    ipam = IPAM(tmp_path / "ipam.json", "10.244.3.0/24")
    a = await ipam.allocate("sandbox-a", pod_uid="u1", pod="ns/a", now=1.0)
    assert await ipam.release("sandbox-a") == a
    assert await ipam.release("sandbox-a") == ""
    assert await ipam.allocate("sandbox-b", pod_uid="u2", pod="ns/b", now=1.0) != a


async def test_reconcile_frees_the_gone_but_not_what_was_made_after_the_listing(tmp_path):
    ipam = IPAM(tmp_path / "ipam.json", "10.244.3.0/24")
    await ipam.allocate("running", pod_uid="u1", pod="ns/a", now=1.0)
    gone = await ipam.allocate("gone", pod_uid="u2", pod="ns/b", now=1.0)
    await ipam.allocate("new", pod_uid="u3", pod="ns/c", now=5.0)
    freed = await ipam.reconcile({"running"}, before=4.0)
    assert [f.ip for f in freed] == [gone]
    assert set(IPAM(tmp_path / "ipam.json", "10.244.3.0/24").by_container) == {"running", "new"}


async def test_allocations_outside_a_changed_pod_cidr_are_dropped(tmp_path):
    path = tmp_path / "ipam.json"
    await IPAM(path, "10.244.3.0/24").allocate("s", pod_uid="u", pod="ns/a", now=1.0)
    assert IPAM(path, "10.244.4.0/24").by_container == {}


def test_an_unreadable_file_is_a_clear_error(tmp_path):
    path = tmp_path / "ipam.json"
    path.write_text("{not json")
    with pytest.raises(RuntimeError, match="unreadable IPAM state"):
        IPAM(path, "10.244.3.0/24")
