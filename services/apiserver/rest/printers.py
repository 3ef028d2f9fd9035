"""Server-side printing: objects as a ``meta.k8s.io/v1`` Table, Kubernetes' columns.

``kubectl get`` asks for ``as=Table;v=v1;g=meta.k8s.io`` and prints what comes back: the
column definitions (those of priority 1 only with ``-o wide``) and each row's cells,
reading the row's ``object`` (PartialObjectMetadata by default) for ``-A``'s namespace
column and ``--show-labels``. The columns and how each cell is computed follow
Kubernetes' printers (``pkg/printers/internalversion/printers.go``): a pod's STATUS as
kubectl shows it (a waiting reason, ``Init:1/2``, ``Completed``, ``Terminating``), ages
in Kubernetes' short duration format (``5s``, ``3m2s``, ``2d``). Like the apiserver,
every row carries the wide cells too.

Everything works on an object's Kubernetes JSON (what the REST codec writes) and a
``now`` passed in, so it is pure and testable without a clock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from skiff.api.duration import human_duration
from skiff.api.kinds import Kind

TABLE_API_VERSION = "meta.k8s.io/v1"
INCLUDE_NONE, INCLUDE_METADATA, INCLUDE_OBJECT = "None", "Metadata", "Object"
_NODE_ROLE_PREFIX = "node-role.kubernetes.io/"
_NODE_ROLE_LABEL = "kubernetes.io/role"

JSON = Mapping[str, Any]


@dataclass(frozen=True)
class Column:
    """A column definition, as Table's ``columnDefinitions`` carries it."""

    name: str
    type: str = "string"
    description: str = ""
    priority: int = 0
    format: str = ""

    def definition(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "format": self.format,
                "description": self.description, "priority": self.priority}


_NAME = Column("Name", format="name", description="Name must be unique within a namespace.")
_AGE = Column("Age", description="CreationTimestamp is a timestamp representing the server "
              "time when this object was created.")
_CONTAINERS = Column("Containers", priority=1,
                     description="Names of each container in the template.")
_IMAGES = Column("Images", priority=1,
                 description="Images referenced by each container in the template.")
_SELECTOR = Column("Selector", priority=1, description="The label selector of the pods.")


# ---- values of a JSON object ----


def _get(obj: Any, *path: str, default: Any = None) -> Any:
    """``obj[path[0]][path[1]]...``, ``default`` where a step is missing."""
    for step in path:
        if not isinstance(obj, Mapping) or step not in obj:
            return default
        obj = obj[step]
    return obj if obj is not None else default


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None




def age(timestamp: Any, now: datetime) -> str:
    """How long ago ``timestamp`` (RFC 3339) was; ``<unknown>`` when unset."""
    when = _parse_time(timestamp)
    if when is None:
        return "<unknown>"
    return human_duration((now - when).total_seconds())


def format_labels(labels: Mapping[str, str] | None) -> str:
    """``a=b,c=d`` (sorted), ``<none>`` when empty: labels.FormatLabels."""
    if not labels:
        return "<none>"
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def format_label_selector(selector: JSON | None) -> str:
    """A LabelSelector as labels.Selector.String() writes it (requirements by key)."""
    if not selector:
        return ""
    parts: list[tuple[str, str]] = [(k, f"{k}={v}") for k, v in
                                    (selector.get("matchLabels") or {}).items()]
    for expr in selector.get("matchExpressions") or []:
        key, op = expr.get("key", ""), expr.get("operator", "")
        values = ",".join(sorted(expr.get("values") or []))
        text = {"In": f"{key} in ({values})", "NotIn": f"{key} notin ({values})",
                "Exists": key, "DoesNotExist": f"!{key}"}.get(op, "<invalid>")
        parts.append((key, text))
    return ",".join(text for _, text in sorted(parts, key=lambda p: p[0]))


def _containers(template_spec: JSON | None) -> tuple[str, str]:
    containers = (template_spec or {}).get("containers") or []
    return (",".join(c.get("name", "") for c in containers),
            ",".join(c.get("image", "") for c in containers))


# ---- pods ----


def _terminated_reason(terminated: JSON, prefix: str = "") -> str:
    if terminated.get("reason"):
        return prefix + terminated["reason"]
    if terminated.get("signal"):
        return f"{prefix}Signal:{terminated['signal']}"
    return f"{prefix}ExitCode:{terminated.get('exitCode', 0)}"


