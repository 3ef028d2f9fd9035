"""The kubelet's per-pod directories (services/kubelet/pod_dirs.py), on a temporary root."""

from __future__ import annotations

import pytest

from services.kubelet.pod_dirs import PodDirs


def test_write_replace_and_remove(tmp_path):
    dirs = PodDirs(tmp_path)
    path = dirs.write_resolv_conf("u1", "nameserver 10.96.0.10\n")
    assert path == tmp_path / "pods" / "u1" / "resolv.conf"
    assert path.read_text() == "nameserver 10.96.0.10\n"
    assert path.stat().st_mode & 0o777 == 0o644
    dirs.write_resolv_conf("u1", "nameserver 10.96.0.11\n")
    assert path.read_text() == "nameserver 10.96.0.11\n"
    assert [p.name for p in path.parent.iterdir()] == ["resolv.conf"]  # no temporary left
    assert dirs.remove("u1") and not path.parent.exists()
    assert not dirs.remove("u1")


def test_orphans_are_the_directories_of_unknown_pods(tmp_path):
    dirs = PodDirs(tmp_path)
    assert dirs.uids() == set()  # no pods/ yet
    for uid in ("a", "b", "c"):
        dirs.write_resolv_conf(uid, "")
    assert dirs.orphans({"a", "x"}) == {"b", "c"}


@pytest.mark.parametrize("uid", ["", "..", "a/b"])
def test_a_uid_that_is_not_one_is_refused(tmp_path, uid):
    with pytest.raises(ValueError, match="not a pod uid"):
        PodDirs(tmp_path).path(uid)
