"""Label selectors: the string syntax, matching, LabelSelector messages and the name rules.

Cases are Kubernetes' own where it has them (apimachinery's labels/selector_test.go and
util/validation tests), so a selector means here what it means to kubectl.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from skiff.api.errors import BadRequest
from skiff.api.labels import (
    Operator,
    Requirement,
    Selector,
    everything,
    nothing,
    parse_selector,
    selector_from_label_selector,
    selector_from_map,
    validate_dns1123_subdomain,
    validate_label_key,
    validate_label_value,
)
from skiff.api.v1 import meta_pb2

# ---- parsing and the canonical form ----


@pytest.mark.parametrize(("text", "canonical"), [
    ("", ""),
    ("   ", ""),
    ("x=a", "x=a"),
    ("x==a", "x==a"),
    ("x!=a", "x!=a"),
    ("x=a,y=b", "x=a,y=b"),
    ("y=b,x=a", "x=a,y=b"),  # sorted by key
    ("x = a , y != b", "x=a,y!=b"),
    ("\tx=a\n", "x=a"),
    ("x in (a)", "x in (a)"),
    ("x in (b, a, a)", "x in (a,b)"),  # a set: sorted, no duplicates
    ("x notin (a,b)", "x notin (a,b)"),
    ("x", "x"),
    ("!x", "!x"),
    ("! x", "!x"),
    ("x>1", "x>1"),
    ("x<10", "x<10"),
    ("x=", "x="),  # the empty value
    ("x in ()", "x in ()"),
    ("x in (,a)", "x in (,a)"),
    ("x in (a,)", "x in (,a)"),
    ("x in (a,,b)", "x in (,a,b)"),
    ("x=a,x!=b", "x!=b,x=a"),
    ("in in (in)", "in in (in)"),  # keywords are identifiers where values go
    ("notin=in", "notin=in"),
    ("example.com/app=web", "example.com/app=web"),
    ("env in (prod, qa), tier notin (fe), partition, !canary",
     "!canary,env in (prod,qa),partition,tier notin (fe)"),
])
def test_canonical_string(text: str, canonical: str) -> None:
    selector = parse_selector(text)
    assert str(selector) == canonical
    assert parse_selector(canonical) == selector


def test_requirements_are_exposed() -> None:
    selector = parse_selector("env in (qa,prod),!canary,app=web")
    assert selector.requirements == (
        Requirement("app", Operator.EQUALS, ("web",)),
        Requirement("canary", Operator.DOES_NOT_EXIST),
        Requirement("env", Operator.IN, ("prod", "qa")),
    )


def test_equals_and_double_equals_stay_distinct_like_kubernetes() -> None:
    assert parse_selector("a=b") != parse_selector("a==b")
    assert parse_selector("a=b").matches({"a": "b"}) and parse_selector("a==b").matches({"a": "b"})


@pytest.mark.parametrize(("text", "fragment"), [
    ("env in prod", 'expected "(", found "prod" at position 7'),
    ("x=a b", 'expected "," or end of string, found "b" at position 4'),
    ("x y", 'expected an operator (=, ==, !=, in, notin, >, <), found "y"'),
    ("x in (a", 'expected "," or ")", found end of string'),
    ("x in a)", 'expected "("'),
    ("x in (a b)", 'expected "," or ")", found "b"'),
    ("x in ((a))", 'expected ",", ")" or a label value, found "("'),
    ("x=a,", 'expected "!" or a label key, found end of string'),
    (",x=a", 'expected "!" or a label key, found ","'),
    ("=a", 'found "="'),
    ("x=(", 'expected a label value, found "("'),
    ("!x=a", '"," or end of string after "!x"'),
    ("!", "expected a label key, found end of string"),
    ("x=a=b", 'found "="'),
    ("x!a", 'found "!"'),
    ("x>a", "the value must be an integer"),
    ("x<1.5", "the value must be an integer"),
    ("x>-1", "invalid label value"),  # values are label values even for Gt, as in k8s
    ("Foo_=a", 'invalid label key "Foo_": name part must consist of'),
    ("a/b/c=d", "a qualified name must consist of"),
    ("x=a_", 'invalid label value: "a_"'),
    ("x=" + "a" * 64, "must be no more than 63 characters"),
    ("x in (a, -b)", 'invalid label value: "-b"'),
])
def test_syntax_errors_name_the_problem(text: str, fragment: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_selector(text)
    message = str(caught.value)
    assert message.startswith(f'unable to parse requirement: "{text}": ')
    assert fragment in message


# ---- matching ----


@pytest.mark.parametrize(("text", "labels", "expected"), [
    ("", {"x": "y"}, True),
    ("", {}, True),
    ("x=y", {"x": "y"}, True),
    ("x=y", {"x": "z"}, False),
    ("x=y", {}, False),
    ("x==y", {"x": "y"}, True),
    ("x!=y", {"x": "z"}, True),
    ("x!=y", {"x": "y"}, False),
    ("x!=y", {}, True),  # a missing label is unequal to everything
    ("x=y,z=w", {"x": "y", "z": "w"}, True),
    ("x=y,z=w", {"x": "y", "z": "v"}, False),
    ("x=y,z=w", {"x": "y"}, False),
    ("x in (a,b)", {"x": "b"}, True),
    ("x in (a,b)", {"x": "c"}, False),
    ("x in (a,b)", {}, False),
    ("x notin (a,b)", {"x": "c"}, True),
    ("x notin (a,b)", {"x": "a"}, False),
    ("x notin (a,b)", {}, True),
    ("x", {"x": ""}, True),
    ("x", {"y": "z"}, False),
    ("!x", {"y": "z"}, True),
    ("!x", {"x": ""}, False),
    ("x=", {"x": ""}, True),
    ("x=", {}, False),
    ("x in ()", {"x": ""}, True),
    ("x>1", {"x": "2"}, True),
    ("x>1", {"x": "1"}, False),
    ("x>1", {"x": "a"}, False),
    ("x>1", {}, False),
    ("x<2", {"x": "1"}, True),
    ("x<2", {"x": "-5"}, True),
    ("x<2", {"x": "1.5"}, False),
    ("x<2", {"x": " 1"}, False),  # Go's ParseInt, not Python's int()
    ("x<2", {"x": str(2**63)}, False),  # beyond int64
    ("app=web,env in (prod,qa),!canary",
     {"app": "web", "env": "qa", "tier": "fe"}, True),
    ("app=web,env in (prod,qa),!canary",
     {"app": "web", "env": "qa", "canary": "true"}, False),
])
def test_matches(text: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_selector(text).matches(labels) is expected


def test_everything_and_nothing() -> None:
    assert everything().empty and everything().matches({}) and everything().matches({"a": "b"})
    assert everything() == parse_selector("") == Selector()
    assert not nothing().empty
    assert not nothing().matches({}) and not nothing().matches({"a": "b"})
    assert str(nothing()) == ""  # as Kubernetes: Nothing() prints as the empty string
    assert nothing() != everything()
    assert not parse_selector("a").empty


def test_add_and_requires_exact_match() -> None:
    selector = parse_selector("app=web").add(Requirement("env", Operator.IN, ("prod",)))
    assert str(selector) == "app=web,env in (prod)"
    assert selector.requires_exact_match("app") == "web"
    assert selector.requires_exact_match("env") == "prod"
    assert selector.requires_exact_match("tier") is None
    assert parse_selector("env in (a,b)").requires_exact_match("env") is None
    assert parse_selector("env!=a").requires_exact_match("env") is None
    assert nothing().add(Requirement("a", Operator.EXISTS)) == nothing()


def test_requirement_validates_on_construction() -> None:
    with pytest.raises(BadRequest, match="values set can't be empty"):
        Requirement("a", Operator.IN, ())
    with pytest.raises(BadRequest, match="one single value"):
        Requirement("a", Operator.EQUALS, ("b", "c"))
    with pytest.raises(BadRequest, match="must be empty for exists"):
        Requirement("a", Operator.EXISTS, ("b",))
    with pytest.raises(BadRequest, match="exactly one value"):
        Requirement("a", Operator.GREATER_THAN, ("1", "2"))
    with pytest.raises(BadRequest, match="invalid label key"):
        Requirement("-a", Operator.EXISTS)
    assert Requirement("a", "in", ("c", "b", "c")).values == ("b", "c")


# ---- maps and LabelSelector messages ----


def test_selector_from_map() -> None:
    selector = selector_from_map({"app": "web", "tier": "fe"})
    assert str(selector) == "app=web,tier=fe"
    assert selector.matches({"app": "web", "tier": "fe", "extra": "x"})
    assert not selector.matches({"app": "web"})
    assert selector_from_map({}) == everything()
    with pytest.raises(BadRequest, match="invalid label value"):
        selector_from_map({"app": "not valid"})


def _label_selector(match_labels: dict[str, str] | None = None,
                    *expressions: tuple[str, str, list[str]]) -> meta_pb2.LabelSelector:
    return meta_pb2.LabelSelector(match_labels=match_labels or {}, match_expressions=[
        meta_pb2.LabelSelectorRequirement(key=k, operator=op, values=v)
        for k, op, v in expressions])


def test_selector_from_label_selector() -> None:
    selector = selector_from_label_selector(_label_selector(
        {"app": "web"}, ("env", "In", ["qa", "prod"]), ("tier", "NotIn", ["fe"]),
        ("partition", "Exists", []), ("canary", "DoesNotExist", [])))
    assert str(selector) == "app=web,!canary,env in (prod,qa),partition,tier notin (fe)"
    assert selector.matches({"app": "web", "env": "qa", "partition": "1"})
    assert not selector.matches({"app": "web", "env": "qa", "partition": "1", "canary": "y"})


def test_nil_label_selector_matches_nothing_and_empty_matches_everything() -> None:
    assert selector_from_label_selector(None) == nothing()
    assert selector_from_label_selector(meta_pb2.LabelSelector()) == everything()


@pytest.mark.parametrize(("selector", "fragment"), [
    (_label_selector({}, ("a", "Gt", ["1"])),
     'matchExpressions[0].operator: "Gt" is not a valid label selector operator'),
    (_label_selector({}, ("a", "in", ["1"])), "matchExpressions[0].operator"),
    (_label_selector({}, ("a", "Exists", []), ("b", "In", [])),
     "matchExpressions[1].values: for 'in', 'notin' operators, values set can't be empty"),
    (_label_selector({}, ("a", "Exists", ["x"])),
     "matchExpressions[0].values: values set must be empty"),
    (_label_selector({}, ("a", "In", ["ok", "not ok"])),
     'matchExpressions[0].values[1]: invalid label value: "not ok"'),
    (_label_selector({}, ("", "Exists", [])),
     "matchExpressions[0].key: invalid label key"),
    (_label_selector({"a b": "c"}), "matchLabels[a b]: invalid label key"),
])
def test_label_selector_errors_name_the_field(selector: meta_pb2.LabelSelector,
                                              fragment: str) -> None:
    with pytest.raises(BadRequest) as caught:
        selector_from_label_selector(selector)
    assert fragment in str(caught.value)


# ---- the name rules ----


@pytest.mark.parametrize("key", [
    "simple", "now-with-dashes", "1-starts-with-num", "1234", "simple/simple",
    "now-with-dashes/simple", "now-with-dashes/now-with-dashes", "now.with.dots/simple",
    "now-with.dashes-and.dots/simple", "1-num.2-num/3-num", "1234/5678", "1.2.3.4/5678",
    "Uppercase_Is_OK_123", "example.com/Uppercase_Is_OK_123", "requests.storage-foo",
    "a" * 63, "a" * 253 + "/" + "b" * 63,
])
def test_valid_label_keys(key: str) -> None:
    assert validate_label_key(key) == []


@pytest.mark.parametrize(("key", "fragment"), [
    ("", "name part must be non-empty"),
    ("nospecialchars%^=@", "name part must consist of"),
    ("cantendwithadash-", "name part must consist of"),
    ("-cantstartwithadash-", "name part must consist of"),
    ("only/one/slash", "a qualified name must consist of"),
    ("Example.com/abc", "prefix part a lowercase RFC 1123 subdomain"),
    ("example_com/abc", "prefix part a lowercase RFC 1123 subdomain"),
    ("example.com/", "name part must be non-empty"),
    ("/simple", "prefix part must be non-empty"),
    ("example.com/" + "a" * 64, "name part must be no more than 63 characters"),
    ("a" * 254 + "/abc", "prefix part must be no more than 253 characters"),
    ("a" * 64, "name part must be no more than 63 characters"),
    ("ünicode", "name part must consist of"),
])
def test_invalid_label_keys(key: str, fragment: str) -> None:
    errors = validate_label_key(key)
    assert errors and any(fragment in e for e in errors), errors


@pytest.mark.parametrize("value", [
    "", "simple", "now-with-dashes", "1-starts-with-num", "end-with-num-1", "1234",
    "a" * 63, "Upper_And.dots-1",
])
def test_valid_label_values(value: str) -> None:
    assert validate_label_value(value) == []


@pytest.mark.parametrize(("value", "fragment"), [
    ("nospecialchars%^=@", "a valid label must be an empty string or consist of"),
    ("Tama-nui-te-rā.is.Māori.sun", "a valid label must be"),
    ("\\backslashes\\are\\bad", "a valid label must be"),
    ("-starts-with-dash", "a valid label must be"),
    ("ends-with-dash-", "a valid label must be"),
    (".starts.with.dot", "a valid label must be"),
    ("ends.with.dot.", "a valid label must be"),
    ("a" * 64, "must be no more than 63 characters"),
])
def test_invalid_label_values(value: str, fragment: str) -> None:
    errors = validate_label_value(value)
    assert errors and any(fragment in e for e in errors), errors


def test_dns1123_subdomain() -> None:
    assert validate_dns1123_subdomain("example.com") == []
    assert validate_dns1123_subdomain("a" * 253) == []
    assert validate_dns1123_subdomain("a" * 254) == ["must be no more than 253 characters"]
    assert validate_dns1123_subdomain("a..b") and validate_dns1123_subdomain("A")


# ---- properties ----

_ALNUM = "abcxyzABCXYZ0189"
_names = st.builds(lambda inner, end: inner + end,
                   st.one_of(st.just(""), st.builds(lambda a, b: a + b, st.sampled_from(_ALNUM),
                                                     st.text("ab_Z.-9", max_size=6))),
                   st.sampled_from(_ALNUM))
_labels = st.text("abz09", min_size=1, max_size=5)
_prefixes = st.builds(".".join, st.lists(_labels, min_size=1, max_size=3))
keys = st.one_of(_names, st.builds(lambda p, n: f"{p}/{n}", _prefixes, _names))
values = st.one_of(st.just(""), _names)


@st.composite
def requirements(draw: st.DrawFn) -> Requirement:
    key = draw(keys)
    op = draw(st.sampled_from(list(Operator)))
    if op in (Operator.EXISTS, Operator.DOES_NOT_EXIST):
        return Requirement(key, op)
    if op in (Operator.GREATER_THAN, Operator.LESS_THAN):
        return Requirement(key, op, (str(draw(st.integers(0, 10**12))),))
    if op in (Operator.IN, Operator.NOT_IN):
        return Requirement(key, op, tuple(draw(st.lists(values, min_size=1, max_size=4))))
    return Requirement(key, op, (draw(values),))


selectors = st.builds(lambda rs: Selector(tuple(rs)), st.lists(requirements(), max_size=5))


@given(selectors)
def test_string_form_parses_back_to_an_equal_selector(selector: Selector) -> None:
    text = str(selector)
    assert parse_selector(text) == selector
    assert str(parse_selector(text)) == text


@given(selectors, st.dictionaries(keys, values, max_size=6))
def test_matching_is_the_conjunction_of_requirements(selector: Selector,
                                                    labels: dict[str, str]) -> None:
    assert selector.matches(labels) == all(r.matches(labels) for r in selector.requirements)
    assert parse_selector(str(selector)).matches(labels) == selector.matches(labels)


@given(st.dictionaries(keys, values, max_size=6), st.dictionaries(keys, values, max_size=3))
def test_a_map_selector_matches_exactly_its_supersets(match: dict[str, str],
                                                      extra: dict[str, str]) -> None:
    selector = selector_from_map(match)
    assert selector.matches({**extra, **match})
    assert selector.matches(extra) == all(extra.get(k) == v for k, v in match.items())
    assert selector_from_label_selector(meta_pb2.LabelSelector(match_labels=match)).matches(
        {**extra, **match})


@given(st.text(max_size=30))
def test_parse_never_fails_with_anything_but_bad_request(text: str) -> None:
    try:
        selector = parse_selector(text)
    except BadRequest:
        return
    assert parse_selector(str(selector)) == selector
