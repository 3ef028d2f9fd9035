"""OpenAPI v3 documents for the kinds Skiff serves, generated from the proto descriptors.

kubectl reads these documents for three things, and each shapes what is here:

- ``--validate=strict`` (its default): kubectl looks, in the group-version's document,
  for a PATCH operation carrying ``x-kubernetes-group-version-kind`` of the kind and a
  ``fieldValidation`` parameter; found, it leaves validation to the server.
- client-side ``apply``: the PATCH operation must accept
  ``application/strategic-merge-patch+json``; kubectl then takes the schema whose
  ``x-kubernetes-group-version-kind`` names the kind and walks it by property, reading
  ``x-kubernetes-patch-merge-key`` and ``x-kubernetes-patch-strategy`` on each field
  (``allOf[0]`` and ``$ref`` followed) to compute its three-way patch.
- ``explain``: the kind's schema, its descriptions and the types of its fields.

Schemas are named as Kubernetes names them (``io.k8s.api.core.v1.Pod``,
``io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta``) and every property is the field's
JSON name as the REST codec writes it (:func:`codec.json_name`: the proto's
``json_name``, ``podIP``, but ``DaemonEndpoint.Port``), so a field the protos have is a
field the schema has, spelled alike. The patch metadata, list types and
atomic structs are Kubernetes' (its ``types.go`` tags), in one table below.

The server-side consumers (``patch.py``, ``field_validation.py``) read the same schemas
through :func:`schemas` and :func:`resolve`. Everything here is pure and computed once.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from services.apiserver.rest.codec import json_name
from skiff.api.kinds import KINDS, Kind
from skiff.api.v1 import core_pb2, meta_pb2

REF_PREFIX = "#/components/schemas/"
META = "io.k8s.apimachinery.pkg.apis.meta.v1"
INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
TIME = f"{META}.Time"
MICRO_TIME = f"{META}.MicroTime"
PATCH_CONTENT_TYPES = (
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
)
APPLY_PATCH_CONTENT_TYPE = "application/apply-patch+yaml"

# ---- Kubernetes' names for the proto messages ----

# The proto file a message comes from -> Kubernetes' package of its Go type.
_PACKAGES = {
    "skiff/api/v1/core.proto": "io.k8s.api.core.v1",
    "skiff/api/v1/apps.proto": "io.k8s.api.apps.v1",
    "skiff/api/v1/coordination.proto": "io.k8s.api.coordination.v1",
    "skiff/api/v1/meta.proto": META,
    "skiff/api/v1/services.proto": "",  # lists: named after their kind's package below
}
# Messages named differently from Kubernetes' type, or living in another package.
_RENAMED = {
    "skiff.api.v1.EndpointsObject": "io.k8s.api.core.v1.Endpoints",
    "skiff.api.v1.IntOrString": INT_OR_STRING,
    "skiff.api.v1.ObjectReference": "io.k8s.api.core.v1.ObjectReference",
}


@dataclass(frozen=True)
class FieldPatchMeta:
    """What Kubernetes' struct tags say of one field: merge strategy and list semantics."""

    strategy: str = ""  # "merge", "retainKeys", "merge,retainKeys" or "" (replace)
    merge_key: str = ""
    list_type: str = ""  # "atomic", "set" or "map"
    list_map_keys: tuple[str, ...] = ()
    map_type: str = ""  # "atomic" for maps replaced whole

    def extensions(self) -> dict[str, Any]:
        """The ``x-kubernetes-*`` extensions of the property."""
        ext: dict[str, Any] = {}
        if self.strategy:
            ext["x-kubernetes-patch-strategy"] = self.strategy
        if self.merge_key:
            ext["x-kubernetes-patch-merge-key"] = self.merge_key
        if self.list_type:
            ext["x-kubernetes-list-type"] = self.list_type
        if self.list_map_keys:
            ext["x-kubernetes-list-map-keys"] = list(self.list_map_keys)
        if self.map_type:
            ext["x-kubernetes-map-type"] = self.map_type
        return ext


