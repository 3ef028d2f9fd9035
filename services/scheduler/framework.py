"""The scheduling framework: what plugins see, what they answer, and one scheduling cycle.

Kubernetes' ``pkg/scheduler/framework`` in small:

- a plugin's outcome is a :class:`Status` (a :class:`Code` and human-readable reasons),
  never an exception: ``node(s) were unschedulable`` is an answer, not an error;
- :class:`PodInfo` and :class:`NodeInfo` hold what plugins need already parsed
  (quantities to integers, taints and tolerations to tuples, the host ports in use), so
  the hot path — every filter and score on every node — never parses anything;
- plugins implement some of :class:`PreFilterPlugin`, :class:`FilterPlugin`,
  :class:`PreScorePlugin`, :class:`ScorePlugin` (and ``normalize``); a pre-hook that
  answers ``SKIP`` takes its plugin out of the rest of the cycle (a pod without host
  ports never runs the NodePorts filter), which is most of why a cycle is cheap;
- :class:`Framework` runs one cycle: pre-filter once, filter nodes from a rotating
  offset until enough feasible ones are found (``percentageOfNodesToScore``), pre-score,
  score with weights, pick the best (ties broken by a seeded random choice). It answers
  a :class:`ScheduleResult` or raises :class:`FitError`, whose message is Kubernetes'
  ``0/5 nodes are available: ...``.

Everything here is pure and synchronous: the caller (the daemon) owns I/O. Neighbours:
:mod:`.cache` builds and snapshots ``NodeInfo``\\ s, :mod:`.plugins` implement the
protocols, :mod:`.profile` picks the plugins and weights.
"""

from __future__ import annotations

import itertools
import operator
import random
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import IntEnum
from functools import lru_cache
from typing import Any, NamedTuple, Protocol, runtime_checkable

from skiff.api.quantity import milli_value, value
from skiff.api.v1 import core_pb2

MAX_NODE_SCORE = 100
MIN_NODE_SCORE = 0
#: What a container without a cpu / memory request counts as when scoring (Kubernetes'
#: schedutil.DefaultMilliCPURequest / DefaultMemoryRequest): a node full of best-effort
#: pods must not look empty.
DEFAULT_MILLI_CPU_REQUEST = 100
DEFAULT_MEMORY_REQUEST = 200 * 1024 * 1024
#: percentageOfNodesToScore never looks for fewer feasible nodes than this ...
MIN_FEASIBLE_NODES_TO_FIND = 100
#: ... nor, adaptively, a smaller share of the cluster than this (percent).
MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND = 5
DEFAULT_BIND_ALL_HOST_IP = "0.0.0.0"
NO_NODES_AVAILABLE = "no nodes available to schedule pods"

# Node label keys for the zone / region a node is in (and their deprecated beta names).
LABEL_ZONE = "topology.kubernetes.io/zone"
LABEL_REGION = "topology.kubernetes.io/region"
LABEL_ZONE_BETA = "failure-domain.beta.kubernetes.io/zone"
LABEL_REGION_BETA = "failure-domain.beta.kubernetes.io/region"


# ---------------------------------------------------------------------------- status


class Code(IntEnum):
    """A plugin's verdict; the values are Kubernetes' (``framework.Code``)."""

    SUCCESS = 0
    #: Something broke (not the pod's fault, not the node's): the cycle is abandoned.
    ERROR = 1
    #: The pod does not fit this node now; preempting pods there might help.
    UNSCHEDULABLE = 2
    #: The pod does not fit this node and preemption would not change that.
    UNSCHEDULABLE_AND_UNRESOLVABLE = 3
    #: From a pre-hook: this plugin has nothing to say about this pod this cycle.
    SKIP = 5


