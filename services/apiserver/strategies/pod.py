"""Pods: Kubernetes' defaults, validation and update rules for ``PodSpec``.

What lives here is pure and reusable: :func:`default_pod_spec` and
:func:`validate_pod_spec` also serve the pod templates of ReplicationControllers,
ReplicaSets and Deployments (see :func:`validate_pod_template`), and :func:`qos_class`
is Kubernetes' QoS rule, which the kubelet may call as well. :class:`PodStrategy` wires
them into the registry's create / update / status-update sequence (``strategy.py``).

Neighbours: ``service.py`` and ``endpoints.py`` reuse the port checks
(:func:`validate_port_num_or_name`, :func:`iana_svc_name`).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from fractions import Fraction

from google.protobuf.message import Message

from services.apiserver.strategies.pod_env import default_env, validate_env, validate_env_from
from services.apiserver.strategy import Strategy
from skiff.api import validation
from skiff.api.errors import FieldError
from skiff.api.images import default_pull_policy
from skiff.api.labels import Selector, validate_label_key, validate_label_value
from skiff.api.quantity import parse_quantity
from skiff.api.v1 import core_pb2, meta_pb2
from skiff.api.validation import Path

RESTART_POLICIES = ("Always", "OnFailure", "Never")
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
PROTOCOLS = ("TCP", "UDP", "SCTP")
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
TOLERATION_OPERATORS = ("Equal", "Exists")
NODE_SELECTOR_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt")
HTTP_SCHEMES = ("HTTP", "HTTPS")
DNS_POLICIES = ("ClusterFirstWithHostNet", "ClusterFirst", "Default", "None")
#: Kubernetes' limits on a pod's dnsConfig (glibc's resolver, as of the expanded DNS
#: configuration: 3 nameservers, 32 search paths of 2048 characters with the spaces).
MAX_DNS_NAMESERVERS = 3
MAX_DNS_SEARCH_PATHS = 32
MAX_DNS_SEARCH_LIST_CHARS = 2048
DEFAULT_SCHEDULER = "default-scheduler"
DEFAULT_TERMINATION_GRACE_PERIOD = 30
DEFAULT_TERMINATION_MESSAGE_PATH = "/dev/termination-log"
#: The compute resources Kubernetes' QoS classes are computed from.
QOS_RESOURCES = ("cpu", "memory")

UPDATE_FORBIDDEN = (
    "pod updates may not change fields other than `spec.containers[*].image`, "
    "`spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, "
    "`spec.tolerations` (only additions to existing tolerations), "
    "`spec.terminationGracePeriodSeconds`"
)

#: What spec.serviceAccountName defaults to; the serviceaccounts controller makes it.
DEFAULT_SERVICE_ACCOUNT = "default"
_PORT_NAME_CHARS = re.compile(r"^[-a-z0-9]+$")
_INT32_MAX = 2**31 - 1
SelectorRequirement = core_pb2.NodeSelectorRequirement | meta_pb2.LabelSelectorRequirement


# ---- small detail builders (Kubernetes' wording) ----

def _err(path: Path | str, detail: str) -> list[FieldError]:
    return [FieldError(str(path), detail)]


def _duplicate(path: Path | str, value: object) -> list[FieldError]:
    return _err(path, f"Duplicate value: {validation.quote(value)}")


def _as_path(path: Path | str) -> Path:
    return path if isinstance(path, Path) else Path(path)


def _label_key(field: Path, key: str) -> list[FieldError]:
    problems = validate_label_key(key)
    return _err(field, "; ".join(problems)) if problems else []


def _label_value(field: Path, value: str) -> list[FieldError]:
    problems = validate_label_value(value)
    return _err(field, "; ".join(problems)) if problems else []


# ---- defaults ----

def default_pod_spec(spec: core_pb2.PodSpec) -> None:
    """Kubernetes' ``SetDefaults_PodSpec`` (pods and pod templates alike); idempotent."""
    if not spec.restart_policy:
        spec.restart_policy = "Always"
    if not spec.scheduler_name:
        spec.scheduler_name = DEFAULT_SCHEDULER
    if not spec.HasField("termination_grace_period_seconds"):
        spec.termination_grace_period_seconds = DEFAULT_TERMINATION_GRACE_PERIOD
    if not spec.dns_policy:
        spec.dns_policy = "ClusterFirst"
    if not spec.HasField("enable_service_links"):
        spec.enable_service_links = True
    for container in (*spec.init_containers, *spec.containers):
        _default_container(container)
    for toleration in spec.tolerations:
        if not toleration.operator:
            toleration.operator = "Equal"


