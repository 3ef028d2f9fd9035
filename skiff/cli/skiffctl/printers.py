"""How objects look on a terminal: ages, pod status, kubectl's tables and ``-o`` forms.

Pure functions of objects and a clock reading (``now``, seconds since the epoch), so
the unit tests need no server. What kubectl computes the same way is computed here the
same way: :func:`human_duration` is apimachinery's ``HumanDuration``; :func:`pod_status`
and :func:`pod_restarts` are kubectl's ``printPod``; node STATUS is ``printNode``.

Layout: a table is kubectl's tabwriter (columns padded to their widest cell plus three
spaces, at least six wide, the last column unpadded); a :class:`TablePrinter`
remembers its widths so rows printed later by ``get -w`` line up with the first ones.
:func:`tabwrite` is Go's ``text/tabwriter`` algorithm, which ``describe`` uses.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from skiff.api import manifest
from skiff.api.duration import human_duration
from skiff.api.kinds import Kind, for_message
from skiff.api.labels import selector_from_label_selector
from skiff.api.v1 import meta_pb2

NONE = "<none>"
BOLD, RESET = "\x1b[1m", "\x1b[0m"
OUTPUT_FORMATS = ("", "wide", "yaml", "json", "name")

# ---- time ----




def is_set(stamp: Timestamp) -> bool:
    return stamp.seconds != 0 or stamp.nanos != 0


def age(stamp: Timestamp, now: float) -> str:
    """How long ago ``stamp`` was; ``<unknown>`` when it is not set."""
    if not is_set(stamp):
        return "<unknown>"
    return human_duration(now - stamp.seconds - stamp.nanos / 1e9)


def format_time(stamp: Timestamp) -> str:
    """A timestamp as ``describe`` writes it (RFC 1123 with a numeric zone)."""
    if not is_set(stamp):
        return "<unset>"
    return time.strftime("%a, %d %b %Y %H:%M:%S %z", time.localtime(stamp.seconds))


def parse_time(text: str) -> float:
    """An RFC 3339 time (``2024-01-02T03:04:05Z``) as seconds since the epoch."""
    stamp = Timestamp()
    stamp.FromJsonString(text)
    return stamp.seconds + stamp.nanos / 1e9


def utc_now_rfc3339(now: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))


# ---- names and small formats ----


def qualified(kind: Kind) -> str:
    """The kind as kubectl names it in output: ``pod``, ``deployment.apps``."""
    return f"{kind.singular}.{kind.group}" if kind.group else kind.singular


def object_ref(kind: Kind, name: str) -> str:
    """``pod/web``, ``deployment.apps/web``."""
    return f"{qualified(kind)}/{name}"


def format_labels(labels: Mapping[str, str]) -> str:
    """``a=b,c=d`` sorted by key, or ``<none>``."""
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or NONE


def format_selector(selector: meta_pb2.LabelSelector) -> str:
    """A LabelSelector as kubectl writes it, ``app=web``; ``<none>`` when empty."""
    try:
        return str(selector_from_label_selector(selector)) or NONE
    except ValueError:
        return NONE


def or_none(text: str) -> str:
    return text or NONE


# ---- pods ----


def pod_ready(pod: Message) -> str:
    """READY: ready containers / containers in the spec."""
    ready = sum(1 for s in pod.status.container_statuses
                if s.ready and s.state.HasField("running"))
    return f"{ready}/{len(pod.spec.containers)}"


def pod_restarts(pod: Message, now: float) -> str:
    """RESTARTS: the sum over containers, with how long ago the last one ended."""
    restarts, last = 0, 0.0
    for status in pod.status.container_statuses:
        restarts += status.restart_count
        if status.last_state.HasField("terminated"):
            finished = status.last_state.terminated.finished_at
            last = max(last, finished.seconds + finished.nanos / 1e9)
    if restarts and last:
        return f"{restarts} ({human_duration(now - last)} ago)"
    return str(restarts)


def _terminated_reason(terminated: Message, prefix: str = "") -> str:
    if terminated.reason:
        return prefix + terminated.reason
    if terminated.signal:
        return f"{prefix}Signal:{terminated.signal}"
    return f"{prefix}ExitCode:{terminated.exit_code}"


def _init_status(pod: Message) -> str | None:
    """The STATUS while init containers run (``Init:0/2``, ``Init:Error``); None after."""
    total = len(pod.spec.init_containers)
    for i, status in enumerate(pod.status.init_container_statuses):
        state = status.state
        if state.HasField("terminated") and state.terminated.exit_code == 0:
            continue
        if state.HasField("terminated"):
            return _terminated_reason(state.terminated, "Init:")
        if state.HasField("waiting") and state.waiting.reason and (
                state.waiting.reason != "PodInitializing"):
            return f"Init:{state.waiting.reason}"
        return f"Init:{i}/{total}"
    return None


def _condition_true(pod: Message, kind: str) -> bool:
    return any(c.type == kind and c.status == "True" for c in pod.status.conditions)


def pod_status(pod: Message) -> str:
    """STATUS as kubectl computes it: Terminating once deletion began; else a waiting or
    terminated container's reason (CrashLoopBackOff, ContainerCreating, Completed);
    else the status reason or the phase."""
    reason = pod.status.reason or pod.status.phase or "Unknown"
    initializing = _init_status(pod)
    if initializing is not None:
        reason = initializing
    if initializing is None or _condition_true(pod, "Initialized"):
        has_running = False
        for status in reversed(pod.status.container_statuses):
            state = status.state
            if state.HasField("waiting") and state.waiting.reason:
                reason = state.waiting.reason
            elif state.HasField("terminated"):
                reason = _terminated_reason(state.terminated)
            elif status.ready and state.HasField("running"):
                has_running = True
        if reason == "Completed" and has_running:
            reason = "Running" if _condition_true(pod, "Ready") else "NotReady"
    if pod.metadata.HasField("deletion_timestamp"):
        if pod.status.reason == "NodeLost":
            return "Unknown"
        if pod.status.phase not in ("Succeeded", "Failed"):
            return "Terminating"
    return reason


def _pod_row(pod: Message, now: float, wide: bool) -> list[str]:
    row = [pod_ready(pod), pod_status(pod), pod_restarts(pod, now),
           age(pod.metadata.creation_timestamp, now)]
    if wide:
        row += [or_none(pod.status.pod_ip), or_none(pod.spec.node_name),
                or_none(pod.status.nominated_node_name)]
    return row


# ---- nodes ----


def node_status(node: Message) -> str:
    """Ready / NotReady / Unknown (no Ready condition), plus ``,SchedulingDisabled``."""
    ready = [c for c in node.status.conditions if c.type == "Ready"]
    status = ["Unknown"] if not ready else [
        "Ready" if ready[0].status == "True" else "NotReady"]
    if node.spec.unschedulable:
        status.append("SchedulingDisabled")
    return ",".join(status)


def node_roles(node: Message) -> str:
    """Roles from ``node-role.kubernetes.io/<role>`` and ``kubernetes.io/role`` labels."""
    roles = set()
    for key, value in node.metadata.labels.items():
        if key.startswith("node-role.kubernetes.io/"):
            role = key.removeprefix("node-role.kubernetes.io/")
            if role:
                roles.add(role)
        elif key == "kubernetes.io/role" and value:
            roles.add(value)
    return ",".join(sorted(roles)) or NONE


def node_address(node: Message, kind: str) -> str:
    return next((a.address for a in node.status.addresses if a.type == kind), "")


def _node_row(node: Message, now: float, wide: bool) -> list[str]:
    info = node.status.node_info
    row = [node_status(node), node_roles(node), age(node.metadata.creation_timestamp, now),
           info.kubelet_version]
    if wide:
        row += [or_none(node_address(node, "InternalIP")),
                or_none(node_address(node, "ExternalIP")), or_none(info.os_image),
                or_none(info.kernel_version), or_none(info.container_runtime_version)]
    return row


# ---- services and endpoints ----


def service_ports(service: Message) -> str:
    """PORT(S): ``80/TCP``, ``80:30080/TCP``, comma-separated; ``<none>`` without ports."""
    parts = []
    for port in service.spec.ports:
        protocol = port.protocol or "TCP"
        if port.node_port:
            parts.append(f"{port.port}:{port.node_port}/{protocol}")
        else:
            parts.append(f"{port.port}/{protocol}")
    return ",".join(parts) or NONE


def service_external_ip(service: Message) -> str:
    ingress = service.status.load_balancer.ingress
    addresses = [i.ip or i.hostname for i in ingress]
    if service.spec.type == "LoadBalancer":
        return ",".join(addresses) or "<pending>"
    if service.spec.type == "ExternalName":
        return service.spec.external_name or NONE
    return NONE


def _service_row(service: Message, now: float, wide: bool) -> list[str]:
    spec = service.spec
    row = [spec.type or "ClusterIP", or_none(spec.cluster_ip), service_external_ip(service),
           service_ports(service), age(service.metadata.creation_timestamp, now)]
    if wide:
        row.append(format_labels(spec.selector))
    return row


def format_endpoints(endpoints: Message, limit: int = 3) -> str:
    """ENDPOINTS: ``ip:port`` pairs, the first three and ``+ N more...``."""
    pairs = []
    for subset in endpoints.subsets:
        for address in subset.addresses:
            if not subset.ports:
                pairs.append(address.ip)
            for port in subset.ports:
                pairs.append(f"{address.ip}:{port.port}")
    if not pairs:
        return NONE
    text = ",".join(pairs[:limit])
    if len(pairs) > limit:
        text += f" + {len(pairs) - limit} more..."
    return text


# ---- workloads ----


def _containers_and_images(template: Message) -> list[str]:
    containers = template.spec.containers
    return [",".join(c.name for c in containers), ",".join(c.image for c in containers)]


def _deployment_row(deploy: Message, now: float, wide: bool) -> list[str]:
    status = deploy.status
    row = [f"{status.ready_replicas}/{deploy.spec.replicas}", str(status.updated_replicas),
           str(status.available_replicas), age(deploy.metadata.creation_timestamp, now)]
    if wide:
        row += [*_containers_and_images(deploy.spec.template),
                format_selector(deploy.spec.selector)]
    return row


def _replica_set_row(rs: Message, now: float, wide: bool) -> list[str]:
    row = [str(rs.spec.replicas), str(rs.status.replicas), str(rs.status.ready_replicas),
           age(rs.metadata.creation_timestamp, now)]
    if wide:
        selector = rs.spec.selector
        text = (format_labels(selector) if rs.DESCRIPTOR.name == "ReplicationController"
                else format_selector(selector))
        row += [*_containers_and_images(rs.spec.template), text]
    return row


# ---- the rest ----


def _namespace_row(ns: Message, now: float, wide: bool) -> list[str]:
    return [ns.status.phase or "Active", age(ns.metadata.creation_timestamp, now)]


def first_seen(event: Message) -> Timestamp:
    """When an event first happened: firstTimestamp, eventTime or its creation."""
    for stamp in (event.first_timestamp, event.event_time):
        if is_set(stamp):
            return stamp
    return event.metadata.creation_timestamp


def event_times(event: Message, now: float) -> tuple[str, str]:
    """(LAST SEEN, FIRST SEEN) of an event, with ``(xN over M)`` for repeats."""
    first = age(first_seen(event), now)
    last = age(event.last_timestamp, now) if is_set(event.last_timestamp) else first
    if event.count > 1:
        last = f"{last} (x{event.count} over {first})"
    return last, first


def event_time(event: Message) -> float:
    """When an event last happened, for sorting."""
    for stamp in (event.last_timestamp, event.event_time, event.first_timestamp,
                  event.metadata.creation_timestamp):
        if is_set(stamp):
            return stamp.seconds + stamp.nanos / 1e9
    return 0.0


def event_source(event: Message) -> str:
    source = event.source.component or event.reporting_component
    if event.source.host:
        source = f"{source}, {event.source.host}"
    return source


def _event_row(event: Message, now: float, wide: bool) -> list[str]:
    ref = event.involved_object
    target = f"{ref.kind.lower()}/{ref.name}" if ref.name else ref.kind.lower()
    last_seen, first_seen = event_times(event, now)
    if wide:
        return [last_seen, event.type, event.reason, target, ref.field_path,
                event_source(event), event.message.strip(), first_seen,
                str(event.count), event.metadata.name]
    return [last_seen, event.type, event.reason, target, event.message.strip()]


def _lease_row(lease: Message, now: float, wide: bool) -> list[str]:
    return [lease.spec.holder_identity, age(lease.metadata.creation_timestamp, now)]


def _config_map_row(cm: Message, now: float, wide: bool) -> list[str]:
    return [str(len(cm.data) + len(cm.binary_data)), age(cm.metadata.creation_timestamp, now)]


def _secret_row(secret: Message, now: float, wide: bool) -> list[str]:
    return [secret.type, str(len(secret.data)), age(secret.metadata.creation_timestamp, now)]


def _service_account_row(sa: Message, now: float, wide: bool) -> list[str]:
    return [str(len(sa.secrets)), age(sa.metadata.creation_timestamp, now)]


def _generic_row(obj: Message, now: float, wide: bool) -> list[str]:
    return [age(obj.metadata.creation_timestamp, now)]


@dataclass(frozen=True)
class TableSpec:
    """A kind's columns after NAME (and the extra ones ``-o wide`` adds)."""

    columns: tuple[str, ...]
    wide_columns: tuple[str, ...]
    row: Callable[[Message, float, bool], list[str]]
    #: Events have no NAME column (their names are noise); NAME is in -o wide.
    named: bool = True


