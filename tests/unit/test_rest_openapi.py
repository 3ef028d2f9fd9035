"""OpenAPI v3 documents: every proto field under its JSON name, Kubernetes' types and
names, the patch metadata kubectl reads, and the PATCH operations kubectl looks for."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from services.apiserver.rest import codec, openapi
from skiff.api.kinds import KINDS, Kind, lookup

_SPECIAL = {"skiff.api.v1.IntOrString", "google.protobuf.Timestamp"}


def _messages(descriptor: Descriptor, seen: set[str] | None = None) -> Iterator[Descriptor]:
    """``descriptor`` and every message it reaches (map entries stepped through)."""
    seen = set() if seen is None else seen
    if descriptor.full_name in seen:
        return
    seen.add(descriptor.full_name)
    if not descriptor.GetOptions().map_entry:
        yield descriptor
    for field in descriptor.fields:
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            yield from _messages(field.message_type, seen)


def _all_messages() -> list[Descriptor]:
    seen: set[str] = set()
    out: list[Descriptor] = []
    for kind in KINDS:
        out += _messages(kind.message.DESCRIPTOR, seen)
        out += _messages(kind.list_message.DESCRIPTOR, seen)
    return [d for d in out if d.full_name not in _SPECIAL]


def _gvk_of(kind: Kind) -> dict[str, str]:
    group, _, version = kind.api_version.rpartition("/")
    return {"group": group, "version": version, "kind": kind.kind}


def _doc(kind: Kind) -> Mapping[str, Any]:
    return json.loads(openapi.documents()[openapi.gv_path(kind.api_version)].body)


@pytest.mark.parametrize("descriptor", _all_messages(), ids=lambda d: d.full_name)
def test_every_proto_field_is_a_property_under_its_json_name(descriptor: Descriptor) -> None:
    """Under the codec's name for it (``DaemonEndpoint.Port``, not the proto's)."""
    schema = openapi.schemas()[openapi.schema_name(descriptor)]
    assert set(schema["properties"]) == {codec.json_name(f) for f in descriptor.fields}


def test_kubernetes_acronyms_and_renamed_fields() -> None:
    s = openapi.schemas()
    assert {"podIP", "podIPs", "hostIP"} <= set(s["io.k8s.api.core.v1.PodStatus"]["properties"])
    assert {"clusterIP", "clusterIPs"} <= set(s["io.k8s.api.core.v1.ServiceSpec"]["properties"])
    assert "continue" in s[f"{openapi.META}.ListMeta"]["properties"]
    assert "containerID" in s["io.k8s.api.core.v1.ContainerStatus"]["properties"]


def test_schema_names_are_kubernetes() -> None:
    assert openapi.kind_schema_name(lookup("pods")) == "io.k8s.api.core.v1.Pod"
    assert openapi.kind_schema_name(lookup("endpoints")) == "io.k8s.api.core.v1.Endpoints"
    assert openapi.kind_schema_name(lookup("deploy")) == "io.k8s.api.apps.v1.Deployment"
    assert openapi.kind_schema_name(lookup("lease")) == "io.k8s.api.coordination.v1.Lease"
    pod_spec = openapi.schemas()["io.k8s.api.core.v1.Pod"]["properties"]
    assert pod_spec["metadata"]["allOf"] == [openapi.ref(f"{openapi.META}.ObjectMeta")]


def test_types_and_formats() -> None:
    s = openapi.schemas()
    port = s["io.k8s.api.core.v1.ContainerPort"]["properties"]
    assert port["containerPort"] == {"type": "integer", "format": "int32"}
    assert s[f"{openapi.META}.ObjectMeta"]["properties"]["generation"] == {
        "type": "integer", "format": "int64"}
    assert s["io.k8s.api.core.v1.NodeSpec"]["properties"]["unschedulable"] == {
        "type": "boolean"}
    labels = s[f"{openapi.META}.ObjectMeta"]["properties"]["labels"]
    assert labels == {"type": "object", "additionalProperties": {"type": "string"}}
    limits = s["io.k8s.api.core.v1.ResourceRequirements"]["properties"]["limits"]
    assert limits["additionalProperties"] == openapi.ref(openapi.QUANTITY)
    assert s[openapi.QUANTITY]["type"] == "string"
    target = s["io.k8s.api.core.v1.ServicePort"]["properties"]["targetPort"]
    assert target["allOf"] == [openapi.ref(openapi.INT_OR_STRING)]
    assert s[openapi.INT_OR_STRING]["x-kubernetes-int-or-string"] is True
    assert s[openapi.TIME] == {"type": "string", "format": "date-time",
                               "description": s[openapi.TIME]["description"]}
    lease = s["io.k8s.api.coordination.v1.LeaseSpec"]["properties"]
    assert lease["renewTime"]["allOf"] == [openapi.ref(openapi.MICRO_TIME)]
    args = s["io.k8s.api.core.v1.Container"]["properties"]["args"]
    assert args["type"] == "array" and args["items"] == {"type": "string"}


@pytest.mark.parametrize(("type_name", "field", "strategy", "key"), [
    ("io.k8s.api.core.v1.PodSpec", "containers", "merge", "name"),
    ("io.k8s.api.core.v1.PodSpec", "initContainers", "merge", "name"),
    ("io.k8s.api.core.v1.Container", "ports", "merge", "containerPort"),
    ("io.k8s.api.core.v1.Container", "env", "merge", "name"),
    ("io.k8s.api.core.v1.PodStatus", "conditions", "merge", "type"),
    ("io.k8s.api.core.v1.PodStatus", "podIPs", "merge", "ip"),
    ("io.k8s.api.core.v1.NodeStatus", "conditions", "merge", "type"),
    ("io.k8s.api.core.v1.NodeStatus", "addresses", "merge", "type"),
    ("io.k8s.api.core.v1.ServiceSpec", "ports", "merge", "port"),
    ("io.k8s.api.apps.v1.DeploymentStatus", "conditions", "merge", "type"),
    ("io.k8s.api.apps.v1.ReplicaSetStatus", "conditions", "merge", "type"),
    ("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "ownerReferences", "merge", "uid"),
])
def test_patch_merge_keys(type_name: str, field: str, strategy: str, key: str) -> None:
    prop = openapi.schemas()[type_name]["properties"][field]
    assert prop["x-kubernetes-patch-strategy"] == strategy
    assert prop["x-kubernetes-patch-merge-key"] == key
    assert prop["x-kubernetes-list-type"] == "map"
    assert prop["x-kubernetes-list-map-keys"][0] == key


def test_other_patch_strategies_and_list_types() -> None:
    s = openapi.schemas()
    finalizers = s[f"{openapi.META}.ObjectMeta"]["properties"]["finalizers"]
    assert finalizers["x-kubernetes-patch-strategy"] == "merge"
    assert finalizers["x-kubernetes-list-type"] == "set"
    strategy = s["io.k8s.api.apps.v1.DeploymentSpec"]["properties"]["strategy"]
    assert strategy["x-kubernetes-patch-strategy"] == "retainKeys"
    tolerations = s["io.k8s.api.core.v1.PodSpec"]["properties"]["tolerations"]
    assert "x-kubernetes-patch-strategy" not in tolerations  # replaced, as Kubernetes
    assert tolerations["x-kubernetes-list-type"] == "atomic"
    ports = s["io.k8s.api.core.v1.ServiceSpec"]["properties"]["ports"]
    assert ports["x-kubernetes-list-map-keys"] == ["port", "protocol"]
    assert s["io.k8s.api.core.v1.NodeSpec"]["properties"]["taints"][
        "x-kubernetes-list-type"] == "atomic"
    assert s[f"{openapi.META}.OwnerReference"]["x-kubernetes-map-type"] == "atomic"


def test_patch_metadata_table_names_real_properties() -> None:
    """A typo in the table would silently drop a merge key: every entry must land."""
    s = openapi.schemas()
    by_type = {name.rpartition(".")[2]: schema for name, schema in s.items()}
    for (type_name, field), meta in openapi.PATCH_META.items():
        prop = by_type[type_name]["properties"][field]
        for key, value in meta.extensions().items():
            assert prop[key] == value


def _walk(schemas: Mapping[str, Any], schema: Mapping[str, Any], *path: str) -> Mapping:
    """Follow a property path as kubectl's PatchMetaFromOpenAPIV3 does."""
    for step in path:
        prop = schema["properties"][step]
        if prop.get("type") == "array":
            prop = prop["items"]
        schema = openapi.resolve(prop, schemas)
    return schema


