"""The scheduler's cache: nodes and the pods on them, as the scheduler believes them.

Two sources feed it. Informer events (the daemon's handlers) report nodes and *bound*
pods: ``add_node`` / ``update_node`` / ``remove_node``, ``add_pod`` / ``update_pod`` /
``remove_pod``. The scheduler itself reports its own decisions before the apiserver
has confirmed them: ``assume(pod, node)`` charges the pod to the node at once, so the
next cycle (which runs while the binding is still in flight) sees the room taken.
Then, as in Kubernetes' ``internal/cache``:

- the bound pod's add (or update) event *confirms* the assumed pod;
- ``forget(pod)`` undoes an assumption whose binding failed;
- ``finish_binding(pod)`` starts the assumed pod's TTL: a binding the API accepted but
  whose event never came (the pod deleted meanwhile, say) expires after ``ttl``
  seconds of the injected clock, so its room is not held forever.

Handlers are level-triggered and forgiving: adding what is there updates it, updating
what is not there adds it, removing what is not there does nothing. A pod that has
finished (phase Succeeded or Failed) holds nothing, so its event removes it. Only
``assume`` is strict: assuming a pod the cache already has is a scheduler bug
(ValueError).

``snapshot()`` is what a cycle reads: one NodeInfo clone per node, in zone-interleaved
order (Kubernetes' node tree: one node of each zone in turn, so the first nodes filtered
under percentageOfNodesToScore span the zones). It is incremental: every change bumps a
NodeInfo's generation and moves it to the end of ``_nodes``, so refreshing the snapshot
walks back from the end only over what changed since, copying those NodeInfos into the
snapshot's objects in place; the list itself is rebuilt only when nodes come or go or
change zone. With 5,000 nodes and one pod assumed per cycle that is one NodeInfo copied.

Pure and synchronous: no I/O, no tasks; time comes from ``clock``.
"""

from __future__ import annotations

import heapq
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from services.scheduler.framework import NodeInfo, PodInfo, pod_key
from skiff.api.v1 import core_pb2

#: How long an assumed pod whose binding finished waits for its add event.
DEFAULT_ASSUMED_POD_TTL = 30.0
_TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})

PodRef = core_pb2.Pod | PodInfo | str


def _key(pod: PodRef) -> str:
    if isinstance(pod, str):
        return pod
    if isinstance(pod, PodInfo):
        return pod.key
    return pod_key(pod)


def _info(pod: core_pb2.Pod | PodInfo) -> PodInfo:
    return pod if isinstance(pod, PodInfo) else PodInfo(pod)


class Snapshot:
    """The nodes one scheduling cycle sees: ``node_infos`` (zone-interleaved order) and
    lookup by name. Owned by the cache, which refreshes it in place on every
    ``snapshot()``: read it during a cycle, do not keep it across cycles.

    Only nodes the cache has a Node object for are here (not pods-only placeholders).
    """

    __slots__ = ("_by_name", "generation", "node_infos")

    def __init__(self) -> None:
        self.node_infos: list[NodeInfo] = []
        self._by_name: dict[str, NodeInfo] = {}
        #: The highest NodeInfo generation copied in.
        self.generation = 0

    def get(self, name: str) -> NodeInfo | None:
        return self._by_name.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[NodeInfo]:
        return iter(self.node_infos)

    def __len__(self) -> int:
        return len(self.node_infos)


@dataclass(slots=True)
class _PodState:
    pod: PodInfo
    node_name: str
    #: Charged by assume() and not yet confirmed by an add / update event.
    assumed: bool
    binding_finished: bool = False
    #: When an assumed pod expires (set by finish_binding); None: not yet counting.
    deadline: float | None = None


