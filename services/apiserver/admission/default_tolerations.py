"""DefaultTolerationSeconds: pods tolerate a not-ready or unreachable node for 300 s.

Kubernetes' plugin of that name: unless a pod says otherwise, it gets NoExecute
tolerations for ``node.kubernetes.io/not-ready`` and ``node.kubernetes.io/unreachable``
with tolerationSeconds 300, so the node lifecycle controller evicts it five minutes
after its node goes silent, not at once.
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


def add_default_tolerations(pod: core_pb2.Pod, seconds: int = DEFAULT_SECONDS) -> None:
    """Add the two default tolerations a pod lacks (pure: changes only ``pod``)."""
    for key in (NOT_READY, UNREACHABLE):
        if not tolerates(list(pod.spec.tolerations), key):
            pod.spec.tolerations.add(key=key, operator="Exists", effect=NO_EXECUTE,
                                     toleration_seconds=seconds)


class DefaultTolerationSeconds:
    name = "DefaultTolerationSeconds"

    def __init__(self, seconds: int = DEFAULT_SECONDS) -> None:
        self.seconds = seconds

    async def admit(self, attrs: Attributes) -> None:
        if attrs.operation == CREATE and attrs.kind.kind == "Pod":
            add_default_tolerations(attrs.obj, self.seconds)  # type: ignore[arg-type]