def test_kubectl_style_lookup_reaches_container_ports() -> None:
    doc = _doc(lookup("deploy"))
    schemas = doc["components"]["schemas"]
    deployment = next(s for s in schemas.values()
                      if {"group": "apps", "version": "v1", "kind": "Deployment"}
                      in s.get("x-kubernetes-group-version-kind", []))
    container = _walk(schemas, deployment, "spec", "template", "spec", "containers")
    assert container["properties"]["ports"]["x-kubernetes-patch-merge-key"] == "containerPort"


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_kinds_and_lists_carry_their_gvk(kind: Kind) -> None:
    s = openapi.schemas()
    assert s[openapi.kind_schema_name(kind)]["x-kubernetes-group-version-kind"] == [
        _gvk_of(kind)]
    listed = openapi.schema_name(kind.list_message.DESCRIPTOR)
    assert s[listed]["x-kubernetes-group-version-kind"][0]["kind"] == f"{kind.kind}List"
    assert s[openapi.kind_schema_name(kind)]["description"]


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_patch_operation_kubectl_looks_for(kind: Kind) -> None:
    """cli-runtime's supportsQueryParamV3 and apply's gvkSupportsPatchOpenAPIV3."""
    doc = _doc(kind)
    patches = [item["patch"] for item in doc["paths"].values()
               if "patch" in item and item["patch"]["x-kubernetes-group-version-kind"]
               == _gvk_of(kind)]
    assert patches
    for op in patches:
        assert "fieldValidation" in {p["name"] for p in op["parameters"]}
        assert "application/strategic-merge-patch+json" in op["requestBody"]["content"]
        assert openapi.APPLY_PATCH_CONTENT_TYPE not in op["requestBody"]["content"]