def _condition_true(conditions: Iterable[JSON], type_: str) -> bool:
    return any(c.get("type") == type_ and c.get("status") == "True" for c in conditions)


@dataclass
class PodSummary:
    """A pod's STATUS (``reason``), ready containers and restarts, as kubectl counts."""

    reason: str
    ready: int = 0
    restarts: int = 0
    last_restart: datetime | None = None

    def saw_termination(self, status: JSON) -> None:
        finished = _parse_time(_get(status, "lastState", "terminated", "finishedAt"))
        if finished is not None and (self.last_restart is None or finished > self.last_restart):
            self.last_restart = finished


def _init_containers(pod: JSON, summary: PodSummary) -> bool:
    """Fold the init containers into ``summary``; True while the pod is initializing."""
    total = len(_get(pod, "spec", "initContainers", default=[]))
    for i, status in enumerate(_get(pod, "status", "initContainerStatuses", default=[])):
        summary.restarts += status.get("restartCount", 0)
        summary.saw_termination(status)
        terminated = _get(status, "state", "terminated")
        waiting = _get(status, "state", "waiting")
        if terminated is not None and terminated.get("exitCode", 0) == 0:
            continue
        if terminated is not None:
            summary.reason = _terminated_reason(terminated, "Init:")
        elif waiting and waiting.get("reason") and waiting["reason"] != "PodInitializing":
            summary.reason = "Init:" + waiting["reason"]
        else:
            summary.reason = f"Init:{i}/{total}"
        return True
    return False


def _app_containers(pod: JSON, summary: PodSummary) -> None:
    """Fold the containers (last first, as kubectl) into ``summary``."""
    summary.restarts, summary.last_restart = 0, None
    has_running = False
    for status in reversed(_get(pod, "status", "containerStatuses", default=[])):
        summary.restarts += status.get("restartCount", 0)
        summary.saw_termination(status)
        waiting = _get(status, "state", "waiting")
        terminated = _get(status, "state", "terminated")
        if waiting is not None and waiting.get("reason"):
            summary.reason = waiting["reason"]
        elif terminated is not None:
            summary.reason = _terminated_reason(terminated)
        elif status.get("ready") and _get(status, "state", "running") is not None:
            has_running = True
            summary.ready += 1
    if summary.reason == "Completed" and has_running:
        conditions = _get(pod, "status", "conditions", default=[])
        summary.reason = "Running" if _condition_true(conditions, "Ready") else "NotReady"


def pod_status(pod: JSON) -> PodSummary:
    """A pod's READY count, STATUS and RESTARTS as kubectl computes them."""
    phase = _get(pod, "status", "phase", default="")
    summary = PodSummary(reason=_get(pod, "status", "reason", default="") or phase)
    conditions = _get(pod, "status", "conditions", default=[])
    for c in conditions:
        if c.get("type") == "PodScheduled" and c.get("reason") == "SchedulingGated":
            summary.reason = "SchedulingGated"
    initializing = _init_containers(pod, summary)
    if not initializing or _condition_true(conditions, "Initialized"):
        _app_containers(pod, summary)
    if _get(pod, "metadata", "deletionTimestamp"):
        if _get(pod, "status", "reason") == "NodeLost":
            summary.reason = "Unknown"
        elif phase not in ("Succeeded", "Failed"):
            summary.reason = "Terminating"
    return summary


_POD_COLUMNS = (
    _NAME,
    Column("Ready", description="The aggregate readiness state of this pod for accepting "
           "traffic."),
    Column("Status", description="The aggregate status of the containers in this pod."),
    Column("Restarts", description="The number of times the containers in this pod have been "
           "restarted and when the last container in this pod has restarted."),
    _AGE,
    Column("IP", priority=1, description="IP address allocated to the pod."),
    Column("Node", priority=1, description="The node the pod is bound to."),
    Column("Nominated Node", priority=1, description="The node the scheduler nominated for "
           "the pod, when it preempts others."),
    Column("Readiness Gates", priority=1, description="The pod's readiness gates that are "
           "true, of all."),
)


