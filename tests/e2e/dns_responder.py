"""A DNS responder for one name, for tests: ``python3 dns_responder.py NAME ADDRESS``.

Answers A queries for NAME with ADDRESS (NOERROR and no answer for its other types,
NXDOMAIN for any other name) over UDP on 127.0.0.1:53 of the network namespace it runs
in: a test starts it inside a pod's namespace (``nsenter --net``) so that the pod's
``nslookup NAME 127.0.0.1`` resolves without any traffic leaving the pod. Prints
``ready`` once it listens; runs until killed.
"""

from __future__ import annotations

import socket
import struct
import sys

A, IN = 1, 1
NXDOMAIN = 3


def reply(query: bytes, name: str, address: str) -> bytes:
    """The response to one query (RFC 1035 section 4.1; one question, no compression
    in the question, which is what resolvers send)."""
    ident, flags = struct.unpack("!HH", query[:4])
    labels, at = [], 12
    while query[at]:
        length = query[at]
        labels.append(query[at + 1:at + 1 + length].decode("ascii").lower())
        at += 1 + length
    qtype, qclass = struct.unpack("!HH", query[at + 1:at + 5])
    question = query[12:at + 5]
    known = ".".join(labels) == name.lower().rstrip(".") and qclass == IN
    answers = b""
    if known and qtype == A:
        # The answer names the question by a pointer to offset 12.
        answers = (b"\xc0\x0c" + struct.pack("!HHIH", A, IN, 60, 4)
                   + socket.inet_aton(address))
    # QR, AA, RD as asked, RA; NXDOMAIN for an unknown name.
    response_flags = 0x8000 | 0x0400 | (flags & 0x0100) | 0x0080 | (0 if known else NXDOMAIN)
    header = struct.pack("!HHHHHH", ident, response_flags, 1, 1 if answers else 0, 0, 0)
    return header + question + answers


def main() -> None:
    name, address = sys.argv[1], sys.argv[2]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 53))
    print("ready", flush=True)
    while True:
        query, peer = sock.recvfrom(512)
        try:
            sock.sendto(reply(query, name, address), peer)
        except (IndexError, struct.error, UnicodeDecodeError):
            continue  # not a query we understand: no answer, as a resolver would time out


if __name__ == "__main__":
    main()