def _merge_by(key: str, *map_keys: str, strategy: str = "merge") -> FieldPatchMeta:
    return FieldPatchMeta(strategy=strategy, merge_key=key, list_type="map",
                          list_map_keys=map_keys or (key,))


_ATOMIC_LIST = FieldPatchMeta(list_type="atomic")
_ATOMIC_MAP = FieldPatchMeta(map_type="atomic")
_CONDITIONS = _merge_by("type")

# (Kubernetes type, JSON field) -> its tags, from k8s.io/api's types.go (and
# apimachinery's meta/v1 types for ObjectMeta and LabelSelector).
PATCH_META: Mapping[tuple[str, str], FieldPatchMeta] = {
    ("ObjectMeta", "finalizers"): FieldPatchMeta(strategy="merge", list_type="set"),
    ("ObjectMeta", "ownerReferences"): _merge_by("uid"),
    ("LabelSelector", "matchExpressions"): _ATOMIC_LIST,
    ("LabelSelectorRequirement", "values"): _ATOMIC_LIST,
    ("NamespaceSpec", "finalizers"): _ATOMIC_LIST,
    ("NamespaceStatus", "conditions"): _CONDITIONS,
    ("PodSpec", "containers"): _merge_by("name"),
    ("PodSpec", "initContainers"): _merge_by("name"),
    ("PodSpec", "nodeSelector"): _ATOMIC_MAP,
    ("PodSpec", "tolerations"): _ATOMIC_LIST,
    ("PodStatus", "conditions"): _CONDITIONS,
    ("PodStatus", "podIPs"): _merge_by("ip"),
    ("PodStatus", "initContainerStatuses"): _ATOMIC_LIST,
    ("PodStatus", "containerStatuses"): _ATOMIC_LIST,
    ("Container", "command"): _ATOMIC_LIST,
    ("Container", "args"): _ATOMIC_LIST,
    ("Container", "ports"): _merge_by("containerPort", "containerPort", "protocol"),
    ("Container", "env"): _merge_by("name"),
    ("ExecAction", "command"): _ATOMIC_LIST,
    ("HTTPGetAction", "httpHeaders"): _ATOMIC_LIST,
    ("NodeSelector", "nodeSelectorTerms"): _ATOMIC_LIST,
    ("NodeSelectorTerm", "matchExpressions"): _ATOMIC_LIST,
    ("NodeSelectorTerm", "matchFields"): _ATOMIC_LIST,
    ("NodeSelectorRequirement", "values"): _ATOMIC_LIST,
    ("NodeAffinity", "preferredDuringSchedulingIgnoredDuringExecution"): _ATOMIC_LIST,
    ("PodDNSConfig", "nameservers"): _ATOMIC_LIST,
    ("PodDNSConfig", "searches"): _ATOMIC_LIST,
    ("PodDNSConfig", "options"): _ATOMIC_LIST,
    ("NodeSpec", "podCIDRs"): FieldPatchMeta(strategy="merge", list_type="set"),
    ("NodeSpec", "taints"): _ATOMIC_LIST,
    ("NodeStatus", "conditions"): _CONDITIONS,
    ("NodeStatus", "addresses"): _merge_by("type"),
    ("ServiceSpec", "ports"): _merge_by("port", "port", "protocol"),
    ("ServiceSpec", "selector"): _ATOMIC_MAP,
    ("ServiceSpec", "clusterIPs"): _ATOMIC_LIST,
    ("LoadBalancerStatus", "ingress"): _ATOMIC_LIST,
    ("EndpointSubset", "addresses"): _ATOMIC_LIST,
    ("EndpointSubset", "notReadyAddresses"): _ATOMIC_LIST,
    ("EndpointSubset", "ports"): _ATOMIC_LIST,
    ("Endpoints", "subsets"): _ATOMIC_LIST,
    ("ReplicationControllerSpec", "selector"): _ATOMIC_MAP,
    ("ReplicationControllerStatus", "conditions"): _CONDITIONS,
    ("ReplicaSetStatus", "conditions"): _CONDITIONS,
    ("DeploymentSpec", "strategy"): FieldPatchMeta(strategy="retainKeys"),
    ("DeploymentStatus", "conditions"): _CONDITIONS,
}
# Structs Kubernetes marks ``+structType=atomic``: replaced whole by server-side apply.
_ATOMIC_STRUCTS = frozenset({"NodeSelector", "NodeSelectorTerm", "EndpointAddress",
                             "EndpointPort", "ObjectReference", "OwnerReference",
                             "LabelSelector"})