def _pod_cells(pod: JSON, now: datetime) -> list[Any]:
    summary = pod_status(pod)
    containers = _get(pod, "spec", "containers", default=[])
    restarts = str(summary.restarts)
    if summary.restarts and summary.last_restart is not None:
        since = human_duration((now - summary.last_restart).total_seconds())
        restarts = f"{summary.restarts} ({since} ago)"
    ips = _get(pod, "status", "podIPs", default=[])
    ip = (ips[0].get("ip") if ips else "") or _get(pod, "status", "podIP", default="")
    gates = _get(pod, "spec", "readinessGates", default=[])
    conditions = _get(pod, "status", "conditions", default=[])
    gates_cell = "<none>" if not gates else (
        f"{sum(_condition_true(conditions, g.get('conditionType', '')) for g in gates)}"
        f"/{len(gates)}")
    return [_get(pod, "metadata", "name", default=""), f"{summary.ready}/{len(containers)}",
            summary.reason, restarts, age(_get(pod, "metadata", "creationTimestamp"), now),
            ip or "<none>", _get(pod, "spec", "nodeName", default="") or "<none>",
            _get(pod, "status", "nominatedNodeName", default="") or "<none>", gates_cell]


def _pod_conditions(pod: JSON) -> list[dict[str, str]]:
    """Row conditions kubectl reads to tell finished pods apart."""
    phase = _get(pod, "status", "phase", default="")
    if phase == "Succeeded":
        return [{"type": "Completed", "status": "True", "reason": "Succeeded",
                 "message": "The pod has completed successfully."}]
    if phase == "Failed":
        return [{"type": "Completed", "status": "True", "reason": "Failed",
                 "message": "The pod failed."}]
    return []


# ---- nodes ----

_NODE_COLUMNS = (
    _NAME,
    Column("Status", description="The status of the node"),
    Column("Roles", description="The roles of the node"),
    _AGE,
    Column("Version", description="Kubelet Version reported by the node."),
    Column("Internal-IP", priority=1, description="The node's InternalIP address."),
    Column("External-IP", priority=1, description="The node's ExternalIP address."),
    Column("OS-Image", priority=1, description="OS Image reported by the node."),
    Column("Kernel-Version", priority=1, description="Kernel Version reported by the node."),
    Column("Container-Runtime", priority=1, description="ContainerRuntime Version reported "
           "by the node."),
)


def node_roles(labels: Mapping[str, str]) -> list[str]:
    """Roles from ``node-role.kubernetes.io/<role>`` and ``kubernetes.io/role`` labels."""
    roles = set()
    for key, value in labels.items():
        if key.startswith(_NODE_ROLE_PREFIX) and key[len(_NODE_ROLE_PREFIX):]:
            roles.add(key[len(_NODE_ROLE_PREFIX):])
        elif key == _NODE_ROLE_LABEL and value:
            roles.add(value)
    return sorted(roles)


def _node_address(node: JSON, type_: str) -> str:
    for address in _get(node, "status", "addresses", default=[]):
        if address.get("type") == type_:
            return address.get("address", "")
    return "<none>"


def _node_cells(node: JSON, now: datetime) -> list[Any]:
    status = [("Ready" if c.get("status") == "True" else "NotReady")
              for c in _get(node, "status", "conditions", default=[])
              if c.get("type") == "Ready"][:1] or ["Unknown"]
    if _get(node, "spec", "unschedulable"):
        status.append("SchedulingDisabled")
    info = _get(node, "status", "nodeInfo", default={})
    roles = ",".join(node_roles(_get(node, "metadata", "labels", default={}))) or "<none>"
    return [_get(node, "metadata", "name", default=""), ",".join(status), roles,
            age(_get(node, "metadata", "creationTimestamp"), now),
            info.get("kubeletVersion", ""),
            _node_address(node, "InternalIP"), _node_address(node, "ExternalIP"),
            info.get("osImage") or "<unknown>", info.get("kernelVersion") or "<unknown>",
            info.get("containerRuntimeVersion") or "<unknown>"]


# ---- services and endpoints ----

_SERVICE_COLUMNS = (
    _NAME,
    Column("Type", description="The type of the service: ClusterIP, NodePort, LoadBalancer "
           "or ExternalName."),
    Column("Cluster-IP", description="The IP address of the service, in the service range."),
    Column("External-IP", description="The addresses the service is reached at from "
           "outside the cluster."),
    Column("Port(s)", description="The list of ports that are exposed by this service."),
    _AGE,
    Column("Selector", priority=1, description="The labels of the pods the service sends "
           "traffic to."),
)


