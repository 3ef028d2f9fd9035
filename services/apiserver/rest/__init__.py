"""The apiserver's REST edge: Kubernetes' HTTP API over HTTPS, beside the gRPC edge.

Both edges call the same :class:`~services.apiserver.registry.Registry` objects, so the
semantics are written once; this package only translates HTTP (paths, query
parameters, Kubernetes JSON, Status objects) to registry calls and back.
"""
