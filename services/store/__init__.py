"""The store: a raft-replicated MVCC key-value store that speaks etcd's v3 gRPC API.

Modules, from the inside out:

- ``errors``: etcd's error vocabulary and how each maps to a gRPC status.
- ``validation``: request checks made before anything is proposed.
- ``mvcc``: the deterministic state machine (revisions, history, leases, compaction).
- ``raft``: the pysyncobj replica, group commit of client commands, read barriers.
- ``lessor``: lease expiry, decided by the raft leader and replicated as revocations.
- ``watch``: watch streams served from the replica's own applied history.
- ``server``: the gRPC servicers (validate, delegate, map errors).
"""
