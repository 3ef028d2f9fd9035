"""A container's environment as Kubernetes' kubelet builds it (pure).

Kubernetes' ``makeEnvironmentVariables`` and ``third_party/forked/golang/expansion``:

1. ``envFrom``, in order: every key of the ConfigMap or Secret, with the prefix (keys
   that are not valid variable names are skipped, as Kubernetes does);
2. ``env``, in order: a ``value`` with ``$(NAME)`` expanded against the variables so
   far and the Service variables (``$$`` is a literal ``$``; an unknown ``$(NAME)``
   stays as written), or a ``valueFrom``: a ConfigMap or Secret key, a pod field
   (``fieldRef``) or a container resource (``resourceFieldRef``);
3. the Service variables the container did not set.

``command`` and ``args`` are expanded against the result (:func:`expand_command`).
A missing ConfigMap, Secret or key that is not ``optional`` raises
:class:`ConfigError`, whose message the container's waiting state shows with reason
``CreateContainerConfigError``; an optional one is skipped.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from skiff.api.downward import SUBSCRIPTED_PATH
from skiff.api.quantity import parse_quantity
from skiff.api.v1 import core_pb2

CREATE_CONTAINER_CONFIG_ERROR = "CreateContainerConfigError"
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


class ConfigError(Exception):
    """A reference the container needs and cannot have (the waiting state's message)."""


@dataclass
class Sources:
    """The ConfigMaps and Secrets a pod's namespace has (a lookup, usually a cache)."""

    config_map: Callable[[str, str], core_pb2.ConfigMap | None]
    secret: Callable[[str, str], core_pb2.Secret | None]
    #: The node's allocatable resources: what an unset limit reads as.
    allocatable: Mapping[str, str] = field(default_factory=dict)


def expand(text: str, lookup: Callable[[str], str | None]) -> str:
    """``$(NAME)`` replaced by ``lookup(NAME)`` when known, ``$$`` by ``$`` (Kubernetes'
    expansion: anything else, unknown names included, is left as written)."""
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char != "$" or i + 1 >= len(text):
            out.append(char)
            i += 1
            continue
        following = text[i + 1]
        if following == "$":
            out.append("$")
            i += 2
        elif following == "(":
            end = text.find(")", i + 2)
            if end < 0:
                out.append(text[i:])
                break
            name = text[i + 2:end]
            value = lookup(name) if name else None
            out.append(value if value is not None else text[i:end + 1])
            i = end + 1
        else:
            out.append(char)
            i += 1
    return "".join(out)


def field_value(pod: core_pb2.Pod, path: str) -> str:
    """The pod field ``path`` names (``metadata.name``, ``metadata.labels['app']``)."""
    subscripted = SUBSCRIPTED_PATH.match(path)
    if subscripted:
        mapping = pod.metadata.labels if subscripted[1] == "labels" else pod.metadata.annotations
        return mapping.get(subscripted[2], "")
    values = {
        "metadata.name": pod.metadata.name,
        "metadata.namespace": pod.metadata.namespace,
        "metadata.uid": pod.metadata.uid,
        "spec.nodeName": pod.spec.node_name,
        "spec.serviceAccountName": pod.spec.service_account_name,
        "status.podIP": pod.status.pod_ip,
        "status.podIPs": ",".join(ip.ip for ip in pod.status.pod_ips) or pod.status.pod_ip,
        "status.hostIP": pod.status.host_ip,
        "status.hostIPs": pod.status.host_ip,
    }
    if path not in values:
        raise ConfigError(f"unsupported fieldPath: {path}")
    return values[path]


def resource_value(pod: core_pb2.Pod, container: core_pb2.Container,
                   ref: core_pb2.ResourceFieldSelector, allocatable: Mapping[str, str]) -> str:
    """A resource of the named container (this one by default), in divisor units rounded
    up; an unset limit is the node's allocatable (Kubernetes' rule)."""
    target = container
    if ref.container_name:
        target = next((c for c in (*pod.spec.init_containers, *pod.spec.containers)
                       if c.name == ref.container_name), container)
    kind, _, resource = ref.resource.partition(".")
    quantities = target.resources.limits if kind == "limits" else target.resources.requests
    text = quantities.get(resource) or (allocatable.get(resource) if kind == "limits" else "")
    if not text:
        return "0"
    divisor = parse_quantity(ref.divisor or "1")
    return str(math.ceil(parse_quantity(text) / divisor))


def _key_ref(ref: core_pb2.ConfigMapKeySelector | core_pb2.SecretKeySelector, namespace: str,
             sources: Sources) -> str | None:
    is_secret = isinstance(ref, core_pb2.SecretKeySelector)
    kind = "Secret" if is_secret else "ConfigMap"
    optional = ref.HasField("optional") and ref.optional
    obj = (sources.secret if is_secret else sources.config_map)(namespace, ref.name)
    if obj is None:
        if optional:
            return None
        raise ConfigError(f'{kind.lower()} "{ref.name}" not found')
    if ref.key in obj.data:
        value = obj.data[ref.key]
        return value.decode(errors="replace") if isinstance(value, bytes) else value
    if not is_secret and ref.key in obj.binary_data:  # type: ignore[union-attr]
        return obj.binary_data[ref.key].decode(errors="replace")  # type: ignore[union-attr]
    if optional:
        return None
    raise ConfigError(f"couldn't find key {ref.key} in {kind} {namespace}/{ref.name}")


def _env_from(source: core_pb2.EnvFromSource, namespace: str,
              sources: Sources) -> dict[str, str]:
    is_secret = source.HasField("secret_ref")
    ref = source.secret_ref if is_secret else source.config_map_ref
    obj = (sources.secret if is_secret else sources.config_map)(namespace, ref.name)
    if obj is None:
        if ref.HasField("optional") and ref.optional:
            return {}
        raise ConfigError(f'{"secret" if is_secret else "configmap"} "{ref.name}" not found')
    result: dict[str, str] = {}
    for key, value in sorted(obj.data.items()):
        name = source.prefix + key
        if _ENV_NAME.match(name):  # Kubernetes skips (and reports) invalid names
            result[name] = value.decode(errors="replace") if isinstance(value, bytes) else value
    return result


def resolve_env(pod: core_pb2.Pod, container: core_pb2.Container,
                service_env: Iterable[tuple[str, str]], sources: Sources) -> list[tuple[str, str]]:
    """The container's variables, in order (see the module); ConfigError if a required
    reference is missing."""
    namespace = pod.metadata.namespace
    services = dict(service_env)
    env: dict[str, str] = {}
    for source in container.env_from:
        env.update(_env_from(source, namespace, sources))

    def known(name: str) -> str | None:
        return env.get(name, services.get(name))

    for var in container.env:
        value: str | None = var.value
        if var.HasField("value_from"):
            value = _value_from(pod, container, var.value_from, sources)
            if value is None:
                continue  # an optional reference that is not there
        elif var.value:
            value = expand(var.value, known)
        env[var.name] = value or ""
    # The Service variables the container did not set come first (Docker's order
    # does not matter to a process, but the container's own then read last).
    return [(n, v) for n, v in services.items() if n not in env] + list(env.items())


def _value_from(pod: core_pb2.Pod, container: core_pb2.Container,
                source: core_pb2.EnvVarSource, sources: Sources) -> str | None:
    if source.HasField("config_map_key_ref"):
        return _key_ref(source.config_map_key_ref, pod.metadata.namespace, sources)
    if source.HasField("secret_key_ref"):
        return _key_ref(source.secret_key_ref, pod.metadata.namespace, sources)
    if source.HasField("field_ref"):
        return field_value(pod, source.field_ref.field_path)
    if source.HasField("resource_field_ref"):
        return resource_value(pod, container, source.resource_field_ref, sources.allocatable)
    return ""


def expand_command(container: core_pb2.Container,
                   env: Iterable[tuple[str, str]]) -> tuple[list[str], list[str]]:
    """``command`` and ``args`` with ``$(NAME)`` expanded against the final ``env``."""
    values = dict(env)
    return ([expand(c, values.get) for c in container.command],
            [expand(a, values.get) for a in container.args])
