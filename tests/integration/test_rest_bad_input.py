"""Bad input through the REST API: hypothesis-made bodies and parameters against a real
apiserver. Every answer is a success or a 4xx ``Status``, never a 5xx; a refused
create stores nothing."""

from __future__ import annotations

import json
import secrets
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
import urllib3
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skiff.testing.fixtures import rest_apiserver
from skiff.testing.processes import APIServer

KINDS_PATHS = ["api/v1/namespaces/{ns}/pods", "api/v1/namespaces/{ns}/services",
               "apis/apps/v1/namespaces/{ns}/deployments", "api/v1/nodes"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["metadata", "spec", "status", "name", "containers", "image",
                         "ports", "port", "replicas", "labels", "selector", "kind",
                         "apiVersion", "x", "targetPort", "template"]), inner, max_size=4),
    max_leaves=12)


@pytest.fixture(scope="module")
def server(shared_cluster, tmp_path_factory) -> Iterator[APIServer]:
    with rest_apiserver(tmp_path_factory.mktemp("rest-bad"),
                        shared_cluster.store.endpoints) as api:
        yield api


@pytest.fixture(scope="module")
def http(server) -> Iterator[urllib3.PoolManager]:
    pool = urllib3.PoolManager(ca_certs=str(server.ca_file), cert_reqs="CERT_REQUIRED")
    yield pool
    pool.clear()


@pytest.fixture(scope="module")
def ns(server, http) -> str:
    name = f"bad-{secrets.token_hex(4)}"
    reply = _call(server, http, "POST", "api/v1/namespaces",
                  json.dumps({"metadata": {"name": name}}).encode())
    assert reply.status == 201
    return name


def _call(server: APIServer, http: urllib3.PoolManager, method: str, path: str,
          body: bytes | None = None, content_type: str = "application/json") -> Any:
    return http.request(method, f"{server.rest_url}/{path}", body=body, headers={
        "Authorization": f"Bearer {server.token}", "Content-Type": content_type},
        retries=False, timeout=10)


def _check(reply: Any) -> dict[str, Any]:
    assert reply.status < 500, reply.data[:500]
    doc = json.loads(reply.data)
    if reply.status >= 400:
        assert (doc["kind"], doc["status"], doc["code"]) == ("Status", "Failure",
                                                             reply.status), doc
        assert doc["message"] and doc["reason"]
    return doc


def _names(server, http, path: str) -> set[str]:
    return {i["metadata"]["name"] for i in _check(_call(server, http, "GET", path))["items"]}


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=json_values, which=st.sampled_from(KINDS_PATHS))
def test_random_bodies_are_answered_with_a_status(server, http, ns, body, which):
    path = which.format(ns=ns)
    before = _names(server, http, path)
    reply = _call(server, http, "POST", path + "?fieldValidation=Strict",
                  json.dumps(body).encode())
    doc = _check(reply)
    if reply.status >= 400:
        assert _names(server, http, path) == before
    else:  # it was a valid object after all: remove it again
        name = doc["metadata"]["name"]
        _check(_call(server, http, "DELETE", f"{path}/{name}?gracePeriodSeconds=0"))


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(params=st.dictionaries(
    st.sampled_from(["labelSelector", "fieldSelector", "limit", "continue", "resourceVersion",
                     "resourceVersionMatch", "watch", "timeoutSeconds", "allowWatchBookmarks",
                     "gracePeriodSeconds", "propagationPolicy"]),
    st.text(max_size=12), max_size=4),
    method=st.sampled_from(["GET", "DELETE"]))
def test_random_query_parameters_are_answered_with_a_status(server, http, ns, params, method):
    if params.get("watch"):
        params["timeoutSeconds"] = "1"
    query = urllib.parse.urlencode(params)
    target = f"api/v1/namespaces/{ns}/pods" + ("/nothere" if method == "DELETE" else "")
    _check(_call(server, http, method, f"{target}?{query}"))


def test_malformed_bodies_and_media_types(server, http, ns):
    path = f"api/v1/namespaces/{ns}/pods"
    for body, content_type in [(b"", "application/json"), (b"\xff\xfe", "application/json"),
                               (b"a: [", "application/yaml"), (b"- 1\n- 2", "application/yaml"),
                               (b"{}", "application/vnd.kubernetes.protobuf"),
                               (b'{"metadata": {"name": "x"}}' * 2, "application/json")]:
        reply = _call(server, http, "POST", path, body, content_type)
        assert 400 <= reply.status < 500, (body, reply.status)
        _check(reply)
    assert _names(server, http, path) == set()
