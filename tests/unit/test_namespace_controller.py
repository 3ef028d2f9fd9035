"""The namespace controller's pure parts: which kinds it empties, which finalizers stay."""

from __future__ import annotations

from services.apiserver.finalize import finalized, removable
from services.controller_manager.namespace import (
    KUBERNETES_FINALIZER,
    finalizers_without,
    namespaced_kinds,
    remaining_summary,
)
from skiff.api.v1 import core_pb2, meta_pb2


def test_every_namespaced_kind_and_no_cluster_scoped_one():
    plurals = {k.plural for k in namespaced_kinds()}
    assert {"pods", "services", "endpoints", "replicationcontrollers", "replicasets",
            "deployments", "events", "leases"} <= plurals
    assert "namespaces" not in plurals and "nodes" not in plurals


def test_only_our_finalizer_is_removed():
    ns = core_pb2.Namespace(spec=core_pb2.NamespaceSpec(
        finalizers=["example.com/keep", KUBERNETES_FINALIZER]))
    assert finalizers_without(ns, KUBERNETES_FINALIZER) == ["example.com/keep"]


def test_remaining_summary_names_what_is_left():
    assert remaining_summary({"services": 1, "pods": 2, "events": 0}) == "pods: 2, services: 1"


def test_finalize_removes_only_a_deleting_namespace_with_no_finalizers():
    ns = core_pb2.Namespace(metadata=meta_pb2.ObjectMeta(name="x"),
                            spec=core_pb2.NamespaceSpec(finalizers=[KUBERNETES_FINALIZER]))
    assert not removable(finalized(ns, []))  # not being deleted
    ns.metadata.deletion_timestamp.FromSeconds(1)
    assert not removable(finalized(ns, ["example.com/keep"]))
    assert removable(finalized(ns, []))
    ns.metadata.finalizers.append("orphan")
    assert not removable(finalized(ns, []))
