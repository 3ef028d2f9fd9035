"""The power-loss emulation's pure parts: reading the sync log, planning the cuts, the checker."""

from __future__ import annotations

import json
import random

from skiff.testing.power_loss import (
    Acked,
    Cut,
    Remove,
    apply_power_loss,
    find_losses,
    plan_power_loss,
    read_sync_log,
)

D = "/data/s0"


def line(**record) -> str:
    return json.dumps(record)


def test_the_log_gives_each_inode_its_last_synced_length_and_each_dir_its_last_names():
    state = read_sync_log([
        line(file=f"{D}/journal", inode=10, length=100),
        line(dir=D, entries={"journal": 10}),
        line(file=f"{D}/journal", inode=10, length=250),
        line(file=f"{D}/journal.meta.tmp", inode=11, length=60),
        line(dir=D, entries={"journal": 10, "journal.meta": 11}),
    ])
    assert state.synced == {10: 250, 11: 60}
    assert state.directories == {D: {"journal": 10, "journal.meta": 11}}


def test_an_inode_durably_unlinked_forgets_its_length():
    state = read_sync_log([
        line(file=f"{D}/journal.meta.tmp", inode=11, length=60),
        line(dir=D, entries={"journal.meta": 11}),
        line(file=f"{D}/journal.meta.tmp", inode=12, length=61),
        line(dir=D, entries={"journal.meta": 12}),  # 11 replaced and gone
    ])
    assert state.synced == {12: 61}


E = "/data/s1"


def test_an_inode_freed_in_one_dir_keeps_its_new_holders_sync_logged_before():
    # Seen in CI: s1 freed inode 20 (its snapshot.tmp), s0's new dump got 20 and synced
    # it, and s1's directory sync that showed 20 gone was logged only after that.
    state = read_sync_log([
        line(file=f"{E}/snapshot.writing.2", inode=20, length=900),
        line(dir=E, entries={"snapshot": 21, "snapshot.tmp": 20}),
        line(file=f"{D}/snapshot.writing.4", inode=20, length=1800),
        line(dir=E, entries={"snapshot": 21}),  # 20 unlinked before s0 reused it
        line(dir=D, entries={"snapshot": 20}),
    ])
    assert state.synced[20] == 1800
    found = {D: {"snapshot": (20, 1800)}}
    assert plan_power_loss(state, found, random.Random(1)) == []


def test_an_inode_reused_in_the_same_dir_and_synced_before_a_racing_listing_is_kept():
    # The dump's writer reuses the inode the stand-in freed and syncs it while another
    # thread's directory sync, listed before the new file existed, is still unlogged.
    state = read_sync_log([
        line(file=f"{D}/snapshot.writing.1", inode=20, length=900),
        line(dir=D, entries={"snapshot": 21, "snapshot.tmp": 20}),
        line(file=f"{D}/snapshot.writing.3", inode=20, length=1800),
        line(dir=D, entries={"snapshot": 21, "journal": 22}),
        line(dir=D, entries={"snapshot": 20, "journal": 22}),
    ])
    assert state.synced[20] == 1800


def plan(log: list[str], found: dict, seed: int = 1) -> list[Remove | Cut]:
    return plan_power_loss(read_sync_log(log), found, random.Random(seed))


def test_names_never_made_durable_are_removed():
    actions = plan([line(file=f"{D}/journal", inode=10, length=16)],  # no directory sync
                   {D: {"journal": (10, 16)}})
    assert actions == [Remove(f"{D}/journal", "its name was never made durable")]


def test_a_durable_name_never_synced_is_removed():
    actions = plan([line(dir=D, entries={"snapshot.writing.3": 20})],
                   {D: {"snapshot.writing.3": (20, 5000)}})
    assert actions == [Remove(f"{D}/snapshot.writing.3", "never synced")]


def test_a_synced_file_keeps_its_synced_bytes_and_loses_or_garbles_the_rest():
    log = [line(file=f"{D}/journal", inode=10, length=100), line(dir=D, entries={"journal": 10})]
    seen = set()
    for seed in range(200):
        (cut,) = plan(log, {D: {"journal": (10, 400)}}, seed)
        assert isinstance(cut, Cut) and cut.synced == 100
        assert 100 <= cut.length <= 400
        if cut.garbage:
            assert 100 <= cut.garbage_at and cut.garbage_at + len(cut.garbage) <= cut.length
        seen.add((cut.length == 100, bool(cut.garbage)))
    assert seen >= {(False, True)}  # some keep part of the tail, garbled


def test_a_fully_synced_file_is_left_alone():
    log = [line(file=f"{D}/journal", inode=10, length=100), line(dir=D, entries={"journal": 10})]
    assert plan(log, {D: {"journal": (10, 100)}}) == []


def test_a_rename_over_a_durable_name_keeps_the_new_file_only_if_synced():
    log = [line(file=f"{D}/snapshot", inode=30, length=900),
           line(dir=D, entries={"snapshot": 30}),
           line(file=f"{D}/snapshot.writing.2", inode=31, length=1000)]
    assert plan(log, {D: {"snapshot": (31, 1000)}}) == []  # synced whole: kept
    (removed,) = plan(log, {D: {"snapshot": (32, 1000)}})  # unsynced replacement
    assert isinstance(removed, Remove)


def test_apply_cuts_and_removes_real_files(tmp_path):
    data = tmp_path / "s0"
    data.mkdir()
    journal, stray = data / "journal", data / "journal.new"
    journal.write_bytes(b"a" * 100)
    stray.write_bytes(b"b" * 10)
    log = tmp_path / "syncs.log"
    log.write_text("\n".join([
        line(file=str(journal), inode=journal.stat().st_ino, length=40),
        line(dir=str(data.resolve()), entries={"journal": journal.stat().st_ino}),
    ]) + "\n")
    with journal.open("ab") as f:
        f.write(b"c" * 50)
    actions = apply_power_loss([data], log, random.Random(3))
    assert not stray.exists()
    (cut,) = [a for a in actions if isinstance(a, Cut)]
    content = journal.read_bytes()
    assert len(content) == cut.length and content[:40] == b"a" * 40


def test_find_losses_reports_missing_changed_and_a_revision_going_back():
    acked = {b"k1": Acked(b"v1", 5), b"k2": Acked(b"v2", 6), b"k3": Acked(b"v3", 9)}
    assert find_losses(acked, {b"k1": (b"v1", 5), b"k2": (b"v2", 6), b"k3": (b"v3", 9)}, 9) == []
    losses = find_losses(acked, {b"k1": (b"v1", 5), b"k2": (b"other", 7)}, 7)
    assert len(losses) == 3
    assert "b'k2': acknowledged b'v2' at revision 6, found b'other' at 7" in losses
    assert "b'k3': acknowledged at revision 9, missing" in losses
    assert any("went back to 7" in loss for loss in losses)
