"""How every component and user talks to the apiserver (the analogue of client-go).

- :mod:`skiff.client.client`: the typed async client, retries across apiservers;
- :mod:`skiff.client.informer`: list-then-watch into an indexed cache, with handlers;
- :mod:`skiff.client.workqueue`: de-duplicating, rate-limited work queue;
- :mod:`skiff.client.leaderelection`: a leader elector on a Lease;
- :mod:`skiff.client.controller`: informers -> handlers enqueue keys -> workers reconcile;
- :mod:`skiff.client.events`: Events recorded in the background, aggregated.
"""

from skiff.client.client import DEFAULT_SERVER, Client, ResourceClient
from skiff.client.controller import Controller, run_with_leader_election
from skiff.client.events import EventRecorder
from skiff.client.informer import Informer, SharedInformerFactory
from skiff.client.leaderelection import LeaderElector
from skiff.client.store import Store, key_of, split_key
from skiff.client.workqueue import RateLimitingQueue

__all__ = ["DEFAULT_SERVER", "Client", "Controller", "EventRecorder", "Informer",
           "LeaderElector", "RateLimitingQueue", "ResourceClient", "SharedInformerFactory",
           "Store", "key_of", "run_with_leader_election", "split_key"]
