"""The engine's multiplexed streams: a `docker exec` read with a deadline and an output cap (docker-py's
own readers block without end), and a container's log read in bounded pieces.

The engine multiplexes stdout and stderr into frames (an 8-byte header: stream, 3 zero bytes, the
length, big-endian). The socket is whatever the transport hijacked: a unix socket's SocketIO, a TLS
socket, or a paramiko channel over SSH; all three can be select()ed and read."""
from __future__ import annotations

import select
import struct
import time
from collections.abc import Callable, Iterator

_HEADER = struct.Struct(">BxxxL")


def _recv(sock, size: int) -> bytes:
    if hasattr(sock, "recv"):
        return sock.recv(size)
    return sock.read(size)  # SocketIO of a unix socket


def _pending(sock) -> bool:
    pending = getattr(sock, "pending", None)  # TLS: bytes already decrypted wait in the SSL object
    return bool(pending and pending())


def read_frames(sock, deadline: float, limit: int) -> tuple[bytes, bool, bool]:
    """Collect the frames' payloads until EOF, `deadline` (monotonic) or `limit` bytes; return
    (output, ended, truncated). The caller closes the socket."""
    raw, output = b"", bytearray()
    while True:
        while len(raw) >= _HEADER.size:
            _stream, length = _HEADER.unpack_from(raw)
            if len(raw) < _HEADER.size + length:
                break
            output += raw[_HEADER.size:_HEADER.size + length]
            raw = raw[_HEADER.size + length:]
            if len(output) >= limit:
                return bytes(output[:limit]), False, True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return bytes(output), False, False
        if not _pending(sock):
            readable, _, _ = select.select([sock], [], [], remaining)
            if not readable:
                return bytes(output), False, False
        chunk = _recv(sock, 65536)
        if not chunk:
            return bytes(output), True, False
        raw += chunk


def payloads(read: Callable[[int], bytes], size: int) -> Iterator[bytes]:
    """The frames' payloads of a multiplexed stream, stdout and stderr interleaved as sent, joined
    into pieces of about `size` bytes (never more than twice that). The stream is read `size` bytes
    at a time whatever length a header claims, so memory stays bounded however long a frame or the
    whole stream is."""
    pending = b""  # the start of a header split across two reads
    left = 0  # payload bytes of the current frame still to come
    out = bytearray()
    while block := read(size):
        buffer = memoryview(pending + block)
        pos, end = 0, len(buffer)
        while pos < end:
            if left:
                take = min(left, end - pos)
                out += buffer[pos:pos + take]
                pos += take
                left -= take
                if len(out) >= size:
                    yield bytes(out)
                    out.clear()
            elif end - pos >= _HEADER.size:
                _stream, left = _HEADER.unpack_from(buffer, pos)
                pos += _HEADER.size
            else:
                break
        pending = bytes(buffer[pos:])
    if out:
        yield bytes(out)
