"""Which stores the apiserver's storage believes about watch progress, by the version
they report: etcd answers a progress request in order with the stream's events only
from 3.4.31 / 3.5.13 on (etcd-io/etcd#15220); Skiff's store reports a version past that."""

from __future__ import annotations

import pytest

from services.apiserver.storage import orders_progress
from services.store.server import API_VERSION


@pytest.mark.parametrize(("version", "ordered"), [
    ("3.4.23", False),   # Debian 12's etcd
    ("3.4.30", False),
    ("3.4.31", True),
    ("3.5.0", False),
    ("3.5.12", False),
    ("3.5.13", True),
    ("3.5.21", True),
    ("3.6.0", True),
    ("4.0.0", True),
    ("3.3.27", False),   # no progress requests at all
    ("3.6.0-rc.1", True),
    ("", False),
    ("v3.5", False),
    ("unknown", False),
])
def test_progress_is_believed_only_from_versions_that_order_it(version: str, ordered: bool):
    assert orders_progress(version) is ordered


def test_skiffs_store_reports_a_version_whose_progress_is_believed():
    assert orders_progress(API_VERSION)
