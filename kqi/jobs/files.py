"""Files a job leaves behind, kept in the instance folder: its log and its /kqi/output.

Archives that come out of a container are untrusted: only regular files and folders are taken,
and only where their normalised path stays inside the job's folder.

Nothing here holds a whole log, archive or file in memory: logs are written and read in pieces,
archives read member by member, and the end of a log is read backwards from the end of its file.
"""
from __future__ import annotations

import io
import posixpath
import re
import shutil
import tarfile
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

LOG_NAME = "stdout_stderr.log"
PIECE = 1 << 16  # bytes read or written at a time
GB = 2**30
LISTED = 100  # refused output names kept for the report; the rest are only counted
# Output names kept, as KAMONOHASHI allowed them: others are refused on collection and reported.
OUTPUT_NAME = re.compile(r"^[-_0-9a-zA-Z/.]+$")
OUTPUT_NAME_RULE = "letters, digits, '-', '_', '.' and '/'"


@dataclass(frozen=True)
class OutputFile:
    path: str
    size: int


@dataclass(frozen=True)
class SizeLimit:
    """A per-job size limit of the site settings (max_log_gb, max_output_gb)."""

    gb: float

    @property
    def bytes(self) -> int:
        return int(self.gb * GB)

    def __str__(self) -> str:
        return f"{self.gb:g} GB"


@dataclass
class Refusals:
    """Output entries not kept for one reason: how many, their bytes, and the first names."""

    count: int = 0
    size: int = 0
    names: list[str] = field(default_factory=list)

    def add(self, name: str, size: int = 0) -> None:
        self.count += 1
        self.size += size
        if len(self.names) < LISTED:
            self.names.append(name)


@dataclass
class StoredOutput:
    """What store_output left out of an engine archive of /kqi/output."""

    unsafe: Refusals = field(default_factory=Refusals)  # names or types not allowed
    over_limit: Refusals = field(default_factory=Refusals)  # files that did not fit under `limit`
    limit: SizeLimit | None = None

    def cut_note(self) -> str:
        """What the job's reason says when files were left out for the limit ("" when none were)."""
        if not self.over_limit.count:
            return ""
        files = "file" if self.over_limit.count == 1 else "files"
        return f"output cut at {self.limit}: {self.over_limit.count} {files} not kept"


class _PieceReader(io.RawIOBase):
    """A file object over an iterator of byte pieces (tarfile streams an engine archive through
    one, a download its pieces); closing it closes the iterator, which ends an engine's answer."""

    def __init__(self, pieces: Iterable[bytes]):
        self._pieces: Iterator[bytes] = iter(pieces)
        self._buffer = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, target) -> int:
        while not self._buffer:
            try:
                self._buffer = memoryview(next(self._pieces))
            except StopIteration:
                return 0
        count = min(len(target), len(self._buffer))
        target[:count] = self._buffer[:count]
        self._buffer = self._buffer[count:]  # a view: an engine's pieces are megabytes, never copied again
        return count

    def close(self) -> None:
        if not self.closed:
            close = getattr(self._pieces, "close", None)
            if close is not None:
                close()
        super().close()


def reader(pieces: Iterable[bytes]) -> io.BufferedReader:
    return io.BufferedReader(_PieceReader(pieces), PIECE)


@dataclass(frozen=True)
class Streamed:
    """Bytes read as they are sent (from a node, or made on the fly): a file object (closing it
    ends the read) and the size when it is known before."""

    file: BinaryIO
    size: int | None = None


class _Sink(io.RawIOBase):
    """Where a zip being streamed is written: its bytes wait here until they are taken."""

    def __init__(self):
        self.pending = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.pending += data
        return len(data)

    def take(self) -> bytes:
        taken = bytes(self.pending)
        self.pending.clear()
        return taken


def safe_member_path(name: str, strip_prefix: str = "") -> str | None:
    """The relative path an archive member may be stored at, or None when it must be refused."""
    if "\\" in name or any(ord(c) < 32 or ord(c) == 127 for c in name):
        return None
    normalised = posixpath.normpath(name)
    if strip_prefix:
        if normalised == strip_prefix:
            return ""
        if not normalised.startswith(strip_prefix + "/"):
            return None
        normalised = normalised[len(strip_prefix) + 1 :]
    if normalised in ("", "."):
        return ""
    if normalised.startswith("/") or normalised == ".." or normalised.startswith("../"):
        return None
    return normalised


def open_stream(chunks: Iterable[bytes]) -> tarfile.TarFile:
    return tarfile.open(fileobj=reader(chunks), mode="r|")


