"""The chaos run's knobs and names: component kinds, how often each is killed, the
load's size and pacing, and the timeouts. The numbers suit a two-core CI machine.
"""

from __future__ import annotations

import grpc

# Component kinds, as the report names them.
STORE = "store"
APISERVER = "apiserver"
SCHEDULER = "scheduler"
CONTROLLER_MANAGER = "controller-manager"
KUBELET = "kubelet"
#: The leader-election Lease (in kube-system) of each leader-elected kind.
LEADER_LEASES = {SCHEDULER: "kube-scheduler", CONTROLLER_MANAGER: "kube-controller-manager"}
LEADER_ELECTED = frozenset(LEADER_LEASES)
#: How often each kind is the victim: the store most, as the issue asks; now and then a
#: kubelet too, whose successor must adopt its containers (no duplicate sandbox, no leak).
KILL_WEIGHTS = {STORE: 0.5, APISERVER: 0.15, SCHEDULER: 0.14, CONTROLLER_MANAGER: 0.14,
                KUBELET: 0.07}

WRITERS = 4
OBJECTS_PER_WRITER = 6
#: The share of writes to an existing object that delete it (the rest update it).
DELETE_SHARE = 0.25
#: Pause between one writer's operations: keeps the control plane and the kubelet of a
#: two-core CI machine alive under load (deliberate pacing, not a wait on a condition).
WRITE_PAUSE = 0.1
#: Each attempt's bound; the apiserver itself retries the store for up to 10 s.
CALL_TIMEOUT = 5.0
RETRY_BACKOFF = 0.1
SCALE_INTERVAL = (2.0, 5.0)
MAX_REPLICAS = 4
FINAL_REPLICAS = 2
#: Seconds between one kill (victim healthy again) and the next.
KILL_INTERVAL = (2.0, 5.0)
#: Seconds a victim stays dead before it is restarted.
RESTART_DELAY = (0.1, 1.5)
#: The same for a scheduler or controller-manager leader: a restarted one has the same
#: identity (ProcessTarget) and takes its Lease straight back, so it must sometimes stay
#: dead past the lease duration (ELECTION_FLAGS: 4 s) for the standby to take over.
LEADER_RESTART_DELAY = (0.1, 6.0)
HEALTHY_TIMEOUT = 60.0
#: How long the cluster gets, after the last kill, to converge.
CONVERGENCE_TIMEOUT = 180.0
DEPLOYMENT = "chaos-web"
#: Leader-election timings for ProcessTarget's schedulers and controller-managers.
ELECTION_FLAGS = ["--leader-elect-lease-duration", "4", "--leader-elect-renew-deadline", "3",
                  "--leader-elect-retry-period", "0.5"]


#: Kubelet flags: short back-offs and frequent relists, as the e2e tests use.
KUBELET_FLAGS = ["--crash-backoff-initial", "1", "--crash-backoff-max", "4",
                 "--sync-frequency", "3", "--node-status-update-frequency", "2",
                 "--node-lease-renew-interval", "2", "--container-gc-period", "2"]


UNANSWERED_STORE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