# Timestamps Kubernetes keeps with microseconds (MicroTime rather than Time).
_MICRO_TIMES = frozenset({("LeaseSpec", "acquireTime"), ("LeaseSpec", "renewTime"),
                          ("Event", "eventTime")})
# (message, field) pairs holding quantities (the manifest reader's table).
_QUANTITY_MAPS = frozenset({("ResourceRequirements", "limits"),
                            ("ResourceRequirements", "requests"),
                            ("NodeStatus", "capacity"), ("NodeStatus", "allocatable")})

# ---- descriptions (the generated code carries no proto comments; these are ours) ----

KIND_DESCRIPTIONS: Mapping[str, str] = {
    "Namespace": "Namespace provides a scope for Names.",
    "Pod": "Pod is a collection of containers that can run on a host, created by clients "
           "and scheduled onto hosts.",
    "Node": "Node is a worker machine; each node runs a kubelet and the pods bound to it.",
    "Service": "Service is a named abstraction of software service (a load-balanced "
               "virtual IP and port) in front of the pods its selector matches.",
    "Endpoints": "Endpoints is the set of addresses and ports that implement a Service.",
    "ReplicationController": "ReplicationController keeps a number of replicas of a pod "
                             "template running.",
    "ReplicaSet": "ReplicaSet ensures that a specified number of pod replicas are running "
                  "at any given time.",
    "Deployment": "Deployment enables declarative updates for Pods and ReplicaSets.",
    "Event": "Event is a report of an event somewhere in the cluster.",
    "Lease": "Lease defines a lease concept: node heartbeats and leader election.",
}
_FIELD_DESCRIPTIONS = {
    "apiVersion": "APIVersion defines the versioned schema of this representation of an "
                  "object.",
    "kind": "Kind is a string value representing the REST resource this object represents. "
            "In CamelCase.",
    "metadata": "Standard object's metadata.",
    "spec": "Specification of the desired behavior of the object.",
    "status": "Most recently observed status of the object. Read-only.",
    "items": "List of objects.",
}


# ---- names ----


def schema_name(descriptor: Descriptor) -> str:
    """Kubernetes' definition name of a message: ``io.k8s.api.core.v1.Pod``."""
    if descriptor.full_name in _RENAMED:
        return _RENAMED[descriptor.full_name]
    if descriptor.full_name == "google.protobuf.Timestamp":
        return TIME
    package = _PACKAGES.get(descriptor.file.name)
    if package is None:
        raise KeyError(f"no Kubernetes package for {descriptor.full_name}")
    if not package:  # a list message: in its kind's package
        kind = _kind_of_list(descriptor)
        return f"{_package_of(kind)}.{kind.kind}List"
    return f"{package}.{descriptor.name}"


def kind_schema_name(kind: Kind) -> str:
    """The definition name of a kind's object: ``io.k8s.api.apps.v1.Deployment``."""
    return schema_name(kind.message.DESCRIPTOR)


def _package_of(kind: Kind) -> str:
    return schema_name(kind.message.DESCRIPTOR).rpartition(".")[0]


