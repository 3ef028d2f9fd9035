"""List: label selectors (equality and set-based), field selectors, pagination with
limit and continue at one resource version, one namespace or all of them, and the
resource versions a list may be asked for. (Selectors on Watch: test_apiserver_watch.py.)
"""

from __future__ import annotations

import asyncio

import pytest
from apiclient import (
    INVALID_ARGUMENT,
    OUT_OF_RANGE,
    UNAVAILABLE,
    Client,
    compact,
    fails,
    namespace,
    node,
    pod,
    rv,
    unique,
)
from backends import ON_BOTH_BACKENDS

pytestmark = ON_BOTH_BACKENDS

LABELS = {
    "a": {"app": "web", "tier": "front"},
    "b": {"app": "web", "tier": "back"},
    "c": {"app": "db"},
    "d": {},
}


@pytest.mark.parametrize(("selector", "expected"), [
    ("", "abcd"),
    ("app=web", "ab"),
    ("app==web", "ab"),
    ("app!=web", "cd"),  # objects without the label do not have it equal to web
    ("app in (web, db)", "abc"),
    ("app notin (web)", "cd"),
    ("tier", "ab"),
    ("!tier", "cd"),
    ("app=web,tier notin (back)", "a"),
    ("app in (web),!tier", ""),
])
async def test_label_selectors(api: Client, ns: str, selector: str, expected: str):
    await asyncio.gather(*(api.pods.create(pod(name, ns, labels=labels))
                           for name, labels in LABELS.items()))
    assert sorted(await api.pods.names(ns, label_selector=selector)) == list(expected)


async def test_field_selectors(api: Client, ns: str):
    n1 = unique("n1")
    await api.nodes.create(node(n1))
    for name in "abcd":
        await api.pods.create(pod(name, ns))
    await api.bind("a", n1, ns)
    await api.bind("b", n1, ns)
    b = await api.pods.get("b", ns)
    b.status.phase = "Running"
    await api.pods.update_status(b)
    elsewhere = await api.namespaces.create(namespace(unique("other")))
    await api.pods.create(pod("a", elsewhere.metadata.name))

    async def names(selector: str, where: str = ns) -> list[str]:
        return sorted(await api.pods.names(where, field_selector=selector))

    assert await names("metadata.name=c") == ["c"]
    assert await names("metadata.name!=c") == ["a", "b", "d"]
    assert await names(f"spec.nodeName={n1}") == ["a", "b"]
    assert await names("spec.nodeName=") == ["c", "d"]  # not scheduled yet
    assert await names("status.phase=Running") == ["b"]
    assert await names("status.phase=Pending,spec.nodeName!=") == ["a"]
    assert await names(f"metadata.namespace={ns}", "") == ["a", "b", "c", "d"]
    everywhere = await api.pods.list("", field_selector="metadata.name=a")
    assert {p.metadata.namespace for p in everywhere.items} >= {ns, elsewhere.metadata.name}
    assert {p.metadata.name for p in everywhere.items} == {"a"}
    assert await names(f"metadata.namespace={ns},metadata.name=a", "") == ["a"]
    assert sorted(await api.pods.names(ns, field_selector="metadata.name!=a",
                                       label_selector="app")) == []
    assert await api.nodes.names(field_selector=f"metadata.name={n1}") == [n1]
    assert await api.namespaces.names(field_selector=f"metadata.name={ns}") == [ns]
    assert await api.namespaces.names(
        field_selector=f"metadata.name={ns},status.phase=Active") == [ns]

    await fails(INVALID_ARGUMENT, api.pods.list(ns, field_selector="spec.foo=x"),
                "field label not supported: spec.foo")
    await fails(INVALID_ARGUMENT, api.nodes.list(field_selector=f"spec.nodeName={n1}"),
                "field label not supported: spec.nodeName")
    await fails(INVALID_ARGUMENT, api.pods.list(ns, field_selector="metadata.name"))
    await fails(INVALID_ARGUMENT, api.pods.list(ns, label_selector="app in web"))
    async with api.pods.watch(ns, field_selector="spec.foo=x") as watch:
        code, details = await watch.status()
    assert code == INVALID_ARGUMENT and "field label not supported" in details


