"""The Kubernetes REST API over HTTPS, driven by the official Python client (PyPI's
``kubernetes``) against a real apiserver: CRUD, selectors, pagination, watch with a
resourceVersion and a 410, the status and scale subresources, errors as Status."""

from __future__ import annotations

import asyncio
import json
import secrets
import ssl
from collections.abc import Iterator

import aiohttp
import pytest
from kubernetes import client, config, watch

from skiff.testing.fixtures import rest_apiserver
from skiff.testing.processes import APIServer

#: A small watch cache, so a watch from an old version is soon 410 Gone.
WATCH_CACHE = 20


@pytest.fixture(scope="module")
def server(shared_cluster, tmp_path_factory) -> Iterator[APIServer]:
    with rest_apiserver(tmp_path_factory.mktemp("rest"), shared_cluster.store.endpoints,
                        extra_args=["--watch-cache-size", str(WATCH_CACHE)]) as api:
        yield api


@pytest.fixture(scope="module")
def api(server) -> Iterator[client.ApiClient]:
    api_client = config.new_client_from_config(config_file=str(server.kubeconfig))
    try:
        yield api_client
    finally:
        api_client.close()


@pytest.fixture
def core(api) -> client.CoreV1Api:
    return client.CoreV1Api(api)


@pytest.fixture
def apps(api) -> client.AppsV1Api:
    return client.AppsV1Api(api)


@pytest.fixture
def ns(core) -> str:
    name = f"rest-{secrets.token_hex(4)}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    return name


def pod(name: str, labels: dict[str, str] | None = None) -> client.V1Pod:
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels=labels or {}),
        spec=client.V1PodSpec(containers=[client.V1Container(
            name="c", image="busybox", ports=[client.V1ContainerPort(container_port=80)])]))


def deployment(name: str, replicas: int = 1) -> client.V1Deployment:
    labels = {"app": name}
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1DeploymentSpec(
            replicas=replicas, selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(containers=[client.V1Container(name="c",
                                                                     image="nginx")]))))


def test_version(api):
    info = client.VersionApi(api).get_code()
    assert (info.major, info.minor) == ("1", "32")


def test_pod_crud(core, ns):
    created = core.create_namespaced_pod(ns, pod("p", {"app": "web"}))
    assert created.metadata.uid and created.metadata.resource_version
    assert created.spec.containers[0].ports[0].container_port == 80
    assert created.spec.containers[0].ports[0].protocol == "TCP"  # defaulted
    got = core.read_namespaced_pod("p", ns)
    assert got.metadata.uid == created.metadata.uid
    got.metadata.labels["tier"] = "front"
    replaced = core.replace_namespaced_pod("p", ns, got)
    assert replaced.metadata.labels == {"app": "web", "tier": "front"}
    assert int(replaced.metadata.resource_version) > int(created.metadata.resource_version)
    with pytest.raises(client.ApiException) as e:
        core.replace_namespaced_pod("p", ns, created)  # stale resourceVersion
    assert e.value.status == 409 and json.loads(e.value.body)["reason"] == "Conflict"
    deleted = core.delete_namespaced_pod("p", ns)
    assert deleted.metadata.name == "p"  # unbound: removed at once, the object returned
    with pytest.raises(client.ApiException) as e:
        core.read_namespaced_pod("p", ns)
    body = json.loads(e.value.body)
    assert e.value.status == 404
    assert body["details"] == {"name": "p", "kind": "pods"}


def test_service_and_namespace(core, ns):
    svc = core.create_namespaced_service(ns, client.V1Service(
        metadata=client.V1ObjectMeta(name="s"),
        spec=client.V1ServiceSpec(selector={"app": "web"}, ports=[
            client.V1ServicePort(name="plain", port=80, target_port=8080),
            client.V1ServicePort(name="named", port=81, target_port="http")])))
    assert svc.spec.cluster_ip and svc.spec.type == "ClusterIP"
    assert [p.target_port for p in svc.spec.ports] == [8080, "http"]
    assert core.read_namespace(ns).status.phase == "Active"
    core.delete_namespaced_service("s", ns)
    assert core.list_namespaced_service(ns).items == []


def test_already_exists_and_invalid(core, ns):
    core.create_namespaced_pod(ns, pod("dup"))
    with pytest.raises(client.ApiException) as e:
        core.create_namespaced_pod(ns, pod("dup"))
    assert e.value.status == 409
    assert json.loads(e.value.body)["reason"] == "AlreadyExists"
    bad = pod("Bad_Name")
    with pytest.raises(client.ApiException) as e:
        core.create_namespaced_pod(ns, bad)
    body = json.loads(e.value.body)
    assert e.value.status == 422 and body["reason"] == "Invalid"
    assert body["details"]["causes"][0]["field"] == "metadata.name"


