"""One :class:`~services.apiserver.strategy.Strategy` per kind, keyed by kind name.

``STRATEGIES["Pod"]`` is what the registry calls to default, prepare and validate a
Pod. The table is built from ``skiff.api.kinds.KINDS``, so every kind has an entry: a
kind without a module of its own here gets the base ``Strategy`` (no spec rules,
status reset on create and kept on update). Each module is one kind's rules, written
as pure functions with a thin ``Strategy`` subclass on top.
"""

from __future__ import annotations

from services.apiserver.strategies.config_map import ConfigMapStrategy
from services.apiserver.strategies.deployment import DeploymentStrategy
from services.apiserver.strategies.endpoints import EndpointsStrategy
from services.apiserver.strategies.event import EventStrategy
from services.apiserver.strategies.lease import LeaseStrategy
from services.apiserver.strategies.namespace import NamespaceStrategy
from services.apiserver.strategies.node import NodeStrategy
from services.apiserver.strategies.pod import PodStrategy
from services.apiserver.strategies.replica_set import ReplicaSetStrategy
from services.apiserver.strategies.replication_controller import ReplicationControllerStrategy
from services.apiserver.strategies.secret import SecretStrategy
from services.apiserver.strategies.service import ServiceStrategy
from services.apiserver.strategies.service_account import ServiceAccountStrategy
from services.apiserver.strategy import Strategy
from skiff.api.kinds import KINDS

_CLASSES: dict[str, type[Strategy]] = {
    "Namespace": NamespaceStrategy,
    "Pod": PodStrategy,
    "Node": NodeStrategy,
    "Service": ServiceStrategy,
    "Endpoints": EndpointsStrategy,
    "ReplicationController": ReplicationControllerStrategy,
    "ReplicaSet": ReplicaSetStrategy,
    "Deployment": DeploymentStrategy,
    "Event": EventStrategy,
    "Lease": LeaseStrategy,
    "ConfigMap": ConfigMapStrategy,
    "Secret": SecretStrategy,
    "ServiceAccount": ServiceAccountStrategy,
}

STRATEGIES: dict[str, Strategy] = {
    kind.kind: _CLASSES.get(kind.kind, Strategy)(kind) for kind in KINDS
}

__all__ = ["STRATEGIES"]
