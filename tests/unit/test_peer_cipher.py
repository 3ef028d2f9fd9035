"""PeerCipher: what pysyncobj's connections rely on when they seal and open raft messages."""

from __future__ import annotations

import pytest

from services.store.peer_cipher import PeerCipher, PeerCipherError, password_key

KEY = password_key("cluster secret")


def test_a_peer_with_the_same_password_opens_what_another_sealed() -> None:
    sender, receiver = PeerCipher(KEY), PeerCipher(KEY)
    token = sender.encrypt_at_time(b"append_entries", 0)
    assert receiver.extract_timestamp(token) == 1
    assert receiver.decrypt(token) == b"append_entries"
    assert b"append_entries" not in token


def test_counters_increase_per_sender_whatever_clock_pysyncobj_passes() -> None:
    sender, receiver = PeerCipher(KEY), PeerCipher(KEY)
    stamps = [receiver.extract_timestamp(sender.encrypt_at_time(b"m", 10**9 - i))
              for i in range(5)]
    assert stamps == sorted(stamps) and len(set(stamps)) == 5


def test_two_senders_never_share_a_key_and_nonce() -> None:
    a, b = PeerCipher(KEY), PeerCipher(KEY)
    first_a, first_b = a.encrypt_at_time(b"same", 0), b.encrypt_at_time(b"same", 0)
    # Same counter, same plaintext: different ciphertexts, because each sender has its own key.
    assert first_a[17:25] == first_b[17:25]
    assert first_a[25:] != first_b[25:]
    receiver = PeerCipher(KEY)
    assert receiver.decrypt(first_a) == receiver.decrypt(first_b) == b"same"


def test_a_wrong_password_is_refused() -> None:
    token = PeerCipher(password_key("other")).encrypt_at_time(b"pickle", 0)
    with pytest.raises(PeerCipherError, match="authentication"):
        PeerCipher(KEY).extract_timestamp(token)


@pytest.mark.parametrize("position", [0, 5, 20, 30, -1])
def test_any_altered_byte_is_refused(position: int) -> None:
    token = bytearray(PeerCipher(KEY).encrypt_at_time(b"x" * 40, 0))
    token[position] ^= 0x01
    with pytest.raises(PeerCipherError):
        PeerCipher(KEY).decrypt(bytes(token))


@pytest.mark.parametrize("token", [b"", b"\x01short", b"\x80\x02}q\x00.", b"\x00" * 64])
def test_what_is_not_a_sealed_message_is_refused(token: bytes) -> None:
    with pytest.raises(PeerCipherError):
        PeerCipher(KEY).extract_timestamp(token)


def test_many_senders_are_remembered_within_a_bound() -> None:
    receiver = PeerCipher(KEY)
    for _ in range(200):
        assert receiver.decrypt(PeerCipher(KEY).encrypt_at_time(b"hello", 0)) == b"hello"
    assert len(receiver._senders) <= 64