def test_list_selectors_all_namespaces_and_pages(core, ns):
    for i in range(5):
        core.create_namespaced_pod(ns, pod(f"p{i}", {"app": "web", "i": str(i % 2)}))
    names = sorted(p.metadata.name for p in
                   core.list_namespaced_pod(ns, label_selector="app=web,i=1").items)
    assert names == ["p1", "p3"]
    by_field = core.list_namespaced_pod(ns, field_selector="metadata.name=p2").items
    assert [p.metadata.name for p in by_field] == ["p2"]
    everywhere = core.list_pod_for_all_namespaces(label_selector="app=web")
    assert {p.metadata.name for p in everywhere.items if p.metadata.namespace == ns} == {
        f"p{i}" for i in range(5)}
    first = core.list_namespaced_pod(ns, limit=2)
    assert len(first.items) == 2 and first.metadata._continue
    seen = [p.metadata.name for p in first.items]
    token = first.metadata._continue
    while token:
        page = core.list_namespaced_pod(ns, limit=2, _continue=token)
        seen += [p.metadata.name for p in page.items]
        token = page.metadata._continue
    assert sorted(seen) == [f"p{i}" for i in range(5)]
    with pytest.raises(client.ApiException) as e:
        core.list_namespaced_pod(ns, label_selector="app in (")
    assert e.value.status == 400


def test_watch_from_a_version_then_410_when_compacted(core, ns):
    start = core.list_namespaced_pod(ns).metadata.resource_version
    core.create_namespaced_pod(ns, pod("w1"))
    core.delete_namespaced_pod("w1", ns)
    events = [(e["type"], e["object"].metadata.name) for e in watch.Watch().stream(
        core.list_namespaced_pod, ns, resource_version=start, timeout_seconds=2)]
    assert events[:2] == [("ADDED", "w1"), ("DELETED", "w1")]
    # More writes than the watch cache holds: the start version is gone.
    for i in range(WATCH_CACHE + 5):
        core.create_namespaced_pod(ns, pod(f"fill{i}"))
    with pytest.raises(client.ApiException) as e:
        for _ in watch.Watch().stream(core.list_namespaced_pod, ns, resource_version=start,
                                      timeout_seconds=2):
            pass
    assert e.value.status == 410


def test_watch_without_version_starts_with_added(core, ns):
    core.create_namespaced_pod(ns, pod("a1", {"app": "x"}))
    stream = watch.Watch().stream(core.list_namespaced_pod, ns, label_selector="app=x",
                                  timeout_seconds=1)
    assert [(e["type"], e["object"].metadata.name) for e in stream] == [("ADDED", "a1")]


def test_watch_sees_an_object_leave_its_selector_and_bookmarks(core, ns):
    created = core.create_namespaced_pod(ns, pod("sel", {"app": "in"}))
    start = created.metadata.resource_version
    current = core.read_namespaced_pod("sel", ns)
    current.metadata.labels = {"app": "out"}
    core.replace_namespaced_pod("sel", ns, current)
    seen = []
    for event in watch.Watch().stream(core.list_namespaced_pod, ns, label_selector="app=in",
                                      resource_version=start, allow_watch_bookmarks=True,
                                      timeout_seconds=3):
        obj = event["object"]  # a bookmark's stays a dict: the client does not decode it
        name = obj["metadata"] if event["type"] == "BOOKMARK" else obj.metadata.name
        seen.append((event["type"], name))
        if event["type"] == "DELETED":  # progress the watcher does not see: a bookmark
            core.create_namespaced_pod(ns, pod("other", {"app": "other"}))
        if event["type"] == "BOOKMARK":
            break
    assert seen[0] == ("DELETED", "sel")
    assert [t for t, _ in seen] == ["DELETED", "BOOKMARK"]  # bookmarks: every 1 s
    assert int(seen[1][1]["resourceVersion"]) > int(start)


def test_status_subresource(core, ns):
    core.create_namespaced_pod(ns, pod("s1"))
    current = core.read_namespaced_pod_status("s1", ns)
    current.status.phase = "Running"
    current.spec.containers[0].image = "ignored"  # the status endpoint keeps the spec
    updated = core.replace_namespaced_pod_status("s1", ns, current)
    assert updated.status.phase == "Running"
    assert updated.spec.containers[0].image == "busybox"


