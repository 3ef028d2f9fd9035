"""skiff-proxy: one per node; Services' cluster IPs and NodePorts forwarded to endpoints.

Modules, from the edge in: ``__main__`` (flags -> config -> run), ``config``,
``proxier`` (Services and Endpoints -> listeners and load balancers), ``forwarder``
(one proxied TCP connection), ``loadbalancer`` (round-robin and ClientIP affinity, pure),
``metrics`` (per service port counters for Prometheus).
"""