def _service_external_ip(service: JSON) -> str:
    type_ = _get(service, "spec", "type", default="ClusterIP")
    external = _get(service, "spec", "externalIPs", default=[])
    if type_ in ("ClusterIP", "NodePort"):
        return ",".join(external) or "<none>"
    if type_ == "LoadBalancer":
        ingress = [i.get("ip") or i.get("hostname") or ""
                   for i in _get(service, "status", "loadBalancer", "ingress", default=[])]
        return ",".join([*ingress, *external]) or "<pending>"
    if type_ == "ExternalName":
        return _get(service, "spec", "externalName", default="")
    return "<unknown>"


def format_service_ports(ports: Sequence[JSON]) -> str:
    """``80/TCP,443:30443/TCP`` (node port after the port when there is one)."""
    pieces = []
    for p in ports:
        protocol = p.get("protocol") or "TCP"
        node_port = p.get("nodePort", 0)
        pieces.append(f"{p.get('port', 0)}:{node_port}/{protocol}" if node_port
                      else f"{p.get('port', 0)}/{protocol}")
    return ",".join(pieces) or "<none>"


def _service_cells(service: JSON, now: datetime) -> list[Any]:
    cluster_ips = _get(service, "spec", "clusterIPs", default=[])
    cluster_ip = (cluster_ips[0] if cluster_ips
                  else _get(service, "spec", "clusterIP", default="")) or "<none>"
    return [_get(service, "metadata", "name", default=""),
            _get(service, "spec", "type", default="ClusterIP"), cluster_ip,
            _service_external_ip(service),
            format_service_ports(_get(service, "spec", "ports", default=[])),
            age(_get(service, "metadata", "creationTimestamp"), now),
            format_labels(_get(service, "spec", "selector"))]


def format_endpoints(endpoints: JSON, limit: int = 3) -> str:
    """``10.244.0.5:80,10.244.1.3:80 + 2 more...``, ``<none>`` without subsets."""
    subsets = endpoints.get("subsets") or []
    if not subsets:
        return "<none>"
    shown: list[str] = []
    count = 0
    for subset in subsets:
        addresses = [a.get("ip", "") for a in subset.get("addresses") or []]
        ports = subset.get("ports") or [None]
        for port in ports:
            count += len(addresses)
            for ip in addresses:
                if len(shown) == limit:
                    break
                if port is None:
                    shown.append(ip)
                else:
                    host = f"[{ip}]" if ":" in ip else ip
                    shown.append(f"{host}:{port.get('port', 0)}")
    text = ",".join(shown)
    return f"{text} + {count - limit} more..." if count > limit else text


# ---- workloads ----

_DEPLOYMENT_COLUMNS = (
    _NAME,
    Column("Ready", description="Number of the pod with ready state"),
    Column("Up-to-date", type="integer", description="Total number of non-terminated pods "
           "targeted by this deployment that have the desired template spec."),
    Column("Available", type="integer", description="Total number of available pods "
           "(ready for at least minReadySeconds) targeted by this deployment."),
    _AGE, _CONTAINERS, _IMAGES, _SELECTOR,
)
_REPLICA_COLUMNS = (
    _NAME,
    Column("Desired", type="integer", description="The number of replicas wanted."),
    Column("Current", type="integer", description="The most recently observed number of "
           "replicas."),
    Column("Ready", type="integer", description="The number of ready replicas."),
    _AGE, _CONTAINERS, _IMAGES, _SELECTOR,
)


def _deployment_cells(obj: JSON, now: datetime) -> list[Any]:
    status = obj.get("status") or {}
    containers, images = _containers(_get(obj, "spec", "template", "spec"))
    return [_get(obj, "metadata", "name", default=""),
            f"{status.get('readyReplicas', 0)}/{_get(obj, 'spec', 'replicas', default=1)}",
            status.get("updatedReplicas", 0), status.get("availableReplicas", 0),
            age(_get(obj, "metadata", "creationTimestamp"), now), containers, images,
            format_label_selector(_get(obj, "spec", "selector"))]


def _replica_cells(obj: JSON, now: datetime, selector: str) -> list[Any]:
    status = obj.get("status") or {}
    containers, images = _containers(_get(obj, "spec", "template", "spec"))
    return [_get(obj, "metadata", "name", default=""), _get(obj, "spec", "replicas", default=1),
            status.get("replicas", 0), status.get("readyReplicas", 0),
            age(_get(obj, "metadata", "creationTimestamp"), now), containers, images, selector]


def _replicaset_cells(obj: JSON, now: datetime) -> list[Any]:
    return _replica_cells(obj, now, format_label_selector(_get(obj, "spec", "selector")))


