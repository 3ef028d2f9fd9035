"""Checks made on a request before it is proposed, with etcd's errors (pure functions).

What needs the store's state (does the lease exist, is the revision compacted) is
checked when the command is applied instead; what is wrong with the request itself is
refused here, so a malformed request never reaches the log.
"""

from __future__ import annotations

from services.store import errors
from skiff.store.v1 import rpc_pb2

#: etcd's defaults: --max-txn-ops and --max-request-bytes.
MAX_TXN_OPS = 128
MAX_REQUEST_BYTES = 1536 * 1024

_Interval = tuple[bytes, bytes]  # [key, range_end) in etcd's encoding


def check_range(request: rpc_pb2.RangeRequest) -> None:
    if not request.key:
        raise errors.EMPTY_KEY
    if (request.sort_order not in rpc_pb2.RangeRequest.SortOrder.values()
            or request.sort_target not in rpc_pb2.RangeRequest.SortTarget.values()):
        raise errors.INVALID_SORT_OPTION


def check_put(request: rpc_pb2.PutRequest) -> None:
    if not request.key:
        raise errors.EMPTY_KEY
    if request.ignore_value and request.value:
        raise errors.VALUE_PROVIDED
    if request.ignore_lease and request.lease:
        raise errors.LEASE_PROVIDED


def check_delete_range(request: rpc_pb2.DeleteRangeRequest) -> None:
    if not request.key:
        raise errors.EMPTY_KEY


def check_size(request: rpc_pb2.PutRequest | rpc_pb2.TxnRequest) -> None:
    if request.ByteSize() > MAX_REQUEST_BYTES:
        raise errors.REQUEST_TOO_LARGE


def check_txn(request: rpc_pb2.TxnRequest, max_ops: int = MAX_TXN_OPS) -> None:
    """etcd's checkTxnRequest: op counts, every op's own checks, no key written twice."""
    ops = max(len(request.compare), len(request.success), len(request.failure))
    if ops > max_ops:
        raise errors.TOO_MANY_OPS
    for compare in request.compare:
        if not compare.key:
            raise errors.EMPTY_KEY
    for op in (*request.success, *request.failure):
        _check_op(op, max_ops - ops)
    _check_intervals(request.success)
    _check_intervals(request.failure)


def _check_op(op: rpc_pb2.RequestOp, max_ops: int) -> None:
    kind = op.WhichOneof("request")
    if kind == "request_range":
        check_range(op.request_range)
    elif kind == "request_put":
        check_put(op.request_put)
    elif kind == "request_delete_range":
        check_delete_range(op.request_delete_range)
    elif kind == "request_txn":
        check_txn(op.request_txn, max_ops)


def _contains(interval: _Interval, key: bytes) -> bool:
    start, end = interval
    if not end:
        return key == start
    return key >= start and (end == b"\0" or key < end)


def _check_intervals(ops: list[rpc_pb2.RequestOp]) -> tuple[set[bytes], list[_Interval]]:
    """Puts and deletes of one branch (and the Txns nested in it) must not overlap."""
    deletes = [(op.request_delete_range.key, op.request_delete_range.range_end)
               for op in ops if op.WhichOneof("request") == "request_delete_range"]
    puts: set[bytes] = set()
    for op in ops:
        kind = op.WhichOneof("request")
        if kind == "request_put":
            new_puts, new_deletes = {op.request_put.key}, []
        elif kind == "request_txn":
            # Only one branch of a nested Txn runs, so its branches may share keys.
            s_puts, s_dels = _check_intervals(op.request_txn.success)
            f_puts, f_dels = _check_intervals(op.request_txn.failure)
            new_puts, new_deletes = s_puts | f_puts, s_dels + f_dels
        else:
            continue
        for key in new_puts:
            if key in puts or any(_contains(d, key) for d in deletes):
                raise errors.DUPLICATE_KEY
        for interval in new_deletes:
            if any(_contains(interval, key) for key in puts):
                raise errors.DUPLICATE_KEY
        puts |= new_puts
        deletes += new_deletes
    return puts, deletes
