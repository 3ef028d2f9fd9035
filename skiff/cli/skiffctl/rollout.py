"""``rollout status|history|undo|restart|pause|resume deploy/NAME``.

A Deployment's revisions are its ReplicaSets: those whose controller ownerReference
has the deployment's uid, numbered by their ``deployment.kubernetes.io/revision``
annotation. ``undo`` puts a revision's pod template (without the
``pod-template-hash`` label the deployment controller adds) back into the deployment,
and the revision's annotations with it, as kubectl's rollbacker; the controller then
rolls out that template as a new revision. ``restart`` changes the template (an
annotation holding the time) so the controller replaces every pod.

``status`` follows the deployment (a watch on its name) and prints kubectl's
messages until :func:`rollout_status` says it is done, or ``--timeout`` passes.
The decisions (:func:`rollout_status`, :func:`pick_revision`, :func:`rollback_template`)
are pure.
"""

from __future__ import annotations

import argparse
import datetime
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from skiff.api import errors
from skiff.api.kinds import lookup
from skiff.cli.skiffctl import describe
from skiff.cli.skiffctl.common import (
    CommandError,
    Context,
    Target,
    modify,
    parse_bool,
    parse_duration,
    single_target,
    with_timeout,
)
from skiff.cli.skiffctl.printers import object_ref, render_table

REVISION = "deployment.kubernetes.io/revision"
CHANGE_CAUSE = "kubernetes.io/change-cause"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
#: Deployment annotations a rollback leaves as they are (kubectl's annotationsToSkip).
ANNOTATIONS_TO_SKIP = frozenset({
    "kubectl.kubernetes.io/last-applied-configuration", REVISION,
    "deployment.kubernetes.io/revision-history", "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas", "deprecated.deployment.rollback.to",
})
DEPLOYMENT = lookup("Deployment")


def add_parsers(subparsers: Any, common: argparse.ArgumentParser) -> None:
    rollout = subparsers.add_parser("rollout", help="manage the rollout of a deployment")
    verbs = rollout.add_subparsers(dest="rollout_command", metavar="SUBCOMMAND",
                                   required=True)

    def verb(name: str, help_text: str, func: Any) -> argparse.ArgumentParser:
        parser = verbs.add_parser(name, parents=[common], help=help_text)
        parser.add_argument("resource", nargs="+", metavar="deploy/NAME")
        parser.set_defaults(func=func)
        return parser

    status = verb("status", "wait until a rollout is done", run_status)
    status.add_argument("-w", "--watch", type=parse_bool, nargs="?", const=True, default=True,
                        metavar="true|false", help="keep watching until it is done")
    status.add_argument("--timeout", type=parse_duration, default=0.0,
                        help="give up after this long (0: wait for ever)")
    history = verb("history", "list the revisions", run_history)
    history.add_argument("--revision", type=int, default=0, help="show one revision")
    undo = verb("undo", "go back to an earlier revision", run_undo)
    undo.add_argument("--to-revision", type=int, default=0,
                      help="the revision (0: the previous one)")
    verb("restart", "replace every pod, one rollout", run_restart)
    verb("pause", "stop rolling out template changes", run_pause).set_defaults(paused=True)
    verb("resume", "roll out template changes again", run_pause).set_defaults(paused=False)


def _target(args: argparse.Namespace) -> Target:
    return single_target(args.resource, allowed=("Deployment",))


# ---- status ----


def rollout_status(deploy: Message) -> tuple[str, bool]:
    """(kubectl's message, whether the rollout is done) for a Deployment (pure)."""
    md, spec, status = deploy.metadata, deploy.spec, deploy.status
    name = md.name
    if md.generation > status.observed_generation:
        return "Waiting for deployment spec update to be observed...", False
    progressing = next((c for c in status.conditions if c.type == "Progressing"), None)
    if progressing is not None and progressing.reason == "ProgressDeadlineExceeded":
        raise CommandError(f'deployment "{name}" exceeded its progress deadline')
    waiting = f'Waiting for deployment "{name}" rollout to finish: '
    if status.updated_replicas < spec.replicas:
        return (f"{waiting}{status.updated_replicas} out of {spec.replicas} new replicas "
                "have been updated..."), False
    if status.replicas > status.updated_replicas:
        return (f"{waiting}{status.replicas - status.updated_replicas} old replicas are "
                "pending termination..."), False
    if status.available_replicas < status.updated_replicas:
        return (f"{waiting}{status.available_replicas} of {status.updated_replicas} updated "
                "replicas are available..."), False
    return f'deployment "{name}" successfully rolled out', True


async def run_status(ctx: Context, args: argparse.Namespace) -> int:
    target = _target(args)
    return await with_timeout(_follow(ctx, target, watch=args.watch), args.timeout,
                              "timed out waiting for the condition")


async def _follow(ctx: Context, target: Target, *, watch: bool) -> int:
    namespace = ctx.namespace_of(DEPLOYMENT)
    resource = ctx.resource(DEPLOYMENT)
    last = ""
    while True:
        deploy = await resource.get(target.name, namespace)
        events = resource.watch(namespace, resource_version=deploy.metadata.resource_version,
                                field_selector=f"metadata.name={target.name}")
        try:
            while True:
                message, done = rollout_status(deploy)
                if message != last:
                    ctx.echo(message)
                    last = message
                if done or not watch:
                    return 0
                deploy = await _next_version(events, target.name)
        except (errors.Gone, errors.Unavailable):
            continue  # the watch broke: read afresh and watch again
        finally:
            await events.aclose()


async def _next_version(events: Any, name: str) -> Message:
    async for event in events:
        if event.type == "DELETED":
            raise CommandError(f'deployment "{name}" was deleted')
        if event.type in ("ADDED", "MODIFIED"):
            return event.object
    raise errors.Unavailable("the watch ended")


