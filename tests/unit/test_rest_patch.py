"""PATCH bodies: RFC 7386 merge patch, RFC 6902 JSON patch, and strategic merge patch
with the cases of Kubernetes' strategicpatch behaviour and kubectl's patch docs."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from services.apiserver.rest import patch as p
from skiff.api.kinds import lookup

DEPLOY = p.PatchMeta.for_kind(lookup("deploy"))
POD = p.PatchMeta.for_kind(lookup("pods"))
NODE = p.PatchMeta.for_kind(lookup("nodes"))


def _deployment(*containers: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web", "tier": "front"}},
            "spec": {"replicas": 2, **spec,
                     "template": {"spec": {"containers": list(containers)}}}}


def _containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return obj["spec"]["template"]["spec"]["containers"]


def _smp(original: dict[str, Any], patch: dict[str, Any],
         meta: p.PatchMeta = DEPLOY) -> dict[str, Any]:
    return p.apply_strategic_merge_patch(original, patch, meta)


# ---- strategic merge patch ----


def test_containers_merge_by_name_new_ones_first() -> None:
    """kubectl's docs: patching in a second container keeps the first, after it."""
    original = _deployment({"name": "patch-demo-ctr", "image": "nginx"})
    patch = {"spec": {"template": {"spec": {"containers": [
        {"name": "patch-demo-ctr-2", "image": "redis"}]}}}}
    assert _containers(_smp(original, patch)) == [
        {"name": "patch-demo-ctr-2", "image": "redis"},
        {"name": "patch-demo-ctr", "image": "nginx"}]


def test_container_fields_merge_into_the_matching_container() -> None:
    original = _deployment({"name": "app", "image": "nginx:1", "args": ["a"]},
                           {"name": "side", "image": "busybox"})
    patch = {"spec": {"template": {"spec": {"containers": [
        {"name": "app", "image": "nginx:2"}]}}}}
    result = _containers(_smp(original, patch))
    assert result == [{"name": "app", "image": "nginx:2", "args": ["a"]},
                      {"name": "side", "image": "busybox"}]


def test_env_merges_by_name_and_a_value_changes_in_place() -> None:
    original = _deployment({"name": "app", "env": [{"name": "A", "value": "1"},
                                                   {"name": "B", "value": "2"}]})
    patch = {"spec": {"template": {"spec": {"containers": [
        {"name": "app", "env": [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}]}]}}}}
    env = _containers(_smp(original, patch))[0]["env"]
    assert env == [{"name": "A", "value": "1"}, {"name": "B", "value": "3"},
                   {"name": "C", "value": "4"}]


def test_ports_merge_by_container_port() -> None:
    original = _deployment({"name": "app", "ports": [{"containerPort": 80, "name": "http"}]})
    patch = {"spec": {"template": {"spec": {"containers": [
        {"name": "app", "ports": [{"containerPort": 80, "protocol": "TCP"}]}]}}}}
    assert _containers(_smp(original, patch))[0]["ports"] == [
        {"containerPort": 80, "name": "http", "protocol": "TCP"}]


def test_patch_delete_removes_a_container_by_name() -> None:
    original = _deployment({"name": "a", "image": "x"}, {"name": "b", "image": "y"})
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "a", "$patch": "delete"}]}}}}
    assert _containers(_smp(original, patch)) == [{"name": "b", "image": "y"}]


def test_patch_replace_replaces_a_list() -> None:
    original = _deployment({"name": "a", "image": "x"}, {"name": "b", "image": "y"})
    patch = {"spec": {"template": {"spec": {"containers": [
        {"$patch": "replace"}, {"name": "c", "image": "z"}]}}}}
    assert _containers(_smp(original, patch)) == [{"name": "c", "image": "z"}]


def test_patch_replace_replaces_a_map() -> None:
    original = _deployment({"name": "a"})
    patch = {"metadata": {"labels": {"$patch": "replace", "only": "this"}}}
    assert _smp(original, patch)["metadata"]["labels"] == {"only": "this"}


