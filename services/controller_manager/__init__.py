"""The controller-manager: Kubernetes' built-in controllers in one leader-elected daemon.

One module per controller, each a :class:`skiff.client.controller.Controller` built as
``Cls(client, factory, recorder, config)`` with ``async run()``:

- :mod:`.replication` — ReplicationControllers and ReplicaSets keep N pods;
- :mod:`.garbage_collector` — ownerReferences: background, orphan and foreground
  deletion of dependents;
- :mod:`.endpoints`, :mod:`.namespace`, :mod:`.node_lifecycle` — their namesakes.

:mod:`.__main__` wires them (flags -> :mod:`.config` -> run under leader election on
the ``kube-system/kube-controller-manager`` Lease). Controllers never call each other:
they meet only through the API.
"""
