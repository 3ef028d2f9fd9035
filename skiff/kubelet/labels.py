"""The labels the kubelet puts on every Docker container it makes: the contract between
the kubelet's parts (sync loop, probes, garbage collection, its API) and between a
kubelet and the one that restarts after it, which adopts containers by these labels.

Names follow the Kubernetes kubelet's dockershim (``io.kubernetes.pod.uid`` ...), so a
user who has read ``docker ps`` on a Kubernetes node finds their way.
"""

from __future__ import annotations

from collections.abc import Mapping

POD_UID = "io.kubernetes.pod.uid"
POD_NAMESPACE = "io.kubernetes.pod.namespace"
POD_NAME = "io.kubernetes.pod.name"
CONTAINER_NAME = "io.kubernetes.container.name"
#: "podsandbox" for the pause container holding the pod's network, "container" otherwise.
CONTAINER_TYPE = "io.kubernetes.docker.type"
#: How many times this container of the pod was started before (0 for the first).
RESTART_COUNT = "io.kubernetes.container.restartCount"
NODE = "skiff.node"

SANDBOX = "podsandbox"
CONTAINER = "container"
#: The container name given to sandboxes in CONTAINER_NAME (Kubernetes shows "POD").
SANDBOX_NAME = "POD"


def node_filter(node: str) -> dict[str, list[str]]:
    """Docker's ``filters`` for every container this node's kubelet made."""
    return {"label": [f"{NODE}={node}"]}


def pod_filter(node: str, uid: str) -> dict[str, list[str]]:
    """Docker's ``filters`` for the containers (sandbox included) of one pod."""
    return {"label": [f"{NODE}={node}", f"{POD_UID}={uid}"]}


def container_labels(*, node: str, uid: str, namespace: str, pod: str, container: str,
                     kind: str = CONTAINER, restart_count: int = 0) -> dict[str, str]:
    """The labels of one container (``container`` is SANDBOX_NAME for a sandbox)."""
    return {NODE: node, POD_UID: uid, POD_NAMESPACE: namespace, POD_NAME: pod,
            CONTAINER_NAME: container, CONTAINER_TYPE: kind,
            RESTART_COUNT: str(restart_count)}


def docker_name(labels: Mapping[str, str]) -> str:
    """The Docker container name, as the dockershim spells it:
    ``k8s_<container>_<pod>_<namespace>_<uid>_<restart count>``."""
    return (f"k8s_{labels[CONTAINER_NAME]}_{labels[POD_NAME]}_{labels[POD_NAMESPACE]}_"
            f"{labels[POD_UID]}_{labels[RESTART_COUNT]}")