def test_patch_delete_empties_a_map() -> None:
    original = _deployment({"name": "a"})
    assert _smp(original, {"metadata": {"labels": {"$patch": "delete"}}})[
        "metadata"]["labels"] == {}


def test_patch_merge_is_refused_as_kubernetes_refuses_it() -> None:
    original = _deployment({"name": "a"})
    with pytest.raises(p.PatchError, match="merging lists cannot yet be specified") as e:
        _smp(original, {"spec": {"template": {"spec": {"containers": [{"$patch": "merge"}]}}}})
    assert e.value.code == 422
    with pytest.raises(p.PatchError, match="unknown patch type: merge"):
        _smp(original, {"metadata": {"labels": {"$patch": "merge"}}})


def test_set_element_order_orders_the_merged_list() -> None:
    original = _deployment({"name": "a", "image": "x"}, {"name": "b", "image": "y"})
    patch = {"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "b"}, {"name": "c"}, {"name": "a"}],
        "containers": [{"name": "c", "image": "z"}]}}}}
    assert [c["name"] for c in _containers(_smp(original, patch))] == ["b", "c", "a"]


def test_set_element_order_alone_reorders() -> None:
    original = _deployment({"name": "a"}, {"name": "b"})
    patch = {"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}]}}}}
    assert [c["name"] for c in _containers(_smp(original, patch))] == ["b", "a"]


def test_set_element_order_that_contradicts_the_patch_is_refused() -> None:
    original = _deployment({"name": "a"}, {"name": "b"})
    patch = {"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
        "containers": [{"name": "b", "image": "1"}, {"name": "a", "image": "2"}]}}}}
    with pytest.raises(p.PatchError, match="doesn't match"):
        _smp(original, patch)


def test_set_element_order_on_a_primitive_list() -> None:
    original = {"metadata": {"name": "n", "finalizers": ["a", "b"]}}
    patch = {"metadata": {"$setElementOrder/finalizers": ["c", "b", "a"], "finalizers": ["c"]}}
    assert _smp(original, patch, POD)["metadata"]["finalizers"] == ["c", "b", "a"]


def test_retain_keys_clears_the_keys_not_retained() -> None:
    """kubectl's docs: switching the strategy to Recreate drops rollingUpdate."""
    original = _deployment({"name": "a"}, strategy={
        "type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%"}})
    patch = {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}
    assert _smp(original, patch)["spec"]["strategy"] == {"type": "Recreate"}


def test_retain_keys_must_list_every_patched_key() -> None:
    original = _deployment({"name": "a"}, strategy={"type": "RollingUpdate"})
    patch = {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate",
                                   "rollingUpdate": {"maxSurge": 1}}}}
    with pytest.raises(p.PatchError, match="retainKeys") as e:
        _smp(original, patch)
    assert e.value.code == 400


def test_delete_from_primitive_list() -> None:
    original = {"metadata": {"name": "n", "finalizers": ["a", "b", "c"]}}
    patch = {"metadata": {"$deleteFromPrimitiveList/finalizers": ["b"]}}
    assert _smp(original, patch, POD)["metadata"]["finalizers"] == ["a", "c"]


def test_merge_strategy_primitive_list_is_a_union() -> None:
    original = {"metadata": {"name": "n", "finalizers": ["a", "b"]}}
    patch = {"metadata": {"finalizers": ["b", "c"]}}
    # "a" keeps its place before "b", where the server had it; "c" is new, last.
    assert _smp(original, patch, POD)["metadata"]["finalizers"] == ["a", "b", "c"]


def test_primitive_list_without_strategy_is_replaced() -> None:
    original = _deployment({"name": "a", "args": ["x", "y"]})
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "a", "args": ["z"]}]}}}}
    assert _containers(_smp(original, patch))[0]["args"] == ["z"]


def test_list_of_maps_without_strategy_is_replaced() -> None:
    """tolerations have no patch strategy: kubectl's docs show the list replaced."""
    original = {"spec": {"tolerations": [{"key": "a", "effect": "NoSchedule"}]}}
    patch = {"spec": {"tolerations": [{"key": "b", "effect": "NoExecute"}]}}
    assert _smp(original, patch, POD)["spec"]["tolerations"] == [
        {"key": "b", "effect": "NoExecute"}]