def _default_container(container: core_pb2.Container) -> None:
    if not container.image_pull_policy:
        container.image_pull_policy = default_pull_policy(container.image)
    if not container.termination_message_path:
        container.termination_message_path = DEFAULT_TERMINATION_MESSAGE_PATH
    for port in container.ports:
        if not port.protocol:
            port.protocol = "TCP"
    default_env(container)
    for name in ("liveness_probe", "readiness_probe", "startup_probe"):
        if container.HasField(name):
            _default_probe(getattr(container, name))


def _default_probe(probe: core_pb2.Probe) -> None:
    probe.timeout_seconds = probe.timeout_seconds or 1
    probe.period_seconds = probe.period_seconds or 10
    probe.success_threshold = probe.success_threshold or 1
    probe.failure_threshold = probe.failure_threshold or 3
    if probe.HasField("http_get"):
        probe.http_get.path = probe.http_get.path or "/"
        probe.http_get.scheme = probe.http_get.scheme or "HTTP"


def default_requests_from_limits(spec: core_pb2.PodSpec) -> None:
    """A limit without a request makes the request equal to it (pods only, not templates)."""
    for container in (*spec.init_containers, *spec.containers):
        resources = container.resources
        for name, limit in resources.limits.items():
            if name not in resources.requests:
                resources.requests[name] = limit


# ---- QoS ----

def qos_class(spec: core_pb2.PodSpec) -> str:
    """Kubernetes' QoS class of a pod: ``Guaranteed``, ``Burstable`` or ``BestEffort``.

    Pure. Only cpu and memory count, and only positive quantities; a quantity that
    does not parse is ignored here (validation reports it). Guaranteed needs every
    container to limit both cpu and memory, with requests (summed over containers)
    equal to the limits; any request or limit at all makes a pod at least Burstable.
    """
    requests: dict[str, Fraction] = {}
    limits: dict[str, Fraction] = {}
    guaranteed = True
    for container in (*spec.containers, *spec.init_containers):
        _add_positive(requests, container.resources.requests)
        found = _add_positive(limits, container.resources.limits)
        if not found.issuperset(QOS_RESOURCES):
            guaranteed = False
    if not requests and not limits:
        return "BestEffort"
    if guaranteed and all(limits.get(name) == value for name, value in requests.items()):
        if len(requests) == len(limits):
            return "Guaranteed"
    return "Burstable"


def _add_positive(totals: dict[str, Fraction], quantities: Mapping[str, str]) -> set[str]:
    """Add the positive cpu/memory quantities into ``totals``; the names that were added."""
    added = set()
    for name, text in quantities.items():
        if name not in QOS_RESOURCES:
            continue
        try:
            value = parse_quantity(text)
        except ValueError:
            continue
        if value > 0:
            totals[name] = totals.get(name, Fraction(0)) + value
            added.add(name)
    return added


# ---- shared field checks ----

def iana_svc_name(field: Path | str, value: str) -> list[FieldError]:
    """Kubernetes' IANA_SVC_NAME (a port name): at most 15 of [a-z0-9-], one letter."""
    problems = []
    if len(value) > 15:
        problems.append("must be no more than 15 characters")
    if not _PORT_NAME_CHARS.match(value):
        problems.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if not re.search(r"[a-z]", value):
        problems.append("must contain at least one letter (a-z)")
    if "--" in value:
        problems.append("must not contain consecutive hyphens")
    if value.startswith("-") or value.endswith("-"):
        problems.append("must not begin or end with a hyphen")
    return _err(field, "; ".join(problems)) if problems else []


def validate_port_num_or_name(port: meta_pb2.IntOrString, field: Path | str) -> list[FieldError]:
    """A port given as a number (1-65535) or as an IANA_SVC_NAME."""
    if port.type == meta_pb2.IntOrString.STRING:
        return iana_svc_name(field, port.str_val)
    return validation.port_number(field, port.int_val)


# ---- validation ----

