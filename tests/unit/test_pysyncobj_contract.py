"""The check of the pysyncobj internals the store relies on."""

from __future__ import annotations

import pytest

from services.store import pysyncobj_contract
from services.store.pysyncobj_contract import PINNED_VERSION, PysyncobjMismatch, Requirement


def test_the_installed_pysyncobj_has_everything_the_store_uses():
    assert pysyncobj_contract.missing() == []
    pysyncobj_contract.check()


def test_the_pin_in_pyproject_is_the_checked_version():
    from pathlib import Path

    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    assert f'"pysyncobj=={PINNED_VERSION}"' in pyproject.read_text()


@pytest.mark.parametrize("requirement", [
    Requirement("pysyncobj.syncobj:SyncObj", "_SyncObj__noSuchMethod", "attribute", "test"),
    Requirement("pysyncobj.syncobj:SyncObj", "_SyncObj__noSuchField", "instance", "test"),
    Requirement("pysyncobj.syncobj", "noSuchGlobal", "global", "test"),
    Requirement("pysyncobj.no_such_module", "x", "global", "test"),
    Requirement("pysyncobj.syncobj:NoSuchClass", "x", "attribute", "test"),
])
def test_a_missing_attribute_is_named_with_the_pinned_version(requirement):
    present = pysyncobj_contract.REQUIREMENTS[0]
    assert pysyncobj_contract.missing((present, requirement)) == [requirement]
    with pytest.raises(PysyncobjMismatch) as raised:
        pysyncobj_contract.check((present, requirement))
    message = str(raised.value)
    assert f"{requirement.where}.{requirement.name}" in message
    assert f"pysyncobj=={PINNED_VERSION}" in message


def test_instance_attributes_are_found_in_the_constructor_code():
    # A name set only in __init__ is not on the class, yet the check finds it.
    import pysyncobj.syncobj

    assert not hasattr(pysyncobj.syncobj.SyncObj, "_SyncObj__raftLog")
    assert pysyncobj_contract.missing((Requirement(
        "pysyncobj.syncobj:SyncObj", "_SyncObj__raftLog", "instance", "test"),)) == []
