"""Files a job leaves behind, kept in the instance folder: its log and its /kqi/output.

Archives that come out of a container are untrusted: only regular files and folders are taken,
and only where their normalised path stays inside the job's folder.
"""
from __future__ import annotations

import io
import posixpath
import re
import shutil
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

LOG_NAME = "stdout_stderr.log"
# Output names kept, as KAMONOHASHI allowed them: others are refused on collection and reported.
OUTPUT_NAME = re.compile(r"^[-_0-9a-zA-Z/.]+$")
OUTPUT_NAME_RULE = "letters, digits, '-', '_', '.' and '/'"


@dataclass(frozen=True)
class OutputFile:
    path: str
    size: int


class _ChunkReader(io.RawIOBase):
    """A file object over an iterator of byte chunks, so tarfile can stream an engine archive."""

    def __init__(self, chunks: Iterable[bytes]):
        self._chunks: Iterator[bytes] = iter(chunks)
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, target) -> int:
        while not self._buffer:
            try:
                self._buffer = next(self._chunks)
            except StopIteration:
                return 0
        count = min(len(target), len(self._buffer))
        target[:count] = self._buffer[:count]
        self._buffer = self._buffer[count:]
        return count


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
    return tarfile.open(fileobj=io.BufferedReader(_ChunkReader(chunks), 1 << 16), mode="r|")


def list_archive(chunks: Iterable[bytes], prefix: str) -> list[OutputFile]:
    """The regular files in an engine archive of `prefix` (e.g. the live /kqi/output)."""
    files = []
    with open_stream(chunks) as archive:
        for member in archive:
            path = safe_member_path(member.name, prefix)
            if member.isfile() and path:
                files.append(OutputFile(path, member.size))
    return sorted(files, key=lambda f: f.path)


def read_from_archive(chunks: Iterable[bytes], prefix: str, wanted: str) -> bytes | None:
    with open_stream(chunks) as archive:
        for member in archive:
            if member.isfile() and safe_member_path(member.name, prefix) == wanted:
                extracted = archive.extractfile(member)
                return extracted.read() if extracted else None
    return None


class JobFiles:
    """The folder of one job: instance/jobs/<id>/ with the log and output/."""

    def __init__(self, instance: Path, job_id: int):
        self.root = Path(instance) / "jobs" / str(job_id)
        self.output = self.root / "output"
        self.log = self.root / LOG_NAME

    def write_log(self, data: bytes, rank: int = 0) -> None:
        """Rank 0's log is the job's log; a gang job's other ranks get stdout_stderr.rank<N>.log."""
        self.root.mkdir(parents=True, exist_ok=True)
        target = self.log if rank == 0 else self.root / f"stdout_stderr.rank{rank}.log"
        tmp = target.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(target)

    def read_log(self) -> bytes | None:
        return self.log.read_bytes() if self.log.exists() else None

    def store_output(self, chunks: Iterable[bytes], prefix: str) -> list[str]:
        """Extract an engine archive of /kqi/output into output/; return the refused member names."""
        staging = self.root / "output.partial"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        refused = []
        with open_stream(chunks) as archive:
            for member in archive:
                path = safe_member_path(member.name, prefix)
                if path is None or not (member.isfile() or member.isdir()) or (path and not OUTPUT_NAME.match(path)):
                    refused.append(member.name)
                    continue
                target = staging / path
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                source = archive.extractfile(member)
                with target.open("wb") as fh:
                    shutil.copyfileobj(source, fh)
        shutil.rmtree(self.output, ignore_errors=True)
        staging.replace(self.output)
        return refused

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