def validate_pod_spec(spec: core_pb2.PodSpec, path: Path | str) -> list[FieldError]:
    """Every rule Kubernetes applies to a PodSpec, with errors under ``path``."""
    p = _as_path(path)
    errors: list[FieldError] = []
    errors += validation.required(p.child("containers"), spec.containers)
    names: set[str] = set()
    all_names = frozenset(c.name for c in (*spec.init_containers, *spec.containers))
    errors += _validate_containers(spec.init_containers, p.child("initContainers"),
                                   names=names, init=True, host_network=spec.host_network,
                                   all_names=all_names)
    errors += _validate_containers(spec.containers, p.child("containers"),
                                   names=names, init=False, host_network=spec.host_network,
                                   all_names=all_names)
    errors += _validate_host_ports(spec, p)
    errors += validation.one_of(p.child("restartPolicy"), spec.restart_policy,
                                RESTART_POLICIES)
    errors += validation.labels(p.child("nodeSelector"), spec.node_selector)
    errors += _validate_tolerations(spec.tolerations, p.child("tolerations"))
    if spec.HasField("affinity"):
        errors += _validate_affinity(spec.affinity, p.child("affinity"))
    errors += _validate_scalars(spec, p)
    errors += _validate_dns(spec, p)
    return errors


def _validate_dns(spec: core_pb2.PodSpec, p: Path) -> list[FieldError]:
    """``dnsPolicy`` and ``dnsConfig``: None needs a nameserver of its own; the lists
    keep within what a resolver reads (see :data:`MAX_DNS_NAMESERVERS`)."""
    errors = validation.one_of(p.child("dnsPolicy"), spec.dns_policy, DNS_POLICIES)
    dc, cp = spec.dns_config, p.child("dnsConfig")
    if spec.dns_policy == "None":
        if not spec.HasField("dns_config"):
            return errors + _err(cp, "Required value: must provide `dnsConfig` when "
                                     "`dnsPolicy` is None")
        if not dc.nameservers:
            return errors + _err(cp.child("nameservers"), "Required value: must provide at "
                                 "least one DNS nameserver when `dnsPolicy` is None")
    if len(dc.nameservers) > MAX_DNS_NAMESERVERS:
        errors += _err(cp.child("nameservers"),
                       f"must not have more than {MAX_DNS_NAMESERVERS} nameservers")
    for i, server in enumerate(dc.nameservers):
        try:
            ipaddress.ip_address(server)
        except ValueError:
            errors += _err(cp.child("nameservers").index(i),
                           f"Invalid value: {validation.quote(server)}: "
                           "must be a valid IP address")
    if len(dc.searches) > MAX_DNS_SEARCH_PATHS:
        errors += _err(cp.child("searches"),
                       f"must not have more than {MAX_DNS_SEARCH_PATHS} search paths")
    if len(" ".join(dc.searches)) > MAX_DNS_SEARCH_LIST_CHARS:
        errors += _err(cp.child("searches"), f"must not have more than "
                       f"{MAX_DNS_SEARCH_LIST_CHARS} characters (including spaces) in the "
                       "search list")
    for i, search in enumerate(dc.searches):
        # A trailing dot (a fully qualified name) is fine.
        errors += validation.dns1123_subdomain(cp.child("searches").index(i),
                                               search.removesuffix("."))
    for i, option in enumerate(dc.options):
        errors += validation.required(cp.child("options").index(i).child("name"), option.name)
    return errors


def _validate_scalars(spec: core_pb2.PodSpec, p: Path) -> list[FieldError]:
    errors: list[FieldError] = []
    if spec.HasField("termination_grace_period_seconds"):
        errors += validation.non_negative(p.child("terminationGracePeriodSeconds"),
                                          spec.termination_grace_period_seconds)
    if spec.HasField("active_deadline_seconds"):
        errors += validation.in_range(p.child("activeDeadlineSeconds"),
                                      spec.active_deadline_seconds, 1, _INT32_MAX)
    for field, value in (("hostname", spec.hostname), ("subdomain", spec.subdomain)):
        if value:
            errors += validation.dns1123_label(p.child(field), value)
    for field, value in (("nodeName", spec.node_name), ("schedulerName", spec.scheduler_name),
                         ("priorityClassName", spec.priority_class_name)):
        if value:
            errors += validation.dns1123_subdomain(p.child(field), value)
    return errors


