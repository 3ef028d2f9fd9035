"""The downward API's vocabulary: which pod fields ``fieldRef`` and ``resourceFieldRef``
may name, shared by the apiserver (validation) and the kubelet (resolution)."""

from __future__ import annotations

import re

#: fieldRef paths an env var may read (Kubernetes' validEnvDownwardAPIFieldPathExpressions).
ENV_FIELD_PATHS = frozenset({
    "metadata.name", "metadata.namespace", "metadata.uid", "spec.nodeName",
    "spec.serviceAccountName", "status.hostIP", "status.hostIPs", "status.podIP",
    "status.podIPs",
})
#: ``metadata.labels['key']`` and ``metadata.annotations['key']``.
SUBSCRIPTED_PATH = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")
#: resourceFieldRef resources an env var may read.
ENV_RESOURCES = frozenset({
    "limits.cpu", "limits.memory", "limits.ephemeral-storage",
    "requests.cpu", "requests.memory", "requests.ephemeral-storage",
})
