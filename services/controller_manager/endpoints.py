"""The endpoints controller: an Endpoints object per Service, listing its pods' addresses.

Kubernetes' ``pkg/controller/endpoint``. Reconciles: for every Service with a selector,
the Endpoints object of the same name and namespace. Watches services, pods and
endpoints (through shared informers).

- An address is a pod in the service's namespace whose labels match the selector,
  that has an IP (status.podIP) and is not terminating (no deletionTimestamp) nor
  finished. Ready (condition Ready True) pods go to ``addresses``, the others to
  ``not_ready_addresses``; with ``publishNotReadyAddresses`` all go to ``addresses``.
- A service port's named target port is resolved per pod against its containers'
  ports; a pod without that name is left out of that port. Pods are grouped into
  subsets by the set of ports they resolved (Kubernetes' ``RepackSubsets``), and
  everything is sorted, so equal inputs give equal objects.
- Invariants: the Endpoints is written only when its subsets or labels differ from
  the cached one; it is deleted with its Service; a Service without a selector is
  left alone (its Endpoints are the user's: the cluster DNS's instances register in
  ``kube-system/kube-dns``'s), and so is an ExternalName Service (an alias has no
  endpoints; Kubernetes skips it too).

Handlers only enqueue service keys: a pod change enqueues every service of its
namespace whose selector matches the pod's old or new labels. :func:`desired_subsets`
is the pure plan. Neighbours: :mod:`services.controller_manager.replication` (same
shape), the proxy (the reader of these objects).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from google.protobuf.message import Message

from skiff.api import errors
from skiff.api.labels import selector_from_map
from skiff.api.v1 import core_pb2, meta_pb2
from skiff.client.client import Client
from skiff.client.controller import Controller
from skiff.client.events import EventRecorder
from skiff.client.informer import SharedInformerFactory
from skiff.client.store import key_of, split_key

EXTERNAL_NAME = "ExternalName"
#: A pod's resolved ports: (name, port, protocol) per service port it serves.
PortSet = tuple[tuple[str, int, str], ...]

__all__ = ["EndpointsController", "desired_subsets", "manages_endpoints", "pod_ready",
           "resolve_target_port"]


# ----------------------------------------------------------------- pure planning


def pod_ready(pod: core_pb2.Pod) -> bool:
    """Whether the pod's Ready condition is True (pure)."""
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions)


def serves(pod: core_pb2.Pod) -> bool:
    """Whether a pod can be an endpoint at all: it has an IP and is not going (pure)."""
    return (bool(pod.status.pod_ip) and not pod.metadata.HasField("deletion_timestamp")
            and pod.status.phase not in ("Succeeded", "Failed"))


def resolve_target_port(port: core_pb2.ServicePort, pod: core_pb2.Pod) -> int | None:
    """The pod's port number for a service port, or None when a named target port is
    not among the pod's container ports (Kubernetes' ``FindPort``; pure)."""
    target = port.target_port
    protocol = port.protocol or "TCP"
    if target.type == meta_pb2.IntOrString.STRING and target.str_val:
        for container in pod.spec.containers:
            for cp in container.ports:
                if cp.name == target.str_val and (cp.protocol or "TCP") == protocol:
                    return cp.container_port
        return None
    return target.int_val or port.port


def _port_set(service: core_pb2.Service, pod: core_pb2.Pod) -> PortSet | None:
    """The ports the pod serves for the service; None if it serves none of them."""
    if not service.spec.ports:
        return ()  # a headless service without ports lists addresses only
    resolved = []
    for port in service.spec.ports:
        number = resolve_target_port(port, pod)
        if number is not None:
            resolved.append((port.name, number, port.protocol or "TCP"))
    return tuple(sorted(resolved)) if resolved else None


def _address(service: core_pb2.Service, pod: core_pb2.Pod) -> core_pb2.EndpointAddress:
    md = pod.metadata
    address = core_pb2.EndpointAddress(
        ip=pod.status.pod_ip,
        target_ref=meta_pb2.ObjectReference(kind="Pod", name=md.name, namespace=md.namespace,
                                            uid=md.uid))
    if pod.spec.node_name:
        address.node_name = pod.spec.node_name
    # As Kubernetes: a pod's hostname is published when it names this service as its
    # subdomain (DNS records for headless services).
    if pod.spec.hostname and pod.spec.subdomain == service.metadata.name:
        address.hostname = pod.spec.hostname
    return address


def _address_order(address: core_pb2.EndpointAddress) -> tuple[str, str]:
    return address.ip, address.target_ref.uid


def desired_subsets(service: core_pb2.Service,
                    pods: Iterable[core_pb2.Pod]) -> list[core_pb2.EndpointSubset]:
    """The subsets the service's Endpoints should have, given the pods its selector
    matches (pure; deterministic: sorted subsets, addresses and ports)."""
    groups: dict[PortSet, tuple[list[Any], list[Any]]] = {}
    publish_all = service.spec.publish_not_ready_addresses
    for pod in pods:
        if not serves(pod):
            continue
        ports = _port_set(service, pod)
        if ports is None:
            continue
        ready, not_ready = groups.setdefault(ports, ([], []))
        (ready if publish_all or pod_ready(pod) else not_ready).append(_address(service, pod))
    subsets = []
    for ports in sorted(groups):
        ready, not_ready = groups[ports]
        subsets.append(core_pb2.EndpointSubset(
            addresses=sorted(ready, key=_address_order),
            not_ready_addresses=sorted(not_ready, key=_address_order),
            ports=[core_pb2.EndpointPort(name=n, port=p, protocol=proto)
                   for n, p, proto in ports]))
    return subsets