def _validate_containers(containers: Iterable[core_pb2.Container], p: Path, *,
                         names: set[str], init: bool, host_network: bool,
                         all_names: frozenset[str]) -> list[FieldError]:
    errors: list[FieldError] = []
    for i, container in enumerate(containers):
        cp = p.index(i)
        if container.name and container.name in names:
            errors += _duplicate(cp.child("name"), container.name)
        else:
            errors += validation.dns1123_label(cp.child("name"), container.name)
        names.add(container.name)
        errors += _validate_container(container, cp, init=init, host_network=host_network,
                                      container_names=all_names)
    return errors


def _validate_container(container: core_pb2.Container, p: Path, *, init: bool,
                        host_network: bool, container_names: frozenset[str]) -> list[FieldError]:
    errors: list[FieldError] = []
    errors += validation.required(p.child("image"), container.image)
    if container.image and container.image != container.image.strip():
        errors += _err(p.child("image"), "must not have leading or trailing whitespace")
    errors += validation.one_of(p.child("imagePullPolicy"), container.image_pull_policy,
                                PULL_POLICIES)
    errors += _validate_ports(container.ports, p.child("ports"), host_network=host_network)
    errors += validate_env(container.env, p.child("env"), container_names)
    errors += validate_env_from(container.env_from, p.child("envFrom"))
    errors += _validate_resources(container.resources, p.child("resources"))
    errors += _validate_probes(container, p, init=init)
    return errors


def _validate_ports(ports: Iterable[core_pb2.ContainerPort], p: Path, *,
                    host_network: bool) -> list[FieldError]:
    errors: list[FieldError] = []
    names: set[str] = set()
    for i, port in enumerate(ports):
        pp = p.index(i)
        if port.name:
            errors += iana_svc_name(pp.child("name"), port.name)
            if port.name in names:
                errors += _duplicate(pp.child("name"), port.name)
            names.add(port.name)
        errors += validation.port_number(pp.child("containerPort"), port.container_port)
        if port.host_port:
            errors += validation.port_number(pp.child("hostPort"), port.host_port)
        if host_network and port.host_port and port.host_port != port.container_port:
            errors += _err(pp.child("containerPort"),
                           "must match `hostPort` when `hostNetwork` is true")
        errors += validation.one_of(pp.child("protocol"), port.protocol, PROTOCOLS)
    return errors


def _validate_host_ports(spec: core_pb2.PodSpec, p: Path) -> list[FieldError]:
    """A host port (with its protocol and host IP) may be claimed once per pod."""
    errors: list[FieldError] = []
    seen: set[str] = set()
    for group, containers in (("initContainers", spec.init_containers),
                              ("containers", spec.containers)):
        for i, container in enumerate(containers):
            for j, port in enumerate(container.ports):
                if not port.host_port:
                    continue
                key = f"{port.protocol}/{port.host_ip}/{port.host_port}"
                if key in seen:
                    path = p.child(group).index(i).child("ports").index(j)
                    errors += _duplicate(path.child("hostPort"), key)
                seen.add(key)
    return errors


def _validate_resources(resources: core_pb2.ResourceRequirements,
                        p: Path) -> list[FieldError]:
    limits, errors = _parse_resources(resources.limits, p.child("limits"))
    requests, request_errors = _parse_resources(resources.requests, p.child("requests"))
    errors += request_errors
    for name, request in requests.items():
        limit = limits.get(name)
        if limit is not None and request > limit:
            errors += _err(p.child("requests").key(name), f"must be less than or equal to "
                           f"{name} limit of {resources.limits[name]}")
    return errors


def _parse_resources(quantities: Mapping[str, str],
                     p: Path) -> tuple[dict[str, Fraction], list[FieldError]]:
    """The quantities that are valid, and the errors of those that are not."""
    parsed: dict[str, Fraction] = {}
    errors: list[FieldError] = []
    for name in sorted(quantities):
        field = p.key(name)
        errors += _validate_resource_name(field, name)
        problems = validation.quantity(field, quantities[name])
        errors += problems
        if not problems:
            parsed[name] = parse_quantity(quantities[name])
    return parsed, errors


def _validate_resource_name(field: Path, name: str) -> list[FieldError]:
    problems = validate_label_key(name)
    if problems:
        return _err(field, "; ".join(problems))
    standard = name in ("cpu", "memory", "ephemeral-storage") or name.startswith("hugepages-")
    if "/" not in name and not standard:
        return _err(field, "must be a standard resource for containers")
    return []


