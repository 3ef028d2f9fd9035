"""Pods' binding subresource: the scheduler's decision, written once.

Kubernetes' ``BindingREST``: a Binding names a pod and a node; the pod's spec.nodeName
is set, and its PodScheduled condition made True, in a write conditional on the pod's
version, so two schedulers (or two tries of one) can never both bind it. A pod that
is bound already or being deleted is refused with ``Conflict`` (ABORTED).
"""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from services.apiserver.registry import MAX_ATTEMPTS, Registry
from services.apiserver.storage_types import decode, encode
from skiff.api import errors
from skiff.api.errors import FieldError
from skiff.api.v1 import core_pb2


def validate_binding(binding: core_pb2.Binding) -> list[FieldError]:
    """Errors in a Binding request (pure)."""
    problems = []
    if not binding.metadata.name:
        problems.append(FieldError("metadata.name", "required"))
    if not binding.target.name:
        problems.append(FieldError("target.name", "required"))
    if binding.target.kind not in ("", "Node"):
        problems.append(FieldError(
            "target.kind", f'Unsupported value: "{binding.target.kind}": supported values: '
                           '"Node"'))
    return problems


def assign(pod: core_pb2.Pod, node: str, now: Timestamp) -> None:
    """Bind ``pod`` to ``node``, or raise Conflict if it cannot be (pure)."""
    name = pod.metadata.name
    if pod.metadata.HasField("deletion_timestamp"):
        raise errors.Conflict(f'Operation cannot be fulfilled on pods/binding "{name}": '
                              f"pod {name} is being deleted, cannot be assigned to a host")
    if pod.spec.node_name:
        raise errors.Conflict(f'Operation cannot be fulfilled on pods/binding "{name}": '
                              f'pod {name} is already assigned to node "{pod.spec.node_name}"')
    pod.spec.node_name = node
    for condition in pod.status.conditions:
        if condition.type == "PodScheduled":
            break
    else:
        condition = pod.status.conditions.add(type="PodScheduled")
    if condition.status != "True":
        condition.status = "True"
        condition.last_transition_time.CopyFrom(now)
    condition.reason, condition.message = "", ""


async def bind(registry: Registry, binding: core_pb2.Binding) -> core_pb2.Binding:
    """Set the pod's node; returns the binding with the pod's new resource_version."""
    problems = validate_binding(binding)
    if problems:
        raise errors.Invalid("Binding", binding.metadata.name, problems)
    namespace = binding.metadata.namespace or "default"
    key = registry.key(namespace, binding.metadata.name)
    for attempt in range(MAX_ATTEMPTS):
        # First from the watch cache (the pod the scheduler just saw is there): the
        # write's compare on its mod_revision verifies it, saving a store read per
        # bind. A stale copy, or one that says no, is looked at again in the store.
        cached = registry._cached(key) if attempt == 0 else None
        if cached is not None:
            mod_revision, found = cached
            pod = core_pb2.Pod()
            pod.CopyFrom(found)  # the cache's copy is shared: never change it
        else:
            stored = await registry.storage.get(key)
            if stored is None:
                raise errors.NotFound(f'pods "{binding.metadata.name}" not found')
            mod_revision = stored.mod_revision
            pod = decode(registry.kind, stored.value, mod_revision)  # type: ignore[assignment]
        try:
            if binding.metadata.uid and binding.metadata.uid != pod.metadata.uid:
                raise errors.Conflict(f"Precondition failed: UID in precondition: "
                                      f"{binding.metadata.uid}, UID in object meta: "
                                      f"{pod.metadata.uid}")
            now = Timestamp()
            now.FromSeconds(int(registry.clock()))
            assign(pod, binding.target.name, now)
        except errors.Conflict:
            if cached is not None:
                continue  # the cache may be behind: the store decides
            raise
        try:
            revision = await registry.storage.update(key, encode(pod), mod_revision=mod_revision)
        except errors.Conflict:
            continue  # the pod changed (its status, say): look again
        result = core_pb2.Binding()
        result.CopyFrom(binding)
        result.api_version, result.kind = "v1", "Binding"
        result.metadata.namespace = namespace
        result.metadata.uid = pod.metadata.uid
        result.metadata.resource_version = str(revision)
        return result
    raise errors.Conflict(f'Operation cannot be fulfilled on pods/binding '
                          f'"{binding.metadata.name}": too many concurrent changes')
