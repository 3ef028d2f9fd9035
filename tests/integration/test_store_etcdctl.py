"""etcd's own client, etcdctl (v3 API), against every replica: the wire compatibility check.

Each command runs as an asyncio subprocess; ``etcdctl watch`` runs in the background
while other etcdctl processes write, and its output is read line by line with a deadline.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re

from storeclient import (
    DEADLINE,
    ETCDCTL_ENV,
    connect,
    etcdctl,
    etcdctl_argv,
    needs_etcdctl,
    run_etcdctl,
)

pytestmark = needs_etcdctl

COMPACTED = "etcdserver: mvcc: required revision has been compacted"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def test_put_get_and_del_through_every_replica(store_cluster):
    endpoints = store_cluster.endpoints
    for i, endpoint in enumerate(endpoints):
        assert await etcdctl(endpoint, "put", f"k/{i}", f"v{i}") == "OK\n"   # 2, 3, 4
    await etcdctl(endpoints[0], "put", "other", "o")                          # 5
    for endpoint in endpoints:
        assert await etcdctl(endpoint, "get", "--prefix", "k/") == "k/0\nv0\nk/1\nv1\nk/2\nv2\n"
        assert await etcdctl(endpoint, "get", "", "--prefix", "--keys-only") == (
            "k/0\n\nk/1\n\nk/2\n\nother\n\n")
    b = endpoints[1]
    assert await etcdctl(b, "get", "k/", "--from-key", "--limit=2") == "k/0\nv0\nk/1\nv1\n"
    assert await etcdctl(b, "get", "--prefix", "k/", "--sort-by=MODIFY", "--order=DESCEND",
                         "--print-value-only") == "v2\nv1\nv0\n"
    assert await etcdctl(b, "get", "--consistency=s", "other") == "other\no\n"
    got = json.loads(await etcdctl(endpoints[2], "get", "k/1", "-w", "json"))
    assert got["header"]["revision"] == 5
    assert got["kvs"] == [{"key": b64("k/1"), "value": b64("v1"), "create_revision": 3,
                           "mod_revision": 3, "version": 1}]
    counted = json.loads(await etcdctl(b, "get", "--prefix", "k/", "--limit=1", "-w", "json"))
    assert (counted["count"], counted["more"], len(counted["kvs"])) == (3, True, 1)

    assert await etcdctl(endpoints[2], "put", "k/1", "again", "--prev-kv") == (
        "OK\nk/1\nv1\n")                                                        # 6
    assert await etcdctl(endpoints[0], "get", "k/1", "--rev=5") == "k/1\nv1\n"
    assert await etcdctl(b, "del", "k/0") == "1\n"                             # 7
    assert await etcdctl(endpoints[0], "del", "--prefix", "k/", "--prev-kv") == (
        "2\nk/1\nagain\nk/2\nv2\n")                                             # 8
    assert await etcdctl(endpoints[2], "del", "nothing") == "0\n"
    for endpoint in endpoints:
        assert await etcdctl(endpoint, "get", "", "--prefix") == "other\no\n"
    async with connect(endpoints[0]) as client:
        assert await client.revision() == 8


async def test_a_background_watch_prints_the_events_written_through_other_replicas(
        store_cluster):
    a, b, c = store_cluster.endpoints
    await etcdctl(b, "put", "w/before", "0")                                    # 2
    # From revision 2, so that what happens before the watch is set up is not missed.
    watcher = await asyncio.create_subprocess_exec(
        *etcdctl_argv(a, "watch", "--prefix", "w/", "--rev=2", "--prev-kv"), env=ETCDCTL_ENV,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        await etcdctl(b, "put", "w/a", "1")                                     # 3
        await etcdctl(c, "put", "w/a", "2")                                     # 4
        await etcdctl(b, "put", "x/ignored", "3")                               # 5
        await etcdctl(c, "del", "w/before")                                     # 6
        # etcdctl's txn script: compares, blank line, success ops, blank line, failure ops.
        await etcdctl(b, "txn", stdin=b'\nput w/t1 "a"\nput w/t2 "b"\n\n\n')    # 7
        expected = ["PUT", "w/before", "0",
                    "PUT", "w/a", "1",
                    "PUT", "w/a", "1", "w/a", "2",  # with --prev-kv: the previous, then the new
                    "DELETE", "w/before", "0", "w/before", "",
                    "PUT", "w/t1", "a",
                    "PUT", "w/t2", "b"]
        lines: list[str] = []
        assert watcher.stdout is not None
        while len(lines) < len(expected):
            line = await asyncio.wait_for(watcher.stdout.readline(), DEADLINE)
            assert line, f"etcdctl watch ended early after {lines}"
            lines.append(line.decode().rstrip("\n"))
        assert lines == expected
        assert watcher.returncode is None  # still watching
    finally:
        watcher.terminate()
        await watcher.wait()


async def test_watch_and_get_below_a_compaction_fail_as_with_etcd(store_cluster):
    a, b, _ = store_cluster.endpoints
    for value in ("1", "2", "3"):
        await etcdctl(a, "put", "k", value)                                     # 2, 3, 4
    assert await etcdctl(b, "compaction", "3") == "compacted revision 3\n"
    status, out, err = await run_etcdctl(b, "get", "k", "--rev=2")
    assert (status, out) != (0, "") and f"Error: {COMPACTED}" in err
    status, out, err = await run_etcdctl(a, "watch", "k", "--rev=2")
    assert status != 0 and f"watch was canceled ({COMPACTED})" in out + err
    assert await etcdctl(a, "get", "k", "--rev=3") == "k\n2\n"


async def test_txn_from_stdin_takes_either_branch(store_cluster):
    a, b, c = store_cluster.endpoints
    await etcdctl(a, "put", "k", "v")                                           # 2
    script = (b'value("k") = "v"\nversion("k") = "1"\ncreate("k") = "2"\nmod("k") < "3"\n'
              b'\n'
              b'put k "new"\nget k\n'
              b'\n'
              b'put k "failed"\n'
              b'\n')
    assert await etcdctl(b, "txn", stdin=script) == "SUCCESS\n\nOK\n\nk\nnew\n"  # 3
    # The same compares now fail (k changed): the failure branch runs.
    assert await etcdctl(c, "txn", stdin=script) == "FAILURE\n\nOK\n"           # 4
    assert await etcdctl(a, "get", "k", "-w", "fields") == (
        '"ClusterID" : {cluster}\n"MemberID" : {member}\n"Revision" : 4\n"RaftTerm" : {term}\n'
        '"Key" : "k"\n"CreateRevision" : 2\n"ModRevision" : 4\n"Version" : 3\n'
        '"Value" : "failed"\n"Lease" : 0\n"More" : false\n"Count" : 1\n'
    ).format(**await _header_fields(a))
    # A compare on a missing key, and a branch that only reads.
    missing = b'version("nope") = "0"\n\nget k\n\n\n'
    assert await etcdctl(a, "txn", stdin=missing) == "SUCCESS\n\nk\nfailed\n"


async def _header_fields(endpoint: str) -> dict[str, str]:
    fields = await etcdctl(endpoint, "get", "k", "-w", "fields")
    found = dict(re.findall(r'"(ClusterID|MemberID|RaftTerm)" : (\d+)', fields))
    return {"cluster": found["ClusterID"], "member": found["MemberID"],
            "term": found["RaftTerm"]}


async def test_lease_grant_keep_alive_time_to_live_list_and_revoke(store_cluster):
    a, b, c = store_cluster.endpoints
    granted = await etcdctl(a, "lease", "grant", "60")
    match = re.fullmatch(r"lease ([0-9a-f]{16}) granted with TTL\(60s\)\n", granted)
    assert match, granted
    lease = match.group(1)
    assert await etcdctl(b, "put", "--lease", lease, "leased", "v") == "OK\n"   # 2
    assert await etcdctl(c, "lease", "keep-alive", "--once", lease) == (
        f"lease {lease} keepalived with TTL(60)\n")
    for endpoint in (a, b, c):
        ttl = await etcdctl(endpoint, "lease", "timetolive", "--keys", lease)
        assert re.fullmatch(rf"lease {lease} granted with TTL\(60s\), remaining\((59|60)s\), "
                            r"attached keys\(\[leased\]\)\n", ttl), ttl
        assert await etcdctl(endpoint, "lease", "list") == f"found 1 leases\n{lease}\n"
    assert await etcdctl(b, "lease", "revoke", lease) == f"lease {lease} revoked\n"  # 3
    assert await etcdctl(a, "get", "leased") == ""
    assert await etcdctl(c, "lease", "timetolive", lease) == f"lease {lease} already expired\n"
    assert await etcdctl(a, "lease", "list") == "found 0 leases\n"
    status, _, err = await run_etcdctl(c, "lease", "revoke", lease)
    assert status != 0 and "etcdserver: requested lease not found" in err


async def test_endpoint_status_health_hashkv_and_member_list(store_cluster):
    endpoints = store_cluster.endpoints
    everyone = ",".join(endpoints)
    statuses = json.loads(await etcdctl(everyone, "endpoint", "status", "-w", "json"))
    assert [s["Endpoint"] for s in statuses] == endpoints
    member_ids = [s["Status"]["header"]["member_id"] for s in statuses]
    leader_index = await store_cluster.leader()
    assert {s["Status"]["leader"] for s in statuses} == {member_ids[leader_index]}
    assert len(set(member_ids)) == 3
    assert {(s["Status"]["version"], s["Status"]["raftTerm"]) for s in statuses} == {
        ("3.5.13", statuses[0]["Status"]["raftTerm"])}
    table = await etcdctl(everyone, "endpoint", "status")
    leaders = [line.split(", ")[4] for line in table.splitlines()]
    assert leaders == ["true" if i == leader_index else "false" for i in range(3)]

    for endpoint in endpoints:
        members = json.loads(await etcdctl(endpoint, "member", "list", "-w", "json"))["members"]
        assert [(m["ID"], m["name"], m["clientURLs"]) for m in members] == [
            (member_ids[i], f"s{i}", [f"http://{e}"]) for i, e in enumerate(endpoints)]
        assert await etcdctl(endpoint, "member", "list") == "".join(
            f"{member_ids[i]:x}, started, s{i}, {m['peerURLs'][0]}, http://{e}, false\n"
            for i, (e, m) in enumerate(zip(endpoints, members, strict=True)))
    # etcdctl 3.4 prints the health of each endpoint on stderr, 3.5 on stdout.
    status, out, err = await run_etcdctl(everyone, "endpoint", "health")
    health = out + err
    assert status == 0, health
    assert sorted(line.split(" is ")[0] for line in health.splitlines()) == sorted(endpoints)
    assert all(" is healthy: " in line for line in health.splitlines())

    await etcdctl(endpoints[0], "put", "k", "v")
    for endpoint in endpoints:  # every replica has applied the write before hashing
        await etcdctl(endpoint, "get", "k")
    hashes = json.loads(await etcdctl(everyone, "endpoint", "hashkv", "-w", "json"))
    assert len({h["HashKV"]["hash"] for h in hashes}) == 1
    assert {h["HashKV"]["header"]["revision"] for h in hashes} == {2}

