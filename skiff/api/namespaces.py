"""The namespaces every cluster has, as Kubernetes names them."""

from __future__ import annotations

DEFAULT = "default"
#: Where the control plane keeps its own objects (leader-election Leases).
KUBE_SYSTEM = "kube-system"
KUBE_PUBLIC = "kube-public"
#: Where each kubelet renews its node's Lease (the heartbeat node lifecycle reads).
NODE_LEASE_NAMESPACE = "kube-node-lease"

#: Namespaces the apiserver creates at start and refuses to delete.
SYSTEM_NAMESPACES = (DEFAULT, KUBE_SYSTEM, KUBE_PUBLIC, NODE_LEASE_NAMESPACE)