def test_paths_of_a_namespaced_kind_with_subresources() -> None:
    paths = _doc(lookup("deploy"))["paths"]
    assert {"/apis/apps/v1/deployments",
            "/apis/apps/v1/namespaces/{namespace}/deployments",
            "/apis/apps/v1/namespaces/{namespace}/deployments/{name}",
            "/apis/apps/v1/namespaces/{namespace}/deployments/{name}/status",
            "/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"} <= set(paths)
    scale = paths["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"]
    assert scale["patch"]["x-kubernetes-group-version-kind"]["kind"] == "Scale"
    nodes = _doc(lookup("nodes"))["paths"]
    assert "/api/v1/nodes/{name}" in nodes and "/api/v1/namespaces/{namespace}/nodes" not in nodes


def test_every_reference_resolves_within_its_document() -> None:
    for doc in openapi.documents().values():
        parsed = json.loads(doc.body)
        names = set(parsed["components"]["schemas"])
        refs = _refs(parsed)
        assert refs and {r.removeprefix(openapi.REF_PREFIX) for r in refs} <= names


def _refs(value: Any) -> set[str]:
    if isinstance(value, dict):
        out = {value["$ref"]} if "$ref" in value else set()
        for v in value.values():
            out |= _refs(v)
        return out
    if isinstance(value, list):
        return set().union(*(_refs(v) for v in value)) if value else set()
    return set()


def test_index_points_at_each_document_by_hash() -> None:
    index = openapi.index_document()
    assert set(index["paths"]) == {"api/v1", "apis/apps/v1", "apis/coordination.k8s.io/v1"}
    for path, entry in index["paths"].items():
        doc = openapi.documents()[path]
        assert entry["serverRelativeURL"] == f"/openapi/v3/{path}?hash={doc.etag}"
        assert doc.etag == openapi.etag(doc.body) and len(doc.etag) == 128


def test_documents_are_deterministic() -> None:
    first = openapi.render(openapi.group_version_document("v1"))
    assert first == openapi.render(openapi.group_version_document("v1"))
    assert first == openapi.documents()["api/v1"].body


def test_server_side_apply_adds_its_content_type() -> None:
    doc = openapi.group_version_document("apps/v1", server_side_apply=True)
    op = doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"]
    assert openapi.APPLY_PATCH_CONTENT_TYPE in op["requestBody"]["content"]


def test_unknown_group_version() -> None:
    with pytest.raises(KeyError):
        openapi.group_version_document("batch/v1")


def test_resolve_follows_all_of_and_refs_and_stops_on_cycles() -> None:
    table = {"A": {"$ref": "#/components/schemas/B"}, "B": {"type": "string"},
             "C": {"$ref": "#/components/schemas/C"}}
    assert openapi.resolve({"allOf": [openapi.ref("A")]}, table) == {"type": "string"}
    assert openapi.resolve(openapi.ref("C"), table) is None
    assert openapi.resolve(openapi.ref("missing"), table) is None
