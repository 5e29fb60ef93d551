"""Content-addressed file store in the instance folder: blobs/<aa>/<sha256>.

A file is written once whatever how many records name it. Bytes arrive as a stream and go to disk
in chunks (never whole in memory), hashed on the way; the finished file is renamed into place, so a
blob path always holds complete content. Deleting is the callers' business: after their records are
gone they call `discard_unreferenced`, which keeps any blob another record still names.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from kqi.errors import ServiceError

CHUNK = 1 << 20


class TooLarge(ServiceError):
    status = 413

    def __init__(self, limit: int):
        super().__init__(f"the upload is larger than the limit of {limit / 2**30:g} GB (max_upload_gb)",
                         code="too_large")


class BlobStore:
    def __init__(self, instance: Path):
        self.root = Path(instance) / "blobs"

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def put_chunks(self, chunks: Iterable[bytes], limit: int) -> tuple[str, int]:
        """Store a stream of byte chunks; return (sha256, size). Over `limit` bytes: TooLarge, nothing kept."""
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)
        digest, size = hashlib.sha256(), 0
        fd, tmp = tempfile.mkstemp(dir=self.root / "tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    size += len(chunk)
                    if size > limit:
                        raise TooLarge(limit)
                    digest.update(chunk)
                    out.write(chunk)
            sha = digest.hexdigest()
            target = self.path(sha)
            if target.exists():
                os.unlink(tmp)  # the same content is stored already
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, target)
            return sha, size
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def put_file(self, stream: BinaryIO, limit: int) -> tuple[str, int]:
        return self.put_chunks(iter(lambda: stream.read(CHUNK), b""), limit)

    def discard_unreferenced(self, session: Session, candidates: Iterable[str]) -> int:
        """Delete the blobs among `candidates` that no data file or attachment names any more.
        Call after the deleting transaction committed."""
        from kqi.models.data import DataFile, JobAttachment

        removed = 0
        for sha in set(candidates):
            used = session.scalar(select(DataFile.id).where(DataFile.sha256 == sha).limit(1)) or \
                session.scalar(select(JobAttachment.id).where(JobAttachment.sha256 == sha).limit(1))
            if used is None:
                try:
                    self.path(sha).unlink()
                    removed += 1
                except FileNotFoundError:
                    pass
        return removed