@dataclass(frozen=True, slots=True)
class Status:
    """A plugin's outcome: a code and the human-readable reasons (one per failed check).

    ``plugin`` names who said so; the framework fills it in for rejections, so a
    :class:`FitError` knows which plugins to wait on.
    """

    code: Code = Code.SUCCESS
    reasons: tuple[str, ...] = ()
    plugin: str = ""

    @classmethod
    def unschedulable(cls, *reasons: str, plugin: str = "") -> Status:
        return cls(Code.UNSCHEDULABLE, reasons, plugin)

    @classmethod
    def unresolvable(cls, *reasons: str, plugin: str = "") -> Status:
        """Unschedulable, and preemption would not help (a taint, a node selector)."""
        return cls(Code.UNSCHEDULABLE_AND_UNRESOLVABLE, reasons, plugin)

    @classmethod
    def error(cls, reason: str, *, plugin: str = "") -> Status:
        return cls(Code.ERROR, (reason,), plugin)

    @property
    def is_success(self) -> bool:
        return self.code == Code.SUCCESS

    @property
    def is_rejected(self) -> bool:
        """Unschedulable, resolvable or not: the pod does not fit (not an error)."""
        return self.code in (Code.UNSCHEDULABLE, Code.UNSCHEDULABLE_AND_UNRESOLVABLE)

    @property
    def message(self) -> str:
        return ", ".join(self.reasons)


#: The one success every plugin returns: the hot path compares by identity first.
SUCCESS = Status()
SKIP = Status(Code.SKIP)


# ------------------------------------------------------------- parsed object parts


class Taint(NamedTuple):
    key: str
    value: str
    #: NoSchedule, PreferNoSchedule or NoExecute.
    effect: str


class Toleration(NamedTuple):
    key: str
    #: Equal (or empty, meaning Equal) or Exists.
    operator: str
    value: str
    #: Empty tolerates every effect.
    effect: str


class HostPort(NamedTuple):
    """A host port a container asks for, sanitised: empty ip is 0.0.0.0, protocol TCP."""

    protocol: str
    host_ip: str
    port: int


def host_port(protocol: str, host_ip: str, port: int) -> HostPort:
    """A :class:`HostPort` with Kubernetes' defaults filled in."""
    return HostPort(protocol or "TCP", host_ip or DEFAULT_BIND_ALL_HOST_IP, port)


class HostPorts:
    """The host ports in use on one node, with Kubernetes' wildcard rule.

    A port on 0.0.0.0 conflicts with the same protocol and port on any ip, and a port on
    a specific ip conflicts with that ip or 0.0.0.0 (``HostPortInfo.CheckConflict``).

    Invariant: ``_by_ip`` counts each (protocol, ip, port) held by pods on the node and
    ``_any_ip`` counts the same entries by (protocol, port) only; both drop zero counts.
    Counts, not sets, so that removing one of two pods holding the same port (possible
    when pods are bound without the scheduler) leaves the port in use.
    """

    __slots__ = ("_any_ip", "_by_ip")

    def __init__(self) -> None:
        self._by_ip: Counter[HostPort] = Counter()
        self._any_ip: Counter[tuple[str, int]] = Counter()

    def add(self, port: HostPort) -> None:
        self._by_ip[port] += 1
        self._any_ip[port.protocol, port.port] += 1

    def remove(self, port: HostPort) -> None:
        if port not in self._by_ip:
            return
        _decrement(self._by_ip, port)
        _decrement(self._any_ip, (port.protocol, port.port))

    def conflicts(self, port: HostPort) -> bool:
        """Whether a pod asking for ``port`` (sanitised) collides with one in use."""
        if port.port <= 0:
            return False
        if port.host_ip == DEFAULT_BIND_ALL_HOST_IP:
            return (port.protocol, port.port) in self._any_ip
        return (port in self._by_ip
                or HostPort(port.protocol, DEFAULT_BIND_ALL_HOST_IP, port.port) in self._by_ip)

    def copy(self) -> HostPorts:
        other = HostPorts()
        other._by_ip = self._by_ip.copy()
        other._any_ip = self._any_ip.copy()
        return other

    def __contains__(self, port: object) -> bool:
        return port in self._by_ip

    def __iter__(self) -> Iterator[HostPort]:
        return iter(self._by_ip)

    def __len__(self) -> int:
        return len(self._by_ip)

    def __repr__(self) -> str:
        return f"HostPorts({sorted(self._by_ip)})"


def _decrement(counter: Counter[Any], key: Any) -> None:
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]


