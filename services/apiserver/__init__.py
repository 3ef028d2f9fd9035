"""The apiserver: Kubernetes-style API over the replicated store."""