def test_null_deletes_a_map_key() -> None:
    original = _deployment({"name": "a"})
    result = _smp(original, {"metadata": {"labels": {"tier": None}}, "spec": {"replicas": None}})
    assert result["metadata"]["labels"] == {"app": "web"}
    assert "replicas" not in result["spec"]


def test_new_value_loses_its_nulls_and_directives() -> None:
    original = {"metadata": {"name": "n"}}
    patch = {"metadata": {"annotations": {"a": "1", "b": None}}}
    assert _smp(original, patch, POD)["metadata"]["annotations"] == {"a": "1"}


def test_conditions_merge_by_type() -> None:
    original = {"status": {"conditions": [{"type": "Ready", "status": "False"},
                                          {"type": "MemoryPressure", "status": "False"}]}}
    patch = {"status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    assert _smp(original, patch, NODE)["status"]["conditions"] == [
        {"type": "Ready", "status": "True"}, {"type": "MemoryPressure", "status": "False"}]


def test_a_merged_element_must_carry_its_merge_key() -> None:
    original = _deployment({"name": "a"})
    with pytest.raises(p.PatchError, match="does not contain declared merge key: name"):
        _smp(original, {"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}})


def test_type_change_replaces_the_value() -> None:
    original = _deployment({"name": "a"})
    assert _smp(original, {"spec": {"replicas": "3"}})["spec"]["replicas"] == "3"


def test_unknown_fields_patch_like_a_merge_patch() -> None:
    original = {"spec": {"mystery": [1, 2]}}
    assert _smp(original, {"spec": {"mystery": [3]}}, POD)["spec"]["mystery"] == [3]


def test_the_original_is_not_changed() -> None:
    original = _deployment({"name": "a", "image": "x"})
    before = copy.deepcopy(original)
    _smp(original, {"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "y"}]}}}})
    assert original == before


def test_a_strategic_merge_patch_must_be_an_object() -> None:
    with pytest.raises(p.PatchError) as e:
        _smp({}, [1])  # type: ignore[arg-type]
    assert e.value.code == 400


# ---- JSON merge patch (RFC 7386, its appendix) ----


@pytest.mark.parametrize(("original", "patch", "result"), [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
])
def test_rfc7386_examples(original: dict, patch: dict, result: dict) -> None:
    assert p.apply_merge_patch(original, patch) == result


def test_merge_patch_replaces_lists_and_must_be_an_object() -> None:
    original = _deployment({"name": "a"}, {"name": "b"})
    patched = p.apply_merge_patch(original, {"spec": {"template": {"spec": {
        "containers": [{"name": "c"}]}}}})
    assert _containers(patched) == [{"name": "c"}]
    with pytest.raises(p.PatchError) as e:
        p.apply_merge_patch(original, ["x"])
    assert e.value.code == 400


# ---- JSON patch (RFC 6902) ----


def test_json_patch_operations() -> None:
    original = _deployment({"name": "a", "image": "x"})
    ops = [{"op": "replace", "path": "/spec/replicas", "value": 5},
           {"op": "add", "path": "/metadata/labels/new", "value": "1"},
           {"op": "remove", "path": "/metadata/labels/tier"},
           {"op": "test", "path": "/spec/template/spec/containers/0/image", "value": "x"}]
    result = p.apply_json_patch(original, ops)
    assert result["spec"]["replicas"] == 5
    assert result["metadata"]["labels"] == {"app": "web", "new": "1"}
    assert original["spec"]["replicas"] == 2


def test_json_patch_that_does_not_apply_is_422() -> None:
    with pytest.raises(p.PatchError) as e:
        p.apply_json_patch({"a": 1}, [{"op": "test", "path": "/a", "value": 2}])
    assert e.value.code == 422
    with pytest.raises(p.PatchError) as e:
        p.apply_json_patch({"a": 1}, [{"op": "remove", "path": "/missing"}])
    assert e.value.code == 422


@pytest.mark.parametrize("ops", [{"op": "add"}, [{"op": "frobnicate", "path": "/a"}],
                                 [{"path": "/a"}], "x"])
def test_malformed_json_patch_is_400(ops: Any) -> None:
    with pytest.raises(p.PatchError) as e:
        p.apply_json_patch({"a": 1}, ops)
    assert e.value.code == 400


# ---- dispatch by content type ----


def test_apply_patch_by_content_type() -> None:
    original = _deployment({"name": "a", "image": "x"})
    body = b'{"spec":{"template":{"spec":{"containers":[{"name":"b","image":"y"}]}}}}'
    smp = p.apply_patch("application/strategic-merge-patch+json; charset=utf-8", original,
                        body, lookup("deploy"))
    assert [c["name"] for c in _containers(smp)] == ["b", "a"]
    merged = p.apply_patch(p.MERGE_PATCH, original, body)
    assert [c["name"] for c in _containers(merged)] == ["b"]
    jp = p.apply_patch(p.JSON_PATCH, original, b'[{"op":"replace","path":"/spec/replicas",'
                       b'"value":1}]')
    assert jp["spec"]["replicas"] == 1


def test_apply_patch_errors() -> None:
    with pytest.raises(p.PatchError) as e:
        p.apply_patch(p.APPLY_PATCH, {}, b"{}")
    assert (e.value.code, e.value.reason) == (415, "UnsupportedMediaType")
    with pytest.raises(p.PatchError) as e:
        p.apply_patch(p.MERGE_PATCH, {}, b"{not json")
    assert e.value.code == 400 and "invalid JSON" in e.value.message


# ---- a patch kubectl 1.32 computed from these schemas ----


def test_the_three_way_patch_kubectl_apply_sent() -> None:
    """Recorded: ``kubectl apply`` (1.32) against a server serving openapi.py's documents,
    re-applying a Deployment that drops container b and a label, adds container c first,
    changes env, and switches the strategy to Recreate. kubectl found the merge keys and
    retainKeys in the schema (the $setElementOrder, $patch and $retainKeys below are its
    own); applying its patch must give what Kubernetes gives."""
    live = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "uid": "u1",
                     "resourceVersion": "5", "labels": {"app": "web", "old": "yes"}},
        "spec": {
            "replicas": 2, "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                "containers": [
                    {"name": "a", "image": "nginx:1", "imagePullPolicy": "IfNotPresent",
                     "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                     "ports": [{"containerPort": 80}]},
                    {"name": "b", "image": "busybox"}],
                "tolerations": [{"key": "k", "operator": "Exists"}]}}},
        "status": {"replicas": 2},
    }
    sent = (b'{"metadata":{"labels":{"old":null}},"spec":{"replicas":3,"strategy":'
            b'{"$retainKeys":["type"],"rollingUpdate":null,"type":"Recreate"},"template":'
            b'{"spec":{"$setElementOrder/containers":[{"name":"c"},{"name":"a"}],"containers":'
            b'[{"image":"redis","name":"c"},{"$setElementOrder/env":[{"name":"B"},{"name":"C"}],'
            b'"env":[{"name":"C","value":"3"},{"$patch":"delete","name":"A"}],"image":"nginx:2",'
            b'"name":"a"},{"$patch":"delete","name":"b"}],"tolerations":null}}}}')
    result = p.apply_patch(p.STRATEGIC_MERGE_PATCH, live, sent, lookup("deploy"))
    assert result["metadata"]["labels"] == {"app": "web"}
    assert result["spec"]["strategy"] == {"type": "Recreate"}
    assert result["spec"]["replicas"] == 3
    assert result["spec"]["template"]["spec"] == {"containers": [
        {"name": "c", "image": "redis"},
        {"name": "a", "image": "nginx:2", "imagePullPolicy": "IfNotPresent",
         "env": [{"name": "B", "value": "2"}, {"name": "C", "value": "3"}],
         "ports": [{"containerPort": 80}]}]}
    assert result["status"] == {"replicas": 2}