class Resource:
    """Amounts of resources as integers: cpu in millicores, memory and the rest in units.

    ``pods`` is only meaningful for a node's allocatable (how many pods it takes);
    ``scalar`` holds every other resource by name (``ephemeral-storage``,
    ``nvidia.com/gpu``, ``hugepages-2Mi``). Mutable: NodeInfo adds and subtracts pods'
    requests in place.
    """

    __slots__ = ("memory", "milli_cpu", "pods", "scalar")

    def __init__(self, milli_cpu: int = 0, memory: int = 0, pods: int = 0,
                 scalar: Mapping[str, int] | None = None) -> None:
        self.milli_cpu = milli_cpu
        self.memory = memory
        self.pods = pods
        self.scalar: dict[str, int] = dict(scalar) if scalar else {}

    @classmethod
    def from_quantities(cls, quantities: Mapping[str, str]) -> Resource:
        """Parse a ResourceList (``{"cpu": "500m", "memory": "1Gi"}``); ValueError if a
        quantity is malformed (the apiserver's validation keeps those out)."""
        r = cls()
        for name, text in quantities.items():
            if name == "cpu":
                r.milli_cpu = _milli(text)
            elif name == "memory":
                r.memory = _units(text)
            elif name == "pods":
                r.pods = _units(text)
            else:
                r.scalar[name] = _units(text)
        return r

    def get(self, name: str) -> int:
        """The amount of resource ``name`` (``cpu`` in millicores)."""
        if name == "cpu":
            return self.milli_cpu
        if name == "memory":
            return self.memory
        if name == "pods":
            return self.pods
        return self.scalar.get(name, 0)

    def add(self, other: Resource) -> None:
        self.milli_cpu += other.milli_cpu
        self.memory += other.memory
        for name, amount in other.scalar.items():
            self.scalar[name] = self.scalar.get(name, 0) + amount

    def subtract(self, other: Resource) -> None:
        self.milli_cpu -= other.milli_cpu
        self.memory -= other.memory
        for name, amount in other.scalar.items():
            left = self.scalar.get(name, 0) - amount
            if left:
                self.scalar[name] = left
            else:
                self.scalar.pop(name, None)

    def copy(self) -> Resource:
        return Resource(self.milli_cpu, self.memory, self.pods, self.scalar)

    def as_tuple(self) -> tuple[int, int, int, tuple[tuple[str, int], ...]]:
        return (self.milli_cpu, self.memory, self.pods, tuple(sorted(self.scalar.items())))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Resource) and self.as_tuple() == other.as_tuple()

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        extra = f", scalar={self.scalar}" if self.scalar else ""
        return (f"Resource(milli_cpu={self.milli_cpu}, memory={self.memory}, "
                f"pods={self.pods}{extra})")


# Quantities repeat endlessly across pods ("100m", "128Mi"): parse each text once.
@lru_cache(maxsize=4096)
def _milli(text: str) -> int:
    return milli_value(text)


@lru_cache(maxsize=4096)
def _units(text: str) -> int:
    return value(text)


# ---------------------------------------------------------------------- pods

def pod_key(pod: core_pb2.Pod) -> str:
    """``namespace/name`` (``name`` without a namespace): how the cache and queue file
    pods, the same key an informer uses."""
    md = pod.metadata
    return f"{md.namespace}/{md.name}" if md.namespace else md.name


def _container_requests(container: core_pb2.Container) -> tuple[Resource, Resource]:
    """One container's requests, and the same with the scoring defaults for missing cpu
    / memory requests (an explicit zero stays zero, as in Kubernetes)."""
    requests = container.resources.requests
    r = Resource.from_quantities(requests)
    non_zero = Resource(
        r.milli_cpu if "cpu" in requests else DEFAULT_MILLI_CPU_REQUEST,
        r.memory if "memory" in requests else DEFAULT_MEMORY_REQUEST)
    return r, non_zero


def _max_into(total: Resource, other: Resource) -> None:
    total.milli_cpu = max(total.milli_cpu, other.milli_cpu)
    total.memory = max(total.memory, other.memory)
    for name, amount in other.scalar.items():
        total.scalar[name] = max(total.scalar.get(name, 0), amount)


def pod_requests(spec: core_pb2.PodSpec) -> tuple[Resource, Resource]:
    """What a pod asks of a node: (requests, non-zero requests for scoring).

    Kubernetes' ``PodRequests``: app containers run together, so their requests add up;
    init containers run one at a time before them, so the pod needs the larger of that
    sum and its largest init container, resource by resource. (Requests default to
    limits in the apiserver, so limits are not looked at here.)
    """
    total, non_zero = Resource(), Resource()
    for container in spec.containers:
        r, nz = _container_requests(container)
        total.add(r)
        non_zero.add(nz)
    for container in spec.init_containers:
        r, nz = _container_requests(container)
        _max_into(total, r)
        _max_into(non_zero, nz)
    return total, non_zero


