"""skiffctl's tables and describe for ConfigMaps, Secrets and ServiceAccounts, and a
pod's env sources in describe (kubectl's words; pure, no server)."""

from __future__ import annotations

from skiff.api import manifest
from skiff.api.kinds import lookup
from skiff.cli.skiffctl.describe import Related, describe
from skiff.cli.skiffctl.printers import TableOptions, table_header, table_row

NOW = 1_700_000_000.0
META = {"name": "conf", "namespace": "default", "creationTimestamp": "2023-11-14T22:08:20Z"}


def load(kind: str, **fields: object) -> object:
    return manifest.from_dict({"apiVersion": "v1", "kind": kind, "metadata": META, **fields})


def test_tables() -> None:
    options = TableOptions()
    cm = load("ConfigMap", data={"a": "1", "b": "2"}, binaryData={"c": "AA=="})
    assert table_header(lookup("cm"), options) == ["NAME", "DATA", "AGE"]
    assert table_row(lookup("cm"), cm, options, NOW)[:2] == ["conf", "3"]
    secret = load("Secret", type="Opaque", data={"a": "AA=="})
    assert table_header(lookup("secret"), options) == ["NAME", "TYPE", "DATA", "AGE"]
    assert table_row(lookup("secret"), secret, options, NOW)[:3] == ["conf", "Opaque", "1"]
    sa = load("ServiceAccount", secrets=[{"name": "t"}])
    assert table_header(lookup("sa"), options) == ["NAME", "SECRETS", "AGE"]
    assert table_row(lookup("sa"), sa, options, NOW)[:2] == ["conf", "1"]


def test_describe_secret_shows_sizes_not_values() -> None:
    secret = load("Secret", type="Opaque", data={"password": "czNjcmV0"})
    text = describe(lookup("secret"), secret, Related(), NOW)
    assert "password:" in text and "6 bytes" in text and "s3cret" not in text


def test_describe_config_map_shows_values() -> None:
    text = describe(lookup("cm"), load("ConfigMap", data={"mode": "fast"}), Related(), NOW)
    assert "mode:" in text and "fast" in text


def test_describe_pod_env_sources() -> None:
    pod = manifest.from_dict({"apiVersion": "v1", "kind": "Pod", "metadata": META, "spec": {
        "containers": [{"name": "c", "image": "busybox", "envFrom": [
            {"configMapRef": {"name": "app"}, "prefix": "CFG_"},
            {"secretRef": {"name": "db", "optional": True}}], "env": [
            {"name": "A", "value": "1"},
            {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "app", "key": "k"}}},
            {"name": "C", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}},
            {"name": "D", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]}]}})
    text = describe(lookup("pod"), pod, Related(), NOW)
    assert "Environment Variables from:" in text
    assert "app" in text and "ConfigMap with prefix 'CFG_'" in text
    assert "Secret" in text and "Optional: true" in text
    assert "<set to the key 'k' of config map 'app'>" in text
    assert "<set to the key 'pw' in secret 'db'>" in text
    assert "(v1:status.podIP)" in text
