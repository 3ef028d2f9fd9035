"""Service environment variables, named as Kubernetes names them (pure).

Kubernetes' ``pkg/kubelet/envvars`` and the kubelet's choice of Services:

- which Services: those of the pod's namespace, unless the pod says
  ``enableServiceLinks: false``, and the master service ``kubernetes`` of ``default``
  always (a Service of that name in the pod's own namespace takes its place). Only
  Services with a cluster IP count: headless ones (``None``) and those without one
  (ExternalName) give nothing.
- what each gives, for a Service ``foo-bar`` (upper-cased, ``-`` made ``_``):
  ``FOO_BAR_SERVICE_HOST`` (the cluster IP), ``FOO_BAR_SERVICE_PORT`` (the first port),
  ``FOO_BAR_SERVICE_PORT_<NAME>`` per named port, and Docker's link variables:
  ``FOO_BAR_PORT=tcp://ip:port`` (the first port) and, per port,
  ``FOO_BAR_PORT_<port>_<PROTO>`` (the same URL) with ``_PROTO``, ``_PORT``, ``_ADDR``.

A variable the container's own ``env`` sets wins over a Service's of the same name
(:func:`container_env`: Kubernetes adds a Service variable only where the container
did not set one).
"""

from __future__ import annotations

from collections.abc import Iterable

from services.kubelet import env_sources
from skiff.api.v1 import core_pb2

#: The Services whose variables every pod gets, from the ``default`` namespace.
MASTER_SERVICES = ("kubernetes",)
MASTER_NAMESPACE = "default"


def has_cluster_ip(service: core_pb2.Service) -> bool:
    """Whether the Service has a virtual IP (not headless, not ExternalName)."""
    return service.spec.cluster_ip not in ("", "None")


def env_name(name: str) -> str:
    """A Service or port name as a variable name part: ``foo-bar`` -> ``FOO_BAR``."""
    return name.replace("-", "_").upper()


def services_for_pod(pod: core_pb2.Pod, services: Iterable[core_pb2.Service]
                     ) -> list[core_pb2.Service]:
    """The Services whose variables ``pod`` gets (see the module), by name."""
    namespace = pod.metadata.namespace
    links = not pod.spec.HasField("enable_service_links") or pod.spec.enable_service_links
    chosen: dict[str, core_pb2.Service] = {}
    for service in services:
        if not has_cluster_ip(service):
            continue
        md = service.metadata
        if md.namespace == namespace and links:
            chosen[md.name] = service  # the pod's namespace wins over the master service
        elif md.namespace == MASTER_NAMESPACE and md.name in MASTER_SERVICES:
            chosen.setdefault(md.name, service)
    return [chosen[name] for name in sorted(chosen)]


def service_env(services: Iterable[core_pb2.Service]) -> list[tuple[str, str]]:
    """The variables of ``services``, in order (Kubernetes' ``FromServices``)."""
    result: list[tuple[str, str]] = []
    for service in services:
        if not has_cluster_ip(service) or not service.spec.ports:
            continue
        prefix = env_name(service.metadata.name)
        ip = service.spec.cluster_ip
        ports = service.spec.ports
        result.append((f"{prefix}_SERVICE_HOST", ip))
        result.append((f"{prefix}_SERVICE_PORT", str(ports[0].port)))
        result += [(f"{prefix}_SERVICE_PORT_{env_name(p.name)}", str(p.port))
                   for p in ports if p.name]
        result += _link_variables(prefix, ip, ports)
    return result


def _link_variables(prefix: str, ip: str, ports: Iterable[core_pb2.ServicePort]
                    ) -> list[tuple[str, str]]:
    """Docker's link variables for one Service."""
    host = f"[{ip}]" if ":" in ip else ip  # an IPv6 address in a URL
    result: list[tuple[str, str]] = []
    for i, port in enumerate(ports):
        protocol = port.protocol or "TCP"
        url = f"{protocol.lower()}://{host}:{port.port}"
        if i == 0:
            result.append((f"{prefix}_PORT", url))  # Docker names the first port alone
        each = f"{prefix}_PORT_{port.port}_{protocol.upper()}"
        result += [(each, url), (f"{each}_PROTO", protocol.lower()),
                   (f"{each}_PORT", str(port.port)), (f"{each}_ADDR", ip)]
    return result


def container_env(pod: core_pb2.Pod, container: core_pb2.Container,
                  services: Iterable[core_pb2.Service],
                  sources: env_sources.Sources | None = None) -> list[str]:
    """Docker's ``Env`` for ``container``: the pod's Service variables the container does
    not set itself, then the container's own (envFrom, env with valueFrom and $(VAR):
    :func:`~services.kubelet.env_sources.resolve_env`, which may raise ConfigError)."""
    return [f"{name}={value}" for name, value
            in resolved_env(pod, container, services, sources)]


def resolved_env(pod: core_pb2.Pod, container: core_pb2.Container,
                 services: Iterable[core_pb2.Service],
                 sources: env_sources.Sources | None = None) -> list[tuple[str, str]]:
    """:func:`container_env` as (name, value) pairs."""
    links = service_env(services_for_pod(pod, services))
    return env_sources.resolve_env(pod, container, links, sources or _NO_SOURCES)


#: No ConfigMaps or Secrets at all (callers that have none to offer).
_NO_SOURCES = env_sources.Sources(config_map=lambda ns, name: None,
                                  secret=lambda ns, name: None)
