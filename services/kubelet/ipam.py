"""Pod addresses from the node's podCIDR, persisted so that none is handed out twice.

One :class:`IPAM` per kubelet, on a JSON file in the kubelet's root directory. Every
allocation is written (atomically: a temporary file, fsync, rename) before the address
is used, so a kubelet that restarts finds what its predecessor handed out. At start the
kubelet reconciles the file against the sandboxes that run (:meth:`IPAM.reconcile`):
the addresses of sandboxes that are gone are freed.

Invariants: an address is in ``by_container`` at most once; every address lies in the
podCIDR and is neither its network, its gateway (the first host address: the bridge's)
nor its broadcast address. New addresses are taken round-robin after the last one
handed out (like CNI's host-local), so a freed address is not reused at once.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from skiff.logging import get_logger

log = get_logger("skiff.kubelet.ipam")


class PoolExhausted(Exception):
    """Every address of the podCIDR is in use."""


@dataclass(frozen=True)
class Allocation:
    """One address, held by one sandbox container."""

    ip: str
    container_id: str
    pod_uid: str = ""
    pod: str = ""          # namespace/name, for people reading the file
    at: float = 0.0        # when it was handed out (epoch s)


def gateway(cidr: str) -> str:
    """The podCIDR's gateway: its first host address, the bridge's (pure)."""
    return str(next(ipaddress.ip_network(cidr).hosts()))


def next_free(cidr: str, taken: set[str], last: str = "") -> str:
    """The first free pod address after ``last`` (wrapping), skipping the gateway (pure).

    Raises :class:`PoolExhausted` when none is left."""
    network = ipaddress.ip_network(cidr)
    hosts = list(network.hosts())[1:]  # the first is the gateway
    if not hosts:
        raise PoolExhausted(f"podCIDR {cidr} has no room for pods")
    start = 0
    if last:
        address = ipaddress.ip_address(last)
        if address in network:
            start = max(0, int(address) - int(hosts[0]) + 1)
    for i in range(len(hosts)):
        candidate = str(hosts[(start + i) % len(hosts)])
        if candidate not in taken:
            return candidate
    raise PoolExhausted(f"all {len(hosts)} addresses of podCIDR {cidr} are in use")


class IPAM:
    """The node's pod addresses (see the module)."""

    def __init__(self, path: Path, cidr: str) -> None:
        self.path = path
        self.cidr = cidr
        self.prefix = ipaddress.ip_network(cidr).prefixlen
        #: container id -> its allocation (the file's content).
        self.by_container: dict[str, Allocation] = {}
        self.last = ""
        self._lock = asyncio.Lock()
        self._load()

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as e:
            raise RuntimeError(f"unreadable IPAM state {self.path}: {e}") from e
        network = ipaddress.ip_network(self.cidr)
        for entry in data.get("allocations", []):
            allocation = Allocation(**entry)
            if ipaddress.ip_address(allocation.ip) not in network:
                log.warning("dropping an allocation outside the podCIDR", ip=allocation.ip,
                            pod_cidr=self.cidr)
                continue
            self.by_container[allocation.container_id] = allocation
        self.last = data.get("last", "")

    def ip_of(self, container_id: str) -> str:
        found = self.by_container.get(container_id)
        return found.ip if found is not None else ""

    async def allocate(self, container_id: str, *, pod_uid: str, pod: str,
                       now: float) -> str:
        """The address of ``container_id``: the one it has, else a new one, written to
        the file before it is returned."""
        async with self._lock:
            found = self.by_container.get(container_id)
            if found is not None:
                return found.ip
            taken = {a.ip for a in self.by_container.values()}
            ip = next_free(self.cidr, taken, self.last)
            self.by_container[container_id] = Allocation(ip, container_id, pod_uid, pod, now)
            self.last = ip
            await self._save()
            return ip

    async def release(self, container_id: str) -> str:
        """Free ``container_id``'s address (none held: nothing happens); the address."""
        async with self._lock:
            found = self.by_container.pop(container_id, None)
            if found is None:
                return ""
            await self._save()
            return found.ip

    async def reconcile(self, live: set[str], *, before: float) -> list[Allocation]:
        """Free the addresses of containers not in ``live`` handed out before ``before``
        (a later one may belong to a sandbox made after ``live`` was listed)."""
        async with self._lock:
            gone = [a for cid, a in self.by_container.items()
                    if cid not in live and a.at < before]
            for allocation in gone:
                del self.by_container[allocation.container_id]
            if gone:
                await self._save()
            return gone

    async def _save(self) -> None:
        body = json.dumps({"cidr": self.cidr, "last": self.last,
                           "allocations": [asdict(a) for a in self.by_container.values()]},
                          indent=1)
        await asyncio.to_thread(_write_atomically, self.path, body)


def _write_atomically(path: Path, body: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        f.write(body)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
