"""Scheduler plugins, one file each, all the same shape (``kube-scheduler``'s
``framework/plugins``): a ``NAME``, the reasons it gives, pure fit logic as plain
functions others can reuse, and a small class implementing Filter and/or Score (with
their pre-hooks where a per-cycle computation pays).

Names and reasons are Kubernetes', so ``0/5 nodes are available: ...`` reads the same.
NodeReady is Skiff's own (Kubernetes leaves not-ready nodes to taints set by the node
lifecycle controller; Skiff checks the Ready condition as well).
"""
