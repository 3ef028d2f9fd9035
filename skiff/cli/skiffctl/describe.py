"""``describe``: one object in readable sections, as kubectl writes it, ending with the
object's Events.

Fetching and writing are apart: :func:`gather` reads what a description needs besides
the object (its events; a node's pods and lease; a service's endpoints; a deployment's
ReplicaSets; a ReplicaSet's pods) into :class:`Related`, and the ``describe_*``
functions are pure, writing lines of tab-separated cells that
:func:`printers.tabwrite` aligns as kubectl's tabwriter does. Pods, nodes, services,
deployments, ReplicaSets, ReplicationControllers, endpoints and namespaces have their
own layout; other kinds get the generic one (every field, labelled in words).

Events are those whose involvedObject has the object's kind and name (field selector)
in its namespace, and its uid when the event records one.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import Message

from skiff.api import errors, manifest
from skiff.api.kinds import Kind, lookup
from skiff.api.labels import selector_from_label_selector, selector_from_map
from skiff.api.namespaces import NODE_LEASE_NAMESPACE
from skiff.cli.skiffctl import printers
from skiff.cli.skiffctl.common import Context, parse_targets
from skiff.cli.skiffctl.printers import NONE, age, format_labels, format_time, or_none

#: Annotations describe leaves out (kubectl's skip list).
SKIPPED_ANNOTATIONS = frozenset({"kubectl.kubernetes.io/last-applied-configuration"})
POD_TEMPLATE_HASH = "pod-template-hash"


def add_parsers(subparsers: Any, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser("describe", parents=[common],
                                   help="show details of objects, with their events")
    parser.add_argument("resources", nargs="+", metavar="RESOURCE",
                        help="KIND [NAME...] or KIND/NAME...")
    parser.add_argument("-l", "--selector", default="", help="describe the matching objects")
    parser.set_defaults(func=run, words_dest="resources")


@dataclass
class Related:
    """What a description shows besides the object itself."""

    events: list[Message] = field(default_factory=list)
    pods: list[Message] = field(default_factory=list)
    replica_sets: list[Message] = field(default_factory=list)
    endpoints: Message | None = None
    lease: Message | None = None


class Lines:
    """Lines of tab-separated cells; ``flush`` starts a section aligned on its own."""

    def __init__(self) -> None:
        self.sections: list[list[str]] = [[]]

    def add(self, level: int, text: str) -> None:
        self.sections[-1].append("  " * level + text)

    def flush(self) -> None:
        self.sections.append([])

    def render(self) -> str:
        return "\n".join(printers.tabwrite("\n".join(s)) for s in self.sections if s) + "\n"


# ---- the command ----


async def run(ctx: Context, args: argparse.Namespace) -> int:
    kinds, targets = parse_targets(args.resources)
    objects: list[tuple[Kind, Message]] = []
    if targets:
        for target in targets:
            try:
                obj = await find(ctx, target.kind, target.name)
            except errors.NotFound as e:
                ctx.report(e)
                continue
            objects.append((target.kind, obj))
    else:
        for kind in kinds:
            listing = await ctx.resource(kind).list(ctx.namespace_of(kind),
                                                    label_selector=args.selector)
            objects += [(kind, obj) for obj in listing.items]
        if not objects:
            ctx.warn(f"No resources found in {ctx.namespace} namespace.")
    texts = [describe(kind, obj, await gather(ctx, kind, obj), ctx.clock())
             for kind, obj in objects]
    ctx.out.write("\n\n".join(texts))
    ctx.out.flush()
    return ctx.status


async def find(ctx: Context, kind: Kind, name: str) -> Message:
    """The object called ``name``, else the only one whose name starts with it (as
    kubectl's describe does)."""
    namespace = ctx.namespace_of(kind)
    try:
        return await ctx.resource(kind).get(name, namespace)
    except errors.NotFound:
        listing = await ctx.resource(kind).list(namespace)
        matches = [o for o in listing.items if o.metadata.name.startswith(name)]
        if len(matches) == 1:
            return matches[0]
        raise


async def gather(ctx: Context, kind: Kind, obj: Message) -> Related:
    """Read what describing ``obj`` needs besides it."""
    related = Related(events=await events_for(ctx, kind, obj))
    md = obj.metadata
    if kind.kind == "Node":
        pods = await ctx.client.pods.list("", field_selector=f"spec.nodeName={md.name}")
        related.pods = [p for p in pods.items if p.status.phase not in ("Succeeded", "Failed")]
        related.lease = await _get_or_none(ctx, "Lease", md.name, NODE_LEASE_NAMESPACE)
    elif kind.kind == "Service":
        related.endpoints = await _get_or_none(ctx, "Endpoints", md.name, md.namespace)
    elif kind.kind == "Deployment":
        listing = await ctx.client.replica_sets.list(md.namespace)
        related.replica_sets = owned_by(listing.items, md.uid)
    elif kind.kind in ("ReplicaSet", "ReplicationController"):
        related.pods = await _selected_pods(ctx, obj)
    return related


async def events_for(ctx: Context, kind: Kind, obj: Message) -> list[Message]:
    """The object's events, oldest first."""
    md = obj.metadata
    selector = f"involvedObject.name={md.name},involvedObject.kind={kind.kind}"
    if kind.namespaced:
        selector += f",involvedObject.namespace={md.namespace}"
    listing = await ctx.client.events.list(md.namespace, field_selector=selector)
    found = [e for e in listing.items if e.involved_object.uid in ("", md.uid)]
    return sorted(found, key=printers.event_time)


async def _get_or_none(ctx: Context, kind: str, name: str, namespace: str) -> Message | None:
    try:
        return await ctx.resource(lookup(kind)).get(name, namespace)
    except errors.NotFound:
        return None


async def _selected_pods(ctx: Context, obj: Message) -> list[Message]:
    selector = obj.spec.selector
    text = (str(selector_from_map(selector)) if obj.DESCRIPTOR.name == "ReplicationController"
            else str(selector_from_label_selector(selector)))
    if not text:
        return []
    listing = await ctx.client.pods.list(obj.metadata.namespace, label_selector=text)
    return list(listing.items)


def owned_by(objects: Iterable[Message], uid: str) -> list[Message]:
    """Those of ``objects`` whose controller (an ownerReference) has ``uid``."""
    return [o for o in objects
            if any(ref.uid == uid and ref.controller for ref in o.metadata.owner_references)]


def describe(kind: Kind, obj: Message, related: Related, now: float) -> str:
    """The whole description of one object."""
    describer = DESCRIBERS.get(kind.kind, describe_generic)
    lines = Lines()
    describer(lines, obj, related, now)
    if related.events:
        lines.flush()  # the events table is aligned on its own (kubectl flushes there)
    write_events(lines, related.events, now)
    return lines.render()


# ---- shared pieces ----


def write_map(lines: Lines, level: int, title: str, mapping: Mapping[str, str],
              fmt: Callable[[str, str], str] = "{}={}".format) -> None:
    """``Title:  k=v`` with further pairs on lines of their own; ``<none>`` if empty."""
    items = sorted(mapping.items())
    if not items:
        lines.add(level, f"{title}:\t{NONE}")
        return
    for i, (key, value) in enumerate(items):
        lines.add(level, f"{title if i == 0 else ''}{':' if i == 0 else ''}\t{fmt(key, value)}")


def write_metadata(lines: Lines, obj: Message, *, namespaced: bool = True) -> None:
    md = obj.metadata
    lines.add(0, f"Name:\t{md.name}")
    if namespaced:
        lines.add(0, f"Namespace:\t{md.namespace}")
    write_labels_and_annotations(lines, 0, md)


def write_labels_and_annotations(lines: Lines, level: int, md: Message) -> None:
    write_map(lines, level, "Labels", md.labels)
    annotations = {k: v for k, v in md.annotations.items() if k not in SKIPPED_ANNOTATIONS}
    write_map(lines, level, "Annotations", annotations, "{}: {}".format)


def controller_of(md: Message) -> str:
    return next((f"{ref.kind}/{ref.name}" for ref in md.owner_references if ref.controller), "")


def write_events(lines: Lines, events: list[Message], now: float) -> None:
    """kubectl's Events table: Type, Reason, Age (``3m (x5 over 10m)``), From, Message."""
    if not events:
        lines.add(0, f"Events:\t{NONE}")
        return
    lines.add(0, "Events:")
    lines.add(1, "Type\tReason\tAge\tFrom\tMessage")
    lines.add(1, "----\t------\t----\t----\t-------")
    for event in events:
        interval = age(printers.first_seen(event), now)
        if event.count > 1:
            interval = f"{age(event.last_timestamp, now)} (x{event.count} over {interval})"
        lines.add(1, f"{event.type}\t{event.reason}\t{interval}\t"
                     f"{event.source.component or event.reporting_component}\t"
                     f"{event.message.strip()}")


def int_or_string(value: Message) -> str:
    return value.str_val if value.type == value.STRING else str(value.int_val)


def describe_probe(probe: Message) -> str:
    attrs = (f"delay={probe.initial_delay_seconds}s timeout={probe.timeout_seconds}s "
             f"period={probe.period_seconds}s #success={probe.success_threshold} "
             f"#failure={probe.failure_threshold}")
    if probe.HasField("exec"):
        return f"exec [{' '.join(probe.exec.command)}] {attrs}"
    if probe.HasField("http_get"):
        get = probe.http_get
        scheme = (get.scheme or "HTTP").lower()
        return f"http-get {scheme}://{get.host}:{int_or_string(get.port)}{get.path} {attrs}"
    if probe.HasField("tcp_socket"):
        return f"tcp-socket {probe.tcp_socket.host}:{int_or_string(probe.tcp_socket.port)} " \
               f"{attrs}"
    return f"unknown {attrs}"


def _ports(container: Message) -> tuple[str, str]:
    ports = container.ports
    if not ports:
        return NONE, NONE
    return (", ".join(f"{p.container_port}/{p.protocol or 'TCP'}" for p in ports),
            ", ".join(f"{p.host_port}/{p.protocol or 'TCP'}" for p in ports))


def write_container_state(lines: Lines, title: str, state: Message, level: int) -> None:
    if state.HasField("running"):
        lines.add(level, f"{title}:\tRunning")
        lines.add(level + 1, f"Started:\t{format_time(state.running.started_at)}")
    elif state.HasField("terminated"):
        t = state.terminated
        lines.add(level, f"{title}:\tTerminated")
        if t.reason:
            lines.add(level + 1, f"Reason:\t{t.reason}")
        if t.message:
            lines.add(level + 1, f"Message:\t{t.message}")
        lines.add(level + 1, f"Exit Code:\t{t.exit_code}")
        if t.signal:
            lines.add(level + 1, f"Signal:\t{t.signal}")
        lines.add(level + 1, f"Started:\t{format_time(t.started_at)}")
        lines.add(level + 1, f"Finished:\t{format_time(t.finished_at)}")
    else:
        lines.add(level, f"{title}:\tWaiting")
        if state.HasField("waiting") and state.waiting.reason:
            lines.add(level + 1, f"Reason:\t{state.waiting.reason}")
        if state.HasField("waiting") and state.waiting.message:
            lines.add(level + 1, f"Message:\t{state.waiting.message}")


def write_containers(lines: Lines, title: str, containers: Iterable[Message],
                     statuses: Iterable[Message] | None, level: int) -> None:
    """kubectl's container sections; ``statuses`` None for a template."""
    by_name = {s.name: s for s in statuses or ()}
    containers = list(containers)
    if not containers:
        return
    lines.add(level, f"{title}:")
    for container in containers:
        lines.add(level + 1, f"{container.name}:")
        inner = level + 2
        status = by_name.get(container.name)
        if statuses is not None:
            lines.add(inner, f"Container ID:\t{status.container_id if status else ''}")
        lines.add(inner, f"Image:\t{container.image}")
        if statuses is not None:
            lines.add(inner, f"Image ID:\t{status.image_id if status else ''}")
        port, host_port = _ports(container)
        plural = "s" if len(container.ports) > 1 else ""
        lines.add(inner, f"Port{plural}:\t{port}")
        lines.add(inner, f"Host Port{plural}:\t{host_port}")
        _write_words(lines, inner, "Command", container.command)
        _write_words(lines, inner, "Args", container.args)
        if statuses is not None:
            _write_container_status(lines, inner, status)
        _write_resources(lines, inner, container.resources)
        for name, probe_field in (("Liveness", "liveness_probe"),
                                  ("Readiness", "readiness_probe"),
                                  ("Startup", "startup_probe")):
            if container.HasField(probe_field):
                lines.add(inner, f"{name}:\t{describe_probe(getattr(container, probe_field))}")
        _write_env_from(lines, inner, container.env_from)
        _write_env(lines, inner, container.env)


def _write_container_status(lines: Lines, level: int, status: Message | None) -> None:
    """State, Last State, Ready and Restart Count (a container not started yet waits)."""
    if status is None:
        lines.add(level, "State:\tWaiting")
        lines.add(level, "Ready:\tFalse")
        lines.add(level, "Restart Count:\t0")
        return
    write_container_state(lines, "State", status.state, level)
    if status.last_state.HasField("terminated"):
        write_container_state(lines, "Last State", status.last_state, level)
    lines.add(level, f"Ready:\t{status.ready}")
    lines.add(level, f"Restart Count:\t{status.restart_count}")


def _write_words(lines: Lines, level: int, title: str, words: Iterable[str]) -> None:
    words = list(words)
    if words:
        lines.add(level, f"{title}:")
        for word in words:
            lines.add(level + 1, word)


def _write_resources(lines: Lines, level: int, resources: Message) -> None:
    for title, quantities in (("Limits", resources.limits), ("Requests", resources.requests)):
        if quantities:
            lines.add(level, f"{title}:")
            for name, value in sorted(quantities.items()):
                lines.add(level + 1, f"{name}:\t{value}")


def _write_env(lines: Lines, level: int, env: Iterable[Message]) -> None:
    env = list(env)
    if not env:
        lines.add(level, f"Environment:\t{NONE}")
        return
    lines.add(level, "Environment:")
    for var in env:
        lines.add(level + 1, f"{var.name}:\t{_env_value(var)}")


def _optional(ref: Message) -> str:
    return f"Optional: {'true' if ref.HasField('optional') and ref.optional else 'false'}"


def _env_value(var: Message) -> str:
    """kubectl's words for where a variable comes from."""
    source = var.value_from
    if source.HasField("config_map_key_ref"):
        ref = source.config_map_key_ref
        return f"<set to the key '{ref.key}' of config map '{ref.name}'>  {_optional(ref)}"
    if source.HasField("secret_key_ref"):
        ref = source.secret_key_ref
        return f"<set to the key '{ref.key}' in secret '{ref.name}'>  {_optional(ref)}"
    if source.HasField("field_ref"):
        ref = source.field_ref
        return f"({ref.api_version or 'v1'}:{ref.field_path})"
    if source.HasField("resource_field_ref"):
        ref = source.resource_field_ref
        return f"{ref.container_name or ''} {ref.resource}".strip() + \
            (f" (divisor: {ref.divisor})" if ref.divisor else "")
    return var.value


def _write_env_from(lines: Lines, level: int, sources: Iterable[Message]) -> None:
    sources = list(sources)
    if not sources:
        return
    lines.add(level, "Environment Variables from:")
    for source in sources:
        is_secret = source.HasField("secret_ref")
        ref = source.secret_ref if is_secret else source.config_map_ref
        prefix = f" with prefix '{source.prefix}'" if source.prefix else ""
        lines.add(level + 1, f"{ref.name}\t{'Secret' if is_secret else 'ConfigMap'}"
                             f"{prefix}\t{_optional(ref)}")


def format_toleration(t: Message) -> str:
    text = t.key + (f"={t.value}" if t.value else "") + (f":{t.effect}" if t.effect else "")
    if t.operator == "Exists" and not t.value:
        text += " op=Exists" if t.key or t.effect else "op=Exists"
    if t.HasField("toleration_seconds"):
        text += f" for {t.toleration_seconds}s"
    return text


def write_list(lines: Lines, level: int, title: str, items: list[str]) -> None:
    """``Title:  first`` with the rest on lines of their own; ``<none>`` if empty."""
    if not items:
        lines.add(level, f"{title}:\t{NONE}")
    for i, item in enumerate(items):
        lines.add(level, f"{title + ':' if i == 0 else ''}\t{item}")


def write_pod_template(lines: Lines, template: Message, level: int = 0) -> None:
    lines.add(level, "Pod Template:")
    write_labels_and_annotations(lines, level + 1, template.metadata)
    write_containers(lines, "Init Containers", template.spec.init_containers, None, level + 1)
    write_containers(lines, "Containers", template.spec.containers, None, level + 1)


def write_conditions(lines: Lines, conditions: Iterable[Message], columns: tuple[str, ...],
                     now: float) -> None:
    """A Conditions table of the named fields (``type``, ``status``, ``reason``...)."""
    conditions = list(conditions)
    if not conditions:
        return
    titles = [_label_for(c).replace(" ", "") for c in columns]  # LastHeartbeatTime
    lines.add(0, "Conditions:")
    lines.add(1, "\t".join(titles))
    lines.add(1, "\t".join("-" * len(t) for t in titles))
    for condition in conditions:
        cells = []
        for column in columns:
            value = getattr(condition, column)
            cells.append(format_time(value) if isinstance(value, Message) else str(value))
        lines.add(1, "\t".join(cells))


# ---- per kind ----


def describe_pod(lines: Lines, pod: Message, related: Related, now: float) -> None:
    md, spec, status = pod.metadata, pod.spec, pod.status
    lines.add(0, f"Name:\t{md.name}")
    lines.add(0, f"Namespace:\t{md.namespace}")
    lines.add(0, f"Priority:\t{spec.priority}")
    if spec.priority_class_name:
        lines.add(0, f"Priority Class Name:\t{spec.priority_class_name}")
    node = f"{spec.node_name}/{status.host_ip}" if status.host_ip else spec.node_name
    lines.add(0, f"Node:\t{or_none(node)}")
    if printers.is_set(status.start_time):
        lines.add(0, f"Start Time:\t{format_time(status.start_time)}")
    write_labels_and_annotations(lines, 0, md)
    _write_pod_status(lines, pod, now)
    if controller_of(md):
        lines.add(0, f"Controlled By:\t{controller_of(md)}")
    write_containers(lines, "Init Containers", spec.init_containers,
                     status.init_container_statuses, 0)
    write_containers(lines, "Containers", spec.containers, status.container_statuses, 0)
    if status.conditions:
        lines.add(0, "Conditions:")
        lines.add(1, "Type\tStatus")
        for condition in status.conditions:
            lines.add(1, f"{condition.type} \t{condition.status} ")
    if status.qos_class:
        lines.add(0, f"QoS Class:\t{status.qos_class}")
    lines.add(0, f"Node-Selectors:\t{format_labels(spec.node_selector)}")
    write_list(lines, 0, "Tolerations", [format_toleration(t) for t in spec.tolerations])


def _write_pod_status(lines: Lines, pod: Message, now: float) -> None:
    """Status (Terminating with what is left of the grace period), reason, IPs."""
    md, status = pod.metadata, pod.status
    if md.HasField("deletion_timestamp"):
        remaining = printers.human_duration(md.deletion_timestamp.seconds - now)
        lines.add(0, f"Status:\tTerminating (lasts {remaining})")
        lines.add(0, f"Termination Grace Period:\t{md.deletion_grace_period_seconds}s")
    else:
        lines.add(0, f"Status:\t{status.phase}")
    if status.reason:
        lines.add(0, f"Reason:\t{status.reason}")
    if status.message:
        lines.add(0, f"Message:\t{status.message}")
    lines.add(0, f"IP:\t{status.pod_ip}")
    if not status.pod_ips:
        lines.add(0, f"IPs:\t{NONE}")
        return
    lines.add(0, "IPs:")
    for ip in status.pod_ips:
        lines.add(1, f"IP:\t{ip.ip}")


def describe_node(lines: Lines, node: Message, related: Related, now: float) -> None:
    md, spec, status = node.metadata, node.spec, node.status
    lines.add(0, f"Name:\t{md.name}")
    lines.add(0, f"Roles:\t{printers.node_roles(node)}")
    write_labels_and_annotations(lines, 0, md)
    lines.add(0, f"CreationTimestamp:\t{format_time(md.creation_timestamp)}")
    write_list(lines, 0, "Taints", [f"{t.key}{'=' + t.value if t.value else ''}:{t.effect}"
                                    for t in spec.taints])
    lines.add(0, f"Unschedulable:\t{str(spec.unschedulable).lower()}")
    if related.lease is not None:
        lease = related.lease.spec
        lines.add(0, "Lease:")
        lines.add(1, f"HolderIdentity:\t{or_none(lease.holder_identity)}")
        lines.add(1, f"AcquireTime:\t{format_time(lease.acquire_time)}")
        lines.add(1, f"RenewTime:\t{format_time(lease.renew_time)}")
    write_conditions(lines, status.conditions, ("type", "status", "last_heartbeat_time",
                                                "last_transition_time", "reason", "message"),
                     now)
    _write_node_resources(lines, status)
    _write_system_info(lines, status.node_info)
    # As kubectl: shown once set (by the kubelet or the controller-manager's node IPAM).
    if spec.pod_cidr:
        lines.add(0, f"PodCIDR:\t{spec.pod_cidr}")
    if spec.pod_cidrs:
        lines.add(0, f"PodCIDRs:\t{','.join(spec.pod_cidrs)}")
    lines.add(0, f"Non-terminated Pods:\t({len(related.pods)} in total)")
    lines.add(1, "Namespace\tName\tAge")
    lines.add(1, "---------\t----\t---")
    for pod in related.pods:
        lines.add(1, f"{pod.metadata.namespace}\t{pod.metadata.name}\t"
                     f"{age(pod.metadata.creation_timestamp, now)}")


def _write_node_resources(lines: Lines, status: Message) -> None:
    lines.add(0, "Addresses:")
    for address in status.addresses:
        lines.add(1, f"{address.type}:\t{address.address}")
    for title, quantities in (("Capacity", status.capacity),
                              ("Allocatable", status.allocatable)):
        lines.add(0, f"{title}:")
        for name, value in sorted(quantities.items()):
            lines.add(1, f"{name}:\t{value}")


def _write_system_info(lines: Lines, info: Message) -> None:
    lines.add(0, "System Info:")
    for title, value in (("Machine ID", info.machine_id), ("System UUID", info.system_uuid),
                         ("Boot ID", info.boot_id), ("Kernel Version", info.kernel_version),
                         ("OS Image", info.os_image),
                         ("Operating System", info.operating_system),
                         ("Architecture", info.architecture),
                         ("Container Runtime Version", info.container_runtime_version),
                         ("Kubelet Version", info.kubelet_version),
                         ("Kube-Proxy Version", info.kube_proxy_version)):
        lines.add(1, f"{title}:\t{value}")


def describe_service(lines: Lines, service: Message, related: Related, now: float) -> None:
    spec = service.spec
    write_metadata(lines, service)
    lines.add(0, f"Selector:\t{format_labels(spec.selector)}")
    lines.add(0, f"Type:\t{spec.type or 'ClusterIP'}")
    lines.add(0, f"IP:\t{or_none(spec.cluster_ip)}")
    lines.add(0, f"IPs:\t{','.join(spec.cluster_ips) or NONE}")
    if spec.external_name:
        lines.add(0, f"External Name:\t{spec.external_name}")
    for port in spec.ports:
        name = port.name or "<unset>"
        protocol = port.protocol or "TCP"
        lines.add(0, f"Port:\t{name}\t{port.port}/{protocol}")
        target = int_or_string(port.target_port) if port.HasField("target_port") else (
            str(port.port))
        lines.add(0, f"TargetPort:\t{target}/{protocol}")
        if port.node_port:
            lines.add(0, f"NodePort:\t{name}\t{port.node_port}/{protocol}")
        lines.add(0, f"Endpoints:\t{_service_endpoints(related.endpoints, port.name)}")
    lines.add(0, f"Session Affinity:\t{spec.session_affinity or 'None'}")
    if spec.external_traffic_policy:
        lines.add(0, f"External Traffic Policy:\t{spec.external_traffic_policy}")


def _service_endpoints(endpoints: Message | None, port_name: str) -> str:
    if endpoints is None:
        return NONE
    pairs = [f"{a.ip}:{p.port}" for s in endpoints.subsets for p in s.ports
             if p.name == port_name for a in s.addresses]
    return ",".join(pairs) or NONE


def describe_deployment(lines: Lines, deploy: Message, related: Related, now: float) -> None:
    md, spec, status = deploy.metadata, deploy.spec, deploy.status
    lines.add(0, f"Name:\t{md.name}")
    lines.add(0, f"Namespace:\t{md.namespace}")
    lines.add(0, f"CreationTimestamp:\t{format_time(md.creation_timestamp)}")
    write_labels_and_annotations(lines, 0, md)
    lines.add(0, f"Selector:\t{printers.format_selector(spec.selector)}")
    lines.add(0, f"Replicas:\t{spec.replicas} desired | {status.updated_replicas} updated | "
                 f"{status.replicas} total | {status.available_replicas} available | "
                 f"{status.unavailable_replicas} unavailable")
    strategy = spec.strategy.type or "RollingUpdate"
    lines.add(0, f"StrategyType:\t{strategy}")
    lines.add(0, f"MinReadySeconds:\t{spec.min_ready_seconds}")
    if strategy == "RollingUpdate":
        rolling = spec.strategy.rolling_update
        lines.add(0, f"RollingUpdateStrategy:\t{int_or_string(rolling.max_unavailable)} max "
                     f"unavailable, {int_or_string(rolling.max_surge)} max surge")
    write_pod_template(lines, spec.template)
    write_conditions(lines, status.conditions, ("type", "status", "reason"), now)
    new, old = split_replica_sets(deploy, related.replica_sets)
    lines.add(0, f"OldReplicaSets:\t{', '.join(_rs_summary(rs) for rs in old) or NONE}")
    lines.add(0, f"NewReplicaSet:\t{_rs_summary(new) if new is not None else NONE}")


def split_replica_sets(deploy: Message, replica_sets: list[Message]
                       ) -> tuple[Message | None, list[Message]]:
    """(the ReplicaSet running the deployment's template, the others)."""
    wanted = template_without_hash(deploy.spec.template)
    new = next((rs for rs in replica_sets if template_without_hash(rs.spec.template) == wanted),
               None)
    return new, [rs for rs in replica_sets if rs is not new]


def template_without_hash(template: Message) -> Message:
    """A pod template without the ``pod-template-hash`` label, for comparing."""
    copy = type(template)()
    copy.CopyFrom(template)
    copy.metadata.labels.pop(POD_TEMPLATE_HASH, None)
    return copy


def _rs_summary(rs: Message) -> str:
    return f"{rs.metadata.name} ({rs.status.replicas}/{rs.spec.replicas} replicas created)"


def describe_replica_set(lines: Lines, rs: Message, related: Related, now: float) -> None:
    md, spec, status = rs.metadata, rs.spec, rs.status
    lines.add(0, f"Name:\t{md.name}")
    lines.add(0, f"Namespace:\t{md.namespace}")
    selector = (format_labels(spec.selector) if rs.DESCRIPTOR.name == "ReplicationController"
                else printers.format_selector(spec.selector))
    lines.add(0, f"Selector:\t{selector}")
    write_labels_and_annotations(lines, 0, md)
    if controller_of(md):
        lines.add(0, f"Controlled By:\t{controller_of(md)}")
    lines.add(0, f"Replicas:\t{status.replicas} current / {spec.replicas} desired")
    phases = [p.status.phase for p in related.pods]
    lines.add(0, f"Pods Status:\t{phases.count('Running')} Running / "
                 f"{phases.count('Pending')} Waiting / {phases.count('Succeeded')} Succeeded / "
                 f"{phases.count('Failed')} Failed")
    write_pod_template(lines, spec.template)
    write_conditions(lines, status.conditions, ("type", "status", "reason"), now)


def describe_endpoints(lines: Lines, ep: Message, related: Related, now: float) -> None:
    write_metadata(lines, ep)
    lines.add(0, "Subsets:")
    for subset in ep.subsets:
        lines.add(1, f"Addresses:\t{','.join(a.ip for a in subset.addresses) or NONE}")
        lines.add(1, "NotReadyAddresses:\t"
                     f"{','.join(a.ip for a in subset.not_ready_addresses) or NONE}")
        lines.add(1, "Ports:")
        lines.add(2, "Name\tPort\tProtocol")
        lines.add(2, "----\t----\t--------")
        for port in subset.ports:
            lines.add(2, f"{port.name or '<unset>'}\t{port.port}\t{port.protocol or 'TCP'}")
        lines.add(0, "")


def describe_namespace(lines: Lines, ns: Message, related: Related, now: float) -> None:
    write_metadata(lines, ns, namespaced=False)
    lines.add(0, f"Status:\t{ns.status.phase or 'Active'}")


def describe_config_map(lines: Lines, cm: Message, related: Related, now: float) -> None:
    """kubectl's way: each key, a rule, the value; binary values only by size."""
    write_metadata(lines, cm)
    lines.add(0, "")
    lines.add(0, "Data")
    lines.add(0, "====")
    for key, value in sorted(cm.data.items()):
        lines.add(0, f"{key}:")
        lines.add(0, "----")
        lines.add(0, value)
        lines.add(0, "")
    lines.add(0, "")
    lines.add(0, "BinaryData")
    lines.add(0, "====")
    for key, data in sorted(cm.binary_data.items()):
        lines.add(0, f"{key}:\t{len(data)} bytes")


def describe_secret(lines: Lines, secret: Message, related: Related, now: float) -> None:
    """The type and each key's size: values are not shown (kubectl's way)."""
    write_metadata(lines, secret)
    lines.add(0, "")
    lines.add(0, f"Type:\t{secret.type}")
    lines.add(0, "")
    lines.add(0, "Data")
    lines.add(0, "====")
    for key, data in sorted(secret.data.items()):
        lines.add(0, f"{key}:\t{len(data)} bytes")


_CAMEL_RE = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def _label_for(name: str) -> str:
    """``holderIdentity`` or ``holder_identity`` -> ``Holder Identity``."""
    words = _CAMEL_RE.sub(" ", name).replace("_", " ").split()
    return " ".join(w[:1].upper() + w[1:] for w in words)


def describe_generic(lines: Lines, obj: Message, related: Related, now: float) -> None:
    """Name, namespace, labels, annotations, then every other field in words."""
    kind = printers.object_kind(obj)
    write_metadata(lines, obj, namespaced=kind.namespaced)
    document = manifest.to_dict(obj)
    for key in ("metadata", "apiVersion", "kind"):
        document.pop(key, None)
    lines.add(0, f"API Version:\t{kind.api_version}")
    lines.add(0, f"Kind:\t{kind.kind}")
    for key, value in document.items():
        _write_value(lines, 0, key, value)


def _write_value(lines: Lines, level: int, key: str, value: Any) -> None:
    label = _label_for(key)
    if isinstance(value, dict):
        lines.add(level, f"{label}:")
        for k, v in value.items():
            _write_value(lines, level + 1, k, v)
    elif isinstance(value, list):
        lines.add(level, f"{label}:")
        for item in value:
            if isinstance(item, dict):
                for k, v in item.items():
                    _write_value(lines, level + 1, k, v)
            else:
                lines.add(level + 1, str(item))
    else:
        lines.add(level, f"{label}:\t{value}")


Describer = Callable[[Lines, Message, Related, float], None]
DESCRIBERS: dict[str, Describer] = {
    "Pod": describe_pod,
    "Node": describe_node,
    "Service": describe_service,
    "Deployment": describe_deployment,
    "ReplicaSet": describe_replica_set,
    "ReplicationController": describe_replica_set,
    "Endpoints": describe_endpoints,
    "Namespace": describe_namespace,
    "ConfigMap": describe_config_map,
    "Secret": describe_secret,
}
