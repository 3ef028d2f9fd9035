"""Installing the proxy's kernel rules: Skiff's nftables table, and Docker's DOCKER-USER.

The rules themselves are built by the pure :mod:`services.proxy.nftables_rules`; this
module runs ``nft`` (and ``iptables`` for DOCKER-USER) on worker threads
(:mod:`skiff.commands`), so the event loop never blocks on the kernel.

- :meth:`NftablesApplier.apply` writes the difference between what it last installed
  and the new ruleset as one ``nft -f -`` transaction (atomic: all or nothing). When that
  fails (someone changed our table under us), it replaces the whole table instead.
- :meth:`NftablesApplier.sync` is the level-triggered half: it reads what the kernel has
  (``nft -j list table``) and, when that is not what was last written (the table gone,
  a chain or map element missing or extra, a rule added or removed, a hook or policy
  altered), replaces the whole table. Reading back a 1,000-service table (3 MB of
  JSON) costs more than writing it whole (``bench/proxy_rules.py``), so ``apply`` does
  not read back after every change; the caller runs ``sync`` on a resync period. What
  it compares are names and counts, not rule text (the kernel prints rules in its own
  normal form): a rule rewritten in place with the same count goes unnoticed until the
  next full write.
- :meth:`NftablesApplier.cleanup` deletes the table and Skiff's DOCKER-USER entries.

One applier owns one table (``table``: ``skiff-proxy-<node>`` for a node's proxy, from
:func:`~services.proxy.nftables_rules.table_name`); it writes only rulesets built for
that table. A fresh applier knows nothing of what is installed, so its first write
replaces the whole table in one transaction: a restarted proxy adopts its table
without duplicating anything.

DOCKER-USER: Docker sets FORWARD's policy to DROP and its isolation chains drop traffic
between bridges; an ``accept`` in our own nftables table does not override a drop in
iptables-nft's filter table (an accept only ends the current table), so on a Docker host
pod traffic needs ACCEPT entries in DOCKER-USER, which Docker runs first in FORWARD.
:meth:`NftablesApplier.ensure_docker_user` inserts one for traffic from and one for
traffic to each cluster range, tagged with a comment, only when the chain exists and
only when absent; no chain's policy is ever changed.

``wrap`` prefixes every command (tests pass ``("ip", "netns", "exec", NAME)`` so that
their rules live in a network namespace of their own).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from services.proxy.nftables_rules import FAMILY, TABLE, Ruleset, plan_update, render
from skiff import commands
from skiff.logging import get_logger

log = get_logger("services.proxy.nftables")

DOCKER_USER = "DOCKER-USER"
#: Marks the DOCKER-USER entries that are Skiff's, so cleanup removes only those.
COMMENT = "skiff cluster traffic"
#: The longest an nft or iptables command may take (a whole 1,000-Service table: ~1 s).
COMMAND_TIMEOUT = 120.0


class NftablesError(RuntimeError):
    """A command the applier ran failed; the message carries its stderr."""


@dataclass(frozen=True)
class ApplyResult:
    """What one :meth:`NftablesApplier.apply` did."""

    full: bool  # the whole table was replaced (not an incremental update)
    commands: int  # lines of the nft transaction; 0: nothing to do
    seconds: float


class NftablesApplier:
    """Owns ``table ip <table>`` on this host (or in the namespace ``wrap`` enters).

    Invariant: ``_installed`` is the ruleset the kernel accepted last, or None when
    unknown (never written, or the last write failed); None makes the next write a full
    replacement. Writes are serialised by ``_lock``: an update is planned against
    ``_installed``, which must not change under it.
    """

    def __init__(self, *, table: str = TABLE, wrap: Sequence[str] = (), nft: str = "nft",
                 iptables: str = "iptables") -> None:
        self.table = table
        self._wrap = tuple(wrap)
        self._nft = nft
        self._iptables = iptables
        self._installed: Ruleset | None = None
        self._lock = asyncio.Lock()

    @property
    def installed(self) -> Ruleset | None:
        """The ruleset last written successfully, if any."""
        return self._installed

    async def apply(self, ruleset: Ruleset) -> ApplyResult:
        """Make the kernel's table ``ruleset``: incrementally when possible, else whole.

        Raises NftablesError when even the full replacement fails (the kernel keeps
        what it had: nft transactions are atomic).
        """
        async with self._lock:
            return await self._apply(ruleset)

    async def _apply(self, ruleset: Ruleset) -> ApplyResult:
        if ruleset.table != self.table:
            raise ValueError(f"a ruleset for table {ruleset.table!r} given to the applier "
                             f"of {self.table!r}")
        started = time.perf_counter()
        full = self._installed is None
        # A whole 1,000-service table is over a megabyte of text: written off the loop
        # (the GIL still switches every few ms, so the loop keeps serving meanwhile).
        text = await asyncio.to_thread(plan_update, self._installed, ruleset)
        if not text:
            return ApplyResult(full=False, commands=0, seconds=time.perf_counter() - started)
        try:
            await self._nft_script(text)
        except NftablesError as err:
            if full:
                self._installed = None
                raise
            log.warning("nftables.incremental_failed", error=str(err)[:500])
            full = True
            text = await asyncio.to_thread(render, ruleset)
            try:
                await self._nft_script(text)
            except NftablesError:
                self._installed = None
                raise
        self._installed = ruleset
        seconds = time.perf_counter() - started
        log.debug("nftables.applied", full=full, commands=text.count("\n"),
                  ms=round(seconds * 1000, 1))
        return ApplyResult(full=full, commands=text.count("\n"), seconds=seconds)

    async def sync(self, ruleset: Ruleset) -> ApplyResult:
        """Level-triggered: check that the kernel still has what was last written
        (replacing the whole table when it does not), then apply ``ruleset``."""
        async with self._lock:
            if self._installed is not None:
                drift = describe_drift(self._installed, await self.list_table())
                if drift:
                    log.warning("nftables.drift", drift=drift[:10], total=len(drift))
                    self._installed = None
            return await self._apply(ruleset)

    async def list_table(self) -> list[dict[str, Any]] | None:
        """The kernel's objects in the table (``nft -j``), or None if there is none."""
        code, out, err = await self._run(self._nft, "-j", "list", "table", FAMILY,
                                         self.table)
        if code != 0:
            if "No such file or directory" in err:
                return None
            raise NftablesError(f"nft list table {FAMILY} {self.table}: {err.strip()}")
        # A 1,000-service table is megabytes of JSON: parse it off the event loop.
        listing = await asyncio.to_thread(json.loads, out)
        return [o for o in listing.get("nftables", []) if "metainfo" not in o]

    async def cleanup(self, cluster_cidrs: Sequence[str] = ()) -> None:
        """Delete the table and its DOCKER-USER entries for ``cluster_cidrs``."""
        async with self._lock:
            await self._nft_script(f"add table {FAMILY} {self.table}\n"
                                   f"delete table {FAMILY} {self.table}\n")
            self._installed = None
        await self.remove_docker_user(cluster_cidrs)

    # --------------------------------------------------------------- DOCKER-USER

    async def docker_user_exists(self) -> bool:
        """True when iptables' filter table has a DOCKER-USER chain (a Docker host)."""
        code, _, _ = await self._run(self._iptables, "-w", "-n", "-L", DOCKER_USER)
        return code == 0

    async def ensure_docker_user(self, cluster_cidrs: Sequence[str]) -> int:
        """ACCEPT traffic from and to each range in DOCKER-USER, if that chain exists;
        idempotent. Returns how many entries were inserted."""
        if not await self.docker_user_exists():
            return 0
        inserted = 0
        for spec in _docker_user_specs(cluster_cidrs):
            code, _, _ = await self._run(self._iptables, "-w", "-C", DOCKER_USER, *spec)
            if code == 0:
                continue
            code, _, err = await self._run(self._iptables, "-w", "-I", DOCKER_USER, *spec)
            if code != 0:
                raise NftablesError(f"iptables -I {DOCKER_USER} {' '.join(spec)}: "
                                    f"{err.strip()}")
            inserted += 1
        return inserted

    async def remove_docker_user(self, cluster_cidrs: Sequence[str]) -> int:
        """Remove every copy of Skiff's DOCKER-USER entries; returns how many went."""
        if not cluster_cidrs or not await self.docker_user_exists():
            return 0
        removed = 0
        for spec in _docker_user_specs(cluster_cidrs):
            while (await self._run(self._iptables, "-w", "-D", DOCKER_USER, *spec))[0] == 0:
                removed += 1
        return removed

    # ------------------------------------------------------------------ commands

    async def _nft_script(self, text: str) -> None:
        code, _, err = await self._run(self._nft, "-f", "-", stdin=text)
        if code != 0:
            raise NftablesError(f"nft -f: {err.strip()[:2000]}")

    async def _run(self, *argv: str, stdin: str | None = None) -> tuple[int, str, str]:
        # On a worker thread (skiff.commands says why not an asyncio subprocess).
        try:
            done = await commands.run((*self._wrap, *argv), stdin=stdin,
                                      timeout=COMMAND_TIMEOUT)
        except commands.CommandError as err:
            raise NftablesError(f"{err}: the proxy's kernel rules need nft (Debian: "
                                "nftables), iptables and conntrack") from None
        return done.code, done.out, done.err