def pod_host_ports(spec: core_pb2.PodSpec) -> tuple[HostPort, ...]:
    """The host ports a pod's app containers ask for, sanitised, without duplicates.

    With host networking every container port is a host port (Kubernetes defaults
    ``hostPort`` to ``containerPort`` then).
    """
    seen: dict[HostPort, None] = {}
    for container in spec.containers:
        for p in container.ports:
            port = p.host_port or (p.container_port if spec.host_network else 0)
            if port > 0:
                seen[host_port(p.protocol, p.host_ip, port)] = None
    return tuple(seen)


class PodInfo:
    """A pod and what plugins need of it, computed once when the PodInfo is made.

    Treat ``pod`` as frozen: the cached fields are derived from it. A changed pod gets a
    new PodInfo (the cache and the queue do that on every update).
    """

    __slots__ = ("deleting", "host_ports", "key", "labels", "name", "namespace",
                 "non_zero_requests", "pod", "priority", "requests", "tolerations")

    def __init__(self, pod: core_pb2.Pod) -> None:
        md, spec = pod.metadata, pod.spec
        self.pod = pod
        self.key = pod_key(pod)
        self.namespace = md.namespace
        self.name = md.name
        self.labels: dict[str, str] = dict(md.labels)
        #: spec.priority (the apiserver resolves priorityClassName into it); 0 if unset.
        self.priority: int = spec.priority
        #: Terminating pods still hold their node's resources but do not count as
        #: replicas for spreading.
        self.deleting = md.HasField("deletion_timestamp")
        self.requests, self.non_zero_requests = pod_requests(spec)
        self.host_ports = pod_host_ports(spec)
        self.tolerations = tuple(Toleration(t.key, t.operator, t.value, t.effect)
                                 for t in spec.tolerations)

    def __repr__(self) -> str:
        return f"PodInfo({self.key!r})"


# ---------------------------------------------------------------------- nodes

_generations = itertools.count(1)


def next_generation() -> int:
    """A number larger than every one handed out before (process-wide), for NodeInfo."""
    return next(_generations)


def zone_key(labels: Mapping[str, str]) -> str:
    """The node's failure zone as one string (region and zone), "" if it has none.

    Kubernetes' ``utilnode.GetZoneKey``: the NUL keeps ``a:b`` + ``c`` apart from ``a`` +
    ``b:c``.
    """
    zone = labels.get(LABEL_ZONE, labels.get(LABEL_ZONE_BETA, ""))
    region = labels.get(LABEL_REGION, labels.get(LABEL_REGION_BETA, ""))
    if not zone and not region:
        return ""
    return f"{region}:\x00:{zone}"


