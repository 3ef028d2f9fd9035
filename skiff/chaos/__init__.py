"""Chaos against a whole cluster: SIGKILL its parts under load, then check what clients saw.

The store-only chaos test (``tests/chaos/test_store_chaos.py``) kills store replicas
under raw etcd clients. This package does the same one level up, through the API, with
every component running, and is usable two ways:

- ``tests/chaos/test_cluster_chaos.py`` starts its own cluster
  (:class:`~.targets.ProcessTarget`: three store replicas, two apiservers, two
  schedulers and two controller-managers leader-elected with short leases, one or two
  kubelets on the real Docker engine);
- ``skiff chaos --duration 300`` runs it against a local cluster started by ``skiff up``
  (:class:`~.targets.SupervisorTarget`: kills through ``supervisorctl signal KILL``).

Both are a :class:`~.targets.Target`; :func:`~.runner.run_chaos` needs nothing else. It
lives in ``skiff`` rather than ``skiff.testing`` because it is an operator's tool as much
as a test: the only test machinery it uses (``skiff.testing.processes``) is behind
ProcessTarget.

What runs at once, for ``seconds``:

- writers: each owns a few Leases in a namespace of the run's own (Leases are the
  ConfigMaps here: plain objects no controller touches outside ``kube-system`` and
  ``kube-node-lease``). Each writer creates, updates (with the resource_version it last
  saw as precondition) and deletes (with the same precondition) its objects; every
  write carries a unique value (``spec.holderIdentity``) and is recorded with what the
  client learnt: acknowledged (with its resourceVersion), rejected (an API error: it
  wrote nothing), failed (no connection: never sent) or ambiguous (sent, no answer).
  Calls are single attempts: an unanswered one moves the writer to the next apiserver,
  and the object's state is read back before its next write. Preconditions make a late
  ambiguous write unable to overwrite a newer state, so the history is checkable.
- a scaler: a Deployment of busybox pods (really run by the kubelets in Docker) scaled
  to a random size every few seconds;
- a killer: every few seconds SIGKILL one component, restart it after a moment, wait
  until it is healthy (and, for a leader-elected one, until a leader renews the Lease
  again). Mostly a store replica (the raft leader or a follower), sometimes an
  apiserver, the scheduler leader or the controller-manager leader (found from their
  Leases' holderIdentity).

Then, with everything back, the checks (pure functions, unit-tested): every acknowledged
write's final state is what the API and every store replica's keyspace hold (the replicas
hash and read identically at one revision); the Deployment converged (status equal to
spec, one active ReplicaSet, exactly spec.replicas live pods, all Running and Ready, none
twice); Docker's running pod containers on the run's nodes match those pods one to one
(one sandbox and one container per spec container each, nothing of a pod that is gone).
:func:`~.runner.run_chaos` returns a JSON-able report: operations by kind and outcome,
kills by component and role, failed calls, time to recover per kill kind, and the
problems found.

Modules, by responsibility: :mod:`.config` (component kinds, kill weights, the load's
size and pacing, timeouts), :mod:`.targets` (the cluster and its processes: kill,
restart, health), :mod:`.history` (what the clients saw; the failover client),
:mod:`.workload` (writers and the scaler), :mod:`.faults` (choosing and killing
victims), :mod:`.checks` (reading the outcome, the invariants, the report) and
:mod:`.runner` (:func:`~.runner.run_chaos` and the ``skiff chaos`` subcommand).
"""
