"""Field validation: a sample Deployment passes, a misspelt field fails with its path,
duplicates are found in the raw JSON, and every field the codec writes is known."""

from __future__ import annotations

import json
from typing import Any

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from services.apiserver.rest import codec, openapi
from services.apiserver.rest import field_validation as fv
from skiff.api import manifest
from skiff.api.kinds import KINDS, Kind, lookup

DEPLOYMENT = lookup("deploy")

SAMPLE = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"},
                 "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
    "spec": {
        "replicas": 3,
        "selector": {"matchLabels": {"app": "web"},
                     "matchExpressions": [{"key": "tier", "operator": "In",
                                           "values": ["front"]}]},
        "strategy": {"type": "RollingUpdate",
                     "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {
                "containers": [{
                    "name": "nginx", "image": "nginx:1.25", "imagePullPolicy": "IfNotPresent",
                    "ports": [{"containerPort": 80, "name": "http", "protocol": "TCP"}],
                    "env": [{"name": "MODE", "value": "prod"}],
                    "resources": {"limits": {"cpu": "500m", "memory": "128Mi"},
                                  "requests": {"cpu": 1}},
                    "readinessProbe": {"httpGet": {"path": "/", "port": "http"},
                                       "periodSeconds": 5},
                }],
                "nodeSelector": {"kubernetes.io/os": "linux"},
                "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule"}],
                "terminationGracePeriodSeconds": 30,
            },
        },
    },
    "status": {},
}


def test_a_sample_deployment_passes_untouched() -> None:
    for directive in fv.DIRECTIVES:
        body, warnings = fv.validate(json.loads(json.dumps(SAMPLE)), DEPLOYMENT, directive)
        assert body == SAMPLE and warnings == []


def _misspelt() -> dict[str, Any]:
    body = json.loads(json.dumps(SAMPLE))
    container = body["spec"]["template"]["spec"]["containers"][0]
    container["imagee"] = container.pop("image")
    body["spec"]["replica"] = 2
    return body


def test_strict_refuses_a_misspelt_field_naming_its_path() -> None:
    with pytest.raises(fv.StrictDecodingError) as e:
        fv.validate(_misspelt(), DEPLOYMENT, fv.STRICT)
    # In the order of the document, as Kubernetes' decoder finds them.
    assert e.value.problems == ('unknown field "spec.template.spec.containers[0].imagee"',
                                'unknown field "spec.replica"')
    assert e.value.message("Deployment") == (
        'Deployment in version "v1" cannot be handled as a Deployment: strict decoding error: '
        'unknown field "spec.template.spec.containers[0].imagee", unknown field "spec.replica"')


def test_warn_drops_unknown_fields_and_warns() -> None:
    body, warnings = fv.validate(_misspelt(), DEPLOYMENT, fv.WARN)
    assert warnings == ['unknown field "spec.template.spec.containers[0].imagee"',
                        'unknown field "spec.replica"']
    assert "replica" not in body["spec"]
    assert body["spec"]["template"]["spec"]["containers"][0] == {
        k: v for k, v in SAMPLE["spec"]["template"]["spec"]["containers"][0].items()
        if k != "image"}


def test_ignore_drops_unknown_fields_silently() -> None:
    body, warnings = fv.validate(_misspelt(), DEPLOYMENT, fv.IGNORE)
    assert warnings == [] and "replica" not in body["spec"]


def test_the_directive_defaults_to_warn_and_is_checked() -> None:
    assert fv.parse_directive(None) == fv.WARN
    assert fv.parse_directive("") == fv.WARN
    with pytest.raises(fv.InvalidDirective, match='Unsupported value: "strict"'):
        fv.parse_directive("strict")


def test_snake_case_proto_names_are_unknown_as_in_kubernetes() -> None:
    body = {"status": {"pod_ip": "10.0.0.1", "podIP": "10.0.0.2"}}
    _, warnings = fv.validate(body, lookup("pods"), fv.WARN)
    assert warnings == ['unknown field "status.pod_ip"']


def test_maps_take_any_key_but_their_objects_are_checked() -> None:
    pod = {"metadata": {"labels": {"any/key": "v"}},
           "spec": {"containers": [{"name": "a", "resources": {"limits": {"gpu": "1"}}}]}}
    assert fv.validate(pod, lookup("pods"), fv.STRICT)[1] == []


def test_duplicate_fields_from_the_raw_json() -> None:
    raw = (b'{"kind":"Deployment","metadata":{"name":"a","name":"b"},"spec":{"template":'
           b'{"spec":{"containers":[{"name":"c","image":"x","image":"y"}]}}}}')
    body, duplicates = fv.load_json(raw)
    assert duplicates == ['duplicate field "metadata.name"',
                          'duplicate field "spec.template.spec.containers[0].image"']
    assert body["metadata"]["name"] == "b"  # the last one wins, as in Go
    with pytest.raises(fv.StrictDecodingError, match=r'duplicate field "metadata\.name"'):
        fv.check_body(raw, DEPLOYMENT, fv.STRICT)
    _, warnings = fv.check_body(raw, DEPLOYMENT, fv.WARN)
    assert len(warnings) == 2


