"""The cluster's certificates: a CA and the apiserver's serving certificate.

``skiff up`` calls :func:`ensure_ca` and :func:`ensure_serving_cert` on every start:
the CA (EC P-256, 10 years) is made once and reused; a leaf (1 year) is reused while it
is valid for more than :data:`RENEW_BEFORE` and still covers the names asked for, and
re-issued otherwise, as k3s does. Keys are written 0600. The serving certificate's
subject alternative names cover loopback, the node addresses, the ``kubernetes``
Service's IP and its DNS names, so kubectl and in-cluster clients verify it.

Reusable for other certificates ([6/7]: client certificates for components).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
LEAF_DAYS = 365
#: A leaf that expires sooner than this is re-issued at start.
RENEW_BEFORE = datetime.timedelta(days=90)
#: The names every apiserver serving certificate carries besides the node addresses.
KUBERNETES_DNS_NAMES = ("kubernetes", "kubernetes.default", "kubernetes.default.svc",
                        "kubernetes.default.svc.cluster.local", "localhost")
DEFAULT_SERVICE_IP = "10.96.0.1"
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class CertPair:
    """Where a certificate and its key are on disk."""

    cert: Path
    key: Path

    def exists(self) -> bool:
        return self.cert.exists() and self.key.exists()

    def load_cert(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert.read_bytes())

    def load_key(self) -> ec.EllipticCurvePrivateKey:
        key = serialization.load_pem_private_key(self.key.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{self.key}: not an EC private key")
        return key


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` with ``mode`` from the start (never readable by others
    even for a moment), replacing the file atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _save(pair: CertPair, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    _write(pair.key, key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()), 0o600)
    _write(pair.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def ensure_ca(directory: Path, *, common_name: str = "skiff-ca") -> CertPair:
    """The cluster CA in ``directory`` (``ca.crt``, ``ca.key``), made if missing."""
    pair = CertPair(directory / "ca.crt", directory / "ca.key")
    if pair.exists():
        return pair
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    _save(pair, cert, key)
    return pair


def serving_names(node_addresses: Iterable[str] = (),
                  service_ip: str = DEFAULT_SERVICE_IP) -> tuple[list[str], list[str]]:
    """(IP addresses, DNS names) an apiserver serving certificate must cover."""
    ips: list[str] = []
    dns: list[str] = list(KUBERNETES_DNS_NAMES)
    for address in (LOOPBACK, *node_addresses, service_ip):
        try:
            text = str(ipaddress.ip_address(address))
        except ValueError:
            if address not in dns:
                dns.append(address)  # a node given by host name
            continue
        if text not in ips:
            ips.append(text)
    return ips, dns


def _covers(cert: x509.Certificate, ips: list[str], dns: list[str]) -> bool:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    have_ips = {str(a) for a in san.get_values_for_type(x509.IPAddress)}
    have_dns = set(san.get_values_for_type(x509.DNSName))
    return set(ips) <= have_ips and set(dns) <= have_dns


def _fresh(cert: x509.Certificate) -> bool:
    return cert.not_valid_after_utc - _now() > RENEW_BEFORE


def ensure_serving_cert(directory: Path, ca: CertPair, *, node_addresses: Iterable[str] = (),
                        service_ip: str = DEFAULT_SERVICE_IP,
                        name: str = "apiserver") -> CertPair:
    """The apiserver's serving certificate (``<name>.crt``/``.key`` in ``directory``),
    signed by ``ca``; re-issued when missing, near expiry, not signed by this CA or
    not covering the names (:func:`serving_names`)."""
    pair = CertPair(directory / f"{name}.crt", directory / f"{name}.key")
    ips, dns = serving_names(node_addresses, service_ip)
    ca_cert = ca.load_cert()
    if pair.exists():
        try:
            cert = pair.load_cert()
            if (_fresh(cert) and _covers(cert, ips, dns)
                    and cert.issuer == ca_cert.subject):
                return pair
        except ValueError:
            pass  # unreadable: issue a new one
    issue(pair, ca, common_name="kube-apiserver", ips=ips, dns=dns, server=True)
    return pair


def issue(pair: CertPair, ca: CertPair, *, common_name: str, ips: Iterable[str] = (),
          dns: Iterable[str] = (), organizations: Iterable[str] = (),
          server: bool = False, days: int = LEAF_DAYS) -> None:
    """Write a new key and a leaf certificate signed by ``ca`` to ``pair``: a serving
    certificate when ``server``, a client one otherwise (CN = user, O = groups)."""
    ca_cert, ca_key = ca.load_cert(), ca.load_key()
    key = ec.generate_private_key(ec.SECP256R1())
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    attributes += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    now = _now()
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name(attributes)).issuer_name(ca_cert.subject)
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   ca_key.public_key()), critical=False))
    names: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    names += [x509.DNSName(d) for d in dns]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    _save(pair, builder.sign(ca_key, hashes.SHA256()), key)