def _rc_cells(obj: JSON, now: datetime) -> list[Any]:
    return _replica_cells(obj, now, format_labels(_get(obj, "spec", "selector")))


# ---- the rest ----

_NAMESPACE_COLUMNS = (_NAME, Column("Status", description="The status of the namespace"),
                      _AGE)
_ENDPOINTS_COLUMNS = (_NAME, Column("Endpoints", description="The addresses and ports of "
                                    "the endpoints."), _AGE)
_LEASE_COLUMNS = (_NAME, Column("Holder", description="The holder of the lease."), _AGE)
_EVENT_COLUMNS = (
    Column("Last Seen", description="The time at which the most recent occurrence of this "
           "event was recorded."),
    Column("Type", description="Type of this event (Normal, Warning)."),
    Column("Reason", description="A short, machine understandable string that gives the "
           "reason for the transition into the object's current status."),
    Column("Object", description="The object that this event is about."),
    Column("Subobject", priority=1, description="The part of the object the event is about "
           "(a container: spec.containers{name})."),
    Column("Source", priority=1, description="The component reporting this event."),
    Column("Message", description="A human-readable description of the status of this "
           "operation."),
    Column("First Seen", priority=1, description="The time at which the event was first "
           "recorded."),
    Column("Count", type="integer", priority=1, description="The number of times this "
           "event has occurred."),
    Column("Name", priority=1, format="name", description="Name must be unique within a "
           "namespace."),
)
_DATA = Column("Data", type="integer", description="The number of keys (data and binaryData).")
_CONFIG_MAP_COLUMNS = (_NAME, _DATA, _AGE)
_SECRET_COLUMNS = (_NAME, Column("Type", description="The type of the secret."), _DATA, _AGE)
_SERVICE_ACCOUNT_COLUMNS = (_NAME, Column("Secrets", type="integer", description="The "
                                          "number of secrets listed."), _AGE)
_DEFAULT_COLUMNS = (_NAME, _AGE)


def _event_cells(event: JSON, now: datetime) -> list[Any]:
    first = (age(event["firstTimestamp"], now) if event.get("firstTimestamp")
             else age(event.get("eventTime"), now))
    last = age(event["lastTimestamp"], now) if event.get("lastTimestamp") else first
    involved = event.get("involvedObject") or {}
    target = involved.get("kind", "").lower()
    if involved.get("name"):
        target = f"{target}/{involved['name']}"
    component = _get(event, "source", "component", default="") or event.get(
        "reportingComponent", "")
    instance = _get(event, "source", "host", default="") or event.get("reportingInstance", "")
    source = f"{component}, {instance}" if component and instance else component
    return [last, event.get("type", ""), event.get("reason", ""), target,
            involved.get("fieldPath", ""), source, (event.get("message") or "").strip(),
            first, event.get("count") or 1, _get(event, "metadata", "name", default="")]


def _namespace_cells(ns: JSON, now: datetime) -> list[Any]:
    return [_get(ns, "metadata", "name", default=""), _get(ns, "status", "phase", default=""),
            age(_get(ns, "metadata", "creationTimestamp"), now)]


def _endpoints_cells(ep: JSON, now: datetime) -> list[Any]:
    return [_get(ep, "metadata", "name", default=""), format_endpoints(ep),
            age(_get(ep, "metadata", "creationTimestamp"), now)]


def _lease_cells(lease: JSON, now: datetime) -> list[Any]:
    return [_get(lease, "metadata", "name", default=""),
            _get(lease, "spec", "holderIdentity", default=""),
            age(_get(lease, "metadata", "creationTimestamp"), now)]


def _config_map_cells(cm: JSON, now: datetime) -> list[Any]:
    return [_get(cm, "metadata", "name", default=""),
            len(cm.get("data") or {}) + len(cm.get("binaryData") or {}),
            age(_get(cm, "metadata", "creationTimestamp"), now)]


def _secret_cells(secret: JSON, now: datetime) -> list[Any]:
    return [_get(secret, "metadata", "name", default=""), secret.get("type", ""),
            len(secret.get("data") or {}),
            age(_get(secret, "metadata", "creationTimestamp"), now)]


def _service_account_cells(sa: JSON, now: datetime) -> list[Any]:
    return [_get(sa, "metadata", "name", default=""), len(sa.get("secrets") or []),
            age(_get(sa, "metadata", "creationTimestamp"), now)]