class SchedulerCache:
    """See the module docstring.

    Invariants:

    - every pod in ``_pods`` is in ``_nodes[state.node_name].pods`` and vice versa;
      ``_assumed`` is exactly the keys of ``_pods`` whose state is assumed;
    - ``_nodes`` is ordered by NodeInfo generation (each change moves the NodeInfo to
      the end), which is what lets ``snapshot()`` stop at the first unchanged one;
    - a NodeInfo without a Node exists only while pods are charged to it;
    - ``_zones`` (the node tree) lists exactly the nodes that have a Node, by zone, each
      zone's nodes in the order they were added.
    """

    def __init__(self, *, ttl: float = DEFAULT_ASSUMED_POD_TTL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self._nodes: OrderedDict[str, NodeInfo] = OrderedDict()
        self._pods: dict[str, _PodState] = {}
        self._assumed: set[str] = set()
        #: (deadline, key) of assumed pods whose binding finished; entries for pods
        #: confirmed or gone since are stale and skipped.
        self._deadlines: list[tuple[float, str]] = []
        self._zones: dict[str, list[str]] = {}
        self._node_count = 0
        #: The node tree changed (a node came, went or changed zone) since the snapshot.
        self._tree_changed = False
        self._snapshot = Snapshot()

    # ------------------------------------------------------------------ nodes

    def add_node(self, node: core_pb2.Node) -> NodeInfo:
        """A node appeared (or changed: the same as :meth:`update_node`)."""
        name = node.metadata.name
        info = self._nodes.get(name)
        if info is None:
            info = self._nodes[name] = NodeInfo(node)
            self._tree_add(info)
            return info
        had_node, old_zone = info.node is not None, info.zone
        info.set_node(node)
        self._nodes.move_to_end(name)
        if not had_node:
            self._tree_add(info)
        elif info.zone != old_zone:
            self._tree_remove(name, old_zone)
            self._tree_add(info)
        return info

    def update_node(self, node: core_pb2.Node) -> NodeInfo:
        """A node changed (or appeared)."""
        return self.add_node(node)

    def remove_node(self, node: core_pb2.Node | str) -> None:
        """A node was deleted. Pods still charged to it keep their accounting until their
        own delete events come (they will)."""
        name = node if isinstance(node, str) else node.metadata.name
        info = self._nodes.get(name)
        if info is None or info.node is None:
            return
        self._tree_remove(name, info.zone)
        if info.pods:
            info.remove_node()
            self._nodes.move_to_end(name)
        else:
            del self._nodes[name]

    def node_info(self, name: str) -> NodeInfo | None:
        """The live NodeInfo (not a snapshot copy): for inspection, not for cycles."""
        return self._nodes.get(name)

    @property
    def node_count(self) -> int:
        """Nodes with a Node object (what a snapshot holds)."""
        return self._node_count

    # ------------------------------------------------------------------ pods

    def add_pod(self, pod: core_pb2.Pod | PodInfo) -> None:
        """A bound pod appeared (or changed): charge it to ``spec.nodeName``.

        Confirms the pod if it was assumed (moving it if it landed elsewhere than
        assumed); a finished pod (Succeeded / Failed) is removed instead.
        """
        info = _info(pod)
        node_name = info.pod.spec.node_name
        if not node_name:
            raise ValueError(f"pod {info.key} is not bound to a node: queue it, do not cache it")
        if info.pod.status.phase in _TERMINAL_PHASES:
            self.remove_pod(info.key)
            return
        state = self._pods.get(info.key)
        if state is not None:
            self._release(info.key, state.node_name)
        self._charge(info, node_name)
        self._pods[info.key] = _PodState(info, node_name, assumed=False)
        self._assumed.discard(info.key)

    def update_pod(self, pod: core_pb2.Pod | PodInfo) -> None:
        """A bound pod changed (or appeared): the same as :meth:`add_pod`."""
        self.add_pod(pod)

    def remove_pod(self, pod: PodRef) -> None:
        """A pod was deleted (bound or assumed): its room is free again."""
        key = _key(pod)
        state = self._pods.pop(key, None)
        if state is not None:
            self._release(key, state.node_name)
            self._assumed.discard(key)

    def get_pod(self, pod: PodRef) -> PodInfo | None:
        state = self._pods.get(_key(pod))
        return state.pod if state is not None else None

    def pod_node(self, pod: PodRef) -> str | None:
        """The node the pod is charged to (bound or assumed), None if not cached."""
        state = self._pods.get(_key(pod))
        return state.node_name if state is not None else None

    @property
    def pod_count(self) -> int:
        return len(self._pods)

    # ------------------------------------------------------------- assumptions

    def assume(self, pod: core_pb2.Pod | PodInfo, node_name: str) -> None:
        """Charge a pod the scheduler just placed to ``node_name``, before binding.

        ValueError if the pod is already cached (assumed or bound): placing a pod twice
        is a bug in the caller.
        """
        info = _info(pod)
        if info.key in self._pods:
            where = "assumed" if info.key in self._assumed else "bound"
            raise ValueError(f"pod {info.key} is already in the cache ({where} on "
                             f"{self._pods[info.key].node_name}); it cannot be assumed")
        self._charge(info, node_name)
        self._pods[info.key] = _PodState(info, node_name, assumed=True)
        self._assumed.add(info.key)

    def finish_binding(self, pod: PodRef) -> None:
        """The binding call returned: start the assumed pod's expiry clock."""
        key = _key(pod)
        state = self._pods.get(key)
        if state is not None and state.assumed:
            state.binding_finished = True
            state.deadline = self.clock() + self.ttl
            heapq.heappush(self._deadlines, (state.deadline, key))

    def forget(self, pod: PodRef) -> bool:
        """Undo an assumption (its binding failed); whether there was one to undo.

        A pod already confirmed (its add event won the race with the failure report),
        or already gone, is left alone.
        """
        key = _key(pod)
        state = self._pods.get(key)
        if state is None or not state.assumed:
            return False
        self.remove_pod(key)
        return True

    def is_assumed(self, pod: PodRef) -> bool:
        return _key(pod) in self._assumed

    def cleanup_expired(self) -> list[str]:
        """Drop assumed pods whose binding finished more than ``ttl`` ago without a
        confirming event; their keys. ``snapshot()`` calls this first."""
        now = self.clock()
        expired = []
        while self._deadlines and self._deadlines[0][0] <= now:
            deadline, key = heapq.heappop(self._deadlines)
            state = self._pods.get(key)
            # A stale entry: the pod was confirmed, forgotten or deleted since.
            if state is not None and state.assumed and state.deadline == deadline:
                self.remove_pod(key)
                expired.append(key)
        return sorted(expired)

    # ------------------------------------------------------------- snapshot

    def snapshot(self) -> Snapshot:
        """The nodes as of now, for one cycle: refreshed incrementally (module docstring)."""
        self.cleanup_expired()
        snap = self._snapshot
        rebuild = self._tree_changed
        newest = snap.generation
        for info in reversed(self._nodes.values()):
            if info.generation <= snap.generation:
                break  # ordered by generation: everything before is unchanged
            newest = max(newest, info.generation)
            existing = snap._by_name.get(info.name)
            if info.node is None:
                if existing is not None:
                    del snap._by_name[info.name]
                    rebuild = True
            elif existing is None:
                snap._by_name[info.name] = info.clone()
                rebuild = True
            else:
                info.copy_into(existing)
        if len(snap._by_name) > self._node_count:  # some nodes were deleted outright
            for name in [n for n in snap._by_name if n not in self._nodes]:
                del snap._by_name[name]
            rebuild = True
        if rebuild:
            snap.node_infos = [snap._by_name[name] for name in self._tree_order()]
            self._tree_changed = False
        snap.generation = newest
        return snap

    # ------------------------------------------------------------- internals

    def _charge(self, info: PodInfo, node_name: str) -> None:
        node_info = self._nodes.get(node_name)
        if node_info is None:
            # A pod on a node not seen yet (events race): account for it anyway.
            node_info = self._nodes[node_name] = NodeInfo(name=node_name)
        node_info.add_pod(info)
        self._nodes.move_to_end(node_name)

    def _release(self, key: str, node_name: str) -> None:
        node_info = self._nodes.get(node_name)
        if node_info is None:
            return
        node_info.remove_pod(key)
        if node_info.node is None and not node_info.pods:
            del self._nodes[node_name]
        else:
            self._nodes.move_to_end(node_name)

    def _tree_add(self, info: NodeInfo) -> None:
        self._zones.setdefault(info.zone, []).append(info.name)
        self._node_count += 1
        self._tree_changed = True

    def _tree_remove(self, name: str, zone: str) -> None:
        names = self._zones.get(zone, [])
        if name in names:
            names.remove(name)
            self._node_count -= 1
            self._tree_changed = True
        if not names:
            self._zones.pop(zone, None)

    def _tree_order(self) -> list[str]:
        """Node names taking one from each zone in turn (Kubernetes' ``nodeTree.list``)."""
        zones = list(self._zones.values())
        order: list[str] = []
        for i in range(max(map(len, zones), default=0)):
            order.extend(names[i] for names in zones if i < len(names))
        return order
