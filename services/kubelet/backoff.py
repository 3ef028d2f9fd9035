"""Per-key exponential back-off on an injected clock: crash loops and image pulls.

Kubernetes' ``flowcontrol.Backoff`` as the kubelet uses it. A key (a pod's container,
or an image) that fails is given a delay: ``initial`` the first time, doubled at each
failure up to ``maximum``. ``in_backoff(key, since)`` says whether ``since`` (the
container's finish time, or now for pulls) is still inside that delay. A key that has
not failed for ``reset_after`` seconds starts again from ``initial`` (a container that
ran ten minutes before crashing is not punished for crashes long ago).

Pure bookkeeping: no sleeping, no I/O; times are seconds of whatever clock the caller
uses (the kubelet passes wall-clock times, as Docker reports finish times in them).
"""

from __future__ import annotations

from dataclasses import dataclass

#: Kubernetes' crash-loop back-off: 10 s doubling to 5 min, reset after 10 min of calm.
DEFAULT_INITIAL = 10.0
DEFAULT_MAXIMUM = 300.0
DEFAULT_RESET_AFTER = 600.0


@dataclass
class _Entry:
    delay: float
    #: When the failure that set ``delay`` happened.
    last_failure: float


class Backoff:
    """Delays per key (see the module). Invariant: every entry's delay is within
    [initial, maximum]."""

    def __init__(self, initial: float = DEFAULT_INITIAL, maximum: float = DEFAULT_MAXIMUM,
                 reset_after: float = DEFAULT_RESET_AFTER) -> None:
        if initial <= 0 or maximum < initial:
            raise ValueError("back-off needs 0 < initial <= maximum")
        self.initial = initial
        self.maximum = maximum
        self.reset_after = reset_after
        self._entries: dict[str, _Entry] = {}

    def next(self, key: str, at: float) -> float:
        """Record a failure of ``key`` at time ``at``; returns the delay it now has."""
        entry = self._entries.get(key)
        if entry is None or at - entry.last_failure > self.reset_after:
            entry = self._entries[key] = _Entry(self.initial, at)
        else:
            entry.delay = min(entry.delay * 2, self.maximum)
            entry.last_failure = at
        return entry.delay

    def delay(self, key: str) -> float:
        """The key's current delay (0 when it has none)."""
        entry = self._entries.get(key)
        return entry.delay if entry is not None else 0.0

    def in_backoff(self, key: str, now: float, since: float | None = None) -> bool:
        """Whether ``now`` is within the key's delay after ``since`` (default: the
        last recorded failure)."""
        return self.remaining(key, now, since) > 0

    def remaining(self, key: str, now: float, since: float | None = None) -> float:
        """Seconds of back-off left at ``now`` (0 when none)."""
        entry = self._entries.get(key)
        if entry is None:
            return 0.0
        start = entry.last_failure if since is None else since
        return max(0.0, start + entry.delay - now)

    def forget(self, key: str) -> None:
        self._entries.pop(key, None)

    def forget_prefix(self, prefix: str) -> None:
        """Forget every key starting with ``prefix`` (all containers of a pod)."""
        for key in [k for k in self._entries if k.startswith(prefix)]:
            del self._entries[key]

    def garbage_collect(self, now: float) -> None:
        """Drop entries idle for twice ``reset_after`` (they would reset anyway)."""
        for key in [k for k, e in self._entries.items()
                    if now - e.last_failure > 2 * self.reset_after]:
            del self._entries[key]