def test_deployment_and_scale(apps, ns):
    created = apps.create_namespaced_deployment(ns, deployment("d", 1))
    assert created.spec.strategy.type == "RollingUpdate"
    scale = apps.read_namespaced_deployment_scale("d", ns)
    assert (scale.spec.replicas, scale.status.selector) == (1, "app=d")
    scale.spec.replicas = 3
    assert apps.replace_namespaced_deployment_scale("d", ns, scale).spec.replicas == 3
    assert apps.read_namespaced_deployment("d", ns).spec.replicas == 3
    scale.spec.replicas = 5  # scale's resourceVersion is now stale
    with pytest.raises(client.ApiException) as e:
        apps.replace_namespaced_deployment_scale("d", ns, scale)
    assert e.value.status == 409
    apps.delete_namespaced_deployment("d", ns)
    assert apps.list_namespaced_deployment(ns).items == []


def test_eviction_deletes_the_pod(core, ns):
    core.create_namespaced_pod(ns, pod("ev"))
    core.create_namespaced_pod_eviction("ev", ns, client.V1Eviction(
        metadata=client.V1ObjectMeta(name="ev", namespace=ns),
        delete_options=client.V1DeleteOptions(grace_period_seconds=0)))
    assert core.list_namespaced_pod(ns).items == []
    with pytest.raises(client.ApiException) as e:
        core.create_namespaced_pod_eviction("ev", ns, client.V1Eviction(
            metadata=client.V1ObjectMeta(name="ev", namespace=ns)))
    assert e.value.status == 404


def test_delete_collection(core, ns):
    for i in range(3):
        core.create_namespaced_pod(ns, pod(f"c{i}", {"sweep": "yes" if i else "no"}))
    core.delete_collection_namespaced_pod(ns, label_selector="sweep=yes")
    assert [p.metadata.name for p in core.list_namespaced_pod(ns).items] == ["c0"]


# ---- raw HTTP: what the client does not send ----


async def _request(server: APIServer, method: str, path: str, *, token: bool = True,
                   data: bytes | None = None, content_type: str = "application/json",
                   ) -> tuple[int, dict]:
    context = ssl.create_default_context(cafile=str(server.ca_file))
    headers = {"Content-Type": content_type}
    if token:
        headers["Authorization"] = f"Bearer {server.token}"
    async with aiohttp.ClientSession() as session, session.request(
            method, server.rest_url + path, data=data, headers=headers, ssl=context) as reply:
        return reply.status, await reply.json(content_type=None)


async def test_authentication_required_except_discovery(server):
    status, body = await _request(server, "GET", "/api/v1/pods", token=False)
    assert (status, body["reason"]) == (401, "Unauthorized")
    assert (await _request(server, "GET", "/api/v1", token=False))[0] == 200
    assert (await _request(server, "GET", "/version", token=False))[0] == 200
    # The kubelet routes (rest/streaming.py, rest/metrics_api.py) too, before they look
    # at their parameters.
    for path in ("/api/v1/namespaces/ns/pods/web/exec",
                 "/api/v1/namespaces/ns/pods/web/portforward?ports=x",
                 "/api/v1/namespaces/ns/pods/web/log?tailLines=x",
                 "/apis/metrics.k8s.io/v1beta1/nodes"):
        assert (await _request(server, "GET", path, token=False))[0] == 401, path
    context = ssl.create_default_context(cafile=str(server.ca_file))
    async with aiohttp.ClientSession() as session, session.get(
            server.rest_url + "/api/v1/pods", ssl=context,
            headers={"Authorization": "Bearer wrong"}) as reply:
        assert reply.status == 401


async def test_bad_bodies_are_4xx_statuses_and_change_nothing(server, core, ns):
    path = f"/api/v1/namespaces/{ns}/pods"
    cases = [
        (b"{not json", "application/json", 400),
        (b"[1, 2]", "application/json", 400),
        (json.dumps({"metadata": {"name": "u"}, "spec": {"containers": [
            {"name": "c", "image": "x", "imagePullPolicyy": "Always"}]}}).encode(),
         "application/json", 400),
        (b"<pod/>", "application/xml", 415),
        (b"{" + b" " * (3 * 1024 * 1024) + b"}", "application/json", 413),
        (json.dumps({"metadata": {"name": "u", "namespace": "other"}}).encode(),
         "application/json", 400),
    ]
    for data, content_type, code in cases:
        status, body = await _request(server, "POST", path + "?fieldValidation=Strict",
                                      data=data, content_type=content_type)
        assert (status, body["kind"], body["code"]) == (code, "Status", code), body
        assert body["message"]
    status, body = await _request(server, "POST", path + "?fieldValidation=Strict",
                                  data=cases[2][0])
    assert "imagePullPolicyy" in body["message"]
    assert core.list_namespaced_pod(ns).items == []


