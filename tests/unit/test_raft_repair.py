"""repair_append_entries: pysyncobj followers truncate only from a conflicting entry."""

from __future__ import annotations

from services.store.raft_transport import repair_append_entries


class FakeSyncObj:
    """Just the two pysyncobj fields the repair reads: the log and the commit index."""

    def __init__(self, terms: list[int], commit: int) -> None:
        # pysyncobj's log starts with a no-op at index 1; entries are (command, index, term).
        self._SyncObj__raftLog = [(b"", i + 1, t) for i, t in enumerate(terms)]
        self._SyncObj__raftCommitIndex = commit


def append(prev: int, prev_term: int, *entries: tuple[int, int]) -> dict:
    return {"type": "append_entries", "term": 2, "commit_index": 0, "prevLogIdx": prev,
            "prevLogTerm": prev_term, "entries": [(b"", i, t) for i, t in entries]}


def test_a_stale_resend_of_entries_we_hold_truncates_nothing_committed():
    syncobj = FakeSyncObj([0, 1, 1, 1, 1], commit=5)
    repaired = repair_append_entries(syncobj, append(2, 1, (3, 1), (4, 1)))
    assert (repaired["prevLogIdx"], repaired["entries"]) == (5, [])


def test_matching_entries_are_skipped_and_the_rest_appended():
    syncobj = FakeSyncObj([0, 1, 1], commit=2)
    repaired = repair_append_entries(syncobj, append(1, 0, (2, 1), (3, 1), (4, 2)))
    assert repaired["prevLogIdx"] == 3 and repaired["prevLogTerm"] == 1
    assert [e[1] for e in repaired["entries"]] == [4]


def test_a_conflicting_entry_is_where_truncation_starts():
    syncobj = FakeSyncObj([0, 1, 1, 1], commit=2)
    repaired = repair_append_entries(syncobj, append(1, 0, (2, 1), (3, 2)))
    assert repaired["prevLogIdx"] == 2
    assert [e[1:] for e in repaired["entries"]] == [(3, 2)]


def test_uncommitted_entries_beyond_the_message_may_still_go():
    syncobj = FakeSyncObj([0, 1, 1, 1, 1], commit=3)
    repaired = repair_append_entries(syncobj, append(2, 1))
    assert repaired["prevLogIdx"] == 3  # our commit index: 4 and 5 are unverified


def test_messages_it_must_not_touch():
    syncobj = FakeSyncObj([0, 1, 1], commit=3)
    at_end = append(3, 1, (4, 1))
    assert repair_append_entries(syncobj, at_end) is at_end
    wrong_term = append(2, 5, (3, 5))
    assert repair_append_entries(syncobj, wrong_term) is wrong_term
    vote = {"type": "request_vote", "term": 3}
    assert repair_append_entries(syncobj, vote) is vote
