"""Field selectors: parsing (with Kubernetes' escapes), matching and per-kind fields."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from skiff.api.errors import BadRequest
from skiff.api.fields import (
    FieldOperator,
    FieldRequirement,
    FieldSelector,
    escape_value,
    object_fields,
    parse_field_selector,
    supported_fields,
    unescape_value,
    validate_field_selector,
)
from skiff.api.kinds import KINDS, UnknownKind
from skiff.api.v1 import apps_pb2, coordination_pb2, core_pb2, meta_pb2

EQ, NE = FieldOperator.EQUALS, FieldOperator.NOT_EQUALS


@pytest.mark.parametrize(("text", "requirements", "canonical"), [
    ("", (), ""),
    ("  ", (), ""),
    ("a=b", (("a", EQ, "b"),), "a=b"),
    ("a==b", (("a", EQ, "b"),), "a=b"),
    ("a!=b", (("a", NE, "b"),), "a!=b"),
    ("a=", (("a", EQ, ""),), "a="),
    ("a!=", (("a", NE, ""),), "a!="),
    ("a=b,c!=d", (("a", EQ, "b"), ("c", NE, "d")), "a=b,c!=d"),
    ("c!=d,a=b", (("a", EQ, "b"), ("c", NE, "d")), "a=b,c!=d"),
    ("a=b,,c=d,", (("a", EQ, "b"), ("c", EQ, "d")), "a=b,c=d"),
    (" status.phase = Running , spec.nodeName==n1",
     (("spec.nodeName", EQ, "n1"), ("status.phase", EQ, "Running")),
     "spec.nodeName=n1,status.phase=Running"),
    ("a=b\\,c", (("a", EQ, "b,c"),), "a=b\\,c"),
    ("a=b\\=c", (("a", EQ, "b=c"),), "a=b\\=c"),
    ("a=b\\\\c", (("a", EQ, "b\\c"),), "a=b\\\\c"),
    ("a=!b", (("a", EQ, "!b"),), "a=!b"),
    ("a!=!b", (("a", NE, "!b"),), "a!=!b"),
    ("a!==b", (("a", NE, "=b"),), None),  # "!=" first, then "=b" is... a bare "=": error
])
def test_parse(text: str, requirements: tuple[tuple[str, FieldOperator, str], ...],
               canonical: str | None) -> None:
    if canonical is None:
        with pytest.raises(BadRequest, match="unescaped character in value: ="):
            parse_field_selector(text)
        return
    selector = parse_field_selector(text)
    assert selector.requirements == tuple(FieldRequirement(*r) for r in requirements)
    assert str(selector) == canonical
    assert parse_field_selector(canonical) == selector
    assert selector.empty is (not requirements)


@pytest.mark.parametrize(("text", "message"), [
    ("a", "invalid selector: 'a'; can't understand 'a'"),
    ("a=b,c", "invalid selector: 'a=b,c'; can't understand 'c'"),
    ("a=b=c", "invalid field selector: unescaped character in value: ="),
    ("a=b\\x", "invalid field selector: invalid escape sequence: \\x"),
    ("a=b\\", "invalid field selector: invalid escape sequence: \\"),
])
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_field_selector(text)
    assert str(caught.value) == message


def test_escaping() -> None:
    assert escape_value("a,b=c\\d") == "a\\,b\\=c\\\\d"
    assert unescape_value("a\\,b\\=c\\\\d") == "a,b=c\\d"
    assert unescape_value("plain") == "plain"


@pytest.mark.parametrize(("text", "fields", "expected"), [
    ("", {}, True),
    ("a=b", {"a": "b"}, True),
    ("a=b", {"a": "c"}, False),
    ("a=b", {}, False),
    ("a=", {}, True),  # a missing field reads as ""
    ("a!=b", {}, True),
    ("a!=b", {"a": "b"}, False),
    ("a!=", {}, False),
    ("a=b,c!=d", {"a": "b", "c": "e"}, True),
    ("a=b,c!=d", {"a": "b", "c": "d"}, False),
    ("a=x\\,y", {"a": "x,y"}, True),
])
def test_matches(text: str, fields: dict[str, str], expected: bool) -> None:
    assert parse_field_selector(text).matches(fields) is expected


def test_requires_exact_match() -> None:
    selector = parse_field_selector("spec.nodeName=n1,metadata.namespace!=kube-system")
    assert selector.requires_exact_match("spec.nodeName") == "n1"
    assert selector.requires_exact_match("metadata.namespace") is None
    assert selector.requires_exact_match("metadata.name") is None


# ---- the selectable fields ----


def _pod() -> core_pb2.Pod:
    return core_pb2.Pod(
        metadata=meta_pb2.ObjectMeta(name="web-1", namespace="prod"),
        spec=core_pb2.PodSpec(node_name="n1", restart_policy="Always",
                              scheduler_name="default-scheduler", host_network=True),
        status=core_pb2.PodStatus(phase="Running", pod_ip="10.0.0.5",
                                  nominated_node_name="n2"))


def test_pod_fields() -> None:
    assert object_fields("Pod", _pod()) == {
        "metadata.name": "web-1", "metadata.namespace": "prod", "spec.nodeName": "n1",
        "spec.restartPolicy": "Always", "spec.schedulerName": "default-scheduler",
        "spec.hostNetwork": "true", "status.phase": "Running", "status.podIP": "10.0.0.5",
        "status.nominatedNodeName": "n2",
    }
    # Any name of the kind will do.
    assert object_fields("po", _pod()) == object_fields("pods", _pod())


def test_selecting_pods() -> None:
    fields = object_fields("Pod", _pod())
    assert parse_field_selector("spec.nodeName=n1,status.phase!=Succeeded").matches(fields)
    assert not parse_field_selector("spec.nodeName=").matches(fields)  # the unscheduled ones
    assert parse_field_selector("spec.nodeName=").matches(object_fields("Pod", core_pb2.Pod()))


def test_node_fields() -> None:
    node = core_pb2.Node(metadata=meta_pb2.ObjectMeta(name="n1"),
                         spec=core_pb2.NodeSpec(unschedulable=True))
    assert object_fields("Node", node) == {"metadata.name": "n1", "metadata.namespace": "",
                                           "spec.unschedulable": "true"}
    assert object_fields("no", core_pb2.Node())["spec.unschedulable"] == "false"


def test_event_fields() -> None:
    event = core_pb2.Event(
        metadata=meta_pb2.ObjectMeta(name="web-1.17a", namespace="prod"),
        involved_object=meta_pb2.ObjectReference(kind="Pod", name="web-1", namespace="prod",
                                                 uid="u-1", api_version="v1",
                                                 resource_version="42",
                                                 field_path="spec.containers{web}"),
        reason="Scheduled", type="Normal", source=core_pb2.EventSource(component="scheduler"),
        reporting_component="skiff-scheduler")
    assert object_fields("Event", event) == {
        "metadata.name": "web-1.17a", "metadata.namespace": "prod",
        "involvedObject.kind": "Pod", "involvedObject.name": "web-1",
        "involvedObject.namespace": "prod", "involvedObject.uid": "u-1",
        "involvedObject.apiVersion": "v1", "involvedObject.resourceVersion": "42",
        "involvedObject.fieldPath": "spec.containers{web}", "reason": "Scheduled",
        "reportingComponent": "skiff-scheduler", "source": "scheduler", "type": "Normal",
    }


def test_other_kinds_fields() -> None:
    ns = core_pb2.Namespace(metadata=meta_pb2.ObjectMeta(name="prod"),
                            status=core_pb2.NamespaceStatus(phase="Terminating"))
    assert object_fields("Namespace", ns) == {"metadata.name": "prod", "metadata.namespace": "",
                                              "status.phase": "Terminating"}
    svc = core_pb2.Service(metadata=meta_pb2.ObjectMeta(name="web", namespace="prod"))
    assert object_fields("Service", svc) == {"metadata.name": "web", "metadata.namespace": "prod"}
    rs = apps_pb2.ReplicaSet(status=apps_pb2.ReplicaSetStatus(replicas=3))
    assert object_fields("ReplicaSet", rs)["status.replicas"] == "3"
    rc = core_pb2.ReplicationController(
        status=core_pb2.ReplicationControllerStatus(replicas=2))
    assert object_fields("rc", rc)["status.replicas"] == "2"
    lease = coordination_pb2.Lease(metadata=meta_pb2.ObjectMeta(name="n1", namespace="kube"))
    assert object_fields("Lease", lease) == {"metadata.name": "n1", "metadata.namespace": "kube"}


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_every_kind_selects_by_name_and_namespace(kind) -> None:  # type: ignore[no-untyped-def]
    assert {"metadata.name", "metadata.namespace"} <= supported_fields(kind.kind)
    fields = object_fields(kind.kind, kind.message())
    assert set(fields) == supported_fields(kind.plural)
    assert all(isinstance(v, str) for v in fields.values())


def test_supported_fields() -> None:
    assert supported_fields("svc") == frozenset({"metadata.name", "metadata.namespace"})
    assert {"spec.nodeName", "status.phase", "spec.schedulerName", "spec.restartPolicy",
            "status.podIP"} <= supported_fields("pods")
    assert "spec.unschedulable" in supported_fields("nodes")
    assert {"involvedObject.kind", "involvedObject.name", "involvedObject.namespace",
            "involvedObject.uid", "reason", "type", "source"} <= supported_fields("events")
    assert supported_fields("ns") == frozenset({"metadata.name", "metadata.namespace",
                                                "status.phase"})
    assert "type" in supported_fields("secrets")
    with pytest.raises(UnknownKind):
        supported_fields("widgets")


def test_validate_field_selector() -> None:
    selector = validate_field_selector("pods", "spec.nodeName=n1,status.phase=Running")
    assert selector == parse_field_selector("status.phase=Running,spec.nodeName=n1")
    assert validate_field_selector("Pod", selector) is selector
    assert validate_field_selector("nodes", "").empty
    with pytest.raises(BadRequest) as caught:
        validate_field_selector("pods", "status.phase=Running,spec.foo=1")
    assert str(caught.value) == "field label not supported: spec.foo"
    with pytest.raises(BadRequest, match=r"field label not supported: spec\.nodeName"):
        validate_field_selector("Service", "spec.nodeName=n1")
    with pytest.raises(BadRequest, match="can't understand"):
        validate_field_selector("Pod", "nonsense")


# ---- properties ----

field_names = st.from_regex(r"\A[a-zA-Z][a-zA-Z.]{0,12}\Z")
# Whitespace at a value's ends is trimmed by the parser, so it cannot round-trip.
field_values = st.text(max_size=10).filter(lambda v: v == v.strip(" \t\r\n"))
field_requirements = st.builds(FieldRequirement, field_names, st.sampled_from(list(FieldOperator)),
                               field_values)
field_selectors = st.builds(lambda rs: FieldSelector(tuple(rs)),
                            st.lists(field_requirements, max_size=4))


@given(field_selectors)
def test_string_form_parses_back(selector: FieldSelector) -> None:
    assert parse_field_selector(str(selector)) == selector


@given(field_selectors, st.dictionaries(field_names, field_values, max_size=5))
def test_matching_agrees_after_round_trip(selector: FieldSelector,
                                          fields: dict[str, str]) -> None:
    assert parse_field_selector(str(selector)).matches(fields) == selector.matches(fields)
    assert selector.matches(fields) == all(r.matches(fields) for r in selector.requirements)


@given(st.text(max_size=20))
def test_escape_round_trips(value: str) -> None:
    assert unescape_value(escape_value(value)) == value
