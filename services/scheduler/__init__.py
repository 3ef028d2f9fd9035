"""The scheduler: pods with an empty ``spec.nodeName`` -> filter nodes -> score -> bind.

The pure core, in one-way layers (each imports only those above it):

- :mod:`.framework` — statuses, ``PodInfo`` / ``NodeInfo`` (parsed once, cached), the
  plugin protocols and the :class:`~.framework.Framework` that runs one scheduling cycle;
- :mod:`.plugins` — one file per plugin (Kubernetes' names and reasons);
- :mod:`.profile` — which plugins with which weights (Kubernetes' defaults, a YAML file);
- :mod:`.cache` — what the cluster looks like to the scheduler: nodes, bound and assumed
  pods, and an incremental snapshot for each cycle;
- :mod:`.queue` — the pods waiting to be scheduled: active (by priority), backing off,
  and unschedulable until a cluster event may help.

No I/O anywhere here: the daemon wires informers to the cache and the queue, pops a pod,
runs the framework on ``cache.snapshot()``, assumes the pod and binds it.
"""
