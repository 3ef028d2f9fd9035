"""Watch guarantees, checked: what one watcher saw against the store's history (pure).

etcd's robustness tests check every watcher of a run for the guarantees its clients
build on; Skiff's chaos suites record a watcher at every layer (a store Watch stream, an
API watch, an Informer's handlers), across kills, and check each with :func:`check_watch`:

- *once*: no change (revision, key) is delivered twice;
- *in order*: revisions never go down, and nothing comes at or below a revision the
  watcher was told it had everything up to (a progress notification, a BOOKMARK, a list);
- *no gap*: every change the history holds for the watcher's prefix after its start is
  delivered, up to the revision it reached, unless a (re-)list accounted for it; what a
  list gives (key -> mod_revision) must be the history's state at the list's revision;
- *true*: every event delivered is a change the history holds (same revision, key, and
  deletion or not);
- *reached*: the watcher got to the revision the run ended at.

"No gap" is relative to the prefix: a kind's watch skips the revisions of other kinds,
so the truth is the store's history (:class:`History`, read after the run or recorded by
a watcher of the whole keyspace that itself passes the check), filtered to the prefix.

A record (:class:`WatchRecord`) is what a watcher saw, in the order it saw it: events
(:class:`Change`), progress marks (:class:`Progress`) and lists (:class:`Listed`). An
Informer's handlers see a re-list as the difference to what they had; its recorder
gives them as a :class:`Listed` with the state they were left with.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

#: How many examples a problem sentence names.
EXAMPLES = 5


@dataclass(frozen=True)
class Change:
    """One key changed at one revision (a put, or its deletion)."""

    revision: int
    key: str
    deleted: bool = False


@dataclass(frozen=True)
class Progress:
    """The watcher was told that every change up to ``revision`` was delivered."""

    revision: int


@dataclass(frozen=True)
class Listed:
    """The watcher (re-)started from a list at ``revision``: ``state`` is key ->
    mod_revision of every key it then held under its prefix."""

    revision: int
    state: Mapping[str, int]


Entry = Change | Progress | Listed


@dataclass
class WatchRecord:
    """What one watcher of ``prefix`` saw, in order. ``start``: the revision it started
    after (every change above it is owed); a record that starts with a list may leave
    it 0, the list sets it."""

    name: str
    prefix: str
    start: int = 0
    entries: list[Entry] = field(default_factory=list)
    #: How often it resumed (a broken stream, another replica or apiserver), for reports.
    resumes: int = 0

    def event(self, revision: int, key: str, *, deleted: bool = False) -> None:
        self.entries.append(Change(revision, key, deleted))

    def progress(self, revision: int) -> None:
        self.entries.append(Progress(revision))

    def listed(self, revision: int, state: Mapping[str, int]) -> None:
        self.entries.append(Listed(revision, dict(state)))

    @property
    def reached(self) -> int:
        """The highest revision the watcher has everything up to (by what it was told)."""
        reached = self.start
        for entry in self.entries:
            reached = max(reached, entry.revision)
        return reached


@dataclass(frozen=True)
class History:
    """The truth: the state of the keyspace at ``base`` (key -> mod_revision) and every
    change after it, in revision order."""

    base: int
    initial: Mapping[str, int]
    changes: tuple[Change, ...]

    def under(self, prefix: str) -> History:
        """Only the keys under ``prefix``."""
        return History(self.base, {k: r for k, r in self.initial.items() if k.startswith(prefix)},
                       tuple(c for c in self.changes if c.key.startswith(prefix)))

    def state_at(self, revision: int) -> dict[str, int]:
        """key -> mod_revision of every live key at ``revision`` (>= ``base``)."""
        state = dict(self.initial)
        for change in self.changes:
            if change.revision > revision:
                break
            if change.deleted:
                state.pop(change.key, None)
            else:
                state[change.key] = change.revision
        return state


def history_from(changes: Iterable[Change], *, base: int = 0,
                 initial: Mapping[str, int] | None = None) -> History:
    """A :class:`History` from changes in any order (sorted by revision, then key)."""
    return History(base, dict(initial or {}),
                   tuple(sorted(changes, key=lambda c: (c.revision, c.key))))


def check_contiguous(record: WatchRecord, *, until: int) -> list[str]:
    """For a watcher of the whole keyspace: every revision in (start, until] carries at
    least one change (a revision is made only by a change), so it must see each of them.
    Pure; sentences naming what is wrong."""
    seen = {e.revision for e in record.entries if isinstance(e, Change)}
    missing = sorted(set(range(record.start + 1, until + 1)) - seen)
    if missing:
        return [f"{record.name}: missed {len(missing)} revisions of ({record.start}, "
                f"{until}], e.g. {missing[:EXAMPLES]}"]
    return []


def check_watch(record: WatchRecord, history: History, *, until: int) -> list[str]:
    """Check one watcher's record against the store's history up to ``until`` (see the
    module docstring). Pure; returns what is wrong, as sentences (empty: all is well)."""
    name = record.name
    truth = history.under(record.prefix)
    if record.start and record.start < truth.base:
        return [f"{name}: started at {record.start}, before the history's base "
                f"{truth.base}: cannot be checked"]
    real = {(c.revision, c.key): c.deleted for c in truth.changes}
    problems: list[str] = []
    twice: list[tuple[int, str]] = []
    backwards: list[tuple[int, int]] = []
    behind_mark: list[tuple[int, int]] = []
    invented: list[tuple[int, str]] = []
    wrong_lists: list[str] = []
    seen: set[tuple[int, str]] = set()
    # Changes in (low, high] were accounted for by the list at high.
    covered: list[tuple[int, int]] = []
    start = record.start
    last_event = 0   # revision of the last event
    mark = start     # everything up to here was claimed delivered
    for entry in record.entries:
        if isinstance(entry, Listed):
            if not start and not covered and not seen:
                start = entry.revision  # a record that starts with its list
            elif entry.revision < mark:
                backwards.append((mark, entry.revision))
            covered.append((mark, entry.revision))
            expected = truth.state_at(entry.revision)
            if dict(entry.state) != expected:
                differing = sorted(k for k in entry.state.keys() | expected.keys()
                                   if entry.state.get(k) != expected.get(k))
                wrong_lists.append(f"at {entry.revision} on {differing[:EXAMPLES]}")
            mark = max(mark, entry.revision)
            last_event = max(last_event, entry.revision)
        elif isinstance(entry, Progress):
            # A lagging replica may report less than was delivered: that says nothing.
            mark = max(mark, entry.revision)
        else:
            here = (entry.revision, entry.key)
            if here in seen:
                twice.append(here)
                continue
            seen.add(here)
            if entry.revision < last_event:
                backwards.append((last_event, entry.revision))
            elif entry.revision <= mark and entry.revision != last_event:
                behind_mark.append((mark, entry.revision))
            if real.get(here) != entry.deleted:
                invented.append(here)
            last_event = max(last_event, entry.revision)
            mark = max(mark, entry.revision)
    reached = min(mark, until)
    if mark < until:
        problems.append(f"{name}: reached only revision {mark} of {until}")
    owed = [c for c in truth.changes
            if start < c.revision <= reached
            and not any(low < c.revision <= high for low, high in covered)]
    missing = [(c.revision, c.key) for c in owed if (c.revision, c.key) not in seen]
    if missing:
        problems.append(f"{name}: missed {len(missing)} changes, e.g. {missing[:EXAMPLES]}")
    if twice:
        problems.append(f"{name}: delivered {len(twice)} changes twice, e.g. {twice[:EXAMPLES]}")
    if backwards:
        problems.append(f"{name}: went back {len(backwards)} times (from, to), e.g. "
                        f"{backwards[:EXAMPLES]}")
    if behind_mark:
        problems.append(f"{name}: {len(behind_mark)} events at or below a revision it had "
                        f"been told was complete (mark, event), e.g. {behind_mark[:EXAMPLES]}")
    if invented:
        problems.append(f"{name}: {len(invented)} events the history does not hold "
                        f"(or of the wrong type), e.g. {invented[:EXAMPLES]}")
    if wrong_lists:
        problems.append(f"{name}: {len(wrong_lists)} lists differ from the history's state, "
                        f"e.g. {wrong_lists[:EXAMPLES]}")
    return problems


@dataclass
class HandlerRecorder:
    """Turns an Informer's handler notifications into a :class:`WatchRecord`.

    Register ``on_list``, ``on_add``, ``on_update`` and ``on_delete`` with the informer
    (``on_list`` comes before a list's notifications). Keys are the store's: ``prefix``
    plus the object's name (the informer watches one namespace's prefix). After
    ``on_list(R)`` the notifications at or below R are the list's difference: they
    update the model, and the record gets one :class:`Listed` with the state they left.
    """

    record: WatchRecord
    model: dict[str, int] = field(default_factory=dict)
    _listing: int | None = None

    def on_list(self, resource_version: str) -> None:
        self._flush()
        self._listing = int(resource_version)

    def on_add(self, obj: object) -> None:
        self._note(obj, deleted=False)

    def on_update(self, old: object, new: object) -> None:
        self._note(new, deleted=False)

    def on_delete(self, obj: object) -> None:
        self._note(obj, deleted=True)

    def finish(self) -> WatchRecord:
        """The record, with a list still being delivered closed."""
        self._flush()
        return self.record

    def _note(self, obj: object, *, deleted: bool) -> None:
        md = obj.metadata  # type: ignore[attr-defined]
        key = self.record.prefix + md.name
        revision = int(md.resource_version)
        if self._listing is None or revision > self._listing:
            self._flush()  # the list's difference is complete: a watch event follows
            self.record.event(revision, key, deleted=deleted)
        if deleted:
            self.model.pop(key, None)
        else:
            self.model[key] = revision

    def _flush(self) -> None:
        if self._listing is not None:
            self.record.listed(self._listing, self.model)
            self._listing = None
