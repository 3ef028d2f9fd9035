"""skiff-dns: the cluster DNS, answering for Services and endpoints, forwarding the rest.

Modules, from the edge in: ``__main__`` (flags -> config -> run), ``config``,
``server`` (UDP and TCP listeners), ``answers`` (query bytes -> reply bytes: checks,
packing, truncation, the packed-answer cache), ``forwarder`` (upstream resolvers),
``watch`` (informers -> the record table), ``records`` (Services and Endpoints -> the
zone's records and lookups, pure), ``metrics`` (Prometheus).
"""
