"""Services and Endpoints, watched through informers, kept in the record table.

What it watches: every Service and every Endpoints object (both keyed
``namespace/name``; an Endpoints object belongs to the Service of the same name).
Every notification recomputes the records of that one Service from the informers'
caches (:meth:`RecordTable.set_service`), on the loop, at once: a Service's records
cost microseconds to work out, so a work queue would only add latency. Answers never
call the API (CoreDNS's kubernetes plugin: records from the caches).

The table is complete once both handler registrations have synced (each was given the
first list); :meth:`RecordWatcher.wait_ready` says when.
"""

from __future__ import annotations

import time

from google.protobuf.message import Message

from services.dns.records import RecordTable
from skiff.client.informer import SharedInformerFactory
from skiff.client.store import key_of
from skiff.logging import get_logger

log = get_logger("services.dns.watch")


class RecordWatcher:
    """Keeps a :class:`RecordTable` in line with the API's Services and Endpoints."""

    def __init__(self, factory: SharedInformerFactory, table: RecordTable) -> None:
        self.table = table
        self.services = factory.informer("services")
        self.endpoints = factory.informer("endpoints")
        self._registrations = [
            self.services.add_handler(self._changed, self._updated, self._changed,
                                      name="dns services"),
            self.endpoints.add_handler(self._changed, self._updated, self._changed,
                                       name="dns endpoints"),
        ]

    def _updated(self, old: Message, new: Message) -> None:
        self._changed(new)

    def _changed(self, obj: Message) -> None:
        key = key_of(obj)
        if self.table.set_service(key, self.services.store.get(key),
                                  self.endpoints.store.get(key)):
            log.debug("records changed", service=key)

    @property
    def synced(self) -> bool:
        return all(r.has_synced for r in self._registrations)

    async def wait_ready(self, timeout: float) -> bool:
        """Wait until both caches' first lists are in the table; whether they are."""
        deadline = time.monotonic() + timeout
        for registration in self._registrations:
            if not await registration.wait_synced(max(0.0, deadline - time.monotonic())):
                return False
        return True


__all__ = ["RecordWatcher"]