_WORKLOAD_WIDE = ("CONTAINERS", "IMAGES", "SELECTOR")
TABLES: dict[str, TableSpec] = {
    "Pod": TableSpec(("READY", "STATUS", "RESTARTS", "AGE"),
                     ("IP", "NODE", "NOMINATED NODE"), _pod_row),
    "Node": TableSpec(("STATUS", "ROLES", "AGE", "VERSION"),
                      ("INTERNAL-IP", "EXTERNAL-IP", "OS-IMAGE", "KERNEL-VERSION",
                       "CONTAINER-RUNTIME"), _node_row),
    "Service": TableSpec(("TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"),
                         ("SELECTOR",), _service_row),
    "Endpoints": TableSpec(("ENDPOINTS", "AGE"), (),
                           lambda ep, now, wide: [format_endpoints(ep),
                                                  age(ep.metadata.creation_timestamp, now)]),
    "Deployment": TableSpec(("READY", "UP-TO-DATE", "AVAILABLE", "AGE"), _WORKLOAD_WIDE,
                            _deployment_row),
    "ReplicaSet": TableSpec(("DESIRED", "CURRENT", "READY", "AGE"), _WORKLOAD_WIDE,
                            _replica_set_row),
    "ReplicationController": TableSpec(("DESIRED", "CURRENT", "READY", "AGE"),
                                       _WORKLOAD_WIDE, _replica_set_row),
    "Namespace": TableSpec(("STATUS", "AGE"), (), _namespace_row),
    "Event": TableSpec(("LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"),
                       ("LAST SEEN", "TYPE", "REASON", "OBJECT", "SUBOBJECT", "SOURCE",
                        "MESSAGE", "FIRST SEEN", "COUNT", "NAME"), _event_row, named=False),
    "Lease": TableSpec(("HOLDER", "AGE"), (), _lease_row),
    "ConfigMap": TableSpec(("DATA", "AGE"), (), _config_map_row),
    "Secret": TableSpec(("TYPE", "DATA", "AGE"), (), _secret_row),
    "ServiceAccount": TableSpec(("SECRETS", "AGE"), (), _service_account_row),
}
_GENERIC = TableSpec(("AGE",), (), _generic_row)


