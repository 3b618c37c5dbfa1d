"""``IntakeUnreader``: the bytes the event loop read reach gunicorn's parser a chunk at a time.

gunicorn's own ``unread`` of a whole body left it in a buffer that every 1 kB read of the body
reader copied whole: quadratic in the body (300 photos in one 23.5 MB JSON body took 114 s,
issue 24). Checked through gunicorn's real reader classes, on what they hold, not on time.
"""

from __future__ import annotations

import os
import socket

from gunicorn.http.body import Body, LengthReader
from gunicorn.http.unreader import SocketUnreader

from bincounter.serving.intake import IntakeUnreader


class Watched(IntakeUnreader):
    """Records the largest buffer gunicorn's reads leave in the unreader."""

    most = 0

    def unread(self, data: bytes) -> None:
        super().unread(data)
        Watched.most = max(Watched.most, self.buf.tell())


def test_a_fed_body_is_read_back_whole_holding_a_chunk_at_most():
    left, right = socket.socketpair()
    try:
        body = os.urandom(3 << 20)
        tail = b"the rest, from the socket"
        unreader = Watched(left)
        unreader.feed(bytearray(body[: 2 << 20]))
        unreader.feed(body[2 << 20 :])
        right.sendall(tail)
        reader = Body(LengthReader(unreader, len(body) + len(tail)))
        got = bytearray()
        while part := reader.read(1 << 20):
            got += part
        assert bytes(got) == body + tail
        assert Watched.most <= unreader.mxchunk
    finally:
        left.close()
        right.close()


def test_gunicorns_own_unread_holds_the_whole_body_which_is_what_this_avoids():
    left, right = socket.socketpair()
    try:
        body = os.urandom(1 << 20)
        unreader = SocketUnreader(left)
        unreader.unread(body)
        reader = LengthReader(unreader, len(body))
        reader.read(1024)
        assert unreader.buf.tell() == len(body) - 1024  # one 1 kB read left the rest to copy
    finally:
        left.close()
        right.close()
