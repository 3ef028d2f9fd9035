"""Authenticated encryption of raft traffic between store replicas, keyed by the peer password.

pysyncobj unpickles what its peers send, so nothing may reach it that a replica holding
the cluster's password did not write. Its own protection is Fernet (AES-CBC, HMAC and
base64, built anew for every message), which cost a third of a put's latency: four
peer messages per committed write, each encrypted once and checked twice. This is the
same protection with AES-256-GCM, one C call per message.

pysyncobj's connection calls three methods of its ``encryptor`` (the shape of Fernet's):
``encrypt_at_time`` when it sends, then ``extract_timestamp`` and ``decrypt`` on what it
receives, and drops the connection if either raises or a timestamp goes backwards on a
connection. Its handshake adds a random key per connection, echoed in every message, so
a message recorded from one connection is refused on another.

A message is ``VERSION | sender salt (16) | counter (8) | ciphertext and tag``; the
header is authenticated with it. Every process draws a random salt and derives its own
sending key from the password's key and that salt (HKDF), and numbers its messages with
a counter that is also the GCM nonce: (key, nonce) is never used twice, however many
messages a replica sends or however often it restarts, which random nonces under one
shared key could not promise. The counter doubles as the "timestamp" pysyncobj wants to
see non-decreasing per connection, which makes it a replay check on each connection.
"""

from __future__ import annotations

import itertools
import os
import struct
from collections import OrderedDict

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

VERSION = b"\x01"
_SALT_BYTES = 16
_HEADER = struct.Struct(">c16sQ")
#: Senders whose keys are kept derived (each peer process is one sender).
_KNOWN_SENDERS = 64
#: Skiff's own salt for the password's key: not shared with any other use of the password.
_PASSWORD_SALT = b"skiff-store-peer-cipher-v1"
_PASSWORD_ITERATIONS = 100_000


class PeerCipherError(ValueError):
    """A peer message that this cluster's password did not seal (or that was altered)."""


def password_key(password: str) -> bytes:
    """The 32-byte key every replica derives from the cluster's peer password."""
    kdf = PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=_PASSWORD_SALT,
                     iterations=_PASSWORD_ITERATIONS)
    return kdf.derive(password.encode())


def _sender_cipher(key: bytes, salt: bytes) -> AESGCM:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=b"skiff raft sender")
    return AESGCM(hkdf.derive(key))


def _nonce(counter: int) -> bytes:
    return counter.to_bytes(12, "big")


class PeerCipher:
    """Seals this replica's raft messages and opens its peers' (pysyncobj's ``encryptor``).

    Used from the thread that runs raft only.
    """

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._salt = os.urandom(_SALT_BYTES)
        self._own = _sender_cipher(key, self._salt)
        self._counter = itertools.count(1)
        self._senders: OrderedDict[bytes, AESGCM] = OrderedDict()
        # pysyncobj asks for a message's timestamp, then decrypts the same message:
        # the plaintext of the last message opened answers the second call.
        self._opened: tuple[bytes, bytes] | None = None

    @classmethod
    def from_password(cls, password: str) -> PeerCipher:
        return cls(password_key(password))

    def encrypt_at_time(self, data: bytes, current_time: int) -> bytes:
        """Seal ``data``; pysyncobj's clock is ignored: the counter orders messages."""
        counter = next(self._counter)
        header = _HEADER.pack(VERSION, self._salt, counter)
        return header + self._own.encrypt(_nonce(counter), data, header)

    def extract_timestamp(self, token: bytes) -> int:
        """The sender's counter of a message, once the message is known to be genuine."""
        self._open(token)
        return _HEADER.unpack_from(token)[2]

    def decrypt(self, token: bytes) -> bytes:
        """The plaintext of a sealed message; raises PeerCipherError if it is not genuine."""
        return self._open(token)

    def _open(self, token: bytes) -> bytes:
        opened = self._opened
        if opened is not None and opened[0] is token:
            return opened[1]
        if len(token) < _HEADER.size or token[:1] != VERSION:
            raise PeerCipherError("not a sealed peer message (no password, or another version?)")
        _, salt, counter = _HEADER.unpack_from(token)
        try:
            plaintext = self._cipher_of(salt).decrypt(_nonce(counter), token[_HEADER.size:],
                                                      token[:_HEADER.size])
        except InvalidTag:
            raise PeerCipherError("peer message failed authentication (wrong password?)") from None
        self._opened = (token, plaintext)
        return plaintext

    def _cipher_of(self, salt: bytes) -> AESGCM:
        if salt == self._salt:
            return self._own
        cipher = self._senders.get(salt)
        if cipher is None:
            cipher = self._senders[salt] = _sender_cipher(self._key, salt)
            if len(self._senders) > _KNOWN_SENDERS:
                self._senders.popitem(last=False)
        else:
            self._senders.move_to_end(salt)
        return cipher
