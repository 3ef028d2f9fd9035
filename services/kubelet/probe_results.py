"""The seam between the pod sync and the probes: what the sync asks of a probe manager.

The kubelet's pod sync never runs probes itself; it tells a :class:`ProbeResults`
which containers of a pod run (:meth:`~ProbeResults.update_pod`) and reads back
readiness, startup and liveness. The real manager (``services/kubelet/probes.py``,
``ProbeManager(docker, on_change)``) runs exec / HTTP / TCP probes on their periods and
calls ``on_change(pod_uid)`` when a result flips, which resyncs that pod.
:class:`NoProbes` stands in where probes are not wanted: a running container is ready
and started, and nothing ever fails liveness (a pod without probes, in Kubernetes).

Wiring the real one is one line in ``services/kubelet/kubelet.py``:
``PROBE_MANAGER_FACTORY = ProbeManager``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from services.kubelet.runtime import ContainerRef
from skiff.api.v1 import core_pb2

__all__ = ["ContainerRef", "NoProbes", "ProbeManagerFactory", "ProbeResults"]


class ProbeResults(Protocol):
    """What the pod sync needs of a probe manager."""

    def update_pod(self, pod: core_pb2.Pod, containers: Mapping[str, ContainerRef]) -> None:
        """The pod's running containers now (by container name); probe those."""

    def remove_pod(self, uid: str) -> None:
        """The pod is gone from this node: stop probing it, forget its results."""

    def ready(self, uid: str, container: str) -> bool:
        """Whether the (running) container passes its readiness probe."""

    def started(self, uid: str, container: str) -> bool:
        """Whether the (running) container passed its startup probe."""

    def liveness_failed(self, uid: str, container: str) -> bool:
        """Whether the running container failed its liveness (or startup) probe and
        must be killed."""

    async def stop(self) -> None:
        """Stop every probe worker."""


#: How the kubelet makes its probe manager: ``factory(docker, on_change)``.
ProbeManagerFactory = Callable[[Any, Callable[[str], None]], ProbeResults]


class NoProbes:
    """No probes at all: running means ready and started; liveness never fails."""

    def __init__(self, docker: Any = None, on_change: Callable[[str], None] | None = None
                 ) -> None:
        self._running: dict[str, frozenset[str]] = {}

    def update_pod(self, pod: core_pb2.Pod, containers: Mapping[str, ContainerRef]) -> None:
        self._running[pod.metadata.uid] = frozenset(containers)

    def remove_pod(self, uid: str) -> None:
        self._running.pop(uid, None)

    def ready(self, uid: str, container: str) -> bool:
        return container in self._running.get(uid, frozenset())

    def started(self, uid: str, container: str) -> bool:
        return True

    def liveness_failed(self, uid: str, container: str) -> bool:
        return False

    async def stop(self) -> None:
        self._running.clear()