class NodeInfo:
    """A node, the pods on it and what they add up to, as plugins need them.

    Invariants (kept by :meth:`add_pod` / :meth:`remove_pod`):

    - ``requested`` is the sum of ``pods[*].requests`` and ``non_zero_requested`` the sum
      of their scoring requests;
    - ``used_ports`` holds exactly the host ports of ``pods``;
    - ``generation`` grows on every change (from :func:`next_generation`), which is how a
      snapshot tells what changed since it was taken.

    ``node`` is None for a node the cache has not seen (or has seen deleted) while pods
    bound to it are known: their resources are accounted, the node is not scheduled on.
    The node's own fields (labels, taints, allocatable, ...) are parsed once in
    :meth:`set_node`.
    """

    __slots__ = ("allocatable", "generation", "labels", "name", "node", "non_zero_requested",
                 "pods", "ready", "requested", "taints", "unschedulable", "used_ports", "zone")

    def __init__(self, node: core_pb2.Node | None = None, *, name: str = "") -> None:
        self.name = node.metadata.name if node is not None else name
        self.node: core_pb2.Node | None = None
        self.pods: dict[str, PodInfo] = {}
        self.requested = Resource()
        self.non_zero_requested = Resource()
        self.used_ports = HostPorts()
        self.allocatable = Resource()
        self.labels: dict[str, str] = {}
        self.taints: tuple[Taint, ...] = ()
        self.unschedulable = False
        self.ready = False
        self.zone = ""
        self.generation = next_generation()
        if node is not None:
            self.set_node(node)

    def set_node(self, node: core_pb2.Node) -> None:
        """Take a (new version of the) Node object and parse what plugins read of it."""
        status = node.status
        self.node = node
        self.name = node.metadata.name
        self.labels = dict(node.metadata.labels)
        self.taints = tuple(Taint(t.key, t.value, t.effect) for t in node.spec.taints)
        self.unschedulable = node.spec.unschedulable
        # The apiserver defaults allocatable to capacity when a node reports none.
        self.allocatable = Resource.from_quantities(status.allocatable or status.capacity)
        self.ready = any(c.type == "Ready" and c.status == "True" for c in status.conditions)
        self.zone = zone_key(self.labels)
        self.generation = next_generation()

    def remove_node(self) -> None:
        """Forget the Node object (deleted) but keep the pods' accounting."""
        self.node = None
        self.generation = next_generation()

    def add_pod(self, pod: PodInfo) -> None:
        """Charge ``pod`` to this node (replacing the pod of the same key if any)."""
        if pod.key in self.pods:
            self._uncharge(self.pods[pod.key])
        self.pods[pod.key] = pod
        self.requested.add(pod.requests)
        self.non_zero_requested.add(pod.non_zero_requests)
        for port in pod.host_ports:
            self.used_ports.add(port)
        self.generation = next_generation()

    def remove_pod(self, key: str) -> PodInfo | None:
        """Stop charging the pod of ``key``; the PodInfo removed, None if it was not here."""
        pod = self.pods.pop(key, None)
        if pod is not None:
            self._uncharge(pod)
            self.generation = next_generation()
        return pod

    def _uncharge(self, pod: PodInfo) -> None:
        self.requested.subtract(pod.requests)
        self.non_zero_requested.subtract(pod.non_zero_requests)
        for port in pod.host_ports:
            self.used_ports.remove(port)

    def clone(self) -> NodeInfo:
        """A copy that later changes to this one do not reach (for snapshots)."""
        other = NodeInfo.__new__(NodeInfo)
        self.copy_into(other)
        return other

    def copy_into(self, other: NodeInfo) -> None:
        """Make ``other`` a copy of this one, in place (a snapshot keeps its objects)."""
        # The parsed node fields are never mutated, only replaced: share them.
        other.name = self.name
        other.node = self.node
        other.labels = self.labels
        other.taints = self.taints
        other.unschedulable = self.unschedulable
        other.ready = self.ready
        other.zone = self.zone
        other.allocatable = self.allocatable
        other.generation = self.generation
        other.pods = dict(self.pods)
        other.requested = self.requested.copy()
        other.non_zero_requested = self.non_zero_requested.copy()
        other.used_ports = self.used_ports.copy()

    def __repr__(self) -> str:
        return f"NodeInfo({self.name!r}, pods={len(self.pods)}, generation={self.generation})"


# ----------------------------------------------------------------------- plugins


class CycleState(dict[str, Any]):
    """Data plugins keep for one pod's scheduling cycle, under their own keys.

    A pre-hook computes once what every node would otherwise recompute (the pod's
    parsed affinity, its spreading selector) and writes it here; filter and score read
    it (``state.get(key)``: a dict, so reading costs no Python call on the hot path).
    ``skip_filter`` / ``skip_score`` are the plugins whose pre-hook said SKIP.
    """

    __slots__ = ("skip_filter", "skip_score")

    def __init__(self) -> None:
        super().__init__()
        self.skip_filter: set[str] = set()
        self.skip_score: set[str] = set()

    def write(self, key: str, data: Any) -> None:
        self[key] = data

    def read(self, key: str) -> Any:
        """The data under ``key``; KeyError if no pre-hook wrote it."""
        return self[key]


@runtime_checkable
class Plugin(Protocol):
    name: str


@runtime_checkable
class PreFilterPlugin(Protocol):
    name: str

    def pre_filter(self, state: CycleState, pod: PodInfo) -> Status:
        """Once per cycle before any filter: SUCCESS, SKIP (this plugin's filter is not
        needed for this pod), a rejection (no node can fit) or an error."""
        ...


