"""``skiff up``'s part of the Kubernetes REST API: the PKI, the admin token and the
kubeconfigs, made before the apiserver starts, and the apiserver flags that use them.

Files, all under ``<data-dir>``: ``pki/ca.crt`` and ``ca.key`` (the cluster CA),
``pki/apiserver.crt`` and ``.key`` (the serving certificate), ``tokens.csv`` (the
``--token-auth-file``), ``kubeconfig`` (the admin's, 0600); and the ``skiff`` context
merged into the user's kubeconfig, made current.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from skiff import kubeconfig, pki, tokenfile

#: The REST API's HTTPS port under ``skiff up`` (6443 is the gRPC API, 6444 its metrics).
REST_PORT = 6445
#: The address kubeconfigs point at.
REST_HOST = "127.0.0.1"


@dataclass(frozen=True)
class RESTSetup:
    """What ``skiff up`` made for the REST API."""

    cert: Path
    key: Path
    tokens: Path
    kubeconfig: Path
    user_kubeconfig: Path | None
    port: int

    def apiserver_flags(self) -> str:
        """The apiserver's flags, for its supervisord command line."""
        return " ".join(shlex.quote(a) for a in (
            "--secure-port", str(self.port), "--tls-cert-file", str(self.cert),
            "--tls-private-key-file", str(self.key), "--token-auth-file", str(self.tokens)))


def prepare(data_dir: Path, node_addresses: Iterable[str], *, port: int = REST_PORT,
            merge_user_config: bool = True) -> RESTSetup:
    """Make (or reuse) the CA, serving certificate, admin token and kubeconfigs."""
    pki_dir = data_dir / "pki"
    ca = pki.ensure_ca(pki_dir)
    serving = pki.ensure_serving_cert(pki_dir, ca, node_addresses=list(node_addresses))
    tokens = data_dir / "tokens.csv"
    token = tokenfile.ensure_admin_token(tokens)
    path = data_dir / "kubeconfig"
    doc = kubeconfig.write_admin_kubeconfig(path, server=f"https://{REST_HOST}:{port}",
                                            ca_pem=ca.cert.read_bytes(), token=token)
    user = kubeconfig.merge_into_user_config(doc) if merge_user_config else None
    return RESTSetup(serving.cert, serving.key, tokens, path, user, port)


def rest_flags(data_dir: Path, port: int = REST_PORT) -> str:
    """The apiserver's REST flags for the files :func:`prepare` makes in ``data_dir``
    (pure: for rendering the supervisord config before or after they exist)."""
    return RESTSetup(data_dir / "pki" / "apiserver.crt", data_dir / "pki" / "apiserver.key",
                     data_dir / "tokens.csv", data_dir / "kubeconfig", None,
                     port).apiserver_flags()
