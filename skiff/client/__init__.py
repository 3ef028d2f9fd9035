"""How every component and user talks to the apiserver (the analogue of client-go).

- :mod:`skiff.client.client`: the typed async client, retries across apiservers;
- :mod:`skiff.client.informer`: list-then-watch into an indexed cache, with handlers;
- :mod:`skiff.client.workqueue`: de-duplicating, rate-limited work queue;
- :mod:`skiff.client.leaderelection`: a leader elector on a Lease;
- :mod:`skiff.client.controller`: informers -> handlers enqueue keys -> workers reconcile.
"""

from skiff.client.client import DEFAULT_SERVER, Client, ResourceClient

__all__ = ["DEFAULT_SERVER", "Client", "ResourceClient"]
