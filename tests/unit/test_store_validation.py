"""Request checks made before proposing: etcd's errors for malformed requests."""

from __future__ import annotations

import pytest

from services.store import errors, validation
from services.store.errors import EtcdError
from skiff.store.v1 import rpc_pb2


def op_put(key: bytes) -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key))


def op_delete(key: bytes, range_end: bytes = b"") -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=key,
                                                                             range_end=range_end))


def raises(error: EtcdError, check, request) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(EtcdError) as e:
        check(request)
    assert e.value == error


def test_empty_keys_are_refused_everywhere():
    raises(errors.EMPTY_KEY, validation.check_range, rpc_pb2.RangeRequest())
    raises(errors.EMPTY_KEY, validation.check_put, rpc_pb2.PutRequest())
    raises(errors.EMPTY_KEY, validation.check_delete_range, rpc_pb2.DeleteRangeRequest())
    raises(errors.EMPTY_KEY, validation.check_txn,
           rpc_pb2.TxnRequest(compare=[rpc_pb2.Compare()]))
    raises(errors.EMPTY_KEY, validation.check_txn, rpc_pb2.TxnRequest(success=[op_put(b"")]))


def test_put_flags_that_contradict_the_request():
    raises(errors.VALUE_PROVIDED, validation.check_put,
           rpc_pb2.PutRequest(key=b"k", value=b"v", ignore_value=True))
    raises(errors.LEASE_PROVIDED, validation.check_put,
           rpc_pb2.PutRequest(key=b"k", lease=1, ignore_lease=True))


def test_unknown_sort_options():
    raises(errors.INVALID_SORT_OPTION, validation.check_range,
           rpc_pb2.RangeRequest(key=b"k", sort_order=7))


def test_too_many_txn_ops():
    raises(errors.TOO_MANY_OPS, validation.check_txn,
           rpc_pb2.TxnRequest(success=[op_put(b"k%d" % i) for i in range(129)]))
    validation.check_txn(rpc_pb2.TxnRequest(success=[op_put(b"k%d" % i) for i in range(128)]))


@pytest.mark.parametrize("ops", [
    [op_put(b"a"), op_put(b"a")],
    [op_put(b"b"), op_delete(b"a", b"c")],
    [op_delete(b"\0", b"\0"), op_put(b"z")],
    [op_put(b"a"), rpc_pb2.RequestOp(request_txn=rpc_pb2.TxnRequest(success=[op_put(b"a")]))],
])
def test_a_branch_writing_a_key_twice_is_refused(ops):
    raises(errors.DUPLICATE_KEY, validation.check_txn, rpc_pb2.TxnRequest(success=ops))


def test_overlaps_that_etcd_allows():
    nested = rpc_pb2.TxnRequest(success=[op_put(b"a")], failure=[op_put(b"a")])
    validation.check_txn(rpc_pb2.TxnRequest(
        success=[op_delete(b"a", b"c"), op_delete(b"b")],
        failure=[op_put(b"b"), rpc_pb2.RequestOp(request_txn=nested)],
    ))


def test_oversized_requests():
    raises(errors.REQUEST_TOO_LARGE, validation.check_size,
           rpc_pb2.PutRequest(key=b"k", value=b"x" * (validation.MAX_REQUEST_BYTES + 1)))