@runtime_checkable
class FilterPlugin(Protocol):
    name: str

    def filter(self, state: CycleState, pod: PodInfo, node_info: NodeInfo) -> Status:
        """Whether ``pod`` can run on the node: SUCCESS or a rejection with reasons."""
        ...


@runtime_checkable
class PreScorePlugin(Protocol):
    name: str

    def pre_score(self, state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo]) -> Status:
        """Once per cycle before scoring the feasible ``nodes``: SUCCESS or SKIP."""
        ...


@runtime_checkable
class ScorePlugin(Protocol):
    name: str

    def score(self, state: CycleState, pod: PodInfo, node_info: NodeInfo) -> int:
        """How good the node is for the pod: 0..100 (MAX_NODE_SCORE), or any
        non-negative number when the plugin has ``normalize``."""
        ...


@runtime_checkable
class NormalizeScorePlugin(Protocol):
    name: str

    def normalize(self, state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo],
                  scores: list[int]) -> None:
        """Rewrite ``scores`` (one per node of ``nodes``, same order) into 0..100."""
        ...


def default_normalize_score(scores: list[int], *, reverse: bool = False,
                            max_score: int = MAX_NODE_SCORE) -> None:
    """Scale ``scores`` in place so the highest becomes ``max_score`` (integer division,
    as Kubernetes); ``reverse`` makes the highest 0 instead. All zero: stays 0, or all
    ``max_score`` when reversed (``helper.DefaultNormalizeScore``)."""
    highest = max(scores, default=0)
    if highest == 0:
        if reverse:
            scores[:] = [max_score] * len(scores)
        return
    if reverse:
        scores[:] = [max_score - max_score * s // highest for s in scores]
    else:
        scores[:] = [max_score * s // highest for s in scores]


# ------------------------------------------------------------------ the cycle


@dataclass(frozen=True, slots=True)
class ScheduleResult:
    """Where to put the pod, and how many nodes were filtered / found feasible."""

    node_name: str
    evaluated: int
    feasible: int


class SchedulingError(Exception):
    """A plugin answered ERROR: the cycle was abandoned (retry the pod later)."""

    def __init__(self, status: Status) -> None:
        super().__init__(f"{status.plugin or 'a plugin'}: {status.message}")
        self.status = status


class FitError(Exception):
    """No node fits the pod. ``str()`` is Kubernetes' message, e.g.::

        0/5 nodes are available: 2 Insufficient cpu, 3 node(s) were unschedulable.

    ``statuses`` maps each rejected node to why; ``pre_filter_message`` is set when a
    pre-filter rejected the pod outright (then it alone is the reason, as in Kubernetes).
    """

    def __init__(self, pod_key: str, num_all_nodes: int, statuses: Mapping[str, Status],
                 pre_filter_message: str = "") -> None:
        self.pod_key = pod_key
        self.num_all_nodes = num_all_nodes
        self.statuses = dict(statuses)
        self.pre_filter_message = pre_filter_message
        super().__init__(self.message)

    def reason_counts(self) -> Counter[str]:
        """How many nodes gave each reason (a node may give several)."""
        counts: Counter[str] = Counter()
        for status in self.statuses.values():
            counts.update(status.reasons)
        return counts

    @property
    def message(self) -> str:
        """Kubernetes' ``FitError.Error()``: ``0/N nodes are available: <histogram>.``

        The histogram entries are ``"<count> <reason>"`` strings sorted as strings, which
        is exactly what Kubernetes does (``sort.Strings``): entries order by their count's
        digits first, then by reason.
        """
        if self.num_all_nodes == 0:
            return NO_NODES_AVAILABLE
        message = f"0/{self.num_all_nodes} nodes are available:"
        if self.pre_filter_message:
            return f"{message} {self.pre_filter_message}."
        histogram = sorted(f"{count} {reason}" for reason, count in self.reason_counts().items())
        if histogram:
            message += f" {', '.join(histogram)}."
        return message

    @property
    def unschedulable_plugins(self) -> frozenset[str]:
        """The plugins that rejected the pod somewhere: events that concern them may make
        it schedulable (what the queue can wait on)."""
        return frozenset(s.plugin for s in self.statuses.values() if s.plugin)


def num_feasible_nodes_to_find(num_all_nodes: int, percentage: int = 0) -> int:
    """How many feasible nodes to look for before scoring (``numFeasibleNodesToFind``).

    Under 100 nodes: all. ``percentage`` 0 is Kubernetes' adaptive default, 50% minus one
    point per 125 nodes, at least 5%; and never fewer than 100 nodes.
    """
    if num_all_nodes < MIN_FEASIBLE_NODES_TO_FIND or percentage >= 100:
        return num_all_nodes
    if percentage <= 0:
        percentage = max(50 - num_all_nodes // 125, MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND)
    return max(num_all_nodes * percentage // 100, MIN_FEASIBLE_NODES_TO_FIND)


def _unique(plugins: Iterable[Any], protocol: type) -> tuple[Any, ...]:
    """The plugins implementing ``protocol``, each once, in first-seen order."""
    seen: dict[int, Any] = {}
    for plugin in plugins:
        if isinstance(plugin, protocol) and id(plugin) not in seen:
            seen[id(plugin)] = plugin
    return tuple(seen.values())


class Framework:
    """Runs scheduling cycles with a fixed set of plugins (one profile).

    ``filters`` run in order on each node and stop at the first rejection (its reasons
    are the node's); ``scores`` are (plugin, weight) pairs. Pre-hooks are found on the
    plugins themselves: a filter plugin's ``pre_filter``, a score plugin's ``pre_score``.

    State across cycles: the rotating start offset (each cycle resumes filtering where the
    last stopped, so every node gets its turn under percentageOfNodesToScore) and the
    random generator breaking ties (seeded: the same inputs give the same choices).
    """

    def __init__(self, *, filters: Sequence[FilterPlugin] = (),
                 scores: Sequence[tuple[ScorePlugin, int]] = (),
                 percentage_of_nodes_to_score: int = 0, seed: int | None = 0) -> None:
        for plugin, weight in scores:
            if weight <= 0:
                raise ValueError(f"score plugin {plugin.name}: weight must be positive")
        self.filters = tuple(filters)
        self.scores = tuple(scores)
        self.percentage_of_nodes_to_score = percentage_of_nodes_to_score
        self._pre_filters: tuple[PreFilterPlugin, ...] = _unique(self.filters, PreFilterPlugin)
        self._pre_scores: tuple[PreScorePlugin, ...] = _unique(
            (p for p, _ in self.scores), PreScorePlugin)
        # isinstance() on a runtime Protocol is slow: decide once who normalizes.
        self._normalizers = {id(p): p.normalize for p, _ in self.scores
                             if isinstance(p, NormalizeScorePlugin)}
        self._rng = random.Random(seed)
        self._next_start = 0

    # -- the whole cycle

    def schedule(self, pod: PodInfo, nodes: Sequence[NodeInfo],
                 state: CycleState | None = None) -> ScheduleResult:
        """Pick a node for ``pod`` among ``nodes`` (a snapshot's list).

        Raises :class:`FitError` when no node fits, :class:`SchedulingError` when a
        plugin failed.
        """
        state = state if state is not None else CycleState()
        if not nodes:
            raise FitError(pod.key, 0, {})
        status = self.run_pre_filter(state, pod)
        if not status.is_success:
            raise FitError(pod.key, len(nodes), dict.fromkeys((n.name for n in nodes), status),
                           pre_filter_message=status.message)
        feasible, statuses = self.find_feasible_nodes(state, pod, nodes)
        evaluated = len(feasible) + len(statuses)
        if not feasible:
            raise FitError(pod.key, len(nodes), statuses)
        if len(feasible) == 1:
            return ScheduleResult(feasible[0].name, evaluated, 1)
        totals = self.prioritize(state, pod, feasible)
        return ScheduleResult(self.select_host(feasible, totals), evaluated, len(feasible))

    # -- filtering

    def run_pre_filter(self, state: CycleState, pod: PodInfo) -> Status:
        """Every pre-filter; the first rejection or error (SKIPs are recorded in state)."""
        for plugin in self._pre_filters:
            status = plugin.pre_filter(state, pod)
            if status is SUCCESS or status.code == Code.SUCCESS:
                continue
            if status.code == Code.SKIP:
                state.skip_filter.add(plugin.name)
                continue
            status = status if status.plugin else replace(status, plugin=plugin.name)
            if status.code == Code.ERROR:
                raise SchedulingError(status)
            return status
        return SUCCESS

    def run_filters(self, state: CycleState, pod: PodInfo, node_info: NodeInfo) -> Status:
        """All (not skipped) filters on one node: SUCCESS or the first rejection."""
        for plugin in self.filters:
            if plugin.name in state.skip_filter:
                continue
            status = plugin.filter(state, pod, node_info)
            if status is not SUCCESS and status.code:
                return self._rejection(status, plugin.name)
        return SUCCESS

    def find_feasible_nodes(self, state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo],
                            ) -> tuple[list[NodeInfo], dict[str, Status]]:
        """Filter nodes from the rotating offset until enough feasible ones are found.

        Returns the feasible nodes and, for each node found infeasible, its status; the
        offset moves past every node looked at.
        """
        n = len(nodes)
        if n == 0:
            return [], {}
        wanted = num_feasible_nodes_to_find(n, self.percentage_of_nodes_to_score)
        plugins = [p for p in self.filters if p.name not in state.skip_filter]
        checks = [p.filter for p in plugins]
        start = self._next_start % n
        feasible: list[NodeInfo] = []
        statuses: dict[str, Status] = {}
        # The hot loop: bound methods in a local list, success compared by identity.
        for node_info in itertools.chain(itertools.islice(nodes, start, None),
                                         itertools.islice(nodes, start)):
            for check in checks:
                status = check(state, pod, node_info)
                if status is not SUCCESS and status.code:
                    statuses[node_info.name] = self._rejection(
                        status, plugins[checks.index(check)].name)
                    break
            else:
                feasible.append(node_info)
                if len(feasible) >= wanted:
                    break
        self._next_start = (start + len(feasible) + len(statuses)) % n
        return feasible, statuses

    @staticmethod
    def _rejection(status: Status, plugin: str) -> Status:
        status = status if status.plugin else replace(status, plugin=plugin)
        if status.code == Code.ERROR:
            raise SchedulingError(status)
        return status

    # -- scoring

    def run_pre_score(self, state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo]) -> None:
        """Every pre-score hook; a SKIP takes that plugin out of this cycle's scoring."""
        for plugin in self._pre_scores:
            status = plugin.pre_score(state, pod, nodes)
            if status is SUCCESS or status.code == Code.SUCCESS:
                continue
            if status.code == Code.SKIP:
                state.skip_score.add(plugin.name)
                continue
            raise SchedulingError(status if status.plugin else replace(status, plugin=plugin.name))

    def prioritize(self, state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo]) -> list[int]:
        """Pre-score, then each node's weighted total over the score plugins (in order)."""
        self.run_pre_score(state, pod, nodes)
        totals = [0] * len(nodes)
        for _, weight, scores in self.run_score_plugins(state, pod, nodes):
            if weight == 1:
                totals = list(map(operator.add, totals, scores))
            else:
                totals = [t + weight * s for t, s in zip(totals, scores, strict=True)]
        return totals

    def run_score_plugins(self, state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo],
                          ) -> list[tuple[ScorePlugin, int, list[int]]]:
        """(plugin, weight, normalized scores for ``nodes``) for each score plugin not
        skipped; the scores are not yet weighted."""
        results = []
        for plugin, weight in self.scores:
            if plugin.name in state.skip_score:
                continue
            score = plugin.score
            scores = [score(state, pod, node_info) for node_info in nodes]
            normalize = self._normalizers.get(id(plugin))
            if normalize is not None:
                normalize(state, pod, nodes, scores)
            if scores and (min(scores) < MIN_NODE_SCORE or max(scores) > MAX_NODE_SCORE):
                raise SchedulingError(Status.error(
                    f"score out of range [{MIN_NODE_SCORE}, {MAX_NODE_SCORE}]: "
                    f"{min(scores)}..{max(scores)}", plugin=plugin.name))
            results.append((plugin, weight, scores))
        return results

    def select_host(self, nodes: Sequence[NodeInfo], totals: Sequence[int]) -> str:
        """The node with the highest total; among equals, one chosen at random (uniformly,
        like Kubernetes' reservoir sampling, but from this framework's seeded rng)."""
        best = max(totals)
        candidates = [i for i, total in enumerate(totals) if total == best]
        return nodes[candidates[0] if len(candidates) == 1 else self._rng.choice(candidates)].name
