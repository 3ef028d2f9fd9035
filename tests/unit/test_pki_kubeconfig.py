"""The cluster CA, the serving certificate, the token file and kubeconfig merging."""

from __future__ import annotations

import datetime
import ipaddress
import stat

import pytest
import yaml
from cryptography import x509

from skiff import kubeconfig, pki, tokenfile


def _sans(pair):
    san = pair.load_cert().extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return ({str(a) for a in san.value.get_values_for_type(x509.IPAddress)},
            set(san.value.get_values_for_type(x509.DNSName)))


def test_ca_and_serving_cert_cover_the_names_and_are_reused(tmp_path):
    ca = pki.ensure_ca(tmp_path)
    leaf = pki.ensure_serving_cert(tmp_path, ca, node_addresses=["10.0.0.7", "node-a"])
    ips, dns = _sans(leaf)
    assert ips == {"127.0.0.1", "10.0.0.7", "10.96.0.1"}
    assert {"kubernetes", "kubernetes.default.svc.cluster.local", "localhost",
            "node-a"} <= dns
    assert stat.S_IMODE(ca.key.stat().st_mode) == 0o600
    assert stat.S_IMODE(leaf.key.stat().st_mode) == 0o600
    assert leaf.load_cert().issuer == ca.load_cert().subject
    leaf.load_cert().verify_directly_issued_by(ca.load_cert())
    before = (ca.cert.read_bytes(), leaf.cert.read_bytes())
    again = pki.ensure_serving_cert(tmp_path, pki.ensure_ca(tmp_path),
                                    node_addresses=["10.0.0.7", "node-a"])
    assert (ca.cert.read_bytes(), again.cert.read_bytes()) == before


def test_serving_cert_is_reissued_for_new_names_or_near_expiry(tmp_path, monkeypatch):
    ca = pki.ensure_ca(tmp_path)
    first = pki.ensure_serving_cert(tmp_path, ca).cert.read_bytes()
    second = pki.ensure_serving_cert(tmp_path, ca, node_addresses=["10.0.0.9"])
    assert second.cert.read_bytes() != first
    assert ipaddress.ip_address("10.0.0.9") in {
        ipaddress.ip_address(a) for a in _sans(second)[0]}
    issued = second.cert.read_bytes()
    assert pki.ensure_serving_cert(tmp_path, ca, node_addresses=["10.0.0.9"]
                                   ).cert.read_bytes() == issued
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=300)
    monkeypatch.setattr(pki, "_now", lambda: later)
    third = pki.ensure_serving_cert(tmp_path, ca, node_addresses=["10.0.0.9"])
    assert third.cert.read_bytes() != issued


def test_token_file_round_trip_and_errors(tmp_path):
    path = tmp_path / "tokens.csv"
    token = tokenfile.ensure_admin_token(path)
    assert tokenfile.ensure_admin_token(path) == token
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    users = tokenfile.load(path)
    assert users[token] == tokenfile.User("skiff-admin", "skiff-admin", ("system:masters",))
    parsed = tokenfile.parse('t1,alice,1,"dev,ops"\n# comment\n\nt2,bob,2\n')
    assert parsed["t1"].groups == ("dev", "ops") and parsed["t2"].groups == ()
    with pytest.raises(tokenfile.TokenFileError, match="line 1"):
        tokenfile.parse("only-a-token\n")


def test_kubeconfig_written_private_and_merged(tmp_path):
    ours = kubeconfig.write_admin_kubeconfig(tmp_path / "kubeconfig",
                                             server="https://127.0.0.1:6444",
                                             ca_pem=b"PEM", token="tok")
    assert stat.S_IMODE((tmp_path / "kubeconfig").stat().st_mode) == 0o600
    user = tmp_path / "home" / ".kube" / "config"
    user.parent.mkdir(parents=True)
    user.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "kind",
        "clusters": [{"name": "kind", "cluster": {"server": "https://kind"}},
                     {"name": "skiff", "cluster": {"server": "https://old"}}],
        "users": [{"name": "kind", "user": {}}],
        "contexts": [{"name": "kind", "context": {"cluster": "kind", "user": "kind"}}]}))
    kubeconfig.merge_into_user_config(ours, user)
    merged = yaml.safe_load(user.read_text())
    assert merged["current-context"] == "skiff"
    assert [c["name"] for c in merged["clusters"]] == ["kind", "skiff"]
    assert merged["clusters"][1]["cluster"]["server"] == "https://127.0.0.1:6444"
    assert [c["name"] for c in merged["contexts"]] == ["kind", "skiff"]
    assert merged["users"][1] == {"name": "skiff-admin", "user": {"token": "tok"}}


def test_user_config_path_honours_kubeconfig():
    assert str(kubeconfig.user_config_path({"KUBECONFIG": "/a/b:/c/d", "HOME": "/h"})) == "/a/b"
    assert str(kubeconfig.user_config_path({"HOME": "/h"})) == "/h/.kube/config"


def test_skiff_up_setup_is_idempotent_and_flags_match(tmp_path, monkeypatch):
    from skiff.cli import kubeapi

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    first = kubeapi.prepare(tmp_path / "data", ["127.0.1.2"])
    second = kubeapi.prepare(tmp_path / "data", ["127.0.1.2"])
    assert first == second
    assert first.user_kubeconfig == tmp_path / "home" / ".kube" / "config"
    assert yaml.safe_load(first.user_kubeconfig.read_text())["current-context"] == "skiff"
    assert kubeapi.rest_flags(tmp_path / "data") == first.apiserver_flags()
    assert "--secure-port 6445" in first.apiserver_flags()
    users = tokenfile.load(first.tokens)
    config = yaml.safe_load(first.kubeconfig.read_text())
    assert config["users"][0]["user"]["token"] in users


def test_skiff_up_gives_the_apiserver_its_https_flags(tmp_path):
    from services.apiserver.config import parse_args
    from skiff.cli.cluster import ClusterSettings, render_programs

    programs = render_programs(tmp_path, ClusterSettings())
    line = next(line for line in programs.splitlines()
                if line.startswith("command=") and "services.apiserver" in line)
    argv = line.split()[3:]  # after "command=<python> -m services.apiserver"
    config = parse_args(argv)
    assert config.rest.port == 6445
    assert config.rest.cert_file == tmp_path / "pki" / "apiserver.crt"
    assert config.rest.token_file == tmp_path / "tokens.csv"
