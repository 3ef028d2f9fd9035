"""The ``kubernetes`` Service in ``default`` and its Endpoints: the live apiservers.

Kubernetes' bootstrap controller and lease endpoint reconciler, kept by every
apiserver itself (nothing else knows where the apiservers are):

- At start, and on every tick, the ``kubernetes`` Service is created if it is missing:
  selectorless, cluster IP the first address of the service range (10.96.0.1 by
  default), port ``https`` 443 to the apiserver's port. An existing one is left as it
  is (several apiservers must not fight over it).
- Each apiserver holds a Lease of its own in ``kube-system`` (its identity lease,
  named ``apiserver-<hash of its advertised address:port>``, labelled
  ``apiserver.kubernetes.io/identity=kube-apiserver``, the address in the annotation
  :data:`ENDPOINT_ANNOTATION`) and renews it every ``renew_interval`` seconds.
- On each renewal it rewrites the Endpoints ``default/kubernetes`` from the unexpired
  leases (renewTime + leaseDurationSeconds still ahead), grouped into one subset per
  port, and deletes the expired leases (an apiserver that was killed). The Endpoints
  is written only when it differs, so N apiservers converge without churn.
- An apiserver that stops cleanly deletes its lease and rewrites the Endpoints without
  itself before it stops serving.

:func:`desired_subsets` is the pure plan; the reconciler goes through the registries
(admission, validation and watch caches included), as any client's write would.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from google.protobuf.timestamp_pb2 import Timestamp

from services.apiserver.registry import Registry
from skiff.api import errors
from skiff.api.namespaces import DEFAULT, KUBE_SYSTEM
from skiff.api.v1 import coordination_pb2, core_pb2, meta_pb2
from skiff.logging import get_logger

log = get_logger("apiserver.endpoints")

#: The Service (and Endpoints) every cluster has, in ``default``.
KUBERNETES = "kubernetes"
#: Its port: HTTPS 443, named as Kubernetes names it.
PORT_NAME, SERVICE_PORT = "https", 443
#: The label of apiserver identity leases (Kubernetes').
IDENTITY_LABEL, IDENTITY_VALUE = "apiserver.kubernetes.io/identity", "kube-apiserver"
#: The annotation on an identity lease holding the apiserver's ``ip:port``.
ENDPOINT_ANNOTATION = "apiserver.skiff.io/endpoint"
#: The labels Kubernetes gives its ``kubernetes`` Service.
SERVICE_LABELS = {"component": "apiserver", "provider": "kubernetes"}
#: How long a stopping apiserver tries to take itself out (supervisord waits 10 s).
LEAVE_SECONDS = 5.0


@dataclass(frozen=True)
class LeaseTiming:
    """How long an apiserver's lease lasts unrenewed, and how often it is renewed."""

    duration: int = 15
    renew_interval: float = 5.0


def lease_name(ip: str, port: int) -> str:
    """The identity lease of the apiserver advertising ``ip:port`` (pure, stable: a
    restarted apiserver takes its own lease back)."""
    return "apiserver-" + hashlib.sha256(f"{ip}:{port}".encode()).hexdigest()[:16]


def lease_endpoint(lease: coordination_pb2.Lease) -> tuple[str, int] | None:
    """The ``(ip, port)`` a lease advertises, or None when it names none (pure)."""
    ip, _, port = lease.metadata.annotations.get(ENDPOINT_ANNOTATION, "").rpartition(":")
    return (ip, int(port)) if ip and port.isdigit() else None


def expired(lease: coordination_pb2.Lease, now: float) -> bool:
    """Whether ``lease`` was last renewed longer than its duration before ``now``."""
    renewed = lease.spec.renew_time.seconds + lease.spec.renew_time.nanos / 1e9
    return renewed + lease.spec.lease_duration_seconds < now


def desired_subsets(endpoints: Iterable[tuple[str, int]]) -> list[core_pb2.EndpointSubset]:
    """The ``kubernetes`` Endpoints' subsets for the live apiservers' ``(ip, port)``:
    one subset per port, addresses sorted, so equal inputs give equal subsets (pure)."""
    by_port: dict[int, set[str]] = {}
    for ip, port in endpoints:
        by_port.setdefault(port, set()).add(ip)
    return [core_pb2.EndpointSubset(
        addresses=[core_pb2.EndpointAddress(ip=ip) for ip in sorted(ips)],
        ports=[core_pb2.EndpointPort(name=PORT_NAME, port=port, protocol="TCP")])
        for port, ips in sorted(by_port.items())]


def kubernetes_service(cluster_ip: str, port: int) -> core_pb2.Service:
    """The ``kubernetes`` Service as the bootstrap controller creates it (pure)."""
    return core_pb2.Service(
        metadata=meta_pb2.ObjectMeta(name=KUBERNETES, namespace=DEFAULT,
                                     labels=SERVICE_LABELS),
        spec=core_pb2.ServiceSpec(
            type="ClusterIP", cluster_ip=cluster_ip, session_affinity="None",
            ports=[core_pb2.ServicePort(name=PORT_NAME, port=SERVICE_PORT, protocol="TCP",
                                        target_port=meta_pb2.IntOrString(int_val=port))]))


def _timestamp(now: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(now * 1e9))
    return stamp