def _validate_probes(container: core_pb2.Container, p: Path, *,
                     init: bool) -> list[FieldError]:
    errors: list[FieldError] = []
    for name, json_name in (("liveness_probe", "livenessProbe"),
                            ("readiness_probe", "readinessProbe"),
                            ("startup_probe", "startupProbe")):
        if not container.HasField(name):
            continue
        if init:
            errors += _err(p.child(json_name), "may not be set for init containers")
            continue
        errors += _validate_probe(getattr(container, name), p.child(json_name),
                                  single_success=name != "readiness_probe")
    return errors


def _validate_probe(probe: core_pb2.Probe, p: Path, *,
                    single_success: bool) -> list[FieldError]:
    errors = _validate_handler(probe, p)
    for field in ("initial_delay_seconds", "timeout_seconds", "period_seconds",
                  "success_threshold", "failure_threshold"):
        errors += validation.non_negative(p.child(_camel(field)), getattr(probe, field))
    if single_success and probe.success_threshold != 1:
        errors += _err(p.child("successThreshold"), "must be 1")
    if probe.HasField("termination_grace_period_seconds"):
        if probe.termination_grace_period_seconds <= 0:
            errors += _err(p.child("terminationGracePeriodSeconds"), "must be greater than 0")
    return errors


def _validate_handler(probe: core_pb2.Probe, p: Path) -> list[FieldError]:
    """Exactly one of exec, httpGet and tcpSocket, and that one well formed."""
    handlers = [name for name in ("exec", "http_get", "tcp_socket") if probe.HasField(name)]
    if not handlers:
        return _err(p, "must specify a handler type")
    errors: list[FieldError] = []
    for extra in handlers[1:]:
        errors += _err(p.child(_camel(extra)), "may not specify more than 1 handler type")
    if probe.HasField("exec"):
        errors += validation.required(p.child("exec", "command"), probe.exec.command)
    if probe.HasField("http_get"):
        hp = p.child("httpGet")
        errors += validate_port_num_or_name(probe.http_get.port, hp.child("port"))
        errors += validation.one_of(hp.child("scheme"), probe.http_get.scheme,
                                    HTTP_SCHEMES)
    if probe.HasField("tcp_socket"):
        errors += validate_port_num_or_name(probe.tcp_socket.port,
                                            p.child("tcpSocket").child("port"))
    return errors


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(word.capitalize() for word in rest)


def _validate_tolerations(tolerations: Iterable[core_pb2.Toleration],
                          p: Path) -> list[FieldError]:
    errors: list[FieldError] = []
    for i, toleration in enumerate(tolerations):
        errors += _validate_toleration(toleration, p.index(i))
    return errors


def _validate_toleration(toleration: core_pb2.Toleration, p: Path) -> list[FieldError]:
    errors: list[FieldError] = []
    operator = toleration.operator or "Equal"
    if toleration.key:
        errors += _label_key(p.child("key"), toleration.key)
    elif operator != "Exists":
        errors += _err(p.child("operator"), "operator must be Exists when `key` is empty, "
                       'which means "match all values and all keys"')
    if toleration.HasField("toleration_seconds") and toleration.effect != "NoExecute":
        errors += _err(p.child("effect"),
                       "effect must be 'NoExecute' when `tolerationSeconds` is set")
    if operator == "Equal":
        errors += _label_value(p.child("value"), toleration.value)
    elif operator == "Exists":
        if toleration.value:
            errors += _err(p.child("operator"), "value must be empty when `operator` is 'Exists'")
    else:
        errors += validation.one_of(p.child("operator"), operator, TOLERATION_OPERATORS)
    if toleration.effect:
        errors += validation.one_of(p.child("effect"), toleration.effect, TAINT_EFFECTS)
    return errors


