"""Choosing a backend for a new connection: round-robin, ClientIP affinity, failover.

Pure logic, no sockets: the forwarder (:mod:`services.proxy.forwarder`) asks
:meth:`LoadBalancer.pick` for a backend, and asks again with the ones that failed in
``exclude`` when a connect is refused or times out. The proxier
(:mod:`services.proxy.proxier`) replaces the backends when the Endpoints change; the
connections already established are not the load balancer's business and are left
alone.

Also here, as pure functions a unit test calls without a server: which endpoints serve
a service port (:func:`backends_for_port`, Kubernetes' port-name matching) and how long
ClientIP affinity lasts (:func:`affinity_timeout`).

Kubernetes' userspace proxier (``pkg/proxy/userspace/roundrobin.go``) is the model:
one round-robin index per service port that survives endpoint changes, and affinity
entries that expire after ``sessionAffinityConfig.clientIP.timeoutSeconds`` of not
being used and are dropped when their backend leaves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from skiff.api.v1 import core_pb2

#: A backend: (ip, port).
Backend = tuple[str, int]

#: Kubernetes' default ClientIP affinity timeout: three hours.
DEFAULT_AFFINITY_TIMEOUT = 10800.0
#: Expired affinity entries are swept after this many picks (amortised, not per pick).
SWEEP_EVERY = 1024

CLIENT_IP = "ClientIP"
TCP = "TCP"


@dataclass(frozen=True, order=True)
class ServicePortName:
    """One port of one service: what a listener serves and metrics are labelled with."""

    namespace: str
    name: str
    port: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}:{self.port}" if self.port else \
            f"{self.namespace}/{self.name}"


# ------------------------------------------------------------- pure functions


def backends_for_port(endpoints: core_pb2.EndpointsObject | None, port_name: str
                      ) -> list[Backend]:
    """The ready (ip, port) pairs serving the service port named ``port_name`` (pure).

    In each subset the endpoint port is the one with the service port's name; an
    unnamed service port (a service with one port) takes the subset's only port when
    no port matches by name. Only TCP ports count; ``not_ready_addresses`` never do.
    Order is stable (sorted) so that round-robin does not jump on a rewrite that
    changed nothing; duplicates are dropped.
    """
    if endpoints is None:
        return []
    found: set[Backend] = set()
    for subset in endpoints.subsets:
        port = _endpoint_port(subset.ports, port_name)
        if port is None:
            continue
        for address in subset.addresses:
            if address.ip:
                found.add((address.ip, port))
    return sorted(found)


def _endpoint_port(ports: Sequence[core_pb2.EndpointPort], port_name: str) -> int | None:
    for port in ports:
        if port.name == port_name and (port.protocol or TCP) == TCP and port.port > 0:
            return port.port
    if not port_name and len(ports) == 1:
        only = ports[0]
        if (only.protocol or TCP) == TCP and only.port > 0:
            return only.port
    return None


def affinity_timeout(spec: core_pb2.ServiceSpec) -> float | None:
    """Seconds a ClientIP affinity lasts, or None when the service has no affinity (pure)."""
    if spec.session_affinity != CLIENT_IP:
        return None
    client_ip = spec.session_affinity_config.client_ip
    if client_ip.HasField("timeout_seconds") and client_ip.timeout_seconds > 0:
        return float(client_ip.timeout_seconds)
    return DEFAULT_AFFINITY_TIMEOUT


# -------------------------------------------------------------- load balancer


@dataclass
class _Affinity:
    backend: Backend
    last_used: float


class LoadBalancer:
    """Round-robin over one service port's ready backends, optionally with ClientIP affinity.

    Invariants: ``_next`` is an index into ``backends`` (0 when there are none); every
    entry of ``_affinity`` names a backend in ``backends`` (entries are dropped when
    their backend leaves). ``clock`` is monotonic seconds, injected for tests.
    """

    def __init__(self, backends: Iterable[Backend] = (), *,
                 affinity_timeout: float | None = None,
                 clock: Callable[[], float]) -> None:
        self.backends: tuple[Backend, ...] = ()
        self.affinity_timeout = affinity_timeout
        self._clock = clock
        self._next = 0
        self._affinity: dict[str, _Affinity] = {}
        self._picks = 0
        self.update(backends, affinity_timeout=affinity_timeout)

    def update(self, backends: Iterable[Backend], *, affinity_timeout: float | None) -> None:
        """New ready backends (and affinity setting); established connections are untouched.

        The round-robin position carries over (modulo the new count), so a change does
        not send the next burst of connections to the first backend again.
        """
        self.backends = tuple(backends)
        self._next = self._next % len(self.backends) if self.backends else 0
        if affinity_timeout is None:
            self._affinity.clear()
        # A changed timeout applies to existing entries at once (it is read at each pick).
        self.affinity_timeout = affinity_timeout
        present = set(self.backends)
        for client, entry in list(self._affinity.items()):
            if entry.backend not in present:
                del self._affinity[client]

    @property
    def affinities(self) -> int:
        """How many clients have an affinity entry (expired ones may still be counted)."""
        return len(self._affinity)

    def pick(self, client_ip: str | None = None, *,
             exclude: frozenset[Backend] | set[Backend] = frozenset()) -> Backend | None:
        """The backend for a new connection from ``client_ip``, or None if none is left.

        ``exclude`` holds backends this connection already failed on: they are skipped,
        and a client whose affine backend failed is given (and bound to) another one.
        """
        backends = self.backends
        if not backends:
            return None
        timeout = self.affinity_timeout
        if timeout is None or client_ip is None:
            return self._round_robin(exclude)
        now = self._clock()
        self._picks += 1
        if self._picks % SWEEP_EVERY == 0:
            self.sweep(now)
        entry = self._affinity.get(client_ip)
        if (entry is not None and now - entry.last_used <= timeout
                and entry.backend not in exclude):
            entry.last_used = now
            return entry.backend
        chosen = self._round_robin(exclude)
        if chosen is None:
            self._affinity.pop(client_ip, None)
        else:
            self._affinity[client_ip] = _Affinity(chosen, now)
        return chosen

    def _round_robin(self, exclude: frozenset[Backend] | set[Backend]) -> Backend | None:
        backends = self.backends
        count = len(backends)
        for _ in range(count):
            candidate = backends[self._next]
            self._next = (self._next + 1) % count
            if candidate not in exclude:
                return candidate
        return None

    def sweep(self, now: float | None = None) -> int:
        """Drop expired affinity entries; how many were dropped."""
        timeout = self.affinity_timeout
        if timeout is None:
            dropped = len(self._affinity)
            self._affinity.clear()
            return dropped
        now = self._clock() if now is None else now
        expired = [c for c, e in self._affinity.items() if now - e.last_used > timeout]
        for client in expired:
            del self._affinity[client]
        return len(expired)


__all__ = ["CLIENT_IP", "DEFAULT_AFFINITY_TIMEOUT", "Backend", "LoadBalancer",
           "ServicePortName", "affinity_timeout", "backends_for_port"]