async def test_watch_error_event_is_json_lines(server, ns):
    context = ssl.create_default_context(cafile=str(server.ca_file))
    headers = {"Authorization": f"Bearer {server.token}"}
    async with aiohttp.ClientSession() as session, session.get(
            f"{server.rest_url}/api/v1/namespaces/{ns}/pods?watch=1&resourceVersion=1",
            headers=headers, ssl=context) as reply:
        assert reply.status == 200
        line = await asyncio.wait_for(reply.content.readline(), 5)
    event = json.loads(line)
    assert event["type"] == "ERROR"
    assert (event["object"]["code"], event["object"]["reason"]) == (410, "Expired")


async def test_discovery_documents_over_https(server):
    context = ssl.create_default_context(cafile=str(server.ca_file))
    aggregated = ("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
                  "application/json")
    async with aiohttp.ClientSession() as session:
        async with session.get(server.rest_url + "/apis", ssl=context,
                               headers={"Accept": aggregated}) as reply:
            assert reply.headers["Content-Type"].startswith(
                "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList")
            body = await reply.json(content_type=None)
        assert body["kind"] == "APIGroupDiscoveryList"
        assert [i["metadata"]["name"] for i in body["items"]] == [
            "apps", "coordination.k8s.io", "metrics.k8s.io"]
        async with session.get(server.rest_url + "/apis", ssl=context) as reply:
            assert (await reply.json())["kind"] == "APIGroupList"
        async with session.get(server.rest_url + "/apis/batch/v1", ssl=context) as reply:
            assert reply.status == 404
        async with session.get(server.rest_url + "/openapi/v3", ssl=context) as reply:
            assert reply.status == 200


def test_every_other_kind_round_trips_through_the_clients_models(api, core, apps, ns):
    coordination = client.CoordinationV1Api(api)
    labels = {"app": "x"}
    template = client.V1PodTemplateSpec(
        metadata=client.V1ObjectMeta(labels=labels),
        spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="nginx")]))
    meta = client.V1ObjectMeta(name="k")
    core.create_namespaced_endpoints(ns, client.V1Endpoints(metadata=meta, subsets=[
        client.V1EndpointSubset(addresses=[client.V1EndpointAddress(ip="10.244.0.9")],
                                ports=[client.CoreV1EndpointPort(port=80)])]))
    assert core.read_namespaced_endpoints("k", ns).subsets[0].ports[0].port == 80
    core.create_namespaced_event(ns, client.CoreV1Event(
        metadata=meta, involved_object=client.V1ObjectReference(kind="Pod", name="p",
                                                                namespace=ns),
        reason="Tested", message="m", type="Normal"))
    assert core.read_namespaced_event("k", ns).reason == "Tested"
    coordination.create_namespaced_lease(ns, client.V1Lease(
        metadata=meta, spec=client.V1LeaseSpec(holder_identity="a",
                                               lease_duration_seconds=15)))
    assert coordination.read_namespaced_lease("k", ns).spec.holder_identity == "a"
    rc = core.create_namespaced_replication_controller(ns, client.V1ReplicationController(
        metadata=meta, spec=client.V1ReplicationControllerSpec(
            replicas=0, selector=labels, template=template)))
    assert rc.spec.replicas == 0
    assert core.read_namespaced_replication_controller_scale("k", ns).spec.replicas == 0
    rs = apps.create_namespaced_replica_set(ns, client.V1ReplicaSet(
        metadata=meta, spec=client.V1ReplicaSetSpec(
            replicas=0, selector=client.V1LabelSelector(match_labels=labels),
            template=template)))
    assert rs.spec.replicas == 0
    status = apps.read_namespaced_replica_set_status("k", ns)
    assert status.status.replicas == 0  # written although zero, as Kubernetes does
    node_name = f"rest-node-{secrets.token_hex(3)}"
    core.create_node(client.V1Node(metadata=client.V1ObjectMeta(name=node_name)))
    try:
        node = core.read_node_status(node_name)
        node.status = client.V1NodeStatus(
            addresses=[client.V1NodeAddress(type="InternalIP", address="10.0.0.1")],
            daemon_endpoints=client.V1NodeDaemonEndpoints(
                kubelet_endpoint=client.V1DaemonEndpoint(port=10250)),
            capacity={"cpu": "2"})
        updated = core.replace_node_status(node_name, node)
        assert updated.status.daemon_endpoints.kubelet_endpoint.port == 10250
        assert updated.status.capacity == {"cpu": "2"}
        assert node_name in [n.metadata.name for n in core.list_node().items]
    finally:
        core.delete_node(node_name)