def _validate_affinity(affinity: core_pb2.Affinity, p: Path) -> list[FieldError]:
    if not affinity.HasField("node_affinity"):
        return []
    node_affinity, np = affinity.node_affinity, p.child("nodeAffinity")
    errors: list[FieldError] = []
    if node_affinity.HasField("required_during_scheduling_ignored_during_execution"):
        rp = np.child("requiredDuringSchedulingIgnoredDuringExecution")
        terms = node_affinity.required_during_scheduling_ignored_during_execution
        if not terms.node_selector_terms:
            errors += _err(rp.child("nodeSelectorTerms"),
                           "must have at least one node selector term")
        for i, term in enumerate(terms.node_selector_terms):
            errors += _validate_node_selector_term(term, rp.child("nodeSelectorTerms").index(i))
    pp = np.child("preferredDuringSchedulingIgnoredDuringExecution")
    for i, preferred in enumerate(
            node_affinity.preferred_during_scheduling_ignored_during_execution):
        errors += validation.in_range(pp.index(i).child("weight"), preferred.weight, 1, 100)
        errors += _validate_node_selector_term(preferred.preference,
                                               pp.index(i).child("preference"))
    return errors


def _validate_node_selector_term(term: core_pb2.NodeSelectorTerm, p: Path) -> list[FieldError]:
    errors: list[FieldError] = []
    for i, requirement in enumerate(term.match_expressions):
        errors += validate_selector_requirement(requirement, p.child("matchExpressions").index(i))
    for i, requirement in enumerate(term.match_fields):
        errors += _validate_node_field_requirement(requirement, p.child("matchFields").index(i))
    return errors


def validate_selector_requirement(requirement: SelectorRequirement, p: Path, *,
                                  operators: tuple[str, ...] = NODE_SELECTOR_OPERATORS,
                                  ) -> list[FieldError]:
    """One ``{key, operator, values}`` requirement (node affinity or a label selector).

    In/NotIn need values, Exists/DoesNotExist take none, Gt/Lt take one integer.
    """
    errors = _label_key(p.child("key"), requirement.key)
    operator, values = requirement.operator, list(requirement.values)
    if operator not in operators:
        return errors + validation.one_of(p.child("operator"), operator, operators)
    if operator in ("In", "NotIn") and not values:
        errors += _err(p.child("values"),
                       "must be specified when `operator` is 'In' or 'NotIn'")
    elif operator in ("Exists", "DoesNotExist") and values:
        errors += _err(p.child("values"),
                       "may not be specified when `operator` is 'Exists' or 'DoesNotExist'")
    elif operator in ("Gt", "Lt"):
        if len(values) != 1:
            errors += _err(p.child("values"),
                           "must be specified single value when `operator` is 'Lt' or 'Gt'")
        elif not re.fullmatch(r"[+-]?[0-9]+", values[0]):
            errors += _err(p.child("values").index(0), "must be an integer")
        return errors
    for i, value in enumerate(values):
        errors += _label_value(p.child("values").index(i), value)
    return errors


def _validate_node_field_requirement(requirement: core_pb2.NodeSelectorRequirement,
                                     p: Path) -> list[FieldError]:
    """matchFields: only ``metadata.name``, In or NotIn, exactly one value."""
    errors: list[FieldError] = []
    if requirement.key != "metadata.name":
        errors += validation.one_of(p.child("key"), requirement.key, ("metadata.name",))
    if requirement.operator not in ("In", "NotIn"):
        errors += validation.one_of(p.child("operator"), requirement.operator,
                                    ("In", "NotIn"))
    elif len(requirement.values) != 1:
        errors += _err(p.child("values"), "must be only one value when `operator` is 'In' or "
                       "'NotIn' for node field selector")
    return errors


# ---- templates ----

def validate_pod_template(template: core_pb2.PodTemplateSpec, path: Path | str, *,
                          selector: Selector | None, owner: str) -> list[FieldError]:
    """A controller's pod template: labels matched by ``selector``, restartPolicy Always.

    ``owner`` names the controller's kind in Kubernetes' messages ("ReplicaSet");
    a ``selector`` of None (itself invalid, reported by the caller) skips the match.
    """
    p = _as_path(path)
    labels = template.metadata.labels
    errors = validation.labels(p.child("metadata").child("labels"), labels)
    if selector is not None and not selector.matches(dict(labels)):
        errors += _err(p.child("metadata").child("labels"),
                       "`selector` does not match template `labels`")
    errors += validate_pod_spec(template.spec, p.child("spec"))
    restart_policy = template.spec.restart_policy
    if restart_policy in RESTART_POLICIES:  # an unknown one is reported by the spec rules
        errors += validation.one_of(p.child("spec", "restartPolicy"), restart_policy,
                                    ("Always",))
    if template.spec.HasField("active_deadline_seconds"):
        errors += _err(p.child("spec").child("activeDeadlineSeconds"),
                       f"activeDeadlineSeconds in {owner} is not Supported")
    return errors