@dataclass(frozen=True)
class TableOptions:
    """What changes a table's shape: ``-o wide``, ``-A``, ``--show-labels``, ``-L``."""

    wide: bool = False
    namespace_column: bool = False
    show_labels: bool = False
    label_columns: tuple[str, ...] = ()
    #: NAME as ``pod/web``: several kinds in one command.
    with_kind: bool = False


def table_header(kind: Kind, options: TableOptions) -> list[str]:
    spec = TABLES.get(kind.kind, _GENERIC)
    header = ["NAMESPACE"] if options.namespace_column and kind.namespaced else []
    if options.wide and not spec.named:
        return header + list(spec.wide_columns) + _label_headers(options)
    if spec.named:
        header.append("NAME")
    header += spec.columns
    if options.wide:
        header += spec.wide_columns
    return header + _label_headers(options)


def _label_headers(options: TableOptions) -> list[str]:
    headers = [key.rpartition("/")[2].upper() for key in options.label_columns]
    return headers + (["LABELS"] if options.show_labels else [])


def table_row(kind: Kind, obj: Message, options: TableOptions, now: float) -> list[str]:
    spec = TABLES.get(kind.kind, _GENERIC)
    md = obj.metadata
    row = [md.namespace] if options.namespace_column and kind.namespaced else []
    if spec.named:
        row.append(object_ref(kind, md.name) if options.with_kind else md.name)
    row += spec.row(obj, now, options.wide)
    row += [md.labels.get(key, "") for key in options.label_columns]
    if options.show_labels:
        row.append(format_labels(md.labels))
    return row


