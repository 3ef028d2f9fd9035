"""The kubelet end to end: real store, apiserver, kubelet process and Docker engine."""

from __future__ import annotations

import ipaddress
import json
import time

from e2e_pods import (
    container,
    http_get,
    http_server,
    pod,
    running_ready,
    status_of,
    wait_gone,
    wait_pod,
)

from skiff.health import wait_for
from skiff.kubelet import labels as L


async def test_pod_runs_ready_with_an_ip_that_answers(api, ns, node, docker):
    await api.pods.create(pod("web", ns, node.name, http_server(body="hello-web")))
    running = await wait_pod(api, ns, "web", running_ready, what="Running and Ready")

    assert ipaddress.ip_address(running.status.pod_ip) in ipaddress.ip_network(node.pod_cidr)
    assert running.status.host_ip == "127.0.0.1"
    assert running.status.HasField("start_time")
    assert {c.type: c.status for c in running.status.conditions} == {
        "PodScheduled": "True", "Initialized": "True", "ContainersReady": "True",
        "Ready": "True"}
    web = status_of(running, "web")
    assert web is not None and web.ready and web.state.HasField("running")
    assert web.container_id.startswith("docker://") and web.restart_count == 0

    body = await wait_for(lambda: http_get(f"http://{running.status.pod_ip}:8080/"),
                          timeout=20, what="the pod's HTTP server answering")
    assert body.strip() == "hello-web"

    # Docker has the sandbox on the node's network and the app container joined to it.
    found = await docker.containers.list(
        all=True, filters=json.dumps(L.pod_filter(node.name, running.metadata.uid)))
    kinds = sorted(c["Labels"][L.CONTAINER_TYPE] for c in found)
    assert kinds == [L.CONTAINER, L.SANDBOX]
    app = next(c for c in found if c["Labels"][L.CONTAINER_TYPE] == L.CONTAINER)
    sandbox = next(c for c in found if c["Labels"][L.CONTAINER_TYPE] == L.SANDBOX)
    assert app["Labels"][L.POD_NAME] == "web" and app["Labels"][L.NODE] == node.name
    assert (await app.show())["HostConfig"]["NetworkMode"] == f"container:{sandbox.id}"


async def test_containers_of_a_pod_share_localhost(api, ns, node):
    client = container("client", "sh", "-c",
                       "until wget -q -O- http://localhost:8080/ | grep -q hello-shared; "
                       "do sleep 0.1; done")
    await api.pods.create(pod("shared", ns, node.name, http_server(body="hello-shared"), client,
                              restart_policy="OnFailure"))

    def client_done(p) -> bool:
        s = status_of(p, "client")
        return s is not None and s.state.HasField("terminated")

    done = await wait_pod(api, ns, "shared", client_done, what="client finished")
    finished = status_of(done, "client").state.terminated
    assert (finished.exit_code, finished.reason) == (0, "Completed")
    assert done.status.phase == "Running"  # web still serves; OnFailure keeps client done
    assert status_of(done, "web").state.HasField("running")


async def test_crashing_container_backs_off(api, ns, node):
    await api.pods.create(pod("crash", ns, node.name, container("boom", "sh", "-c", "exit 3")))

    def crash_looping(p) -> bool:
        s = status_of(p, "boom")
        return (s is not None and s.state.waiting.reason == "CrashLoopBackOff"
                and s.restart_count >= 2)

    looping = await wait_pod(api, ns, "crash", crash_looping, what="CrashLoopBackOff")
    boom = status_of(looping, "boom")
    assert boom.last_state.terminated.exit_code == 3
    assert boom.last_state.terminated.reason == "Error"
    assert "back-off" in boom.state.waiting.message
    assert looping.status.phase == "Running"  # restartPolicy Always: it keeps trying
    assert next(c for c in looping.status.conditions if c.type == "Ready").status == "False"
    count = boom.restart_count
    await wait_pod(api, ns, "crash", lambda p: status_of(p, "boom").restart_count > count,
                   what="restart count growing")


async def test_restart_policy_never_fails_the_pod(api, ns, node):
    await api.pods.create(pod("once", ns, node.name, container("boom", "sh", "-c", "exit 2"),
                              restart_policy="Never"))
    failed = await wait_pod(api, ns, "once", lambda p: p.status.phase == "Failed",
                            what="phase Failed")
    boom = status_of(failed, "boom")
    assert boom.restart_count == 0 and boom.state.terminated.exit_code == 2