def _kind_of_list(descriptor: Descriptor) -> Kind:
    for kind in KINDS:
        if kind.list_message.DESCRIPTOR is descriptor:
            return kind
    raise KeyError(f"{descriptor.full_name} is no kind's list")


def gvk(kind: Kind, *, list_kind: bool = False) -> dict[str, str]:
    """``{"group", "version", "kind"}`` of a kind (or of its list)."""
    group, _, version = kind.api_version.rpartition("/")
    return {"group": group, "version": version,
            "kind": f"{kind.kind}List" if list_kind else kind.kind}


def ref(name: str) -> dict[str, str]:
    """A reference to a component schema."""
    return {"$ref": REF_PREFIX + name}


def _ref_property(name: str, description: str = "") -> dict[str, Any]:
    # Kubernetes wraps a $ref with siblings in allOf (OpenAPI 3.0 ignores $ref siblings).
    prop: dict[str, Any] = {"allOf": [ref(name)]}
    if description:
        prop["description"] = description
    return prop


# ---- message -> schema ----

_T = FieldDescriptor
_INT32 = (_T.TYPE_INT32, _T.TYPE_SINT32, _T.TYPE_SFIXED32, _T.TYPE_UINT32, _T.TYPE_FIXED32)
_INT64 = (_T.TYPE_INT64, _T.TYPE_SINT64, _T.TYPE_SFIXED64, _T.TYPE_UINT64, _T.TYPE_FIXED64)
# Copied on use (_value_schema), so sharing one dict per format is safe.
_SCALARS: Mapping[int, Mapping[str, str]] = {
    **{t: {"type": "integer", "format": "int32"} for t in _INT32},
    **{t: {"type": "integer", "format": "int64"} for t in _INT64},
    _T.TYPE_DOUBLE: {"type": "number", "format": "double"},
    _T.TYPE_FLOAT: {"type": "number", "format": "float"},
    _T.TYPE_BOOL: {"type": "boolean"},
    _T.TYPE_STRING: {"type": "string"},
    _T.TYPE_BYTES: {"type": "string", "format": "byte"},
    _T.TYPE_ENUM: {"type": "string"},
}


def _is_map(field: FieldDescriptor) -> bool:
    return (field.type == _T.TYPE_MESSAGE and field.is_repeated
            and field.message_type.GetOptions().map_entry)


def _type_name(descriptor: Descriptor) -> str:
    """The Kubernetes type name (last part of the schema name) of a message."""
    return schema_name(descriptor).rpartition(".")[2]


def _value_schema(owner: str, field: FieldDescriptor) -> dict[str, Any]:
    """The schema of one value of ``field`` (an element, for a repeated field)."""
    if field.type != _T.TYPE_MESSAGE:
        return dict(_SCALARS[field.type])
    if (owner, json_name(field)) in _MICRO_TIMES:
        return ref(MICRO_TIME)
    return ref(schema_name(field.message_type))


def field_schema(owner: str, field: FieldDescriptor) -> dict[str, Any]:
    """The property schema of one field of the Kubernetes type ``owner``."""
    name = json_name(field)
    if _is_map(field):
        value = field.message_type.fields_by_name["value"]
        values = (ref(QUANTITY) if (owner, name) in _QUANTITY_MAPS
                  else _value_schema(owner, value))
        prop: dict[str, Any] = {"type": "object", "additionalProperties": values}
    elif field.is_repeated:
        prop = {"type": "array", "items": _value_schema(owner, field)}
    elif field.type == _T.TYPE_MESSAGE:
        prop = _ref_property(_value_schema(owner, field)["$ref"].removeprefix(REF_PREFIX))
    else:
        prop = _value_schema(owner, field)
    prop.update(PATCH_META.get((owner, name), FieldPatchMeta()).extensions())
    return prop


