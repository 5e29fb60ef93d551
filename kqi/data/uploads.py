"""Reading uploads off the request stream in chunks: multipart (browsers, `curl -F`) and a plain
body (`curl -T`), so a file of several GB never sits in memory or in a spooled temporary file.

Flask's request.files would spool every file to a temporary file before the view runs and then
the view copies it again; parsing the stream here writes each file once, straight into the blob
store, and lets the caller enforce its own size limit as bytes arrive.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData

from kqi.errors import ServiceError

CHUNK = 1 << 20
MAX_FIELD = 1 << 20  # text fields (name, memo, tags) are small
# The decoder refuses data once its unparsed buffer plus the new chunk passes MAX_FIELD, so the
# multipart body is fed in pieces well below it (a 1 MiB read on top of any leftover would fail).
MULTIPART_READ = MAX_FIELD // 4


@dataclass
class FilePart:
    field: str
    filename: str
    chunks: Iterator[bytes]  # must be read to the end before the next part is asked for


def _events(stream: BinaryIO, decoder: MultipartDecoder):
    while True:
        chunk = stream.read(MULTIPART_READ)
        decoder.receive_data(chunk or None)
        while True:
            try:
                event = decoder.next_event()
            except ValueError as exc:
                raise ServiceError(f"the multipart body is malformed: {exc}") from None
            if isinstance(event, NeedData):
                break
            yield event
            if isinstance(event, Epilogue):
                return
        if not chunk:
            raise ServiceError("the multipart body ended before its closing boundary")


def _data(events) -> Iterator[bytes]:
    for event in events:
        if not isinstance(event, Data):
            raise ServiceError("the multipart body is malformed")
        if event.data:
            yield event.data
        if not event.more_data:
            return


def multipart(stream: BinaryIO, boundary: str | None) -> Iterator[tuple[str, str] | FilePart]:
    """Yield (name, value) for each text field and a FilePart for each file, in body order."""
    if not boundary:
        raise ServiceError("send the files as multipart/form-data (or a plain body to .../files?name=...)")
    decoder = MultipartDecoder(boundary.encode("latin-1"), max_form_memory_size=MAX_FIELD)
    events = _events(stream, decoder)
    for event in events:
        if isinstance(event, File):
            part = FilePart(event.name, event.filename or "", _data(events))
            yield part
            for _ in part.chunks:  # skip what the caller did not read
                pass
        elif isinstance(event, Field):
            raw = b"".join(_data(events))
            try:
                yield event.name, raw.decode("utf-8")
            except UnicodeDecodeError:
                raise ServiceError(f"{event.name} is not valid UTF-8", field=event.name) from None


def body_chunks(stream: BinaryIO) -> Iterator[bytes]:
    return iter(lambda: stream.read(CHUNK), b"")
