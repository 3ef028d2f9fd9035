"""The names and marks of the ``bridge`` pod network, and its removal: what the kubelet
(services/kubelet/network_plugin.py makes it) and ``skiff down`` (removes it) share.

Everything Skiff puts into the host's network is marked so that it can be found again
without local state:

- links (the node's bridge ``skb-<node>``, the host ends of pod veths ``skv<12 hex>``)
  carry the alias ``skiff:<node>``;
- routes carry the routing protocol :data:`ROUTE_PROTO`;
- the masquerade rules live in the nftables table ``ip skiff-node-<node>``
  (the proxy's table ``ip skiff-proxy-<node>`` is its own: a kubelet never touches
  it; ``skiff down`` removes it with :func:`remove_proxy_tables`);
- the ``DOCKER-USER`` entries carry the comment ``skiff node <node>``.

:func:`remove_pod_network` removes one node's share (and the machine-wide routes when no
node is left), or, without a node, everything of Skiff's: ``skiff down``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import json
import os
import re
import shutil
import socket
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from skiff import commands

# The cluster ranges this module keeps on the machine (podnet.SERVICE_CIDR etc. for callers).
from skiff.api.addresses import CLUSTER_CIDR, LOAD_BALANCER_CIDR, SERVICE_CIDR  # noqa: F401

#: The routing protocol number on every route Skiff adds (``ip route ... proto 147``).
ROUTE_PROTO = 147
#: Metric of the blackhole routes that keep the cluster ranges on the machine.
BLACKHOLE_METRIC = 4242
ALIAS_PREFIX = "skiff:"
TABLE_PREFIX = "skiff-node-"
#: The proxy's tables (services/proxy/nftables_rules.py names them).
PROXY_TABLE_PREFIX = "skiff-proxy-"
COMMENT_PREFIX = "skiff node "
#: Linux's IFNAMSIZ less the terminating NUL.
IFNAME_MAX = 15
_PLAIN = re.compile(r"^[a-z0-9][a-z0-9.-]*$")
T = TypeVar("T")


# ------------------------------------------------------------------- netlink

_netlink_loop: asyncio.AbstractEventLoop | None = None
_netlink_lock = threading.Lock()


async def netlink(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` (pyroute2 work) on the netlink thread's event loop; its result.

    Daemons run on uvloop, which cannot open netlink sockets (its datagram transports
    know only inet and unix families), so pyroute2's asyncio API gets a stdlib selector
    loop of its own on one thread; callers await the result without blocking theirs."""
    global _netlink_loop
    with _netlink_lock:
        if _netlink_loop is None:
            loop = asyncio.SelectorEventLoop()
            threading.Thread(target=loop.run_forever, name="netlink", daemon=True).start()
            _netlink_loop = loop
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, _netlink_loop))


_CLONE_NEWNET = 0x40000000
_NETLINK_ROUTE = 0
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


def netlink_socket_in(netns: str) -> int:
    """A rtnetlink socket inside the network namespace at path ``netns`` (a file
    descriptor, for ``AsyncIPRoute(fileno=...)``).

    Only the calling thread enters the namespace, for as long as the socket takes to
    open (a socket stays in the namespace it was made in); call it on the netlink
    thread (:func:`netlink`). pyroute2's own ``netns=`` forks a child for this, which
    a process running gRPC must not do."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(netns, os.O_RDONLY)
    try:
        _setns(target)
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_ROUTE)
        finally:
            _setns(own)
        return sock.detach()
    finally:
        os.close(own)
        os.close(target)


async def delete_link(name: str) -> None:
    """Delete the link ``name`` if it exists (run it through :func:`netlink`)."""
    async with AsyncIPRoute() as ipr:
        for index in await ipr.link_lookup(ifname=name):
            with contextlib.suppress(NetlinkError):  # went with its peer meanwhile
                await ipr.link("del", index=index)


def bridge_name(node: str) -> str:
    """The node's bridge: ``skb-<node>`` when that fits IFNAMSIZ, else ``skb-`` and a
    hash of the node name (pure)."""
    name = f"skb-{node}"
    if len(name) <= IFNAME_MAX and _PLAIN.match(node):
        return name
    return "skb-" + hashlib.sha256(node.encode()).hexdigest()[:IFNAME_MAX - 4]


def veth_names(sandbox_id: str) -> tuple[str, str]:
    """The host end and the (temporary) pod end of a sandbox's veth pair (pure)."""
    digest = hashlib.sha256(sandbox_id.encode()).hexdigest()[:12]
    return f"skv{digest}", f"skp{digest}"


def link_alias(node: str) -> str:
    return f"{ALIAS_PREFIX}{node}"


def table_name(node: str) -> str:
    """The node's nftables table (family ``ip``)."""
    return f"{TABLE_PREFIX}{node}"


def docker_user_comment(node: str) -> str:
    return f"{COMMENT_PREFIX}{node}"


# ------------------------------------------------------------------- commands


async def run_command(*argv: str, stdin: str | None = None, check: bool = True) -> str:
    """Run a command (nft, iptables); its stdout. Raises RuntimeError on failure."""
    try:
        done = await commands.run(argv, stdin=stdin)
    except commands.CommandError as err:
        raise RuntimeError(str(err)) from None
    if check and done.code != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.code}): {done.err.strip()}")
    return done.out