def message_schema(descriptor: Descriptor) -> dict[str, Any]:
    """The object schema of a message: one property per field, by its JSON name."""
    owner = _type_name(descriptor)
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {json_name(f): field_schema(owner, f) for f in descriptor.fields},
    }
    if owner in _ATOMIC_STRUCTS:
        schema["x-kubernetes-map-type"] = "atomic"
    return schema


def _referenced(descriptor: Descriptor) -> Iterable[Descriptor]:
    for field in descriptor.fields:
        if field.type != _T.TYPE_MESSAGE:
            continue
        if _is_map(field):
            yield from _referenced(field.message_type)
        else:
            yield field.message_type


def message_schemas(roots: Iterable[Descriptor]) -> dict[str, dict[str, Any]]:
    """The schemas of ``roots`` and of every message they reach, by definition name."""
    out: dict[str, dict[str, Any]] = {}
    todo = list(roots)
    while todo:
        descriptor = todo.pop()
        name = schema_name(descriptor)
        if name in out or descriptor.GetOptions().map_entry:
            continue
        out[name] = _special_schema(name) or message_schema(descriptor)
        todo.extend(_referenced(descriptor))
    return out


def _special_schema(name: str) -> dict[str, Any] | None:
    """Types whose JSON is not their message's: a bare string or number."""
    if name == INT_OR_STRING:
        return {"type": "string", "format": "int-or-string", "x-kubernetes-int-or-string": True,
                "description": "IntOrString is a type that can hold an int32 or a string: "
                               "written as a bare number or string."}
    if name in (TIME, MICRO_TIME):
        return {"type": "string", "format": "date-time",
                "description": "A timestamp in RFC 3339 form."}
    return None


# ---- hand-written meta/v1 and autoscaling/v1 schemas (not objects Skiff stores) ----