# ---- revisions ----


def revision_of(rs: Message) -> int | None:
    try:
        return int(rs.metadata.annotations[REVISION])
    except (KeyError, ValueError):
        return None


@dataclass(frozen=True)
class Revision:
    number: int
    replica_set: Message


def revisions(replica_sets: Iterable[Message]) -> list[Revision]:
    """The numbered revisions among a deployment's ReplicaSets, oldest first."""
    found = [Revision(n, rs) for rs in replica_sets if (n := revision_of(rs)) is not None]
    return sorted(found, key=lambda r: r.number)


def pick_revision(name: str, history: list[Revision], to_revision: int) -> Revision:
    """The revision ``undo`` goes back to: ``to_revision``, or the one before the
    latest (pure)."""
    if to_revision > 0:
        for revision in history:
            if revision.number == to_revision:
                return revision
        raise CommandError(f"unable to find specified revision {to_revision} in history")
    if len(history) < 2:
        raise CommandError(f'no rollout history found for deployment "{name}"')
    return history[-2]


def rollback_template(deploy: Message, rs: Message) -> tuple[Message, dict[str, str]] | None:
    """(the template to put back, the deployment's annotations after the rollback), or
    None when the deployment runs that template already (pure)."""
    template = describe.template_without_hash(rs.spec.template)
    if template == describe.template_without_hash(deploy.spec.template):
        return None
    annotations = {k: v for k, v in deploy.metadata.annotations.items()
                   if k in ANNOTATIONS_TO_SKIP}
    annotations.update({k: v for k, v in rs.metadata.annotations.items()
                        if k not in ANNOTATIONS_TO_SKIP})
    return template, annotations


async def _history(ctx: Context, deploy: Message) -> list[Revision]:
    listing = await ctx.client.replica_sets.list(deploy.metadata.namespace)
    return revisions(describe.owned_by(listing.items, deploy.metadata.uid))


async def run_history(ctx: Context, args: argparse.Namespace) -> int:
    target = _target(args)
    deploy = await ctx.resource(DEPLOYMENT).get(target.name, ctx.namespace_of(DEPLOYMENT))
    history = await _history(ctx, deploy)
    ref = object_ref(DEPLOYMENT, target.name)
    if args.revision:
        revision = pick_revision(target.name, history, args.revision)
        lines = describe.Lines()
        describe.write_pod_template(lines, revision.replica_set.spec.template)
        ctx.echo(f"{ref} with revision #{revision.number}")
        ctx.out.write(lines.render())
        return 0
    ctx.echo(ref)
    rows = [[str(r.number), r.replica_set.metadata.annotations.get(CHANGE_CAUSE, "<none>")]
            for r in history]
    ctx.out.write(render_table(["REVISION", "CHANGE-CAUSE"], rows, bold=ctx.out.isatty()))
    return 0


async def _plan_undo(ctx: Context, name: str, namespace: str, to_revision: int) -> Revision:
    deploy = await ctx.resource(DEPLOYMENT).get(name, namespace)
    if deploy.spec.paused:
        raise CommandError("you cannot rollback a paused deployment; resume it first "
                           "with 'skiffctl rollout resume' and try again")
    return pick_revision(name, await _history(ctx, deploy), to_revision)


async def run_undo(ctx: Context, args: argparse.Namespace) -> int:
    target = _target(args)
    namespace = ctx.namespace_of(DEPLOYMENT)
    revision = await _plan_undo(ctx, target.name, namespace, args.to_revision)

    def change(deploy: Message) -> bool:
        result = rollback_template(deploy, revision.replica_set)
        if result is None:
            return False
        template, annotations = result
        deploy.spec.template.CopyFrom(template)
        deploy.metadata.annotations.clear()
        deploy.metadata.annotations.update(annotations)
        return True

    _, changed = await modify(ctx, DEPLOYMENT, target.name, namespace, change)
    ref = object_ref(DEPLOYMENT, target.name)
    if changed:
        ctx.echo(f"{ref} rolled back")
    else:
        ctx.echo(f"{ref} skipped rollback (current template already matches revision "
                 f"{revision.number})")
    return 0


# ---- restart, pause, resume ----


def rfc3339_now(now: float) -> str:
    """The local time as Go's RFC 3339 (``Z`` for UTC), as kubectl stamps restarts."""
    text = datetime.datetime.fromtimestamp(int(now)).astimezone().isoformat()
    return text.removesuffix("+00:00") + "Z" if text.endswith("+00:00") else text


async def run_restart(ctx: Context, args: argparse.Namespace) -> int:
    target = _target(args)
    stamp = rfc3339_now(ctx.clock())

    def change(deploy: Message) -> None:
        if deploy.spec.paused:
            raise CommandError(f'deployments.apps "{target.name}" can\'t restart paused '
                               "deployment (run rollout resume first)")
        deploy.spec.template.metadata.annotations[RESTARTED_AT] = stamp

    await modify(ctx, DEPLOYMENT, target.name, ctx.namespace_of(DEPLOYMENT), change)
    ctx.echo(f"{object_ref(DEPLOYMENT, target.name)} restarted")
    return 0


async def run_pause(ctx: Context, args: argparse.Namespace) -> int:
    target = _target(args)
    word = "paused" if args.paused else "resumed"

    def change(deploy: Message) -> None:
        if deploy.spec.paused == args.paused:
            raise CommandError(f'deployments.apps "{target.name}" is '
                               f"{'already' if args.paused else 'not'} paused")
        deploy.spec.paused = args.paused

    await modify(ctx, DEPLOYMENT, target.name, ctx.namespace_of(DEPLOYMENT), change)
    ctx.echo(f"{object_ref(DEPLOYMENT, target.name)} {word}")
    return 0