async def docker_user_exists() -> bool:
    """Whether iptables' filter table has Docker's ``DOCKER-USER`` chain."""
    if shutil.which("iptables") is None:
        return False
    return (await commands.run(("iptables", "-w", "-S", "DOCKER-USER"))).code == 0


def docker_user_rules(listing: str, node: str | None,
                      prefix: str = COMMENT_PREFIX) -> list[list[str]]:
    """The ``-A DOCKER-USER ...`` lines of ``iptables -S DOCKER-USER`` whose comment
    starts with ``prefix`` (those of ``node``, or of any node), as the arguments that
    delete them (pure)."""
    found = []
    for line in listing.splitlines():
        if not line.startswith("-A DOCKER-USER "):
            continue
        match = re.search(r'--comment "?(' + re.escape(prefix) + r'[^"]*)"?', line)
        if not match or (node is not None and match.group(1) != docker_user_comment(node)):
            continue
        args = re.findall(r'"[^"]*"|\S+', line)[1:]
        found.append([a.strip('"') for a in args])
    return found


async def remove_docker_user_rules(node: str | None, prefix: str = COMMENT_PREFIX) -> int:
    if not await docker_user_exists():
        return 0
    listing = await run_command("iptables", "-w", "-S", "DOCKER-USER")
    rules = docker_user_rules(listing, node, prefix)
    for rule in rules:
        await run_command("iptables", "-w", "-D", *rule, check=False)
    return len(rules)


async def remove_tables(node: str | None, prefix: str = TABLE_PREFIX) -> int:
    """Delete the ``ip`` table ``<prefix><node>``, or every one named ``<prefix>*``
    without ``node``; how many."""
    if shutil.which("nft") is None:
        return 0
    listing = json.loads(await run_command("nft", "-j", "list", "tables", "ip"))
    names = [item["table"]["name"] for item in listing.get("nftables", [])
             if "table" in item]
    wanted = [n for n in names if (n == f"{prefix}{node}" if node is not None
                                   else n.startswith(prefix))]
    for name in wanted:
        await run_command("nft", "delete", "table", "ip", name, check=False)
    return len(wanted)


async def remove_proxy_tables(node: str | None) -> int:
    """Delete the proxy's table of ``node`` (every proxy's without one): what a
    proxy stopped with SIGTERM leaves for its successor to adopt."""
    return await remove_tables(node, PROXY_TABLE_PREFIX)


async def remove_machine_wide() -> dict[str, int]:
    """Once no link of Skiff's is left on the machine: Skiff's routes (proto 147) and
    every ``DOCKER-USER`` entry whose comment starts with ``skiff`` (the proxies' shared
    ``skiff cluster traffic`` ones too, which a killed proxy leaves). Nothing while
    some node's bridge remains: they are still its."""
    async def routes() -> int | None:
        async with AsyncIPRoute() as ipr:
            if await skiff_links(ipr):
                return None
            return await remove_routes(ipr, shared=True)

    removed = await netlink(routes())
    if removed is None:
        return {"routes": 0, "docker_user": 0}
    return {"routes": removed, "docker_user": await remove_docker_user_rules(None, "skiff")}


async def skiff_links(ipr: AsyncIPRoute) -> list[tuple[int, str, str]]:
    """(index, name, alias) of every link carrying a ``skiff:`` alias."""
    links = []
    async for link in await ipr.get_links():
        alias = link.get("ifalias") or ""
        if alias.startswith(ALIAS_PREFIX):
            links.append((link["index"], link.get("ifname"), alias))
    return links


async def remove_links(ipr: AsyncIPRoute, node: str | None) -> int:
    removed = 0
    for index, _, alias in await skiff_links(ipr):
        if node is None or alias == link_alias(node):
            with contextlib.suppress(NetlinkError):  # gone with its peer meanwhile
                await ipr.link("del", index=index)
                removed += 1
    return removed


async def remove_routes(ipr: AsyncIPRoute, *, shared: bool,
                        only: set[str] | None = None) -> int:
    """Skiff's routes: those to ``only`` (destinations), or all when ``shared``."""
    removed = 0
    async for route in await ipr.route("dump", proto=ROUTE_PROTO):
        dst = f"{route.get('dst')}/{route.get('dst_len')}"
        if not shared and (only is None or dst not in only):
            continue
        with contextlib.suppress(NetlinkError):
            await ipr.route("del", dst=dst, type=route.get("type"),
                            priority=route.get("priority"), proto=ROUTE_PROTO,
                            table=route.get("table"))
            removed += 1
    return removed


async def remove_pod_network(node: str | None = None,
                             routes: set[str] | None = None) -> dict[str, int]:
    """Remove ``node``'s bridge, veths, nftables table and ``DOCKER-USER`` entries, and
    ``routes`` (its routes to other nodes); the machine-wide routes go too once no
    Skiff bridge is left. Without ``node``: everything of Skiff's. Returns counts."""
    async def remove() -> tuple[int, int]:
        async with AsyncIPRoute() as ipr:
            links = await remove_links(ipr, node)
            left = await skiff_links(ipr)
            return links, await remove_routes(ipr, shared=not left, only=routes)

    links, removed_routes = await netlink(remove())
    return {"links": links, "routes": removed_routes,
            "tables": await remove_tables(node),
            "docker_user": await remove_docker_user_rules(node)}
