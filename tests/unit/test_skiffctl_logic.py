"""skiffctl's pure decisions: apply's merge, label changes, grace periods, rollouts,
drain plans, names of kinds, errors, settings. No server."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from skiff.api import errors
from skiff.api.kinds import UnknownKind
from skiff.api.v1 import apps_pb2, core_pb2, meta_pb2
from skiff.cli.skiffctl import config, delete, edit_ops, nodes, rollout
from skiff.cli.skiffctl.common import (
    CommandError,
    format_error,
    parse_duration,
    parse_targets,
    resolve_kind,
)
from skiff.cli.skiffctl.merge import three_way_merge

# ---- apply's three-way merge ----


def test_merge_keeps_what_others_set_and_removes_what_the_manifest_dropped() -> None:
    original = {"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"replicas": 3}}
    modified = {"metadata": {"labels": {"a": "1"}}, "spec": {"paused": True}}
    current = {"metadata": {"labels": {"a": "1", "b": "2", "owner": "ops"}, "uid": "u"},
               "spec": {"replicas": 5, "clusterIP": "10.0.0.1"}, "status": {"x": 1}}
    merged = three_way_merge(original, modified, current)
    assert merged == {"metadata": {"labels": {"a": "1", "owner": "ops"}, "uid": "u"},
                      "spec": {"paused": True, "clusterIP": "10.0.0.1"}, "status": {"x": 1}}
    assert current["spec"]["replicas"] == 5  # inputs untouched


def test_merge_without_an_original_removes_nothing() -> None:
    merged = three_way_merge(None, {"spec": {"a": 1}}, {"spec": {"a": 0, "b": 2}})
    assert merged == {"spec": {"a": 1, "b": 2}}


def test_keyed_lists_merge_item_by_item_in_the_manifests_order() -> None:
    current = {"ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"},
                         {"port": 443, "nodePort": 30443}]}
    modified = {"ports": [{"port": 8080}, {"port": 80, "name": "http"}]}
    merged = three_way_merge(None, modified, current)
    assert merged == {"ports": [{"port": 8080},
                                {"port": 80, "nodePort": 30080, "protocol": "TCP",
                                 "name": "http"}]}


def test_containers_merge_by_name_and_unkeyed_lists_are_replaced() -> None:
    current = {"containers": [{"name": "c", "image": "a", "imagePullPolicy": "Always",
                               "command": ["x", "y"]}]}
    original = {"containers": [{"name": "c", "image": "a", "command": ["x", "y"]}]}
    modified = {"containers": [{"name": "c", "image": "b", "command": ["z"]}]}
    assert three_way_merge(original, modified, current) == {
        "containers": [{"name": "c", "image": "b", "imagePullPolicy": "Always",
                        "command": ["z"]}]}


# ---- label / annotate ----


def test_split_words_and_parse_changes() -> None:
    assert edit_ops.split_words(["pods", "web", "db", "a=b", "c-"]) == (
        ["pods", "web", "db"], ["a=b", "c-"])
    changes = edit_ops.parse_changes(["a=b", "empty=", "c-"], "label")
    assert changes.set == {"a": "b", "empty": ""} and changes.remove == ("c",)
    for bad in (["=x"], ["-"], ["a=b", "a-"]):
        with pytest.raises(CommandError):
            edit_ops.parse_changes(bad, "label")


def test_change_map_needs_overwrite_to_change_a_value() -> None:
    changes = edit_ops.Changes({"tier": "be"}, ("gone", "missing"))
    with pytest.raises(CommandError, match="'tier' already has a value \\(fe\\)"):
        edit_ops.change_map({"tier": "fe"}, changes, overwrite=False)
    after, missing = edit_ops.change_map({"tier": "fe", "gone": "x"}, changes, overwrite=True)
    assert after == {"tier": "be"} and missing == ["missing"]


def test_label_messages() -> None:
    message = edit_ops.change_message
    assert message("label", {"a": "1"}, {"a": "1"}, overwrite=False) == "not labeled"
    assert message("label", {"a": "1"}, {}, overwrite=False) == "unlabeled"
    assert message("label", {}, {"a": "1"}, overwrite=False) == "labeled"
    assert message("annotate", {}, {}, overwrite=False) == "annotated"


# ---- delete ----


def test_grace_period_follows_kubectl() -> None:
    grace = delete.grace_period
    assert grace(-1, now=False, force=False) is None
    assert grace(-1, now=True, force=False) == 1
    assert grace(0, now=False, force=False) == 1
    assert grace(0, now=False, force=True) == 0
    assert grace(-1, now=False, force=True) == 0
    assert grace(30, now=False, force=False) == 30
    with pytest.raises(CommandError):
        grace(5, now=True, force=False)


# ---- rollout ----


def deployment(*, generation: int = 2, observed: int = 2, replicas: int = 3, updated: int = 3,
               total: int = 3, available: int = 3) -> apps_pb2.Deployment:
    return apps_pb2.Deployment(
        metadata=meta_pb2.ObjectMeta(name="web", generation=generation, uid="d-uid"),
        spec=apps_pb2.DeploymentSpec(replicas=replicas),
        status=apps_pb2.DeploymentStatus(observed_generation=observed, replicas=total,
                                         updated_replicas=updated,
                                         available_replicas=available))


@pytest.mark.parametrize(("fields", "message", "done"), [
    ({"observed": 1}, "Waiting for deployment spec update to be observed...", False),
    ({"updated": 1}, 'Waiting for deployment "web" rollout to finish: 1 out of 3 new '
                     "replicas have been updated...", False),
    ({"total": 4}, 'Waiting for deployment "web" rollout to finish: 1 old replicas are '
                   "pending termination...", False),
    ({"available": 2}, 'Waiting for deployment "web" rollout to finish: 2 of 3 updated '
                       "replicas are available...", False),
    ({}, 'deployment "web" successfully rolled out', True),
])
def test_rollout_status_messages(fields: dict[str, int], message: str, done: bool) -> None:
    assert rollout.rollout_status(deployment(**fields)) == (message, done)


def test_a_rollout_past_its_deadline_fails() -> None:
    deploy = deployment(updated=1)
    deploy.status.conditions.add(type="Progressing", status="False",
                                 reason="ProgressDeadlineExceeded")
    with pytest.raises(CommandError, match="exceeded its progress deadline"):
        rollout.rollout_status(deploy)


def replica_set(revision: str | None, image: str) -> apps_pb2.ReplicaSet:
    annotations = {rollout.REVISION: revision, "note": f"rev {revision}"} if revision else {}
    return apps_pb2.ReplicaSet(
        metadata=meta_pb2.ObjectMeta(name=f"web-{revision}", annotations=annotations),
        spec=apps_pb2.ReplicaSetSpec(template=core_pb2.PodTemplateSpec(
            metadata=meta_pb2.ObjectMeta(labels={"app": "web", "pod-template-hash": "h"}),
            spec=core_pb2.PodSpec(containers=[core_pb2.Container(name="c", image=image)]))))


def test_pick_revision_takes_the_one_before_the_latest_or_the_one_asked() -> None:
    history = rollout.revisions([replica_set("3", "c"), replica_set("1", "a"),
                                 replica_set(None, "x"), replica_set("2", "b")])
    assert [r.number for r in history] == [1, 2, 3]
    assert rollout.pick_revision("web", history, 0).number == 2
    assert rollout.pick_revision("web", history, 1).number == 1
    with pytest.raises(CommandError, match="unable to find specified revision 7"):
        rollout.pick_revision("web", history, 7)
    with pytest.raises(CommandError, match="no rollout history"):
        rollout.pick_revision("web", history[:1], 0)


def test_rollback_template_drops_the_hash_and_carries_annotations() -> None:
    deploy = deployment()
    deploy.metadata.annotations.update({rollout.REVISION: "3", "other": "x"})
    deploy.spec.template.CopyFrom(replica_set("3", "c").spec.template)
    deploy.spec.template.metadata.labels.pop("pod-template-hash")
    assert rollout.rollback_template(deploy, replica_set("3", "c")) is None
    template, annotations = rollout.rollback_template(deploy, replica_set("1", "a"))
    assert dict(template.metadata.labels) == {"app": "web"}
    assert template.spec.containers[0].image == "a"
    assert annotations == {rollout.REVISION: "3", "note": "rev 1"}


# ---- drain ----


def pod(name: str, *, owner: str | None = None, mirror: bool = False) -> core_pb2.Pod:
    md = meta_pb2.ObjectMeta(name=name, namespace="default")
    if owner:
        md.owner_references.add(kind=owner, name="o", uid="u", api_version="v1",
                                controller=True)
    if mirror:
        md.annotations[nodes.MIRROR_ANNOTATION] = "x"
    return core_pb2.Pod(metadata=md)


def test_drain_needs_force_for_pods_without_a_controller() -> None:
    pods = [pod("managed", owner="ReplicaSet"), pod("bare"), pod("static", mirror=True)]
    plan = nodes.plan_drain(pods, force=False, ignore_daemonsets=False)
    assert [p.metadata.name for p in plan.delete] == ["managed"]
    assert plan.errors == ["cannot delete Pods that declare no controller (use --force to "
                           "override): default/bare"]
    forced = nodes.plan_drain(pods, force=True, ignore_daemonsets=False)
    assert [p.metadata.name for p in forced.delete] == ["managed", "bare"]
    assert forced.errors == [] and "default/bare" in forced.warnings[0]


def test_drain_leaves_daemonset_pods_only_when_told() -> None:
    pods = [pod("agent", owner="DaemonSet")]
    assert nodes.plan_drain(pods, force=True, ignore_daemonsets=False).errors
    ignored = nodes.plan_drain(pods, force=True, ignore_daemonsets=True)
    assert ignored.delete == [] and ignored.errors == [] and ignored.warnings


# ---- kinds, names, errors, flags, settings ----


def test_kinds_by_any_name_and_targets_in_both_forms() -> None:
    assert resolve_kind("po").kind == "Pod"
    assert resolve_kind("deployment.apps").kind == "Deployment"
    assert resolve_kind("Leases.coordination.k8s.io").kind == "Lease"
    for bad in ("foo", "deployment.core", ""):
        with pytest.raises(UnknownKind, match="the server doesn't have a resource type"):
            resolve_kind(bad)
    kinds, targets = parse_targets(["po,svc", "web"])
    assert [k.kind for k in kinds] == ["Pod", "Service"]
    assert [(t.kind.kind, t.name) for t in targets] == [("Pod", "web"), ("Service", "web")]
    _, targets = parse_targets(["deploy/web", "svc/web"])
    assert [(t.kind.kind, t.name) for t in targets] == [("Deployment", "web"),
                                                        ("Service", "web")]
    kinds, targets = parse_targets(["all"])
    assert targets == [] and "Deployment" in [k.kind for k in kinds]
    with pytest.raises(CommandError):
        parse_targets(["pods", "svc/web"])


def test_errors_read_as_kubectls() -> None:
    assert format_error(errors.NotFound('pods "x" not found')) == (
        'Error from server (NotFound): pods "x" not found')
    assert format_error(errors.AlreadyExists('pods "x" already exists')) == (
        'Error from server (AlreadyExists): pods "x" already exists')
    assert format_error(errors.BadRequest('Pod "x" is invalid: spec: required')) == (
        'The Pod "x" is invalid: spec: required')
    assert format_error(CommandError("bad flag")) == "error: bad flag"


def test_durations() -> None:
    assert parse_duration("30") == 30
    assert parse_duration("1m30s") == 90
    assert parse_duration("500ms") == 0.5
    assert parse_duration("2h") == 7200
    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration("soon")


def test_server_comes_from_flag_then_env_then_file_then_default(tmp_path: Path) -> None:
    file = tmp_path / "config"
    file.write_text("server: 10.0.0.1:6443,10.0.0.2:6443\nnamespace: team\n")
    env = {config.CONFIG_ENV: str(file)}
    assert config.resolve("a:1", None, env=env) == config.Settings(("a:1",), "team")
    assert config.resolve(None, "x", env={**env, config.SERVER_ENV: "b:2"}).server == (
        "b:2",)
    assert config.resolve(None, None, env=env).server == ("10.0.0.1:6443", "10.0.0.2:6443")
    nothing = {config.CONFIG_ENV: str(tmp_path / "absent")}
    assert config.resolve(None, None, env=nothing) == config.Settings(("127.0.0.1:6443",))
    file.write_text("- not a mapping\n")
    with pytest.raises(config.ConfigError):
        config.resolve(None, None, env=env)
