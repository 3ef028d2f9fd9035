"""Discovery documents, Status mapping and request parsing of the REST edge (pure)."""

from __future__ import annotations

import pytest
from multidict import MultiDict

from services.apiserver.rest import discovery, status
from services.apiserver.rest.request import (
    RequestError,
    delete_request,
    list_options,
    parse_document,
    wants_table,
)
from skiff.api import errors
from skiff.api.kinds import KINDS, lookup


def _resources(api_version):
    return {r["name"]: r for r in discovery.api_resource_list(api_version)["resources"]}


def test_every_kind_is_in_legacy_discovery_with_what_kubectl_needs():
    for kind in KINDS:
        entry = _resources(kind.api_version)[kind.plural]
        assert entry["kind"] == kind.kind
        assert entry["singularName"] == kind.singular
        assert entry["namespaced"] is kind.namespaced
        assert entry.get("shortNames", []) == list(kind.short_names)
        assert set(entry["verbs"]) >= {"get", "list", "watch", "create", "update", "delete",
                                       "patch"}


def test_short_names_categories_and_subresources():
    core = _resources("v1")
    assert core["pods"]["shortNames"] == ["po"] and core["pods"]["categories"] == ["all"]
    assert "categories" not in core["nodes"]
    assert core["pods/status"]["verbs"] == ["get", "patch", "update"]
    assert core["pods/binding"]["verbs"] == ["create"]
    assert core["pods/eviction"] == {"name": "pods/eviction", "singularName": "",
                                     "namespaced": True, "kind": "Eviction",
                                     "verbs": ["create"], "group": "policy", "version": "v1"}
    apps = _resources("apps/v1")
    assert apps["deployments/scale"] == {"name": "deployments/scale", "singularName": "",
                                         "namespaced": True, "kind": "Scale",
                                         "verbs": ["get", "patch", "update"],
                                         "group": "autoscaling", "version": "v1"}
    assert "events/status" not in core  # events have no status


def test_group_list_and_unknown_group_version():
    groups = {g["name"]: g for g in discovery.api_group_list()["groups"]}
    assert set(groups) == {"apps", "coordination.k8s.io", "metrics.k8s.io"}
    assert groups["apps"]["preferredVersion"] == {"groupVersion": "apps/v1", "version": "v1"}
    assert discovery.api_resource_list("batch/v1") is None
    assert discovery.api_group("batch") is None


def test_aggregated_discovery_matches_legacy():
    core = discovery.aggregated(True)
    assert core["kind"] == "APIGroupDiscoveryList"
    assert len(core["items"]) == 1 and core["items"][0]["metadata"] == {}
    resources = {r["resource"]: r for r in core["items"][0]["versions"][0]["resources"]}
    assert resources["pods"]["scope"] == "Namespaced"
    assert resources["nodes"]["scope"] == "Cluster"
    assert {s["subresource"] for s in resources["pods"]["subresources"]} == {
        "status", "binding", "log", "eviction", "exec", "attach", "portforward"}
    groups = discovery.aggregated(False)
    assert [i["metadata"]["name"] for i in groups["items"]] == [
        "apps", "coordination.k8s.io", "metrics.k8s.io"]


def test_version_is_kubernetes_shaped():
    info = discovery.version_info()
    assert info["major"] == "1" and info["minor"] == "32"
    assert info["gitVersion"].startswith("v1.32.")
    assert all(info.values())


def test_status_of_each_error():
    kind = lookup("Pod")
    nf = status.from_error(errors.NotFound('pods "web" not found'), kind)
    assert (nf["code"], nf["reason"], nf["details"]) == (404, "NotFound",
                                                        {"kind": "pods", "name": "web"})
    gone = status.from_error(errors.Gone("too old resource version: 1 (5)"))
    assert (gone["code"], gone["reason"]) == (410, "Expired")
    invalid = status.from_error(errors.Invalid("Pod", "web", [
        errors.FieldError("spec.containers", "required")]), kind)
    assert invalid["code"] == 422
    assert invalid["details"]["causes"] == [{"reason": "FieldValueInvalid",
                                             "message": "spec.containers: required",
                                             "field": "spec.containers"}]
    deploy = status.from_error(errors.Conflict("x"), lookup("Deployment"), "d")
    assert deploy["details"] == {"kind": "deployments", "group": "apps", "name": "d"}
    assert status.from_error(errors.Unavailable("later"))["code"] == 503