def column_widths(rows: Iterable[Sequence[str]], *, previous: Sequence[int] = (),
                  min_width: int = 6, padding: int = 3) -> list[int]:
    """Each column's width: its widest cell plus ``padding``, at least ``min_width``
    (and never narrower than ``previous``, as a tabwriter that remembers widths)."""
    widths = list(previous)
    for row in rows:
        for i, cell in enumerate(row):
            width = max(min_width, len(cell) + padding)
            if i == len(widths):
                widths.append(width)
            elif width > widths[i]:
                widths[i] = width
    return widths


def render_row(row: Sequence[str], widths: Sequence[int], *, bold: bool = False) -> str:
    """One table line: every cell but the last padded to its column's width."""
    cells = [cell.ljust(widths[i]) if i < len(row) - 1 else cell
             for i, cell in enumerate(row)]
    line = "".join(cells)
    return f"{BOLD}{line}{RESET}" if bold else line


def render_table(header: Sequence[str] | None, rows: Sequence[Sequence[str]], *,
                 bold: bool = False) -> str:
    """A whole table as text (lines end with a newline)."""
    everything = ([header] if header else []) + list(rows)
    widths = column_widths(everything)
    lines = [render_row(header, widths, bold=bold)] if header else []
    lines += [render_row(row, widths) for row in rows]
    return "".join(f"{line}\n" for line in lines)