# ---- updates ----

def validate_pod_update(new: core_pb2.PodSpec, old: core_pb2.PodSpec) -> list[FieldError]:
    """Kubernetes' pod update rules: only images, deadlines and added tolerations change.

    ``spec.nodeName`` may be set once (from empty) but never changed afterwards.
    """
    spec = Path("spec")
    errors: list[FieldError] = []
    if old.node_name and new.node_name != old.node_name:
        errors += _err(spec.child("nodeName"), "field is immutable")
    errors += _validate_deadline_update(new, old)
    errors += _validate_added_tolerations(new.tolerations, old.tolerations)
    if _without_mutable_fields(new, old) != old:
        errors += _err(spec, UPDATE_FORBIDDEN)
    return errors


def _without_mutable_fields(new: core_pb2.PodSpec, old: core_pb2.PodSpec) -> core_pb2.PodSpec:
    """``new`` with every field an update may change put back to its ``old`` value."""
    munged = core_pb2.PodSpec()
    munged.CopyFrom(new)
    for group in ("containers", "init_containers"):
        new_list, old_list = getattr(munged, group), getattr(old, group)
        if len(new_list) == len(old_list):
            for container, previous in zip(new_list, old_list, strict=True):
                container.image = previous.image
    for field in ("active_deadline_seconds", "termination_grace_period_seconds"):
        _copy_optional(munged, old, field)
    del munged.tolerations[:]
    munged.tolerations.extend(old.tolerations)
    munged.node_name = old.node_name  # set once from empty; a change is reported apart
    return munged


def _copy_optional(target: Message, source: Message, field: str) -> None:
    if source.HasField(field):
        setattr(target, field, getattr(source, field))
    else:
        target.ClearField(field)


def _validate_deadline_update(new: core_pb2.PodSpec, old: core_pb2.PodSpec) -> list[FieldError]:
    field = Path("spec").child("activeDeadlineSeconds")
    if not old.HasField("active_deadline_seconds"):
        return []
    if not new.HasField("active_deadline_seconds"):
        return _err(field, "must not update from a positive integer to nil value")
    if new.active_deadline_seconds > old.active_deadline_seconds:
        return _err(field, "must be less than or equal to previous value")
    return []


def _validate_added_tolerations(new: Iterable[core_pb2.Toleration],
                                old: Iterable[core_pb2.Toleration]) -> list[FieldError]:
    """Every old toleration must still be there; only its tolerationSeconds may change."""
    candidates = [_without_seconds(t) for t in new]
    for toleration in old:
        if _without_seconds(toleration) not in candidates:
            return _err(Path("spec").child("tolerations"),
                        "existing toleration can not be modified except its tolerationSeconds")
    return []


def _without_seconds(toleration: core_pb2.Toleration) -> core_pb2.Toleration:
    copy = core_pb2.Toleration()
    copy.CopyFrom(toleration)
    copy.ClearField("toleration_seconds")
    return copy


# ---- the strategy ----

class PodStrategy(Strategy):
    """Pods: defaults, status Pending with its QoS class on create, Kubernetes' rules."""

    def default(self, obj: Message) -> None:
        spec = obj.spec  # type: ignore[attr-defined]
        default_pod_spec(spec)
        default_requests_from_limits(spec)
        if not spec.HasField("priority"):
            spec.priority = 0
        # The ServiceAccount admission's default (pods only, not templates).
        spec.service_account_name = spec.service_account_name or DEFAULT_SERVICE_ACCOUNT

    def prepare_for_create(self, obj: Message) -> None:
        super().prepare_for_create(obj)
        obj.status.phase = "Pending"  # type: ignore[attr-defined]
        obj.status.qos_class = qos_class(obj.spec)  # type: ignore[attr-defined]

    def validate(self, obj: Message) -> list[FieldError]:
        return validate_pod_spec(obj.spec, "spec")  # type: ignore[attr-defined]

    def validate_update(self, new: Message, old: Message) -> list[FieldError]:
        return validate_pod_update(new.spec, old.spec)  # type: ignore[attr-defined]