class LeaseEndpointReconciler:
    """Keeps this apiserver's identity lease, the ``kubernetes`` Service and its
    Endpoints (see the module)."""

    def __init__(self, registries: Mapping[str, Registry], *, ip: str, port: int,
                 service_ip: str, timing: LeaseTiming | None = None) -> None:
        self._registries = registries
        self.ip, self.port = ip, port
        self.service_ip = service_ip
        self.timing = timing or LeaseTiming()
        self.name = lease_name(ip, port)
        self._task: asyncio.Task[None] | None = None
        self._service_problem = ""

    async def start(self) -> None:
        """One round now (so the Endpoints name this apiserver once it serves), then
        one every renew interval in the background."""
        try:
            await self._round()
        except errors.APIError as e:  # the store is away: the next tick tries again
            log.warning("endpoint reconciliation failed", error=str(e))
        self._task = asyncio.create_task(self._run(), name="endpoint-reconciler")

    async def stop(self) -> None:
        """Stop renewing, delete this apiserver's lease and take it out of the
        Endpoints (best effort: a store that is down leaves it to expire)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            async with asyncio.timeout(LEAVE_SECONDS):
                with contextlib.suppress(errors.NotFound):
                    await self._registries["Lease"].delete(meta_pb2.DeleteRequest(
                        namespace=KUBE_SYSTEM, name=self.name))
                await self.reconcile_endpoints()
        except (errors.APIError, TimeoutError) as e:
            log.warning("could not remove this apiserver from the endpoints",
                        error=str(e))

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.timing.renew_interval)
            try:
                await self._round()
            except errors.APIError as e:  # the store is away: the next tick tries again
                log.warning("endpoint reconciliation failed", error=str(e))

    async def _round(self) -> None:
        await self.ensure_service()
        await self.renew()
        await self.reconcile_endpoints()

    async def ensure_service(self) -> None:
        """Create the ``kubernetes`` Service if it is missing."""
        services = self._registries["Service"]
        try:
            await services.get(DEFAULT, KUBERNETES)
            return
        except errors.NotFound:
            pass
        try:
            await services.create(kubernetes_service(self.service_ip, self.port))
            log.info("created the kubernetes service", cluster_ip=self.service_ip)
        except errors.AlreadyExists:
            pass
        except (errors.Invalid, errors.Forbidden) as e:  # address taken, outside the range
            if str(e) != self._service_problem:
                log.error("cannot create the kubernetes service", error=str(e))
            self._service_problem = str(e)

    async def renew(self) -> None:
        """Create or renew this apiserver's identity lease."""
        leases = self._registries["Lease"]
        now = _timestamp(time.time())
        try:
            lease: coordination_pb2.Lease = await leases.get(  # type: ignore[assignment]
                KUBE_SYSTEM, self.name)
        except errors.NotFound:
            lease = coordination_pb2.Lease(metadata=meta_pb2.ObjectMeta(
                name=self.name, namespace=KUBE_SYSTEM,
                labels={IDENTITY_LABEL: IDENTITY_VALUE},
                annotations={ENDPOINT_ANNOTATION: f"{self.ip}:{self.port}"}))
            lease.spec.holder_identity = self.name
            lease.spec.acquire_time.CopyFrom(now)
        lease.spec.lease_duration_seconds = self.timing.duration
        lease.spec.renew_time.CopyFrom(now)
        with contextlib.suppress(errors.AlreadyExists, errors.Conflict):  # next tick
            if lease.metadata.resource_version:
                await leases.update(lease)
            else:
                await leases.create(lease)

    async def _live_endpoints(self) -> list[tuple[str, int]]:
        """The live leases' endpoints; expired leases are deleted on the way."""
        leases = self._registries["Lease"]
        listed = await leases.list(meta_pb2.ListOptions(
            namespace=KUBE_SYSTEM, label_selector=f"{IDENTITY_LABEL}={IDENTITY_VALUE}"))
        now, live = time.time(), []
        for lease in listed.items:  # type: ignore[attr-defined]
            endpoint = lease_endpoint(lease)
            if not expired(lease, now):
                if endpoint is not None:
                    live.append(endpoint)
                continue
            log.info("apiserver lease expired", lease=lease.metadata.name,
                     endpoint=endpoint)
            with contextlib.suppress(errors.NotFound, errors.Conflict):
                await leases.delete(meta_pb2.DeleteRequest(
                    namespace=KUBE_SYSTEM, name=lease.metadata.name,
                    preconditions=meta_pb2.Preconditions(
                        resource_version=lease.metadata.resource_version)))
        return live

    async def reconcile_endpoints(self, attempts: int = 3) -> None:
        """Write ``default/kubernetes``'s Endpoints from the live leases if they differ,
        again when another apiserver wrote them meanwhile."""
        for _ in range(attempts):
            if await self._reconcile_endpoints_once():
                return

    async def _reconcile_endpoints_once(self) -> bool:
        """One try; False when another write got there first."""
        subsets = desired_subsets(await self._live_endpoints())
        registry = self._registries["Endpoints"]
        try:
            current: core_pb2.EndpointsObject = await registry.get(  # type: ignore[assignment]
                DEFAULT, KUBERNETES)
        except errors.NotFound:
            current = core_pb2.EndpointsObject(metadata=meta_pb2.ObjectMeta(
                name=KUBERNETES, namespace=DEFAULT, labels=SERVICE_LABELS))
        if current.metadata.resource_version and list(current.subsets) == subsets:
            return True
        del current.subsets[:]
        current.subsets.extend(subsets)
        try:
            if current.metadata.resource_version:
                await registry.update(current)
            else:
                await registry.create(current)
        except (errors.AlreadyExists, errors.Conflict):
            return False
        return True
