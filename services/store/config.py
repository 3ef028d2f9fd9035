"""The store's configuration, from etcd-style flags."""

from __future__ import annotations

import argparse
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from services.store.raft_transport import RaftTimings
from skiff.metrics import parse_url

PASSWORD_ENV = "SKIFF_STORE_PEER_PASSWORD"


@dataclass(frozen=True)
class Member:
    """A member of the initial cluster: its name and raft peer URL."""

    name: str
    peer_url: str

    @property
    def peer_address(self) -> str:
        host, port = parse_url(self.peer_url)
        return f"{host}:{port}"

    @property
    def id(self) -> int:
        """A stable 64-bit member id (etcd derives its ids from member URLs the same way)."""
        digest = hashlib.sha256(f"{self.name}|{self.peer_url}".encode()).digest()
        return int.from_bytes(digest[:8], "big")


@dataclass(frozen=True)
class StoreConfig:
    """Everything one replica needs; see ``skiff-store --help``."""

    name: str
    data_dir: Path
    client_urls: tuple[str, ...]
    initial_cluster: tuple[Member, ...]
    peer_password: str
    metrics_url: str | None = None
    log_level: str = "info"
    #: Revisions kept by the leader's periodic compaction; 0 turns it off.
    auto_compaction_retention: int = 100_000
    auto_compaction_interval: float = 60.0
    #: Raft log entries between full dumps (etcd's --snapshot-count).
    snapshot_count: int = 20_000
    request_timeout: float = 5.0
    progress_notify_interval: float = 600.0
    #: Skip every fsync (etcd's flag): a power loss may then lose acknowledged writes.
    unsafe_no_fsync: bool = False
    timings: RaftTimings = field(default_factory=RaftTimings)

    @property
    def member(self) -> Member:
        return next(m for m in self.initial_cluster if m.name == self.name)

    @property
    def cluster_id(self) -> int:
        text = ",".join(f"{m.name}={m.peer_url}" for m in sorted(self.initial_cluster,
                                                                 key=lambda m: m.name))
        return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="skiff-store",
        description="One replica of Skiff's raft-replicated store (serves etcd's v3 gRPC API).")
    p.add_argument("--name", required=True, help="this member's name in --initial-cluster")
    p.add_argument("--data-dir", required=True, type=Path, help="journal and snapshot directory")
    p.add_argument("--listen-client-urls", default="http://127.0.0.1:2379",
                   help="comma-separated URLs for etcd v3 gRPC clients")
    p.add_argument("--listen-peer-urls", default=None,
                   help="this member's raft URL (must match its --initial-cluster entry)")
    p.add_argument("--initial-cluster", required=True,
                   help="name=http://host:port,... for every member")
    p.add_argument("--listen-metrics-urls", default=None, help="URL serving /metrics")
    p.add_argument("--peer-password-file", type=Path, default=None,
                   help=f"file holding the secret shared by all members (or ${PASSWORD_ENV})")
    p.add_argument("--auto-compaction-retention", type=int, default=100_000,
                   help="revisions kept when the leader compacts periodically (0: never)")
    p.add_argument("--auto-compaction-interval", type=float, default=60.0, help="seconds")
    p.add_argument("--snapshot-count", type=int, default=20_000,
                   help="raft log entries between full dumps of the state (the log is "
                        "then truncated)")
    p.add_argument("--experimental-watch-progress-notify-interval", type=float, default=600.0,
                   help="seconds between progress notifications to watches that ask for them")
    p.add_argument("--unsafe-no-fsync", action="store_true",
                   help="do not fsync the journal, term, vote or dumps (as etcd's flag): "
                        "faster, but a power loss or OS crash can lose acknowledged writes "
                        "(a killed process loses nothing); for tests and throwaway clusters")
    p.add_argument("--log-level", default="info")
    return p


def parse_args(argv: list[str] | None = None) -> StoreConfig:
    """Flags -> StoreConfig; a bad flag exits with a message naming it."""
    parser = _parser()
    args = parser.parse_args(argv)
    members = []
    for item in filter(None, args.initial_cluster.split(",")):
        name, sep, url = item.partition("=")
        if not sep or not name:
            parser.error(f"--initial-cluster: {item!r} is not NAME=URL")
        try:
            parse_url(url)
        except ValueError as e:
            parser.error(f"--initial-cluster: {e}")
        members.append(Member(name, url))
    if args.name not in {m.name for m in members}:
        parser.error(f"--name {args.name!r} is not in --initial-cluster")
    own = next(m for m in members if m.name == args.name)
    if args.listen_peer_urls and parse_url(args.listen_peer_urls) != parse_url(own.peer_url):
        parser.error(f"--listen-peer-urls {args.listen_peer_urls} differs from "
                     f"--initial-cluster's {own.peer_url} for {args.name}")
    client_urls = tuple(filter(None, args.listen_client_urls.split(",")))
    for url in client_urls:
        try:
            parse_url(url)
        except ValueError as e:
            parser.error(f"--listen-client-urls: {e}")
    if args.peer_password_file is not None:
        password = args.peer_password_file.read_text().strip()
    else:
        password = os.environ.get(PASSWORD_ENV, "")
    if not password:
        parser.error(f"a peer password is required (--peer-password-file or ${PASSWORD_ENV}): "
                     "replicas unpickle what peers send, so their channel must be authenticated")
    if args.snapshot_count < 2:
        parser.error(f"--snapshot-count {args.snapshot_count}: must be at least 2")
    return StoreConfig(
        name=args.name, data_dir=args.data_dir, client_urls=client_urls,
        initial_cluster=tuple(members), peer_password=password,
        metrics_url=args.listen_metrics_urls, log_level=args.log_level,
        auto_compaction_retention=args.auto_compaction_retention,
        auto_compaction_interval=args.auto_compaction_interval,
        snapshot_count=args.snapshot_count,
        progress_notify_interval=args.experimental_watch_progress_notify_interval,
        unsafe_no_fsync=args.unsafe_no_fsync,
    )