def test_list_options_from_query():
    q = MultiDict(labelSelector="app=web", fieldSelector="metadata.name=a", limit="5",
                  resourceVersion="10", resourceVersionMatch="NotOlderThan",
                  allowWatchBookmarks="true", timeoutSeconds="30")
    options = list_options(q, "ns")
    assert (options.namespace, options.label_selector, options.limit,
            options.resource_version, options.allow_bookmarks, options.timeout_seconds) == (
        "ns", "app=web", 5, "10", True, 30)
    with pytest.raises(RequestError, match="limit"):
        list_options(MultiDict(limit="many"), "")
    with pytest.raises(RequestError, match="resourceVersionMatch"):
        list_options(MultiDict(resourceVersionMatch="NotOlderThan"), "")


def test_delete_options_body_then_query():
    d = delete_request(MultiDict(gracePeriodSeconds="5"), {
        "kind": "DeleteOptions", "propagationPolicy": "Foreground",
        "preconditions": {"uid": "u", "resourceVersion": "3"}}, "ns", "p")
    assert d.grace_period_seconds == 5 and d.propagation_policy == "Foreground"
    assert d.preconditions.uid == "u" and d.preconditions.resource_version == "3"
    orphan = delete_request(MultiDict(), {"orphanDependents": True}, "ns", "p")
    assert orphan.propagation_policy == "Orphan"
    assert not delete_request(MultiDict(), None, "ns", "p").HasField("grace_period_seconds")
    with pytest.raises(RequestError, match="dryRun"):
        delete_request(MultiDict(dryRun="All"), None, "ns", "p")


def test_bodies_parse_or_say_why():
    assert parse_document(b'{"a": 1}', "application/json") == {"a": 1}
    assert parse_document(b"a: 1\n", "application/yaml") == {"a": 1}
    with pytest.raises(RequestError, match="not valid JSON") as e:
        parse_document(b"{", "application/json")
    assert e.value.code == 400
    with pytest.raises(RequestError) as e:
        parse_document(b"{}", "text/html")
    assert e.value.code == 415


def test_table_negotiation():
    kubectl = ("application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;"
               "v=v1beta1;g=meta.k8s.io,application/json")
    assert wants_table(kubectl)
    assert wants_table("application/json;as=Table;v=v1;g=meta.k8s.io")
    assert not wants_table("")
    assert not wants_table("application/vnd.kubernetes.protobuf, */*")
    with pytest.raises(RequestError) as e:
        wants_table("application/vnd.kubernetes.protobuf")
    assert e.value.code == 406


def test_paths_name_their_targets():
    from services.apiserver.rest.server import _is_public, target_of

    t = target_of("v1", "namespaces/ns/pods/web/status")
    assert (t.kind.kind, t.namespace, t.name, t.subresource) == ("Pod", "ns", "web", "status")
    t = target_of("v1", "pods")
    assert (t.kind.kind, t.namespace, t.name) == ("Pod", "", "")
    t = target_of("v1", "namespaces/ns")
    assert (t.kind.kind, t.namespace, t.name) == ("Namespace", "", "ns")
    t = target_of("v1", "namespaces/ns/finalize")
    assert (t.kind.kind, t.name, t.subresource) == ("Namespace", "ns", "finalize")
    t = target_of("apps/v1", "namespaces/ns/deployments/d/scale")
    assert (t.kind.kind, t.subresource) == ("Deployment", "scale")
    assert target_of("v1", "namespaces/ns/nodes/n") is None  # nodes are cluster-scoped
    assert target_of("v1", "deployments") is None  # not in the core group
    assert target_of("v1", "namespaces/ns/pods/a/b/c") is None
    assert target_of("v1", "pods//x") is None
    assert target_of("v1", "pods/web") is None  # a pod's path names its namespace
    assert _is_public("/api/v1") and _is_public("/apis/apps/v1") and _is_public("/version")
    assert not _is_public("/api/v1/pods") and not _is_public("/apis/apps/v1/deployments")


def test_streaming_and_metrics_are_advertised():
    core = _resources("v1")
    assert core["pods/exec"]["verbs"] == ["create", "get"]
    assert core["pods/portforward"]["kind"] == "PodPortForwardOptions"
    assert core["pods/log"]["verbs"] == ["get"]
    aggregated = discovery.aggregated(False)
    assert aggregated["items"][-1]["metadata"]["name"] == "metrics.k8s.io"
