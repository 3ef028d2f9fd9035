"""The cluster's default address ranges and names (docs/DESIGN.md's "Default addresses"):
one place for every component's flag defaults, the CLI's layout and the kubelet's
machine routes, so that they cannot drift apart."""

from __future__ import annotations

#: The pods' network; the controller-manager cuts one /NODE_CIDR_MASK_SIZE per node.
CLUSTER_CIDR = "10.244.0.0/16"
NODE_CIDR_MASK_SIZE = 24
#: Service cluster IPs (Kubernetes' default): .1 is ``default/kubernetes``, .10 the DNS.
SERVICE_CIDR = "10.96.0.0/12"
#: LoadBalancer Services' ingress addresses (the controller-manager's pool).
LOAD_BALANCER_CIDR = "10.112.0.0/24"
#: The cluster DNS Service's address and the cluster's DNS domain.
KUBE_DNS_IP = "10.96.0.10"
CLUSTER_DOMAIN = "cluster.local"
