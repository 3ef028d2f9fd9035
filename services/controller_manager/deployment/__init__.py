"""Deployments: roll a pod template out through ReplicaSets.

Kubernetes' deployment controller (``pkg/controller/deployment``: ``sync.go``,
``rolling.go``, ``recreate.go``, ``progress.go``). A Deployment owns ReplicaSets, each
running one version of its pod template:

- the *new* ReplicaSet is the one whose template equals the deployment's (ignoring the
  ``pod-template-hash`` label); it is named ``<deployment>-<hash>``, where the hash is
  :func:`compute_hash` of the template (and ``status.collisionCount``), and the hash is
  added to its selector, its template's labels and so to its pods' labels, so the
  ReplicaSets of one deployment never select each other's pods;
- every other owned ReplicaSet is *old*. Revisions are numbered by the annotation
  ``deployment.kubernetes.io/revision`` on each ReplicaSet (copied onto the Deployment);
  a rollback is an update of the template back to an earlier one: the old ReplicaSet
  with that template becomes the new one again and gets the next revision number.

Watches Deployments, ReplicaSets and pods. Handlers only enqueue a deployment's key: a
ReplicaSet maps to its controlling Deployment or, for an orphan, to every Deployment
whose selector matches it; a deleted pod maps (through its ReplicaSet) to a Recreate
deployment, which waits for old pods to be gone. ``sync(key)``:

1. reads the Deployment from the cache (missing: deleted; the garbage collector
   removes its ReplicaSets by their ownerReferences);
2. claims ReplicaSets: adopts matching orphans, releases owned ones that no longer match;
3. a deleting deployment only gets its status written; a paused one, or one whose
   ``spec.replicas`` changed (a *scaling event*), is scaled proportionally across its
   ReplicaSets (:func:`plan_scale`) with no rollout progress;
4. otherwise rolls out: **RollingUpdate** scales the new ReplicaSet up as far as
   ``maxSurge`` allows (:func:`plan_new_replica_set_scale`), then old ones down as far
   as ``maxUnavailable`` allows (:func:`plan_old_replica_sets_scale_down`);
   **Recreate** scales all old ReplicaSets to zero, waits until none of their pods
   exists, then scales the new one up;
5. once the rollout is complete, deletes the oldest zero-sized old ReplicaSets beyond
   ``revisionHistoryLimit`` (:func:`plan_cleanup`);
6. writes status (counts, the Available, Progressing and ReplicaFailure conditions,
   :func:`calculate_rollout_status`) only when it changed, and looks again when the
   progress deadline is due.

One tightening of Kubernetes, so the rollout bounds hold for the pods that exist and
not only for the ReplicaSets' ``spec.replicas``: when counting pods against
``replicas + maxSurge`` a ReplicaSet counts ``max(spec.replicas, status.replicas)``
(a scaled-down ReplicaSet still counts its pods until its controller has begun deleting
them), and when counting available pods against ``replicas - maxUnavailable`` it counts
``min(status.availableReplicas, spec.replicas)`` (pods about to be deleted are not
available). See :func:`pod_count` and :func:`available_count`.

No expectations: every write goes through optimistic concurrency (a stale cache makes
a write fail with Conflict and the key is retried), the new ReplicaSet's name is
deterministic (a create racing a stale cache answers AlreadyExists and the existing one
is used), and the objects this controller wrote are remembered until its informers
catch up (:class:`WrittenObjects`), so a sync right after a write plans from it.

Files, as Kubernetes splits them: :mod:`.deployment_controller` (informers, handlers,
``sync``, claiming), :mod:`.sync` (the new ReplicaSet, proportional scaling, cleanup,
status), :mod:`.rolling`, :mod:`.recreate`, :mod:`.progress` (the Progressing and
ReplicaFailure conditions, the deadline requeue) and :mod:`.util` (names and pure
helpers: amounts, hash, annotations, revisions, conditions, own writes). Each strategy
file holds its pure decisions (unit-tested directly) next to the controller methods that
carry them out; those methods are layered classes (``DeploymentSyncer`` <
``ProgressSyncer`` < ``RollingUpdater``/``Recreator`` < ``DeploymentController``), the
way the Go methods of one struct are spread over files. Neighbours:
:mod:`..replication` (runs the ReplicaSets' pods; its claiming and ownerReference
helpers are reused here), :mod:`..garbage_collector` (cascading deletion), ``skiffctl
rollout`` (history, undo, pause, resume). A rollback is a template update (``skiffctl
rollout undo``), so there is no ``rollback.py``.
"""
