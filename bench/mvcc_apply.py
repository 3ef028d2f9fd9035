"""What applying a put costs one replica's state machine, alone (no raft, no gRPC).

Applies ``--puts`` puts to a fresh :class:`~services.store.mvcc.Store`, in batches of
``--batch`` commands (the raft entry's group-commit size), over ``--keys`` keys of
about the size Kubernetes objects' keys and values have, and reports the best of
``--repeat`` runs in microseconds of CPU per put (CPU time, not wall time, so that other
processes on the machine disturb the figure less). A put is the store's hottest loop: every
replica applies every one.

    python bench/mvcc_apply.py [--puts 100000] [--batch 1] [--repeat 5]
"""

from __future__ import annotations

import argparse
import gc
import time
import timeit

from services.store.mvcc import Store
from skiff.store.v1 import raft_pb2, rpc_pb2


def _batches(puts: int, batch: int, keys: int) -> list[raft_pb2.Batch]:
    value = b"x" * 600
    out = []
    for start in range(0, puts, batch):
        commands = [raft_pb2.Command(id=i + 1, put=rpc_pb2.PutRequest(
            key=b"/registry/pods/default/pod-%06d" % (i % keys), value=value))
            for i in range(start, min(start + batch, puts))]
        out.append(raft_pb2.Batch(origin=7, commands=commands))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--puts", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1, help="commands per raft entry")
    parser.add_argument("--keys", type=int, default=10_000, help="distinct keys written")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    batches = _batches(args.puts, args.batch, args.keys)
    gc.set_threshold(20_000, 20, 20)  # the replica's own setting (services/store/__main__.py)

    def run() -> None:
        store = Store()
        for batch in batches:
            store.apply_batch(batch)

    best = min(timeit.repeat(run, timer=time.process_time, number=1, repeat=args.repeat))
    print(f"{best / args.puts * 1e6:.2f} us of CPU per put "
          f"({args.puts} puts, batches of {args.batch}, {args.keys} keys, best of {args.repeat})")


if __name__ == "__main__":
    main()