async def test_limit_and_continue_page_through_everything_once_at_one_version(
        api: Client, ns: str):
    names = [f"p{i:02}" for i in range(23)]
    await asyncio.gather(*(api.pods.create(pod(name, ns, labels={"mod3": str(i % 3)}))
                           for i, name in enumerate(names)))
    first = await api.pods.list(ns, limit=5)
    assert [p.metadata.name for p in first.items] == names[:5]
    assert first.metadata.continue_token
    version = first.metadata.resource_version
    # Changes after the first page are not in the later ones: they are the list's
    # snapshot at its resource version.
    await api.pods.create(pod("p99", ns))
    await api.pods.delete("p10", ns)
    pages = [first]
    while pages[-1].metadata.continue_token:
        pages.append(await api.pods.list(ns, limit=5,
                                         continue_token=pages[-1].metadata.continue_token))
    assert [len(p.items) for p in pages] == [5, 5, 5, 5, 3]
    assert {p.metadata.resource_version for p in pages} == {version}
    assert [o.metadata.name for p in pages for o in p.items] == names
    latest = await api.pods.list(ns)
    assert int(latest.metadata.resource_version) > int(version)
    assert "p99" in [o.metadata.name for o in latest.items]

    # With a selector, a page still holds at most `limit` items, and the pages hold
    # every match exactly once.
    pages = [await api.pods.list(ns, limit=4, label_selector="mod3=0")]
    while pages[-1].metadata.continue_token:
        pages.append(await api.pods.list(ns, limit=4, label_selector="mod3=0",
                                         continue_token=pages[-1].metadata.continue_token))
    assert all(len(p.items) <= 4 for p in pages), [len(p.items) for p in pages]
    assert [o.metadata.name for p in pages for o in p.items] == [
        name for i, name in enumerate(names) if i % 3 == 0]

    # A token is for its own list only.
    token = first.metadata.continue_token
    await fails(INVALID_ARGUMENT, api.pods.list("default", limit=5, continue_token=token))
    await fails(INVALID_ARGUMENT, api.pods.list(ns, limit=5, continue_token="garbage"))


async def test_a_continue_token_of_a_compacted_version_is_out_of_range(
        api: Client, ns: str, api_cluster):
    for i in range(4):
        await api.pods.create(pod(f"p{i}", ns))
    first = await api.pods.list(ns, limit=2)
    latest = await api.pods.create(pod("later", ns))
    await compact(api_cluster.store.endpoints[0], rv(latest))
    await fails(OUT_OF_RANGE, api.pods.list(ns, limit=2,
                                            continue_token=first.metadata.continue_token))
    # The client starts over, from a fresh list.
    again = await api.pods.list(ns, limit=10)
    assert [p.metadata.name for p in again.items] == ["later", "p0", "p1", "p2", "p3"]


async def test_one_namespace_or_all(api: Client):
    one, two = unique("one"), unique("two")
    for where in (one, two):
        await api.namespaces.create(namespace(where))
        await api.pods.create(pod("same", where, labels={"set": one}))
    assert await api.pods.names(one) == ["same"]
    everywhere = await api.pods.list("", label_selector=f"set={one}")
    assert sorted((p.metadata.namespace, p.metadata.name) for p in everywhere.items) == [
        (one, "same"), (two, "same")]
    # Cluster-scoped kinds ignore a namespace.
    assert one in await api.namespaces.names(one)


async def test_list_resource_versions(api: Client, ns: str):
    created = await api.pods.create(pod("a", ns))
    # "" is a consistent read; "0" may be served from the cache; N is "at least N".
    for version in ("", "0", created.metadata.resource_version):
        listed = await api.pods.list(ns, resource_version=version)
        assert [p.metadata.name for p in listed.items] == ["a"]
        assert int(listed.metadata.resource_version) >= rv(created)
    got = await api.pods.get("a", ns, resource_version="0")
    assert got == created
    await fails(INVALID_ARGUMENT, api.pods.list(ns, resource_version="soon"),
                "resourceVersion")
    # A version the store has not reached: retry later (Kubernetes' "too large").
    await fails(UNAVAILABLE, api.pods.list(ns, resource_version=str(rv(created) + 10**6)),
                "too large resource version")


async def test_a_consistent_list_holds_every_write_made_before_it(api: Client, ns: str):
    # A list without a resource version is consistent: each pod just created is in it,
    # however the watch cache behind it learns how far the store got.
    for i in range(60):
        created = await api.pods.create(pod(f"p{i}", ns))
        listed = await api.pods.list(ns)
        assert f"p{i}" in {p.metadata.name for p in listed.items}, f"p{i} missing"
        assert int(listed.metadata.resource_version) >= rv(created)


async def test_a_consistent_list_of_a_quiet_kind_is_answered(api: Client, ns: str):
    # Another kind's write moves the store's revision past the pods' last event: the
    # list is still answered (not "too large resource version" after waiting for the
    # pods' watch cache to hear of a revision it has no event for), at least at it.
    await api.pods.create(pod("quiet", ns))
    for _ in range(5):
        elsewhere = await api.nodes.create(node(unique("n")))
        listed = await api.pods.list(ns)
        assert [p.metadata.name for p in listed.items] == ["quiet"]
        assert int(listed.metadata.resource_version) >= rv(elsewhere)