def manages_endpoints(service: core_pb2.Service) -> bool:
    """Whether this controller writes the Service's Endpoints: it has a selector and is
    no ExternalName alias (pure)."""
    return bool(service.spec.selector) and service.spec.type != EXTERNAL_NAME


def endpoints_changed(current: core_pb2.EndpointsObject | None, service: core_pb2.Service,
                      subsets: list[core_pb2.EndpointSubset]) -> bool:
    """Whether the stored Endpoints differ from what the service asks for (pure)."""
    if current is None:
        return True
    return (list(current.subsets) != subsets
            or dict(current.metadata.labels) != dict(service.metadata.labels))


# -------------------------------------------------------------------- controller


class EndpointsController(Controller):
    """Keeps each selector Service's Endpoints equal to :func:`desired_subsets`."""

    def __init__(self, client: Client, factory: SharedInformerFactory,
                 recorder: EventRecorder, config: Any) -> None:
        super().__init__("endpoints", workers=max(1, int(config.concurrent_syncs)))
        self.client = client
        self.recorder = recorder
        self.services = factory.informer("services")
        self.pods = factory.informer("pods")
        self.endpoints = factory.informer("endpoints")
        self.services.add_handler(self.enqueue, lambda old, new: self.enqueue(new),
                                  self.enqueue, name="endpoints-controller")
        self.pods.add_handler(self.on_pod_add, self.on_pod_update, self.on_pod_add,
                              name="endpoints-controller")
        # Someone else's change to an Endpoints (or its deletion) is put right.
        self.endpoints.add_handler(None, lambda old, new: self.enqueue(new), self.enqueue,
                                   name="endpoints-controller")
        self.wait_for(self.services, self.pods, self.endpoints)

    # ------------------------------------------------------------ handlers

    def on_pod_add(self, pod: Message) -> None:
        """A pod came or went: sync the services that select it."""
        self._enqueue_selecting(pod.metadata.namespace, [dict(pod.metadata.labels)])  # type: ignore[attr-defined]

    def on_pod_update(self, old: Message, new: Message) -> None:
        """A pod changed: sync the services that selected it before or select it now."""
        self._enqueue_selecting(new.metadata.namespace,  # type: ignore[attr-defined]
                                [dict(old.metadata.labels), dict(new.metadata.labels)])  # type: ignore[attr-defined]

    def _enqueue_selecting(self, namespace: str, label_sets: list[dict[str, str]]) -> None:
        for service in self.services.store.by_index("namespace", namespace):
            selector = service.spec.selector  # type: ignore[attr-defined]
            if not selector:
                continue
            matcher = selector_from_map(selector)
            if any(matcher.matches(labels) for labels in label_sets):
                self.enqueue(service)

    # ---------------------------------------------------------------- sync

    async def sync(self, key: str) -> None:
        """Create, update or delete the Endpoints of service ``key``."""
        namespace, name = split_key(key)
        service = self.services.store.get(key)
        if service is None:
            await self._delete(namespace, name)
            return
        if not manages_endpoints(service):  # type: ignore[arg-type]
            return
        selector = selector_from_map(service.spec.selector)  # type: ignore[attr-defined]
        pods = [p for p in self.pods.store.by_index("namespace", namespace)
                if selector.matches(p.metadata.labels)]  # type: ignore[attr-defined]
        subsets = desired_subsets(service, pods)  # type: ignore[arg-type]
        current = self.endpoints.store.get(key)
        if not endpoints_changed(current, service, subsets):  # type: ignore[arg-type]
            return
        await self._write(service, current, subsets)  # type: ignore[arg-type]

    async def _delete(self, namespace: str, name: str) -> None:
        try:
            await self.client.endpoints.delete(name, namespace)
        except errors.NotFound:
            return  # never made, or gone already: what we want
        self._log.info("deleted endpoints of a deleted service", key=f"{namespace}/{name}")

    async def _write(self, service: core_pb2.Service, current: core_pb2.EndpointsObject | None,
                     subsets: list[core_pb2.EndpointSubset]) -> None:
        """Create or update (on the cached version: a stale cache is a Conflict, retried)."""
        endpoints = core_pb2.EndpointsObject()
        if current is not None:
            endpoints.CopyFrom(current)
        else:
            endpoints.metadata.name = service.metadata.name
            endpoints.metadata.namespace = service.metadata.namespace
        endpoints.api_version, endpoints.kind = "v1", "Endpoints"
        endpoints.metadata.labels.clear()
        endpoints.metadata.labels.update(service.metadata.labels)
        del endpoints.subsets[:]
        endpoints.subsets.extend(subsets)
        if current is None:
            await self.client.endpoints.create(endpoints)
        else:
            await self.client.endpoints.update(endpoints)
        self._log.debug("endpoints written", key=key_of(service),
                        subsets=len(subsets), created=current is None)