def _props(**props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": props}


_STR = {"type": "string"}
_I32 = {"type": "integer", "format": "int32"}
_I64 = {"type": "integer", "format": "int64"}


def _scale_schemas() -> dict[str, dict[str, Any]]:
    base = "io.k8s.api.autoscaling.v1"
    scale = _props(apiVersion=dict(_STR), kind=dict(_STR),
                   metadata=_ref_property(f"{META}.ObjectMeta"),
                   spec=_ref_property(f"{base}.ScaleSpec"),
                   status=_ref_property(f"{base}.ScaleStatus"))
    scale["description"] = "Scale represents a scaling request for a resource."
    scale["x-kubernetes-group-version-kind"] = [
        {"group": "autoscaling", "version": "v1", "kind": "Scale"}]
    return {
        f"{base}.Scale": scale,
        f"{base}.ScaleSpec": _props(replicas=dict(_I32)),
        f"{base}.ScaleStatus": _props(replicas=dict(_I32), selector=dict(_STR)),
    }


def _meta_schemas() -> dict[str, dict[str, Any]]:
    status = _props(apiVersion=dict(_STR), kind=dict(_STR), code=dict(_I32),
                    details=_ref_property(f"{META}.StatusDetails"), message=dict(_STR),
                    metadata=_ref_property(f"{META}.ListMeta"), reason=dict(_STR),
                    status=dict(_STR))
    status["x-kubernetes-group-version-kind"] = [{"group": "", "version": "v1",
                                                  "kind": "Status"}]
    delete = _props(apiVersion=dict(_STR), kind=dict(_STR), dryRun={"type": "array",
                    "items": dict(_STR)}, gracePeriodSeconds=dict(_I64),
                    orphanDependents={"type": "boolean"},
                    preconditions=_ref_property(f"{META}.Preconditions"),
                    propagationPolicy=dict(_STR))
    return {
        f"{META}.Status": status,
        f"{META}.StatusDetails": _props(
            causes={"type": "array", "items": ref(f"{META}.StatusCause")}, group=dict(_STR),
            kind=dict(_STR), name=dict(_STR), retryAfterSeconds=dict(_I32), uid=dict(_STR)),
        f"{META}.StatusCause": _props(field=dict(_STR), message=dict(_STR),
                                      reason=dict(_STR)),
        f"{META}.DeleteOptions": delete,
        f"{META}.WatchEvent": _props(object=_ref_property(
            "io.k8s.apimachinery.pkg.runtime.RawExtension"), type=dict(_STR)),
        "io.k8s.apimachinery.pkg.runtime.RawExtension": {"type": "object"},
        f"{META}.Patch": {"type": "object", "description": "A patch: its content type "
                          "says which (JSON patch, merge patch, strategic merge patch)."},
        MICRO_TIME: _special_schema(MICRO_TIME),
        QUANTITY: {"type": "string", "description": "Quantity is a fixed-point number: "
                   "\"100m\", \"1\", \"128Mi\"."},
    }


# ---- the documents ----


def gv_path(group_version: str) -> str:
    """The document's path under /openapi/v3: ``api/v1`` or ``apis/apps/v1``."""
    return f"apis/{group_version}" if "/" in group_version else f"api/{group_version}"


def group_versions() -> tuple[str, ...]:
    """The group-versions Skiff serves, in the order of KINDS."""
    return tuple(dict.fromkeys(k.api_version for k in KINDS))


def _has_scale(kind: Kind) -> bool:
    return kind.kind in ("Deployment", "ReplicaSet", "ReplicationController")


def component_schemas(kinds: Iterable[Kind]) -> dict[str, dict[str, Any]]:
    """Every schema a document of ``kinds`` needs, with GVKs and kind descriptions."""
    kinds = list(kinds)
    roots = [k.message.DESCRIPTOR for k in kinds] + [k.list_message.DESCRIPTOR for k in kinds]
    roots += [meta_pb2.Preconditions.DESCRIPTOR]
    if any(k.kind == "Pod" for k in kinds):
        roots.append(core_pb2.Binding.DESCRIPTOR)
    out = message_schemas(roots)
    out.update(_meta_schemas())
    if any(_has_scale(k) for k in kinds):
        out.update(_scale_schemas())
    for kind in kinds:
        obj = out[kind_schema_name(kind)]
        obj["description"] = KIND_DESCRIPTIONS.get(kind.kind, kind.kind)
        obj["x-kubernetes-group-version-kind"] = [gvk(kind)]
        _describe_top_fields(obj)
        listed = out[schema_name(kind.list_message.DESCRIPTOR)]
        listed["description"] = f"{kind.kind}List is a list of {kind.kind} objects."
        listed["x-kubernetes-group-version-kind"] = [gvk(kind, list_kind=True)]
        _describe_top_fields(listed)
    return dict(sorted(out.items()))


def _describe_top_fields(schema: dict[str, Any]) -> None:
    for name, prop in schema["properties"].items():
        if name in _FIELD_DESCRIPTIONS:
            prop["description"] = _FIELD_DESCRIPTIONS[name]


def _query(name: str, type_: str = "string", description: str = "") -> dict[str, Any]:
    param: dict[str, Any] = {"in": "query", "name": name, "schema": {"type": type_,
                                                                      "uniqueItems": True}}
    if description:
        param["description"] = description
    return param


def _path_param(name: str, description: str) -> dict[str, Any]:
    return {"in": "path", "name": name, "required": True, "description": description,
            "schema": {"type": "string", "uniqueItems": True}}


_FIELD_VALIDATION = _query(
    "fieldValidation", description="How the server treats unknown or duplicate fields in "
    "the request's object: Ignore, Warn (the default: a Warning header for each) or Strict "
    "(the request fails).")
_DRY_RUN = _query("dryRun")
_FIELD_MANAGER = _query("fieldManager")
_LIST_PARAMS = [_query("labelSelector"), _query("fieldSelector"), _query("limit", "integer"),
                _query("continue"), _query("resourceVersion"),
                _query("resourceVersionMatch"), _query("timeoutSeconds", "integer"),
                _query("watch", "boolean"), _query("allowWatchBookmarks", "boolean")]
_DELETE_PARAMS = [_query("gracePeriodSeconds", "integer"), _query("propagationPolicy"),
                  _query("orphanDependents", "boolean"), _DRY_RUN]


def _content(schema_ref: str, *types: str) -> dict[str, Any]:
    return {t: {"schema": ref(schema_ref)} for t in types}


def _operation(action: str, kind: Kind, gvk_: dict[str, str], *, response: str,
               parameters: Sequence[dict[str, Any]] = (), body: dict[str, Any] | None = None,
               description: str = "") -> dict[str, Any]:
    op: dict[str, Any] = {
        "description": description or f"{action} {gvk_['kind']}",
        "operationId": f"{action}{gvk_['kind']}",
        "parameters": list(parameters),
        "responses": {"200": {"description": "OK",
                              "content": _content(response, "application/json",
                                                  "application/yaml")}},
        "tags": [kind.api_version.replace("/", "_").replace(".", "_")],
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk_,
    }
    if body is not None:
        op["requestBody"] = {"content": body}
    return op


def _object_operations(kind: Kind, schema: str, gvk_: dict[str, str], *,
                       server_side_apply: bool, writable: bool = True) -> dict[str, Any]:
    """get/put/patch (and delete) of one object (or one of its subresources)."""
    patch_types = PATCH_CONTENT_TYPES + ((APPLY_PATCH_CONTENT_TYPE,) if server_side_apply
                                         else ())
    ops = {"get": _operation("get", kind, gvk_, response=schema)}
    if writable:
        ops["put"] = _operation("put", kind, gvk_, response=schema,
                                parameters=[_DRY_RUN, _FIELD_MANAGER, _FIELD_VALIDATION],
                                body=_content(schema, "application/json"))
        ops["patch"] = _operation("patch", kind, gvk_, response=schema,
                                  parameters=[_DRY_RUN, _FIELD_MANAGER, _FIELD_VALIDATION,
                                              _query("force", "boolean")],
                                  body=_content(f"{META}.Patch", *patch_types))
    return ops


def kind_paths(kind: Kind, *, server_side_apply: bool = False) -> dict[str, dict[str, Any]]:
    """The REST paths of one kind with their operations, as Kubernetes lays them out."""
    prefix = f"/{gv_path(kind.api_version)}"
    scope = f"{prefix}/namespaces/{{namespace}}" if kind.namespaced else prefix
    scope_params = [_path_param("namespace", "object name and auth scope")] \
        if kind.namespaced else []
    obj, listed, this = kind_schema_name(kind), schema_name(kind.list_message.DESCRIPTOR), gvk(kind)
    name_param = _path_param("name", f"name of the {kind.kind}")
    collection = {
        "get": _operation("list", kind, this, response=listed, parameters=_LIST_PARAMS),
        "post": _operation("post", kind, this, response=obj, body=_content(obj, "application/json"),
                           parameters=[_DRY_RUN, _FIELD_MANAGER, _FIELD_VALIDATION]),
        "delete": _operation("deletecollection", kind, this, response=f"{META}.Status",
                             parameters=_DELETE_PARAMS + _LIST_PARAMS,
                             body=_content(f"{META}.DeleteOptions", "application/json")),
        "parameters": scope_params,
    }
    item = _object_operations(kind, obj, this, server_side_apply=server_side_apply)
    item["delete"] = _operation("delete", kind, this, response=obj, parameters=_DELETE_PARAMS,
                                body=_content(f"{META}.DeleteOptions", "application/json"))
    item["parameters"] = [*scope_params, name_param]
    paths = {f"{scope}/{kind.plural}": collection, f"{scope}/{kind.plural}/{{name}}": item}
    if kind.namespaced:
        paths[f"{prefix}/{kind.plural}"] = {
            "get": _operation("list", kind, this, response=listed, parameters=_LIST_PARAMS)}
    if kind.has_status:
        status = _object_operations(kind, obj, this, server_side_apply=server_side_apply)
        status["parameters"] = [*scope_params, name_param]
        paths[f"{scope}/{kind.plural}/{{name}}/status"] = status
    if _has_scale(kind):
        scale_gvk = {"group": "autoscaling", "version": "v1", "kind": "Scale"}
        scale = _object_operations(kind, "io.k8s.api.autoscaling.v1.Scale", scale_gvk,
                                   server_side_apply=server_side_apply)
        scale["parameters"] = [*scope_params, name_param]
        paths[f"{scope}/{kind.plural}/{{name}}/scale"] = scale
    return paths


def group_version_document(group_version: str, *,
                           server_side_apply: bool = False) -> dict[str, Any]:
    """The OpenAPI v3 document of one group-version (``v1``, ``apps/v1``)."""
    kinds = [k for k in KINDS if k.api_version == group_version]
    if not kinds:
        raise KeyError(f"no group-version {group_version!r}")
    paths: dict[str, Any] = {}
    for kind in kinds:
        paths.update(kind_paths(kind, server_side_apply=server_side_apply))
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "unversioned"},
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": component_schemas(kinds)},
    }


