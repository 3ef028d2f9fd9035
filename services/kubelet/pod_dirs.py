"""The kubelet's own files per pod: ``<root-dir>/pods/<uid>/`` (Kubernetes' layout).

Today one file lives there, the pod's ``resolv.conf`` (:mod:`~services.kubelet.dns`),
which the runtime bind-mounts read-only over ``/etc/resolv.conf`` in the sandbox and
in every app container of the pod. A bind mount, rather than Docker's ``Dns`` options,
because those do not say what a container sees: on a user-defined network Docker
points containers at its embedded resolver (127.0.0.11), and a container that joins
another's network takes that one's file. The mount wins in every network mode.

A pod's directory is removed when the kubelet forgets the pod (its containers are
gone), and :meth:`PodDirs.orphans` lists the directories of pods nobody knows any more
(a kubelet that stopped between the two), which the relist removes. Files are written
whole to a temporary name and renamed, so a container never sees half a file. The
calls block on the disk: the kubelet runs them in a thread.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

RESOLV_CONF = "resolv.conf"


class PodDirs:
    """``<root>/pods/<uid>/`` for each pod, and what is in them (see the module)."""

    def __init__(self, root: str | Path) -> None:
        self.pods = Path(root) / "pods"

    def path(self, uid: str) -> Path:
        if not uid or "/" in uid or uid in (".", ".."):
            raise ValueError(f"not a pod uid: {uid!r}")
        return self.pods / uid

    def resolv_conf(self, uid: str) -> Path:
        """Where the pod's resolv.conf is (whether written yet or not)."""
        return self.path(uid) / RESOLV_CONF

    def write_resolv_conf(self, uid: str, text: str) -> Path:
        """Write the pod's resolv.conf (readable by every user in the pod); its path."""
        target = self.resolv_conf(uid)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{RESOLV_CONF}.tmp")
        partial.write_text(text)
        partial.chmod(0o644)
        os.replace(partial, target)
        return target

    def remove(self, uid: str) -> bool:
        """Remove the pod's directory; whether there was one."""
        path = self.path(uid)
        if not path.exists():
            return False
        shutil.rmtree(path)
        return True

    def uids(self) -> set[str]:
        """The pods that have a directory here."""
        try:
            return {entry.name for entry in self.pods.iterdir() if entry.is_dir()}
        except FileNotFoundError:
            return set()

    def orphans(self, known: Iterable[str]) -> set[str]:
        """The pods with a directory here that are not in ``known``."""
        return self.uids() - set(known)
