"""Which store backends a test runs against: Skiff's own store, a real etcd, or both.

A module (``pytestmark = ON_BOTH_BACKENDS``) or a test marked ``store_backends(*names)``
runs once per named backend; its ``api_cluster`` (and so ``api`` and ``ns``) or
``store`` fixture is then that backend's (see tests/integration/conftest.py). A test
that depends on what only Skiff's store does says so with :func:`skiff_store_only`
and its reason, which the marker keeps for whoever reads the test report.
"""

from __future__ import annotations

import pytest

from skiff.testing.fixtures import BACKENDS

#: Run on Skiff's store and on a real three-member etcd 3.4.
ON_BOTH_BACKENDS = pytest.mark.store_backends(*BACKENDS)
#: Why a test of what progress notifications do stays on Skiff's store.
UNORDERED_PROGRESS = ("etcd before 3.4.31 / 3.5.13 may send a progress notification ahead "
                      "of events it covers (etcd-io/etcd#15220), so the apiserver does not "
                      "let one move its watch cache: on etcd 3.4 a quiet kind's cache, and "
                      "its bookmarks, move only with that kind's own events")


def skiff_store_only(reason: str) -> pytest.MarkDecorator:
    """Run only on Skiff's store, because of ``reason`` (what etcd does otherwise)."""
    if not reason:
        raise ValueError("say why a test runs only on Skiff's store")
    return pytest.mark.store_backends("skiff", reason=reason)