def render(document: Mapping[str, Any]) -> bytes:
    """A document's JSON bytes: stable (sorted keys), so its hash is too."""
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def etag(body: bytes) -> str:
    """The hash Kubernetes puts in ``?hash=`` and the ETag: SHA-512, hex, upper case."""
    return hashlib.sha512(body).hexdigest().upper()


@dataclass(frozen=True)
class Document:
    """One served document: where it lives, its bytes and their hash."""

    path: str  # "api/v1", "apis/apps/v1"
    body: bytes
    etag: str

    @property
    def server_relative_url(self) -> str:
        return f"/openapi/v3/{self.path}?hash={self.etag}"


@functools.cache
def documents(*, server_side_apply: bool = False) -> Mapping[str, Document]:
    """Every group-version's document, by path (``api/v1``), built once."""
    out: dict[str, Document] = {}
    for gv in group_versions():
        body = render(group_version_document(gv, server_side_apply=server_side_apply))
        out[gv_path(gv)] = Document(path=gv_path(gv), body=body, etag=etag(body))
    return out


def index_document(*, server_side_apply: bool = False) -> dict[str, Any]:
    """``GET /openapi/v3``: each document's path and hashed URL."""
    docs = documents(server_side_apply=server_side_apply)
    return {"paths": {path: {"serverRelativeURL": doc.server_relative_url}
                      for path, doc in docs.items()}}


# ---- reading schemas (for patch and field validation) ----


@functools.cache
def schemas() -> Mapping[str, Mapping[str, Any]]:
    """Every component schema of every document, by name (names are global)."""
    out: dict[str, Mapping[str, Any]] = {}
    for gv in group_versions():
        out.update(group_version_document(gv)["components"]["schemas"])
    return out


def resolve(schema: Mapping[str, Any] | None,
            table: Mapping[str, Mapping[str, Any]] | None = None) -> Mapping[str, Any] | None:
    """Follow ``allOf[0]`` and ``$ref`` to the schema they stand for (as kubectl does)."""
    table = schemas() if table is None else table
    seen = 0
    while schema is not None and seen < 16:  # bounded: a reference cycle is no schema
        if schema.get("allOf"):
            schema = schema["allOf"][0]
        elif "$ref" in schema:
            schema = table.get(schema["$ref"].removeprefix(REF_PREFIX))
        else:
            return schema
        seen += 1
    return None


def schema_for_kind(kind: Kind) -> Mapping[str, Any]:
    """The object schema of a kind."""
    return schemas()[kind_schema_name(kind)]
