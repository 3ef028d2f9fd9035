"""Discovery documents: ``/version``, legacy discovery (``/api``, ``/apis``, each
group-version's ``APIResourceList``) and aggregated discovery v2
(``APIGroupDiscoveryList``), all made from :data:`skiff.api.kinds.KINDS` and what the
REST edge serves besides (the streaming subresources, ``metrics.k8s.io``), so nothing
is advertised that is not served. Pure functions of their arguments.
"""

from __future__ import annotations

import platform
import sys
from dataclasses import dataclass
from typing import Any

from services.apiserver.rest import metrics_api
from skiff.api.kinds import KINDS, Kind

KUBERNETES_MAJOR, KUBERNETES_MINOR = "1", "32"
GIT_VERSION = f"v{KUBERNETES_MAJOR}.{KUBERNETES_MINOR}.0-skiff"
#: Kinds Kubernetes puts in the ``all`` category (``kubectl get all``).
CATEGORY_ALL = frozenset({"Pod", "Service", "ReplicationController", "ReplicaSet",
                          "Deployment"})
#: Kinds with an autoscaling/v1 ``scale`` subresource.
SCALABLE = frozenset({"Deployment", "ReplicaSet", "ReplicationController"})
AGGREGATED_V2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"


@dataclass(frozen=True)
class Subresource:
    name: str
    verbs: tuple[str, ...]
    group: str
    version: str
    kind: str


def version_info() -> dict[str, str]:
    """``/version``: kubectl compares major.minor with its own (it warns beyond one)."""
    machine = platform.machine().replace("x86_64", "amd64").replace("aarch64", "arm64")
    return {"major": KUBERNETES_MAJOR, "minor": KUBERNETES_MINOR,
            "gitVersion": GIT_VERSION, "gitCommit": "skiff", "gitTreeState": "clean",
            "buildDate": "2026-01-01T00:00:00Z",
            "goVersion": f"python{sys.version_info.major}.{sys.version_info.minor}",
            "compiler": "cpython", "platform": f"linux/{machine}"}


def _version_of(kind: Kind) -> str:
    return kind.api_version.rpartition("/")[2]


VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
#: The pods' streaming subresources (rest/streaming.py) and their options' kinds.
STREAMING = (("exec", "PodExecOptions"), ("attach", "PodAttachOptions"),
             ("portforward", "PodPortForwardOptions"))


def subresources(kind: Kind) -> list[Subresource]:
    """The subresources of ``kind`` this edge serves."""
    group, version = kind.group, _version_of(kind)
    out: list[Subresource] = []
    if kind.has_status:
        out.append(Subresource("status", ("get", "patch", "update"), group,
                               version, kind.kind))
    if kind.kind in SCALABLE:
        out.append(Subresource("scale", ("get", "patch", "update"), "autoscaling",
                               "v1", "Scale"))
    if kind.kind == "Pod":
        out.append(Subresource("binding", ("create",), "", "v1", "Binding"))
        out.append(Subresource("log", ("get",), "", "v1", "Pod"))
        out.append(Subresource("eviction", ("create",), "policy", "v1", "Eviction"))
        out += [Subresource(name, ("create", "get"), "", "v1", options)
                for name, options in STREAMING]
    if kind.kind == "Namespace":
        out.append(Subresource("finalize", ("update",), "", "v1", "Namespace"))
    return out


def group_versions() -> dict[str, list[Kind]]:
    """``apiVersion`` -> its kinds, core (``v1``) first."""
    out: dict[str, list[Kind]] = {}
    for kind in sorted(KINDS, key=lambda k: (k.group != "", k.group)):
        out.setdefault(kind.api_version, []).append(kind)
    return out


# ---- legacy discovery ----


def api_versions(server_address: str) -> dict[str, Any]:
    """``/api``."""
    return {"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0",
                                            "serverAddress": server_address}]}


def api_group_list() -> dict[str, Any]:
    """``/apis``: every named group (the core group is at ``/api``)."""
    groups = []
    for api_version in group_versions():
        group, _, version = api_version.rpartition("/")
        if not group:
            continue
        entry = {"groupVersion": api_version, "version": version}
        groups.append({"name": group, "versions": [entry], "preferredVersion": entry})
    metrics = metrics_api.api_group()
    groups.append({k: v for k, v in metrics.items() if k not in ("kind", "apiVersion")})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group(group: str) -> dict[str, Any] | None:
    """``/apis/<group>``, or None for a group not served."""
    for entry in api_group_list()["groups"]:
        if entry["name"] == group:
            return {"kind": "APIGroup", "apiVersion": "v1", **entry}
    return None


def api_resource_list(api_version: str) -> dict[str, Any] | None:
    """``/api/v1`` or ``/apis/<group>/<version>``, or None if not served."""
    kinds = group_versions().get(api_version)
    if kinds is None:
        return None
    resources: list[dict[str, Any]] = []
    for kind in kinds:
        entry: dict[str, Any] = {"name": kind.plural, "singularName": kind.singular,
                                 "namespaced": kind.namespaced, "kind": kind.kind,
                                 "verbs": list(VERBS)}
        if kind.short_names:
            entry["shortNames"] = list(kind.short_names)
        if kind.kind in CATEGORY_ALL:
            entry["categories"] = ["all"]
        resources.append(entry)
        for sub in subresources(kind):
            sub_entry: dict[str, Any] = {"name": f"{kind.plural}/{sub.name}",
                                         "singularName": "", "namespaced": kind.namespaced,
                                         "kind": sub.kind, "verbs": list(sub.verbs)}
            if sub.group != kind.group or sub.version != _version_of(kind):
                sub_entry["group"], sub_entry["version"] = sub.group, sub.version
            resources.append(sub_entry)
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": api_version,
            "resources": resources}


# ---- aggregated discovery (apidiscovery.k8s.io/v2) ----


def _scope(kind: Kind) -> str:
    return "Namespaced" if kind.namespaced else "Cluster"


def _resource_v2(kind: Kind) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "resource": kind.plural,
        "responseKind": {"group": kind.group, "version": _version_of(kind),
                         "kind": kind.kind},
        "scope": _scope(kind), "singularResource": kind.singular,
        "verbs": list(VERBS),
    }
    if kind.short_names:
        entry["shortNames"] = list(kind.short_names)
    if kind.kind in CATEGORY_ALL:
        entry["categories"] = ["all"]
    subs = [{"subresource": s.name,
             "responseKind": {"group": s.group, "version": s.version, "kind": s.kind},
             "verbs": list(s.verbs)} for s in subresources(kind)]
    if subs:
        entry["subresources"] = subs
    return entry


def aggregated(core: bool) -> dict[str, Any]:
    """``/api`` (core) or ``/apis`` (named groups) as an APIGroupDiscoveryList."""
    items = []
    for api_version, kinds in group_versions().items():
        group, _, version = api_version.rpartition("/")
        if bool(group) == core:
            continue
        items.append({
            "metadata": {"name": group} if group else {},
            "versions": [{"version": version, "freshness": "Current",
                          "resources": [_resource_v2(k) for k in kinds]}],
        })
    if not core:  # the other modules' groups after ours, as /apis lists them
        items.append(metrics_api.aggregated_group())
    return {"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2",
            "metadata": {}, "items": items}
