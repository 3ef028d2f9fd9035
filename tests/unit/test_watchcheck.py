"""The watch guarantees' checks (skiff.watchcheck): once, in order, no gap, true, and
lists equal to the history's state; and the Informer handler recorder. Pure."""

from __future__ import annotations

from skiff.api.v1 import core_pb2, meta_pb2
from skiff.watchcheck import (
    Change,
    HandlerRecorder,
    WatchRecord,
    check_contiguous,
    check_watch,
    history_from,
)

P = "/registry/pods/default/"
OTHER = "/registry/leases/default/"


def k(name: str, prefix: str = P) -> str:
    return prefix + name


# Revisions 2..9: 5 and 8 change another kind (the prefix's watch skips them).
HISTORY = history_from([
    Change(2, k("a")), Change(3, k("b")), Change(4, k("a")), Change(5, k("x", OTHER)),
    Change(6, k("b"), deleted=True), Change(7, k("c")), Change(7, k("d")),
    Change(8, k("y", OTHER)), Change(9, k("a")),
], base=1)


def record(*entries: tuple, start: int = 1, prefix: str = P) -> WatchRecord:
    rec = WatchRecord("w", prefix, start)
    for entry in entries:
        if entry[0] == "e":
            rec.event(entry[1], k(entry[2], prefix), deleted=len(entry) > 3)
        elif entry[0] == "p":
            rec.progress(entry[1])
        else:
            rec.listed(entry[1], {k(n, prefix): r for n, r in entry[2].items()})
    return rec


EVERYTHING = [("e", 2, "a"), ("e", 3, "b"), ("e", 4, "a"), ("e", 6, "b", "del"),
              ("e", 7, "c"), ("e", 7, "d"), ("e", 9, "a")]


def test_every_change_once_in_order_passes():
    assert check_watch(record(*EVERYTHING), HISTORY, until=9) == []


def test_a_missing_change_is_a_gap_even_with_the_revision_reached():
    entries = [e for e in EVERYTHING if e[1] != 4]
    problems = check_watch(record(*entries), HISTORY, until=9)
    assert any("missed 1 changes" in p and "(4," in p for p in problems), problems


def test_one_key_of_a_multi_key_revision_missing_is_a_gap():
    entries = [e for e in EVERYTHING if e[2] != "d"]
    assert any("missed" in p for p in check_watch(record(*entries), HISTORY, until=9))


def test_a_progress_mark_past_an_undelivered_change_is_caught():
    # The watcher was told it had everything up to 8, then the change at 7 arrives:
    # a client resuming from the mark would have skipped it.
    entries = [*EVERYTHING[:4], ("p", 8), ("e", 7, "c"), ("e", 7, "d"), ("e", 9, "a")]
    problems = check_watch(record(*entries), HISTORY, until=9)
    assert any("had been told was complete" in p for p in problems), problems


def test_a_progress_mark_from_a_lagging_replica_says_nothing():
    entries = [*EVERYTHING[:4], ("p", 3), *EVERYTHING[4:]]
    assert check_watch(record(*entries), HISTORY, until=9) == []


def test_duplicates_reordering_and_invented_events_are_caught():
    twice = check_watch(record(*EVERYTHING[:3], ("e", 3, "b"), *EVERYTHING[3:]),
                        HISTORY, until=9)
    assert any("twice" in p for p in twice), twice
    back = check_watch(record(EVERYTHING[1], EVERYTHING[0], *EVERYTHING[2:]), HISTORY, until=9)
    assert any("went back" in p for p in back), back
    wrong = check_watch(record(*EVERYTHING[:3], ("e", 6, "b"), *EVERYTHING[4:]),
                        HISTORY, until=9)  # a deletion reported as a put
    assert any("does not hold" in p for p in wrong), wrong


def test_a_watcher_that_stops_early_is_caught_and_owes_nothing_beyond():
    problems = check_watch(record(*EVERYTHING[:3]), HISTORY, until=9)
    assert problems == ["w: reached only revision 4 of 9"]


def test_a_relist_accounts_for_what_it_coalesced_if_it_equals_the_history():
    # Events up to 3, then a re-list at 7 (a, c, d live), then the rest.
    good = record(*EVERYTHING[:2], ("l", 7, {"a": 4, "c": 7, "d": 7}), ("e", 9, "a"))
    assert check_watch(good, HISTORY, until=9) == []
    stale = record(*EVERYTHING[:2], ("l", 7, {"a": 2, "c": 7, "d": 7}), ("e", 9, "a"))
    assert any("lists differ" in p for p in check_watch(stale, HISTORY, until=9))
    kept_deleted = record(*EVERYTHING[:2], ("l", 7, {"a": 4, "b": 3, "c": 7, "d": 7}),
                          ("e", 9, "a"))
    assert any("lists differ" in p for p in check_watch(kept_deleted, HISTORY, until=9))


def test_a_record_may_start_with_its_list():
    rec = record(("l", 4, {"a": 4, "b": 3}), *EVERYTHING[3:], start=0)
    assert check_watch(rec, HISTORY, until=9) == []
    rec = record(("l", 4, {"a": 4, "b": 3}), *EVERYTHING[4:], start=0)
    assert any("missed" in p for p in check_watch(rec, HISTORY, until=9))


def test_contiguity_of_a_whole_keyspace_watcher():
    rec = WatchRecord("all", "", 1)
    for change in HISTORY.changes:
        rec.event(change.revision, change.key, deleted=change.deleted)
    assert check_contiguous(rec, until=9) == []
    rec.entries = [e for e in rec.entries if e.revision != 8]
    assert check_contiguous(rec, until=9) == ["all: missed 1 revisions of (1, 9], e.g. [8]"]


def pod(name: str, rv: int) -> core_pb2.Pod:
    return core_pb2.Pod(metadata=meta_pb2.ObjectMeta(name=name, namespace="default",
                                                     resource_version=str(rv)))


def test_the_handler_recorder_turns_a_relists_difference_into_one_list():
    recorder = HandlerRecorder(WatchRecord("informer", P))
    recorder.on_list("1")
    recorder.on_add(pod("a", 2))          # a watch event (above the list)
    recorder.on_add(pod("b", 3))
    recorder.on_list("7")                 # re-list: b deleted, a updated, c and d added
    recorder.on_delete(pod("b", 3))
    recorder.on_update(pod("a", 2), pod("a", 4))
    recorder.on_add(pod("c", 7))
    recorder.on_add(pod("d", 7))
    recorder.on_update(pod("a", 4), pod("a", 9))  # the watch again
    rec = recorder.finish()
    assert rec.entries == [
        *record(("l", 1, {}), ("e", 2, "a"), ("e", 3, "b"),
                ("l", 7, {"a": 4, "c": 7, "d": 7}), ("e", 9, "a")).entries]
    assert check_watch(rec, HISTORY, until=9) == []