def _default_cells(obj: JSON, now: datetime) -> list[Any]:
    return [_get(obj, "metadata", "name", default=""),
            age(_get(obj, "metadata", "creationTimestamp"), now)]


@dataclass(frozen=True)
class Printer:
    """One kind's columns and the function that fills a row's cells."""

    columns: tuple[Column, ...]
    cells: Callable[[JSON, datetime], list[Any]]


PRINTERS: Mapping[str, Printer] = {
    "Pod": Printer(_POD_COLUMNS, _pod_cells),
    "Node": Printer(_NODE_COLUMNS, _node_cells),
    "Service": Printer(_SERVICE_COLUMNS, _service_cells),
    "Endpoints": Printer(_ENDPOINTS_COLUMNS, _endpoints_cells),
    "Namespace": Printer(_NAMESPACE_COLUMNS, _namespace_cells),
    "Deployment": Printer(_DEPLOYMENT_COLUMNS, _deployment_cells),
    "ReplicaSet": Printer(_REPLICA_COLUMNS, _replicaset_cells),
    "ReplicationController": Printer(_REPLICA_COLUMNS, _rc_cells),
    "Event": Printer(_EVENT_COLUMNS, _event_cells),
    "Lease": Printer(_LEASE_COLUMNS, _lease_cells),
    "ConfigMap": Printer(_CONFIG_MAP_COLUMNS, _config_map_cells),
    "Secret": Printer(_SECRET_COLUMNS, _secret_cells),
    "ServiceAccount": Printer(_SERVICE_ACCOUNT_COLUMNS, _service_account_cells),
}
DEFAULT_PRINTER = Printer(_DEFAULT_COLUMNS, _default_cells)


def printer_for(kind: Kind | str) -> Printer:
    """The printer of a kind (by Kind or kind name); NAME and AGE for any other."""
    name = kind if isinstance(kind, str) else kind.kind
    return PRINTERS.get(name, DEFAULT_PRINTER)


def column_definitions(kind: Kind | str) -> list[dict[str, Any]]:
    """A kind's ``columnDefinitions``."""
    return [c.definition() for c in printer_for(kind).columns]


def partial_object_metadata(obj: JSON) -> dict[str, Any]:
    """What a row carries by default: the object's metadata only."""
    return {"kind": "PartialObjectMetadata", "apiVersion": TABLE_API_VERSION,
            "metadata": dict(obj.get("metadata") or {})}


def table_row(kind: Kind | str, obj: JSON, *, now: datetime,
              include_object: str = INCLUDE_METADATA) -> dict[str, Any]:
    """One row: its cells, the object as ``include_object`` asks, and conditions."""
    name = kind if isinstance(kind, str) else kind.kind
    row: dict[str, Any] = {"cells": printer_for(kind).cells(obj, now)}
    if name == "Pod" and (conditions := _pod_conditions(obj)):
        row["conditions"] = conditions
    if include_object == INCLUDE_OBJECT:
        row["object"] = dict(obj)
    elif include_object == INCLUDE_METADATA:
        row["object"] = partial_object_metadata(obj)
    elif include_object != INCLUDE_NONE:
        raise ValueError(f'includeObject: Unsupported value: "{include_object}": supported '
                         f'values: "None", "Metadata", "Object"')
    return row


def to_table(kind: Kind | str, objects: Iterable[JSON], *, now: datetime,
             include_object: str = INCLUDE_METADATA, no_headers: bool = False,
             resource_version: str = "", continue_token: str = "",
             remaining_item_count: int | None = None) -> dict[str, Any]:
    """A ``meta.k8s.io/v1`` Table of ``objects`` (a list, or one object in a list).

    ``no_headers`` leaves the column definitions out (watch events after the first);
    the list metadata is the list's (resourceVersion, continue, remainingItemCount).
    """
    metadata: dict[str, Any] = {}
    if resource_version:
        metadata["resourceVersion"] = resource_version
    if continue_token:
        metadata["continue"] = continue_token
    if remaining_item_count is not None:
        metadata["remainingItemCount"] = remaining_item_count
    return {
        "kind": "Table",
        "apiVersion": TABLE_API_VERSION,
        "metadata": metadata,
        "columnDefinitions": [] if no_headers else column_definitions(kind),
        "rows": [table_row(kind, obj, now=now, include_object=include_object)
                 for obj in objects],
    }
