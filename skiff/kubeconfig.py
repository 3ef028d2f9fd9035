"""Kubeconfig files for kubectl and the Kubernetes client libraries.

:func:`write_admin_kubeconfig` writes ``<data-dir>/kubeconfig`` (0600): cluster ``skiff``
(the CA inline, ``server: https://127.0.0.1:<port>``), user ``skiff-admin`` (a bearer
token), context ``skiff``. :func:`merge_into_user_config` adds the same three entries to
the user's kubeconfig (``$KUBECONFIG``'s first file, else ``~/.kube/config``), replacing
earlier ``skiff`` entries, keeping every other one, and makes ``skiff`` current, as
``kind create cluster`` does.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import yaml

NAME = "skiff"
USER = "skiff-admin"


def admin_config(*, server: str, ca_pem: bytes, token: str, name: str = NAME,
                 user: str = USER) -> dict[str, Any]:
    """A kubeconfig document with one cluster, user and context, the context current."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [{"name": name, "cluster": {
            "server": server,
            "certificate-authority-data": base64.b64encode(ca_pem).decode()}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": user}}],
        "current-context": name,
    }


def _write_private(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(doc, f, sort_keys=False, default_flow_style=False)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def write_admin_kubeconfig(path: Path, *, server: str, ca_pem: bytes, token: str
                           ) -> dict[str, Any]:
    """Write the admin kubeconfig to ``path`` (0600); returns its document."""
    doc = admin_config(server=server, ca_pem=ca_pem, token=token)
    _write_private(path, doc)
    return doc


def user_config_path(environ: dict[str, str] | None = None) -> Path:
    """The kubeconfig kubectl writes to: ``$KUBECONFIG``'s first entry, else
    ``~/.kube/config``."""
    env = os.environ if environ is None else environ
    listed = [p for p in env.get("KUBECONFIG", "").split(os.pathsep) if p]
    if listed:
        return Path(listed[0]).expanduser()
    return Path(env.get("HOME", str(Path.home()))) / ".kube" / "config"


def _replace_named(entries: Any, new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    names = {e["name"] for e in new}
    kept = [e for e in (entries or []) if not (isinstance(e, dict) and e.get("name") in names)]
    return kept + new


def merge(existing: dict[str, Any] | None, ours: dict[str, Any]) -> dict[str, Any]:
    """``existing`` with ``ours``'s clusters, users and contexts in (same names replaced)
    and ours current (pure)."""
    doc = dict(existing or {})
    doc.setdefault("apiVersion", "v1")
    doc.setdefault("kind", "Config")
    doc.setdefault("preferences", {})
    for section in ("clusters", "users", "contexts"):
        doc[section] = _replace_named(doc.get(section), ours[section])
    doc["current-context"] = ours["current-context"]
    return doc


def merge_into_user_config(ours: dict[str, Any], path: Path | None = None) -> Path:
    """Merge ``ours`` into the user's kubeconfig (kept 0600); returns its path."""
    path = path or user_config_path()
    existing: dict[str, Any] | None = None
    if path.exists():
        loaded = yaml.safe_load(path.read_text())
        if loaded is not None and not isinstance(loaded, dict):
            raise ValueError(f"{path}: not a kubeconfig (expected a mapping)")
        existing = loaded
    _write_private(path, merge(existing, ours))
    return path
