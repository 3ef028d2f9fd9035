"""The kinds Skiff serves, in one table: names, scope, messages and gRPC service.

Everything that needs to know "what is a Pod" (the apiserver's registries, the client,
skiffctl, manifests) looks it up here, by kind (``Pod``), plural (``pods``), singular
or short name (``po``), so the list of kinds is written once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from skiff.api.v1 import apps_pb2, coordination_pb2, core_pb2, services_pb2, services_pb2_grpc


@dataclass(frozen=True)
class Kind:
    """One kind: its names, its API group version and its protobuf types."""

    kind: str
    plural: str
    api_version: str
    namespaced: bool
    has_status: bool
    message: type[Message]
    list_message: type[Message]
    watch_event: type[Message]
    short_names: tuple[str, ...] = ()

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def service(self) -> str:
        """The gRPC service's full name, ``skiff.api.v1.Pods``."""
        return f"skiff.api.v1.{self.service_name}"

    @property
    def service_name(self) -> str:
        return self.kind if self.kind == "Endpoints" else f"{self.kind}s"

    @property
    def group(self) -> str:
        """The API group ("" for core, ``apps``, ``coordination.k8s.io``)."""
        return self.api_version.rpartition("/")[0]

    def stub(self, channel: Any) -> Any:
        """A client stub of this kind's service on ``channel``."""
        return getattr(services_pb2_grpc, f"{self.service_name}Stub")(channel)

    def add_servicer(self, servicer: Any, server: Any) -> None:
        """Register ``servicer`` (with this kind's methods) on a grpc server."""
        getattr(services_pb2_grpc, f"add_{self.service_name}Servicer_to_server")(servicer, server)

    def new(self, **fields: Any) -> Message:
        """An empty object of this kind with apiVersion and kind filled in."""
        return self.message(api_version=self.api_version, kind=self.kind, **fields)


def _kind(kind: str, message: type[Message], *, api_version: str = "v1", namespaced: bool = True,
          has_status: bool = True, short: tuple[str, ...] = (), plural: str | None = None) -> Kind:
    list_name = f"{kind}List"
    return Kind(kind=kind, plural=plural or f"{kind.lower()}s", api_version=api_version,
                namespaced=namespaced, has_status=has_status, message=message,
                list_message=getattr(services_pb2, list_name),
                watch_event=getattr(services_pb2, f"{kind}WatchEvent"), short_names=short)


KINDS: tuple[Kind, ...] = (
    _kind("Namespace", core_pb2.Namespace, namespaced=False, short=("ns",)),
    _kind("Pod", core_pb2.Pod, short=("po",)),
    _kind("Node", core_pb2.Node, namespaced=False, short=("no",)),
    _kind("Service", core_pb2.Service, short=("svc",)),
    _kind("Endpoints", core_pb2.EndpointsObject, has_status=False, short=("ep",),
          plural="endpoints"),
    _kind("ReplicationController", core_pb2.ReplicationController, short=("rc",)),
    _kind("ReplicaSet", apps_pb2.ReplicaSet, api_version="apps/v1", short=("rs",)),
    _kind("Deployment", apps_pb2.Deployment, api_version="apps/v1", short=("deploy",)),
    _kind("Event", core_pb2.Event, has_status=False, short=("ev",)),
    _kind("Lease", coordination_pb2.Lease, api_version="coordination.k8s.io/v1",
          has_status=False),
    _kind("ConfigMap", core_pb2.ConfigMap, has_status=False, short=("cm",)),
    _kind("Secret", core_pb2.Secret, has_status=False),
    _kind("ServiceAccount", core_pb2.ServiceAccount, has_status=False, short=("sa",)),
)

_BY_NAME: dict[str, Kind] = {}
for _k in KINDS:
    for _name in (_k.kind.lower(), _k.plural, _k.singular, *_k.short_names):
        _BY_NAME[_name] = _k


class UnknownKind(LookupError):
    """A name that is no kind Skiff serves."""


def lookup(name: str) -> Kind:
    """The kind called ``name``: ``Pod``, ``pods``, ``pod`` or ``po`` (any case)."""
    try:
        return _BY_NAME[name.lower()]
    except KeyError:
        raise UnknownKind(f'the server doesn\'t have a resource type "{name}"') from None


def for_message(message: Message | type[Message]) -> Kind:
    """The kind whose object is ``message`` (an instance or its class)."""
    cls = message if isinstance(message, type) else type(message)
    for kind in KINDS:
        if kind.message is cls:
            return kind
    raise UnknownKind(f"{cls.__name__} is not a kind")