def test_malformed_json() -> None:
    with pytest.raises(fv.MalformedJSON):
        fv.load_json(b'{"a":')


def test_subresource_bodies_by_schema_name() -> None:
    scale = {"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": "web"},
             "spec": {"replicas": 3, "replicaz": 1}}
    _, warnings = fv.validate(scale, "io.k8s.api.autoscaling.v1.Scale", fv.WARN)
    assert warnings == ['unknown field "spec.replicaz"']


# ---- every field the codec writes is known ----


def _fill(message: Message, depth: int = 0) -> Message:
    """Set every field of ``message`` (one element per list and map), recursively."""
    for field in message.DESCRIPTOR.fields:
        _fill_field(message, field, depth)
    return message


def _scalar(field: FieldDescriptor) -> Any:
    t = field.type
    if t == FieldDescriptor.TYPE_BOOL:
        return True
    if t == FieldDescriptor.TYPE_STRING:
        return "x"
    if t == FieldDescriptor.TYPE_BYTES:
        return b"x"
    if t == FieldDescriptor.TYPE_ENUM:
        return 0
    if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return 1.5
    return 1


def _fill_field(message: Message, field: FieldDescriptor, depth: int) -> None:
    if depth > 12:
        return
    value = getattr(message, field.name)
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        value_field = field.message_type.fields_by_name["value"]
        if value_field.message_type is not None:
            _fill(value["k"], depth + 1)
        else:
            value["k"] = {FieldDescriptor.TYPE_STRING: "1",
                          FieldDescriptor.TYPE_BYTES: b"1"}.get(value_field.type, 1)
    elif field.is_repeated:
        if field.message_type is not None:
            _fill(value.add(), depth + 1)
        else:
            value.append(_scalar(field))
    elif field.message_type is not None:
        _fill_message_field(value, field.message_type, depth)
    else:
        setattr(message, field.name, _scalar(field))


def _fill_message_field(value: Message, descriptor: Descriptor, depth: int) -> None:
    if descriptor.full_name == "google.protobuf.Timestamp":
        value.seconds = 1_700_000_000
    elif descriptor.full_name == "skiff.api.v1.IntOrString":
        value.int_val = 8080
    else:
        _fill(value, depth + 1)


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_every_field_the_codec_writes_is_known(kind: Kind) -> None:
    obj = _fill(kind.new())
    obj.api_version, obj.kind = kind.api_version, kind.kind
    body = codec.encode(obj, kind)
    assert fv.validate(body, kind, fv.STRICT) == (body, [])
    listed = codec.encode_list(_fill(kind.list_message()), kind)
    list_schema = openapi.schema_name(kind.list_message.DESCRIPTOR)
    assert fv.validate(listed, list_schema, fv.STRICT) == (listed, [])


def test_the_filled_objects_are_full() -> None:
    """The check above is only as good as the fill: a filled Pod sets deep fields."""
    pod = manifest.to_dict(_fill(lookup("pods").new()))
    container = pod["spec"]["containers"][0]
    assert container["ports"][0]["hostIP"] == "x"
    assert container["livenessProbe"]["httpGet"]["port"] == 8080
    assert pod["status"]["podIPs"] == [{"ip": "x"}]


def test_warning_header_is_kubernetes_quoted() -> None:
    assert fv.warning_header('unknown field "spec.foo"') == \
        '299 - "unknown field \\"spec.foo\\""'
    assert fv.StrictDecodingError(["x"]).code == 400


def test_a_patch_that_brings_an_unknown_field() -> None:
    stored = json.loads(json.dumps(SAMPLE))
    body = b'{"spec":{"replicas":4,"paused":true,"pausd":true}}'
    with pytest.raises(fv.StrictDecodingError, match=r'unknown field "spec\.pausd"'):
        fv.patch_and_validate("application/merge-patch+json", stored, body, DEPLOYMENT,
                              fv.STRICT)
    patched, warnings = fv.patch_and_validate("application/strategic-merge-patch+json",
                                              stored, body, DEPLOYMENT, "")
    assert warnings == ['unknown field "spec.pausd"']
    assert patched["spec"]["replicas"] == 4 and "pausd" not in patched["spec"]
    assert stored == SAMPLE


def test_a_patch_with_a_duplicate_field() -> None:
    body = b'{"spec":{"replicas":4,"replicas":5}}'
    patched, warnings = fv.patch_and_validate("application/merge-patch+json", SAMPLE, body,
                                              DEPLOYMENT, fv.WARN)
    assert warnings == ['duplicate field "spec.replicas"'] and patched["spec"]["replicas"] == 5
    ops = b'[{"op":"add","path":"/spec/paused","value":true}]'
    assert fv.patch_and_validate("application/json-patch+json", SAMPLE, ops, DEPLOYMENT,
                                 fv.STRICT)[1] == []
