"""DefaultTolerationSeconds: pods tolerate a not-ready or unreachable node for 300 s.

Kubernetes' plugin of that name: unless a pod says otherwise, it gets NoExecute
tolerations for ``node.kubernetes.io/not-ready`` and ``node.kubernetes.io/unreachable``
with tolerationSeconds 300, so the node lifecycle controller evicts it five minutes
after its node goes silent, not at once. The two durations are the apiserver's
``--default-not-ready-toleration-seconds`` and ``--default-unreachable-toleration-seconds``
(kube-apiserver's flags), which a local cluster shortens to see node failures quickly.
"""

from __future__ import annotations

from services.apiserver.admission import CREATE, Attributes
from skiff.api.v1 import core_pb2

NOT_READY = "node.kubernetes.io/not-ready"
UNREACHABLE = "node.kubernetes.io/unreachable"
NO_EXECUTE = "NoExecute"
DEFAULT_SECONDS = 300


def tolerates(tolerations: list[core_pb2.Toleration], key: str) -> bool:
    """Whether some toleration already covers ``key``'s NoExecute taint (pure)."""
    for t in tolerations:
        if t.effect not in ("", NO_EXECUTE):
            continue
        if (t.operator == "Exists" and t.key in ("", key)) or t.key == key:
            return True
    return False


def add_default_tolerations(pod: core_pb2.Pod, seconds: int = DEFAULT_SECONDS, *,
                            unreachable_seconds: int | None = None) -> None:
    """Add the two default tolerations a pod lacks (pure: changes only ``pod``):
    not-ready for ``seconds``, unreachable for ``unreachable_seconds`` (else ``seconds``)."""
    durations = {NOT_READY: seconds,
                 UNREACHABLE: seconds if unreachable_seconds is None else unreachable_seconds}
    for key, duration in durations.items():
        if not tolerates(list(pod.spec.tolerations), key):
            pod.spec.tolerations.add(key=key, operator="Exists", effect=NO_EXECUTE,
                                     toleration_seconds=duration)


class DefaultTolerationSeconds:
    """The admission plugin: both tolerations on every pod created without them."""

    name = "DefaultTolerationSeconds"

    def __init__(self, seconds: int = DEFAULT_SECONDS, *,
                 unreachable_seconds: int | None = None) -> None:
        self.seconds = seconds
        self.unreachable_seconds = seconds if unreachable_seconds is None else unreachable_seconds

    async def admit(self, attrs: Attributes) -> None:
        if attrs.operation == CREATE and attrs.kind.kind == "Pod":
            add_default_tolerations(attrs.obj, self.seconds,  # type: ignore[arg-type]
                                    unreachable_seconds=self.unreachable_seconds)
