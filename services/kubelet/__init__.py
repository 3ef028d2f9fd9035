"""The kubelet: runs the pods bound to its node through Docker (see kubelet.py)."""
