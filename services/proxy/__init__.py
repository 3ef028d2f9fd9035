"""skiff-proxy: one per node; Services' cluster IPs and NodePorts sent to endpoints.

Modules, from the edge in: ``__main__`` (flags -> config -> run), ``config``,
``proxier`` (Services and Endpoints -> rule values and listeners), ``rulesync`` (the
kernel table written in batches, checked on a period), ``nftables_rules`` (the rules,
pure) and ``nftables`` (running nft), ``userspace`` (one service port's listeners),
``forwarder`` (one proxied TCP connection), ``udp`` (UDP sessions), ``loadbalancer``
(round-robin and ClientIP affinity, pure), ``metrics`` (per service port counters).
"""

import os

# The proxy forks nft while gRPC's threads run; gRPC core then logs "skipping fork()
# handlers" at INFO for every write (harmless: the child execs at once). Errors only,
# as skiffctl does; set before grpc is first imported.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