def _docker_user_specs(cluster_cidrs: Sequence[str]) -> list[tuple[str, ...]]:
    comment = ("-m", "comment", "--comment", COMMENT)
    return [spec for cidr in cluster_cidrs
            for spec in (("-s", cidr, *comment, "-j", "ACCEPT"),
                         ("-d", cidr, *comment, "-j", "ACCEPT"))]


def describe_drift(expected: Ruleset, installed: list[dict[str, Any]] | None) -> list[str]:
    """How the kernel's table (``nft -j`` objects) differs from ``expected`` (pure).

    Compared: chain names, each chain's rule count, base chains' hook and policy,
    collection names and kinds, and the element count of every collection that is not
    dynamic (affinity sets fill themselves). Empty when they agree.
    """
    if installed is None:
        return ["table missing"]
    chains: dict[str, dict[str, Any]] = {}
    collections: dict[str, tuple[str, int]] = {}
    rules: Counter[str] = Counter()
    for obj in installed:
        if "chain" in obj:
            chains[obj["chain"]["name"]] = obj["chain"]
        elif "rule" in obj:
            rules[obj["rule"]["chain"]] += 1
        for kind in ("set", "map"):
            if kind in obj:
                collections[obj[kind]["name"]] = (kind, len(obj[kind].get("elem", [])))
    drift = [f"chain {n} missing" for n in expected.chains if n not in chains]
    drift += [f"chain {n} unexpected" for n in chains if n not in expected.chains]
    for name, chain in expected.chains.items():
        if name not in chains:
            continue
        if rules[name] != len(chain.rules):
            drift.append(f"chain {name}: {rules[name]} rules, expected {len(chain.rules)}")
        have = chains[name]
        if chain.hook and (f"hook {have.get('hook')} " not in chain.hook
                           or have.get("policy") != "accept"):
            drift.append(f"chain {name}: hook {have.get('hook')} policy {have.get('policy')}")
        if not chain.hook and "hook" in have:
            drift.append(f"chain {name}: unexpected hook {have['hook']}")
    for name, collection in expected.collections.items():
        if name not in collections:
            drift.append(f"{collection.kind} {name} missing")
            continue
        kind, count = collections[name]
        if kind != collection.kind:
            drift.append(f"{name}: a {kind}, expected a {collection.kind}")
        elif "dynamic" not in collection.spec and count != len(collection.elements):
            drift.append(f"{kind} {name}: {count} elements, expected "
                         f"{len(collection.elements)}")
    drift += [f"{kind} {n} unexpected" for n, (kind, _) in collections.items()
              if n not in expected.collections]
    return drift
