"""The journal's sync helper: a small process that runs fdatasync for a store replica.

Why a process and not a thread: a thread of the replica's interpreter needs the GIL to
wake up, to return from fdatasync and to hand the result back, and the loop thread
holds it while it serves gRPC and raft. Measured on two busy cores with the loop
working: a sync handed to a thread came back after p50 0.8-3 ms, p90 15-45 ms; to this
process, p50 0.6 ms, p90 0.9 ms (an inline fdatasync: p50 0.25 ms, but the loop stops).

Protocol, over a SOCK_SEQPACKET socket pair (one message per datagram): the replica
sends ``REQUEST`` (a job id) with the file descriptor to sync attached (SCM_RIGHTS);
the helper fdatasyncs it, closes its copy and answers ``REPLY``: the job id, 0 or the
errno, and the seconds the sync took. It exits when the replica's end closes (the
replica stopped or was killed). Standard library only: it starts in milliseconds.
"""

from __future__ import annotations

import os
import socket
import struct
import sys
import time

#: job id.
REQUEST = struct.Struct(">Q")
#: job id, errno (0: synced), seconds.
REPLY = struct.Struct(">Qid")


def serve(sock: socket.socket) -> None:
    """Answer sync requests on ``sock`` until it closes."""
    while True:
        try:
            message, fds, _flags, _address = socket.recv_fds(sock, REQUEST.size, 4)
        except ConnectionError:
            return
        if not message:
            return
        (job,) = REQUEST.unpack(message)
        error = 0
        started = time.perf_counter()
        for fd in fds:
            try:
                if not error:
                    os.fdatasync(fd)
            except OSError as e:
                error = e.errno or -1
            finally:
                os.close(fd)
        if not fds:
            error = -1
        try:
            sock.send(REPLY.pack(job, error, time.perf_counter() - started))
        except OSError:
            return  # the replica is gone


def main() -> None:
    """``python -c 'from services.store.fsync_helper import main; main()' FD``."""
    serve(socket.socket(fileno=int(sys.argv[1])))


if __name__ == "__main__":
    main()
