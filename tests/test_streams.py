"""The pieces logs and outputs stream through, without an engine: the reader of the engine's
multiplexed log, a log's end read backwards from its file, a log cut at its limit, output files
past their limit, a zip made as it is sent. (On the engines: tests/test_streams_on_engines.py.)"""
from __future__ import annotations

import io
import random
import struct
import zipfile

import pytest

from kqi.backends.docker.exec_stream import payloads
from kqi.jobs.files import PIECE, JobFiles, SizeLimit, keep_end
from tests.infra.test_infra import _tar


def _frames(payload_sizes, rng) -> tuple[bytes, bytes]:
    """A multiplexed stream (stdout and stderr frames) and the payload it carries."""
    stream, expected = bytearray(), bytearray()
    for size in payload_sizes:
        data = rng.randbytes(size)
        stream += struct.pack(">BxxxL", rng.choice((1, 2)), size) + data
        expected += data
    return bytes(stream), bytes(expected)


def _reads_of(data: bytes, rng):
    """read(n) over `data` that returns fewer bytes than asked, at random (as a socket may)."""
    position = 0

    def read(size: int) -> bytes:
        nonlocal position
        take = rng.randint(1, size)
        piece = data[position:position + take]
        position += len(piece)
        return piece
    return read


@pytest.mark.parametrize("sizes", [[], [0], [5, 0, 7], [1] * 5000, [3 * PIECE + 17, 1, PIECE], [16384] * 40])
def test_payloads_are_read_back_whole_in_bounded_pieces_however_reads_split_the_frames(sizes):
    rng = random.Random(len(sizes))
    stream, expected = _frames(sizes, rng)
    pieces = list(payloads(_reads_of(stream, rng), PIECE))
    assert b"".join(pieces) == expected
    assert all(0 < len(p) < 2 * PIECE for p in pieces)


def test_a_frame_claiming_gigabytes_is_read_a_piece_at_a_time():
    header = struct.pack(">BxxxL", 1, 2**32 - 1)  # what a lying engine may send; only 1 MiB follows
    pieces = payloads(_reads_of(header + b"z" * 2**20, random.Random(1)), PIECE)
    assert max(len(p) for p in pieces) < 2 * PIECE


LINES = [b"%05d " % i + b"w" * (i % 300) for i in range(3000)]


@pytest.mark.parametrize("text", [b"", b"one", b"one\n", b"\n\n\n", b"a\nb", b"\n".join(LINES) + b"\n",
                                  b"\n".join(LINES), b"x" * (3 * PIECE) + b"\nlast\n"])
@pytest.mark.parametrize("lines", [1, 2, 3, 200, 5000])
def test_the_end_of_a_stored_log_is_its_last_lines_read_from_the_end(tmp_path, text, lines):
    files = JobFiles(tmp_path, 1)
    files.write_log([text])
    expected = b"".join(text.splitlines(keepends=True)[-lines:])
    assert files.log_end(lines, max_bytes=1 << 30) == expected
    assert keep_end(iter([text[:100], text[100:]]), lines, 1 << 30) == expected  # a live tail the same
    bounded = files.log_end(lines, max_bytes=1000)
    assert len(bounded) <= 1000 and expected.endswith(bounded)


def test_no_log_yet_has_an_empty_end(tmp_path):
    assert JobFiles(tmp_path, 1).log_end(10, 1000) == b""


@pytest.mark.parametrize("pieces, kept, tail", [
    ([b"ab\n", b"cdef\n"], b"ab\ncdef\n", b""),  # under the limit: nothing added
    ([b"abcdefghij"], b"abcdefghij", b""),  # exactly the limit
    ([b"abcdefghij\n"], b"abcdefghij", b"\n[kqi] log cut at LIMIT: 1 bytes dropped\n"),
    ([b"abc\n", b"defghij\n", b"x" * 1000], b"abc\ndefghi", b"\n[kqi] log cut at LIMIT: 1002 bytes dropped\n"),
    ([b"abcdefghi\n", b"more\n"], b"abcdefghi\n", b"[kqi] log cut at LIMIT: 5 bytes dropped\n"),
])
def test_a_log_past_its_limit_keeps_its_start_and_says_how_much_was_dropped(tmp_path, pieces, kept, tail):
    limit = SizeLimit(10 / 2**30)  # 10 bytes
    files = JobFiles(tmp_path, 1)
    dropped = files.write_log(iter(pieces), rank=1, limit=limit)
    assert dropped == sum(map(len, pieces)) - len(kept)
    assert files.log_path(1).read_bytes() == kept + tail.replace(b"LIMIT", str(limit).encode())


def test_output_files_that_do_not_fit_under_the_limit_are_left_out_and_counted(tmp_path):
    files = JobFiles(tmp_path, 1)
    archive = _tar({"output/a.bin": b"a" * 600, "output/big.bin": b"b" * 500, "output/c.txt": b"c" * 400,
                    "output/bad name": b"x"})
    stored = files.store_output(iter([archive[i:i + 700] for i in range(0, len(archive), 700)]), "output",
                                SizeLimit(1000 / 2**30))
    assert [f.path for f in files.list_output()] == ["a.bin", "c.txt"]  # what fits is kept, in archive order
    assert (stored.over_limit.names, stored.over_limit.count, stored.over_limit.size) == (["big.bin"], 1, 500)
    assert stored.unsafe.names == ["output/bad name"]
    assert stored.cut_note() == "output cut at 9.31323e-07 GB: 1 file not kept"
    assert JobFiles(tmp_path, 2).store_output([_tar({"output/a": b"a"})], "output", SizeLimit(1)).cut_note() == ""


def test_refused_names_are_counted_but_only_the_first_hundred_are_listed(tmp_path):
    stored = JobFiles(tmp_path, 1).store_output([_tar({f"output/bad {i}": b"" for i in range(250)})], "output")
    assert stored.unsafe.count == 250 and len(stored.unsafe.names) == 100


def test_the_output_zip_is_made_piece_by_piece(tmp_path):
    files = JobFiles(tmp_path, 1)
    (files.output / "sub").mkdir(parents=True)
    content = {"model.bin": random.Random(3).randbytes(5 * PIECE), "sub/notes.txt": b"n" * 10, "empty": b""}
    for name, data in content.items():
        (files.output / name).write_bytes(data)
    pieces = list(files.zip_output())
    assert len(pieces) > 3 and max(map(len, pieces)) < 3 * PIECE
    with zipfile.ZipFile(io.BytesIO(b"".join(pieces))) as archive:
        assert archive.testzip() is None
        assert {name: archive.read(name) for name in archive.namelist()} == content