class TablePrinter:
    """Prints rows as they come, keeping the columns of what it printed before."""

    def __init__(self, out: TextIO, *, bold: bool = False, headers: bool = True) -> None:
        self.out = out
        self.bold = bold
        self.headers = headers
        self.widths: list[int] = []
        self.header_printed = False

    def print(self, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        show_header = self.headers and not self.header_printed
        self.widths = column_widths(([header] if show_header else []) + list(rows),
                                    previous=self.widths)
        if show_header:
            # Widths come from the header too, so later rows line up under it.
            self.widths = column_widths([header], previous=self.widths)
            self.out.write(render_row(header, self.widths, bold=self.bold) + "\n")
            self.header_printed = True
        for row in rows:
            self.out.write(render_row(row, self.widths) + "\n")
        self.out.flush()


# ---- -o yaml | json | name ----


def object_kind(obj: Message) -> Kind:
    return for_message(obj)


def as_list(objects: Iterable[Message]) -> dict[str, Any]:
    """Several objects as kubectl's ``v1`` ``List``."""
    return {"apiVersion": "v1", "kind": "List",
            "items": [manifest.to_dict(o) for o in objects],
            "metadata": {"resourceVersion": ""}}


def format_objects(objects: Sequence[Message], output: str, *, single: bool) -> str:
    """``objects`` as ``-o yaml``, ``-o json`` or ``-o name`` print them.

    ``single``: one object was asked for by name, so it is printed bare; otherwise
    yaml and json print a List (even of one, or of none, as kubectl).
    """
    if output == "name":
        return "".join(f"{object_ref(object_kind(o), o.metadata.name)}\n" for o in objects)
    doc: Any = manifest.to_dict(objects[0]) if single and len(objects) == 1 else (
        as_list(objects))
    if output == "json":
        return json.dumps(doc, indent=4, ensure_ascii=False) + "\n"
    if output == "yaml":
        return manifest.dump_yaml(doc)
    raise ValueError(f"unknown output format {output!r}")


def format_watched(obj: Message, output: str) -> str:
    """One object seen by ``get -w`` in a non-table form."""
    if output == "yaml":
        return "---\n" + manifest.dump_yaml(obj)
    return format_objects([obj], output, single=True)


# ---- Go's text/tabwriter, for describe ----


def tabwrite(text: str, *, padding: int = 2, min_width: int = 0) -> str:
    """``text`` with tab-separated cells aligned as Go's tabwriter aligns them.

    A cell is text ended by a tab; the text after a line's last tab is not aligned. A
    column block is a run of consecutive lines that have a cell in that column; each
    block is as wide as its widest cell plus ``padding``.
    """
    lines = [line.split("\t") for line in text.split("\n")]
    out: list[str] = []
    widths: list[int] = []

    def write_lines(first: int, last: int) -> None:
        for cells in lines[first:last]:
            out.append("".join(cell.ljust(widths[j]) if j < len(widths) else cell
                               for j, cell in enumerate(cells)))

    def format_block(first: int, last: int) -> None:
        column = len(widths)
        this = first
        while this < last:
            if column >= len(lines[this]) - 1:
                this += 1
                continue
            write_lines(first, this)
            first = this
            width = min_width
            while this < last and column < len(lines[this]) - 1:
                width = max(width, len(lines[this][column]) + padding)
                this += 1
            widths.append(width)
            format_block(first, this)
            widths.pop()
            first = this
        write_lines(first, last)

    format_block(0, len(lines))
    return "\n".join(line.rstrip() for line in out)

