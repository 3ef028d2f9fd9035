"""The reusable validation helpers: each returns FieldErrors, never raises."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from skiff.api import validation as v
from skiff.api.errors import FieldError, Invalid
from skiff.api.v1 import core_pb2
from skiff.api.validation import Path

LABEL_MSG = v.DNS1123_LABEL_MESSAGE


def test_path() -> None:
    assert str(Path("spec").child("containers").index(0).child("image")) == (
        "spec.containers[0].image")
    assert str(Path("spec", "containers").index(2)) == "spec.containers[2]"
    assert str(Path("resources").child("limits").key("cpu")) == "resources.limits[cpu]"
    assert str(Path("metadata").child("labels").key("app.kubernetes.io/name")) == (
        "metadata.labels[app.kubernetes.io/name]")
    assert str(Path().child("spec")) == "spec"
    assert str(Path("a").child("b", "c")) == "a.b.c"
    assert Path("a").child("b") == Path("a", "b")
    assert {Path("a"), Path("a")} == {Path("a")}  # a value: hashable, comparable
    root = Path("spec")
    root.child("x")
    assert str(root) == "spec"  # immutable: steps return new paths
    with pytest.raises(AttributeError):
        root.text = "x"  # type: ignore[misc]


def test_required() -> None:
    assert v.required("f", "") == [FieldError("f", "required")]
    assert v.required(Path("f"), None) == [FieldError("f", "required")]
    assert v.required("f", []) == [FieldError("f", "required")]
    assert v.required("f", {}) == [FieldError("f", "required")]
    assert v.required("f", core_pb2.PodSpec()) == [FieldError("f", "required")]
    assert v.required("f", "x") == []
    assert v.required("f", ["x"]) == []
    assert v.required("f", 0) == []
    assert v.required("f", core_pb2.PodSpec(node_name="n")) == []


@pytest.mark.parametrize(("value", "details"), [
    ("a", []),
    ("my-name", []),
    ("123-abc", []),
    ("a" * 63, []),
    ("", ["required"]),
    ("a" * 64, ["must be no more than 63 characters"]),
    ("My-Name", [LABEL_MSG]),
    ("-a", [LABEL_MSG]),
    ("a-", [LABEL_MSG]),
    ("a.b", [LABEL_MSG]),
    ("a_b", [LABEL_MSG]),
    ("A" * 64, ["must be no more than 63 characters", LABEL_MSG]),
])
def test_dns1123_label(value: str, details: list[str]) -> None:
    assert v.dns1123_label("spec.containers[0].name", value) == [
        FieldError("spec.containers[0].name", d) for d in details]


@pytest.mark.parametrize(("value", "details"), [
    ("example.com", []),
    ("a", []),
    ("a.b-c.d", []),
    ("1.2.3.4", []),
    ("a" * 253, []),
    ("", ["required"]),
    ("a" * 254, ["must be no more than 253 characters"]),
    ("Example.com", [v.DNS1123_SUBDOMAIN_MESSAGE]),
    ("a..b", [v.DNS1123_SUBDOMAIN_MESSAGE]),
    (".a", [v.DNS1123_SUBDOMAIN_MESSAGE]),
    ("a.", [v.DNS1123_SUBDOMAIN_MESSAGE]),
    ("a_b", [v.DNS1123_SUBDOMAIN_MESSAGE]),
])
def test_dns1123_subdomain(value: str, details: list[str]) -> None:
    assert [e.detail for e in v.dns1123_subdomain("metadata.name", value)] == details


def test_dns1035_label() -> None:
    assert v.dns1035_label("f", "web") == []
    assert v.dns1035_label("f", "a1-b") == []
    assert v.dns1035_label("f", "1web") == [FieldError("f", v.DNS1035_LABEL_MESSAGE)]
    assert v.dns1035_label("f", "") == [FieldError("f", "required")]


def test_object_name_follows_the_kind() -> None:
    path = Path("metadata", "name")
    assert v.object_name(path, "web.example") == []  # a subdomain for most kinds
    assert v.object_name(path, "web.example", kind="Namespace") == [
        FieldError("metadata.name", LABEL_MSG)]
    assert v.object_name(path, "1web", kind="Service") == [
        FieldError("metadata.name", v.DNS1035_LABEL_MESSAGE)]
    assert v.object_name(path, "1web", kind="Pod") == []
    assert v.object_name(path, "") == [FieldError("metadata.name", "required")]
    assert v.object_name(path, "Web") != []


def test_object_name_as_generate_name_prefix() -> None:
    assert v.object_name("metadata.generateName", "web-", prefix=True) == []
    assert v.object_name("metadata.generateName", "web-", prefix=False) != []
    assert v.object_name("metadata.generateName", "web--", prefix=True) != []


def test_labels() -> None:
    assert v.labels("metadata.labels", {"app": "web", "example.com/tier": "", "a.b": "C_d"}) == []
    errors = v.labels(Path("metadata", "labels"), {"bad key": "ok", "ok": "bad value"})
    assert [e.field for e in errors] == ["metadata.labels[bad key]", "metadata.labels[ok]"]
    assert "name part must consist of" in errors[0].detail
    assert errors[1].detail.startswith("a valid label must be an empty string")
    too_long = v.labels("l", {"a": "b" * 64})
    assert too_long == [FieldError("l[a]", "must be no more than 63 characters")]


def test_annotations() -> None:
    assert v.annotations("metadata.annotations", {"Example.com/Key": "any value at all"}) == []
    assert v.annotations("a", {"k": "x" * (256 * 1024 - 1)}) == []  # key + value = the limit
    assert v.annotations("a", {"k": "x" * (256 * 1024)}) == [
        FieldError("a", "must have at most 262144 bytes")]
    assert v.annotations("a", {"k": "é" * (128 * 1024)}) != []  # bytes, not characters
    errors = v.annotations("metadata.annotations", {"not/a/key": "v"})
    assert [e.field for e in errors] == ["metadata.annotations[not/a/key]"]


@pytest.mark.parametrize(("n", "ok"), [(0, False), (1, True), (80, True), (65535, True),
                                       (65536, False), (-1, False)])
def test_port_number(n: int, ok: bool) -> None:
    errors = v.port_number("spec.ports[0].port", n)
    assert errors == ([] if ok else [
        FieldError("spec.ports[0].port", "must be between 1 and 65535, inclusive")])


def test_in_range_and_non_negative() -> None:
    assert v.in_range("w", 100, 1, 100) == []
    assert v.in_range("w", 101, 1, 100) == [FieldError("w", "must be between 1 and 100, inclusive")]
    assert v.non_negative("r", 0) == []
    assert v.non_negative("r", -1) == [FieldError("r", "must be greater than or equal to 0")]


def test_quantity() -> None:
    path = Path("resources", "limits").key("cpu")
    assert v.quantity(path, "100m") == []
    assert v.quantity(path, "1.5Gi") == []
    assert v.quantity(path, "-1") == [
        FieldError("resources.limits[cpu]", "must be greater than or equal to 0")]
    assert v.quantity(path, "-1", allow_negative=True) == []
    [error] = v.quantity(path, "1 cpu")
    assert error.field == "resources.limits[cpu]"
    assert "quantities must match the regular expression" in error.detail


def test_one_of() -> None:
    assert v.one_of("spec.restartPolicy", "Always", ["Always", "OnFailure", "Never"]) == []
    assert v.one_of("spec.restartPolicy", "X", ["A", "B"]) == [
        FieldError("spec.restartPolicy", 'Unsupported value: "X": supported values: "A", "B"')]
    assert v.one_of("f", "", ("A",)) == [
        FieldError("f", 'Unsupported value: "": supported values: "A"')]
    # A set is listed in a stable order.
    assert v.one_of("f", "x", {"TCP", "UDP", "SCTP"})[0].detail == (
        'Unsupported value: "x": supported values: "SCTP", "TCP", "UDP"')
    assert v.one_of("f", 3, (1, 2))[0].detail == "Unsupported value: 3: supported values: 1, 2"
    assert v.one_of("f", 'a"b', ["c"])[0].detail.startswith('Unsupported value: "a\\"b"')


def test_helpers_compose_into_one_invalid() -> None:
    pod = core_pb2.Pod()
    pod.metadata.name = "Web"
    pod.spec.containers.add(name="", image="nginx", ports=[core_pb2.ContainerPort(
        container_port=0)])
    pod.spec.restart_policy = "Sometimes"
    errors = v.object_name(Path("metadata", "name"), pod.metadata.name)
    containers = Path("spec", "containers")
    for i, c in enumerate(pod.spec.containers):
        errors += v.dns1123_label(containers.index(i).child("name"), c.name)
        for j, port in enumerate(c.ports):
            errors += v.port_number(containers.index(i).child("ports").index(j)
                                    .child("containerPort"), port.container_port)
    errors += v.one_of(Path("spec", "restartPolicy"), pod.spec.restart_policy,
                       ["Always", "OnFailure", "Never"])
    message = str(Invalid("Pod", pod.metadata.name, errors))
    assert message.startswith('Pod "Web" is invalid: metadata.name: a lowercase RFC 1123 ')
    assert "spec.containers[0].name: required" in message
    assert "spec.containers[0].ports[0].containerPort: must be between 1 and 65535" in message
    assert 'spec.restartPolicy: Unsupported value: "Sometimes"' in message


@given(st.text(max_size=70))
def test_dns1123_label_agrees_with_its_definition(value: str) -> None:
    ok = (0 < len(value) <= 63 and all(c in "abcdefghijklmnopqrstuvwxyz0123456789-"
                                        for c in value)
          and value[0] != "-" and value[-1] != "-")
    assert (v.dns1123_label("f", value) == []) == ok