def members(archive: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    """The members of a streamed archive, one at a time: iterating the TarFile itself would keep
    every member's header in its list, memory that grows with the number of files."""
    while (member := archive.next()) is not None:
        yield member
        archive.members.clear()


def list_archive(chunks: Iterable[bytes], prefix: str) -> list[OutputFile]:
    """The regular files in an engine archive of `prefix` (e.g. the live /kqi/output)."""
    files = []
    with open_stream(chunks) as archive:
        for member in members(archive):
            path = safe_member_path(member.name, prefix)
            if member.isfile() and path:
                files.append(OutputFile(path, member.size))
    return sorted(files, key=lambda f: f.path)


def open_from_archive(chunks: Iterable[bytes], prefix: str, wanted: str) -> Streamed | None:
    """One regular file of an engine archive, read as it is sent (the archive is read up to it
    now, the rest as the file is); None when the archive has no such file."""
    source = reader(chunks)
    archive = tarfile.open(fileobj=source, mode="r|")
    try:
        for member in members(archive):
            if member.isfile() and safe_member_path(member.name, prefix) == wanted:
                return Streamed(reader(_pieces_of(archive, member, source)), member.size)
    except BaseException:
        source.close()
        raise
    source.close()  # the engine's answer too (closing the TarFile leaves a file object it was given open)
    return None


def _pieces_of(archive: tarfile.TarFile, member: tarfile.TarInfo, source: io.BufferedReader) -> Iterator[bytes]:
    try:
        extracted = archive.extractfile(member)
        while piece := extracted.read(PIECE):
            yield piece
    finally:
        source.close()


def _last_lines(data: bytes, lines: int) -> bytes:
    """The last `lines` lines of `data` (a last line without its newline counts)."""
    cut = len(data) - 1 if data.endswith(b"\n") else len(data)
    for _ in range(lines):
        cut = data.rfind(b"\n", 0, cut)
        if cut < 0:
            return data
    return data[cut + 1:]


def keep_end(pieces: Iterable[bytes], lines: int, max_bytes: int) -> bytes:
    """The last `lines` lines of a stream of pieces, at most its last `max_bytes` bytes, holding no
    more than about twice that while reading."""
    kept = bytearray()
    for piece in pieces:
        kept += piece
        if len(kept) > 2 * max_bytes:
            del kept[:-max_bytes]
    return _last_lines(bytes(kept[-max_bytes:]), lines)


class JobFiles:
    """The folder of one job: instance/jobs/<id>/ with the log and output/."""

    def __init__(self, instance: Path, job_id: int):
        self.root = Path(instance) / "jobs" / str(job_id)
        self.output = self.root / "output"
        self.log = self.root / LOG_NAME

    def log_path(self, rank: int = 0) -> Path:
        """Rank 0's log is the job's log; a gang job's other ranks get stdout_stderr.rank<N>.log."""
        return self.log if rank == 0 else self.root / f"stdout_stderr.rank{rank}.log"

    def write_log(self, pieces: Iterable[bytes], rank: int = 0, limit: SizeLimit | None = None) -> int:
        """Store a log piece by piece as it comes. Past `limit` the rest is read and counted but
        not kept, and a last line says how much was dropped. Returns the bytes dropped."""
        self.root.mkdir(parents=True, exist_ok=True)
        target = self.log_path(rank)
        tmp = target.with_suffix(".tmp")
        room = limit.bytes if limit else None
        dropped, last = 0, b"\n"
        with tmp.open("wb") as fh:
            for piece in pieces:
                if room is not None and len(piece) > room:
                    dropped += len(piece) - room
                    piece = piece[:room]
                if piece:
                    fh.write(piece)
                    last = piece[-1:]
                    if room is not None:
                        room -= len(piece)
            if dropped:
                line = f"[kqi] log cut at {limit}: {dropped} bytes dropped\n".encode()
                fh.write(line if last == b"\n" else b"\n" + line)
        tmp.replace(target)
        return dropped

    def log_end(self, lines: int, max_bytes: int) -> bytes:
        """The stored log's last `lines` lines, at most its last `max_bytes` bytes, read backwards
        from the end of the file (b"" when there is no log yet)."""
        try:
            fh = self.log.open("rb")
        except FileNotFoundError:
            return b""
        with fh:
            start = fh.seek(0, io.SEEK_END)
            blocks: list[bytes] = []
            newlines = taken = 0
            while start > 0 and taken < max_bytes and newlines <= lines:
                size = min(PIECE, start, max_bytes - taken)
                start -= size
                fh.seek(start)
                block = fh.read(size)
                blocks.insert(0, block)
                taken += len(block)
                newlines += block.count(b"\n")
        return _last_lines(b"".join(blocks), lines)

    def store_output(self, chunks: Iterable[bytes], prefix: str, limit: SizeLimit | None = None) -> StoredOutput:
        """Extract an engine archive of /kqi/output into output/, member by member; files that would
        take the kept output past `limit` are left out. Returns what was not kept."""
        staging = self.root / "output.partial"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        stored = StoredOutput(limit=limit)
        room = limit.bytes if limit else None
        with open_stream(chunks) as archive:
            for member in members(archive):
                path = safe_member_path(member.name, prefix)
                if path is None or not (member.isfile() or member.isdir()) or (path and not OUTPUT_NAME.match(path)):
                    stored.unsafe.add(member.name)
                    continue
                target = staging / path
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                if room is not None and member.size > room:
                    stored.over_limit.add(path, member.size)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                source = archive.extractfile(member)
                with target.open("wb") as fh:
                    shutil.copyfileobj(source, fh, PIECE)
                if room is not None:
                    room -= member.size
        shutil.rmtree(self.output, ignore_errors=True)
        staging.replace(self.output)
        return stored

    def list_output(self) -> list[OutputFile]:
        if not self.output.is_dir():
            return []
        return sorted(
            (OutputFile(p.relative_to(self.output).as_posix(), p.stat().st_size) for p in self.output.rglob("*") if p.is_file() and not p.is_symlink()),
            key=lambda f: f.path,
        )

    def add_output_to(self, archive: tarfile.TarFile, prefix: str = "", writable: bool = False) -> None:
        """Append the stored output files to a tar being written, under `prefix`, owned by root.
        `writable`: folders and files writable by any user (a notebook image's user is not root)."""
        folders: set[str] = set()
        for f in self.list_output():
            path = self.output_path(f.path)
            if path is None:
                continue
            parents = f.path.split("/")[:-1] if writable else []
            for depth in range(1, len(parents) + 1):
                folder = "/".join(parents[:depth])
                if folder not in folders:
                    folders.add(folder)
                    entry = tarfile.TarInfo(prefix + folder)
                    entry.type, entry.mode = tarfile.DIRTYPE, 0o777
                    archive.addfile(entry)
            info = archive.gettarinfo(str(path), arcname=prefix + f.path)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if writable:
                info.mode |= 0o666
            with path.open("rb") as fh:
                archive.addfile(info, fh)

    def zip_output(self) -> Iterator[bytes]:
        """The stored output files as one zip, made piece by piece as the pieces are taken (a zip
        written to a stream: sizes after each file's data, so nothing is spooled or held)."""
        sink = _Sink()
        with zipfile.ZipFile(sink, "w", zipfile.ZIP_DEFLATED) as archive:
            for f in self.list_output():
                path = self.output_path(f.path)
                if path is None:
                    continue
                # strict_timestamps off: a file a container dated before 1980 is zipped as of 1980
                info = zipfile.ZipInfo.from_file(path, f.path, strict_timestamps=False)
                info.compress_type = zipfile.ZIP_DEFLATED
                with path.open("rb") as source, archive.open(info, "w") as target:
                    while piece := source.read(PIECE):
                        target.write(piece)
                        if len(sink.pending) >= PIECE:
                            yield sink.take()
        yield sink.take()  # the last file's end and the central directory

    def output_path(self, relative: str) -> Path | None:
        """The stored output file for a user-supplied path, or None if it is not one."""
        clean = safe_member_path(relative)
        if not clean:
            return None
        candidate = (self.output / clean).resolve()
        if not candidate.is_relative_to(self.output.resolve()) or not candidate.is_file():
            return None
        return candidate

    def delete(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def kqi_folders_archive(mounted: Iterable[str] = ()) -> bytes:
    """A tar that creates the empty /kqi folders of the job contract inside a container, but for
    the `mounted` ones (read-only volumes, which the engine refuses to unpack onto)."""
    buffer = io.BytesIO()
    skip = {path.strip("/") for path in mounted}
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for folder in ("kqi", "kqi/git", "kqi/input", "kqi/output", "kqi/parent", "kqi/attach"):
            if folder in skip:
                continue
            info = tarfile.TarInfo(folder)
            info.type = tarfile.DIRTYPE
            info.mode = 0o777 if folder == "kqi/output" else 0o755
            archive.addfile(info)
    return buffer.getvalue()
