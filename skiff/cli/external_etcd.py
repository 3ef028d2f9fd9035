"""The existing etcd ``skiff up --etcd-servers`` runs a cluster on: its client URLs
(kube-apiserver's ``--etcd-servers``) checked and normalized, whether its members answer,
and which etcd a rendered supervisord configuration uses.

Pure parts (URLs, configurations) apart from the one that talks to etcd
(:func:`etcd_status`, :func:`etcd_problems`); ``skiff/cli/cluster.py`` uses them.
"""

from __future__ import annotations

import re
import urllib.parse

import grpc

from skiff.store.v1 import rpc_pb2, rpc_pb2_grpc


def parse_etcd_url(url: str) -> str:
    """One etcd client URL, ``http://host:port``, as ``host:port`` (pure); ValueError
    naming the URL and what is wrong with it. TLS to etcd is not supported (yet)."""
    text = url.strip()
    try:
        parts = urllib.parse.urlsplit(text)
        port = parts.port
    except ValueError as e:  # a port that is no number or out of range
        raise ValueError(f"etcd server {url!r}: {e}") from None
    if parts.scheme == "https":
        raise ValueError(f"etcd server {url!r}: TLS to etcd is not supported; give an "
                         "http:// client URL")
    if parts.scheme != "http" or not parts.hostname or port is None:
        raise ValueError(f"etcd server {url!r} is not a client URL http://host:port")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError(f"etcd server {url!r}: only http://host:port, nothing after it")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{port}"


def parse_etcd_servers(text: str) -> tuple[str, ...]:
    """``--etcd-servers``' comma-separated client URLs, normalized to ``http://host:port``
    and without duplicates (pure); ValueError naming a bad one."""
    urls: list[str] = []
    for part in text.split(","):
        if part.strip():
            url = f"http://{parse_etcd_url(part)}"
            if url not in urls:
                urls.append(url)
    if text.strip() and not urls:
        raise ValueError(f"--etcd-servers {text!r} names no URL")
    return tuple(urls)


def configured_etcd_servers(config_text: str) -> tuple[str, ...]:
    """The existing etcd a supervisord configuration runs the apiserver on, as its
    client URLs; empty when it runs Skiff's own store replicas (pure)."""
    if re.search(r"^\[program:store-\d+\]$", config_text, flags=re.M):
        return ()
    found = re.search(r"^command=.* -m services\.apiserver .*--store-endpoints (\S+)",
                      config_text, flags=re.M)
    return tuple(found.group(1).split(",")) if found else ()


async def etcd_status(endpoint: str, timeout: float = 2.0) -> rpc_pb2.StatusResponse:
    """Maintenance.Status of the etcd (or store) member at ``host:port``; gRPC's error
    when it does not answer within ``timeout``."""
    async with grpc.aio.insecure_channel(endpoint) as channel:
        return await rpc_pb2_grpc.MaintenanceStub(channel).Status(
            rpc_pb2.StatusRequest(), timeout=timeout)


async def etcd_problems(urls: tuple[str, ...], timeout: float = 3.0) -> list[str]:
    """What keeps each etcd client URL from serving a cluster: it does not answer
    Maintenance.Status within ``timeout``, or knows no leader (empty: all usable)."""
    problems = []
    for url in urls:
        try:
            status = await etcd_status(parse_etcd_url(url), timeout)
        except grpc.aio.AioRpcError as e:
            problems.append(f"{url} does not answer as an etcd v3 server "
                            f"({e.code().name}: {e.details()})")
            continue
        if not status.leader or status.errors:
            problems.append(f"{url} answers but has no leader "
                            f"({'; '.join(status.errors) or 'no leader elected'})")
    return problems