async def test_deletion_lets_a_container_trapping_term_exit(api, ns, node):
    trapping = container("trap", "sh", "-c",
                         "trap 'exit 0' TERM; while true; do sleep 0.1; done")
    await api.pods.create(pod("polite", ns, node.name, trapping, grace=30))
    await wait_pod(api, ns, "polite", running_ready, what="Running")
    started = time.monotonic()
    await api.pods.delete("polite", ns)
    await wait_gone(api, ns, "polite", timeout=25)
    # Gone long before the 30 s grace period: TERM reached the process and it exited.
    assert time.monotonic() - started < 15


async def test_deletion_kills_a_container_ignoring_term_after_the_grace_period(
        api, ns, node, docker):
    stubborn = container("stubborn", "sh", "-c",
                         "trap '' TERM; while true; do sleep 0.1; done")
    created = await api.pods.create(pod("stubborn", ns, node.name, stubborn, grace=3))
    await wait_pod(api, ns, "stubborn", running_ready, what="Running")
    started = time.monotonic()
    await api.pods.delete("stubborn", ns)
    deleting = await api.pods.get("stubborn", ns)
    assert deleting.metadata.HasField("deletion_timestamp")
    await wait_gone(api, ns, "stubborn", timeout=30)
    took = time.monotonic() - started
    assert 2.5 <= took < 20, took
    left = await docker.containers.list(
        all=True, filters=json.dumps(L.pod_filter(node.name, created.metadata.uid)))
    assert left == []


async def test_restarted_kubelet_adopts_its_pods(api, ns, node, docker):
    await api.pods.create(pod("kept", ns, node.name, http_server(body="still-here")))
    before = await wait_pod(api, ns, "kept", running_ready, what="Running")
    uid = before.metadata.uid
    ids = sorted(c.id for c in await docker.containers.list(
        filters=json.dumps(L.pod_filter(node.name, uid))))
    assert len(ids) == 2

    node.kubelet.kill()  # SIGKILL: no chance to tidy up
    node.kubelet.start()
    await node.kubelet.wait_ready()
    # A pod created after the restart runs: the new kubelet has synced its pods.
    await api.pods.create(pod("after", ns, node.name, http_server()))
    await wait_pod(api, ns, "after", running_ready, what="Running")

    after = await api.pods.get("kept", ns)
    assert running_ready(after)
    assert status_of(after, "web").restart_count == 0
    assert status_of(after, "web").container_id == status_of(before, "web").container_id
    assert sorted(c.id for c in await docker.containers.list(
        filters=json.dumps(L.pod_filter(node.name, uid)))) == ids
    assert (await http_get(f"http://{after.status.pod_ip}:8080/")).strip() == "still-here"


async def test_missing_image_err_image_pull_then_back_off(api, ns, node):
    missing = container("app", "sh", image="skiff-e2e/does-not-exist:v1")
    await api.pods.create(pod("noimage", ns, node.name, missing))

    def reason(p) -> str:
        s = status_of(p, "app")
        return s.state.waiting.reason if s is not None else ""

    first = await wait_pod(api, ns, "noimage", lambda p: reason(p) == "ErrImagePull",
                           what="ErrImagePull")
    assert first.status.phase == "Pending"
    await wait_pod(api, ns, "noimage", lambda p: reason(p) == "ImagePullBackOff",
                   what="ImagePullBackOff")
    never = container("app", "sh", image="skiff-e2e/does-not-exist:v1", policy="Never")
    await api.pods.create(pod("never", ns, node.name, never))
    await wait_pod(api, ns, "never", lambda p: reason(p) == "ErrImageNeverPull",
                   what="ErrImageNeverPull")


async def test_pods_deleted_while_the_kubelet_was_down(api, ns, node, docker):
    forced = await api.pods.create(pod("forced", ns, node.name, http_server(), grace=30))
    graceful = await api.pods.create(pod("graceful", ns, node.name, http_server(), grace=30))
    for name in ("forced", "graceful"):
        await wait_pod(api, ns, name, running_ready, what="Running")

    node.kubelet.kill()
    await api.pods.delete("forced", ns, grace_period_seconds=0)  # gone from the API now
    await api.pods.delete("graceful", ns)                        # waits for its kubelet
    assert (await api.pods.get("graceful", ns)).metadata.HasField("deletion_timestamp")
    node.kubelet.start()

    async def removed(uid: str) -> bool:
        return not await docker.containers.list(
            all=True, filters=json.dumps(L.pod_filter(node.name, uid)))

    await wait_for(lambda: removed(forced.metadata.uid), timeout=30,
                   what="the force-deleted pod's containers removed")
    await wait_gone(api, ns, "graceful", timeout=30)
    await wait_for(lambda: removed(graceful.metadata.uid), timeout=30,
                   what="the gracefully deleted pod's containers removed")
