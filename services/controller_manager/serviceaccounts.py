"""The serviceaccounts controller: a ``default`` ServiceAccount in every namespace.

Kubernetes' ``pkg/controller/serviceaccount`` (ServiceAccountsController). Reconciles:
every active Namespace has the ServiceAccounts named in :data:`DEFAULT_ACCOUNTS`.
Watches namespaces and serviceaccounts (shared informers): a new namespace, or the
deletion of one of those accounts, enqueues the namespace, and its sync creates
what is missing. A terminating namespace is left alone (the apiserver refuses new
content there, and the namespace controller is emptying it).

Invariant: the controller only creates; it never updates or deletes an account, so
what users change on ``default`` (imagePullSecrets, say) stays. :func:`missing_accounts`
is the pure plan. Neighbours: :mod:`services.controller_manager.namespace` (same
shape), the pod strategy (defaults ``spec.serviceAccountName`` to ``default``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from google.protobuf.message import Message

from skiff.api import errors
from skiff.api.v1 import core_pb2
from skiff.client.client import Client
from skiff.client.controller import Controller
from skiff.client.events import EventRecorder
from skiff.client.informer import SharedInformerFactory

#: The accounts every namespace gets (Kubernetes' ``--service-account-names`` default).
DEFAULT_ACCOUNTS = ("default",)

__all__ = ["DEFAULT_ACCOUNTS", "ServiceAccountsController", "missing_accounts"]


def missing_accounts(namespace: core_pb2.Namespace, existing: Iterable[str],
                     wanted: Iterable[str] = DEFAULT_ACCOUNTS) -> list[str]:
    """The wanted accounts ``namespace`` lacks; none while it terminates (pure)."""
    if namespace.metadata.HasField("deletion_timestamp") \
            or namespace.status.phase == "Terminating":
        return []
    have = set(existing)
    return [name for name in wanted if name not in have]


class ServiceAccountsController(Controller):
    """Creates each namespace's missing :data:`DEFAULT_ACCOUNTS`."""

    def __init__(self, client: Client, factory: SharedInformerFactory,
                 recorder: EventRecorder, config: Any) -> None:
        super().__init__("serviceaccounts", workers=1)
        self.client = client
        self.namespaces = factory.informer("namespaces")
        self.accounts = factory.informer("serviceaccounts")
        self.namespaces.add_handler(self.enqueue, lambda old, new: self.enqueue(new), None,
                                    name="serviceaccounts-controller")
        self.accounts.add_handler(None, None, self.on_account_delete,
                                  name="serviceaccounts-controller")
        self.wait_for(self.namespaces, self.accounts)

    def on_account_delete(self, account: Message) -> None:
        """A default account went: its namespace's sync makes it again."""
        if account.metadata.name in DEFAULT_ACCOUNTS:  # type: ignore[attr-defined]
            self.enqueue(account.metadata.namespace)  # type: ignore[attr-defined]

    async def sync(self, key: str) -> None:
        """Create the accounts namespace ``key`` lacks."""
        namespace = self.namespaces.store.get(key)
        if namespace is None:
            return
        existing = [a.metadata.name  # type: ignore[attr-defined]
                    for a in self.accounts.store.by_index("namespace", key)]
        for name in missing_accounts(namespace, existing):  # type: ignore[arg-type]
            await self._create(key, name)

    async def _create(self, namespace: str, name: str) -> None:
        account = core_pb2.ServiceAccount(api_version="v1", kind="ServiceAccount")
        account.metadata.name, account.metadata.namespace = name, namespace
        try:
            await self.client.service_accounts.create(account)
        except errors.AlreadyExists:
            return  # the cache was behind: it is there
        except errors.Forbidden:
            return  # the namespace began terminating since the cache saw it
        self._log.info("created service account", namespace=namespace, name=name)
