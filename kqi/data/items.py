"""Data: uploaded files with a name, memo and tags, kept content-addressed in the blob store.

Every query is scoped to the caller's tenant (another tenant's data is "not found"). A data
record in a dataset cannot be deleted, and one in a locked dataset cannot change its files, so a
run's inputs stay what they were. Blobs are deleted by the caller after its transaction commits
(`BlobStore.discard_unreferenced` with the hashes these functions return).
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from kqi import validation as v
from kqi.accounts.auth import Principal
from kqi.data.blobs import BlobStore
from kqi.data.uploads import FilePart
from kqi.errors import Conflict, NotFound, ServiceError
from kqi.models.data import Data, DataFile, Dataset, DatasetEntry, JobSource

TAG = re.compile(r"^[^,\x00-\x1f\x7f]{1,64}$")
MAX_TAGS = 32
MAX_FILES = 1000
UPDATE_FIELDS = ("name", "memo", "tags")


def file_name(name: Any) -> str:
    """A stored file name: one path component, shown and placed in containers as it is."""
    if not isinstance(name, str) or not name:
        raise ServiceError("every file needs a name", field="files")
    if len(name.encode()) > 255:
        raise ServiceError(f"file name {name[:40]!r}... is too long (at most 255 bytes)", field="files")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ServiceError(f"file name {name!r} contains control characters", field="files")
    if "/" in name or "\\" in name:
        raise ServiceError(f"file name {name!r} must be a plain name: no folders, no absolute paths", field="files")
    if name in (".", ".."):
        raise ServiceError(f"file name {name!r} is not allowed", field="files")
    return name


def parse_tags(value: Any) -> list[str]:
    """Tags from "a, b" (forms, multipart) or ["a", "b"] (JSON); trimmed, unique, in order."""
    if value is None or value == "":
        return []
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(t, str) for t in items):
        raise ServiceError("tags must be a comma-separated string or a list of strings", field="tags")
    tags = []
    for tag in (t.strip() for t in items):
        if not tag:
            continue
        if not TAG.match(tag):
            raise ServiceError(f"tag {tag[:40]!r}: at most 64 characters, no commas or control characters", field="tags")
        if tag not in tags:
            tags.append(tag)
    if len(tags) > MAX_TAGS:
        raise ServiceError(f"at most {MAX_TAGS} tags", field="tags")
    return tags


def _stored_tags(tags: list[str]) -> str:
    return f",{','.join(tags)}," if tags else ""


def tags_of(data: Data) -> list[str]:
    return [t for t in (data.tags or "").split(",") if t]


def _fields(body: dict[str, Any], partial: bool = False) -> dict[str, Any]:
    values = {}
    if not partial or "name" in body:
        values["name"] = v.text(body, "name", required=True, max_len=256)
    if not partial or "memo" in body:
        values["memo"] = v.text(body, "memo", max_len=4096)
    if not partial or "tags" in body:
        values["tags"] = _stored_tags(parse_tags(body.get("tags")))
    return values


def receive(session: Session, parts: Iterable[tuple[str, str] | FilePart], store: BlobStore,
            limit: int) -> tuple[dict, list]:
    """Consume an upload: store each file as it streams in; return (text fields, [(name, sha, size)]).

    `limit` bounds the whole upload. On any error the blobs this upload stored are removed again
    unless something else already names them."""
    fields, files, received = {}, [], 0
    try:
        for part in parts:
            if isinstance(part, FilePart):
                if part.field != "files":
                    raise ServiceError(f"unexpected file field {part.field!r} (send files as 'files')", field=part.field)
                if not part.filename:  # an empty <input type=file> in a form
                    continue
                name = file_name(part.filename)
                if any(f[0] == name for f in files):
                    raise Conflict(f"two files are named {name!r}", field="files")
                if len(files) >= MAX_FILES:
                    raise ServiceError(f"at most {MAX_FILES} files in one upload", field="files")
                sha, size = store.put_chunks(part.chunks, limit - received)
                received += size
                files.append((name, sha, size))
            else:
                key, value = part
                fields[key] = value
    except BaseException:
        store.discard_unreferenced(session, [f[1] for f in files])
        raise
    return fields, files


def create(session: Session, principal: Principal, fields: dict[str, Any], files: list[tuple[str, str, int]]) -> Data:
    v.reject_unknown(fields, UPDATE_FIELDS)
    if not files:
        raise ServiceError("upload at least one file (multipart field 'files')", field="files")
    data = Data(tenant_id=principal.tenant.id, user_id=principal.user.id, **_fields(fields))
    data.files = [DataFile(name=name, sha256=sha, size=size) for name, sha, size in files]
    session.add(data)
    session.flush()
    return data


def get(session: Session, principal: Principal, data_id: int) -> Data:
    data = session.scalar(select(Data).where(Data.id == data_id, Data.tenant_id == principal.tenant.id))
    if data is None:
        raise NotFound("data")
    return data


def get_file(session: Session, principal: Principal, data_id: int, file_id: int) -> DataFile:
    data = get(session, principal, data_id)
    found = next((f for f in data.files if f.id == file_id), None)
    if found is None:
        raise NotFound("file")
    return found


def page(session: Session, principal: Principal, page_no: int, per_page: int, q: str = "",
         tag: str = "") -> tuple[list[Data], int]:
    query = select(Data).where(Data.tenant_id == principal.tenant.id)
    if q:
        like = f"%{_escape(q)}%"
        query = query.where(or_(Data.name.ilike(like, escape="\\"), Data.memo.ilike(like, escape="\\"),
                                Data.tags.ilike(like, escape="\\")))
    if tag:
        query = query.where(Data.tags.like(f"%,{_escape(tag)},%", escape="\\"))
    total = session.scalar(select(func.count()).select_from(query.subquery()))
    items = session.scalars(query.order_by(Data.id.desc()).offset((page_no - 1) * per_page).limit(per_page))
    return list(items), total


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def update(session: Session, principal: Principal, data_id: int, body: Any) -> Data:
    body = v.require_object(body)
    v.reject_unknown(body, UPDATE_FIELDS)
    data = get(session, principal, data_id)
    for key, value in _fields(body, partial=True).items():
        setattr(data, key, value)
    session.flush()
    return data


def _locking_datasets(session: Session, data: Data, locked_only: bool) -> list[int]:
    query = select(Dataset.id).join(DatasetEntry).where(DatasetEntry.data_id == data.id)
    if locked_only:
        query = query.where(Dataset.locked.is_(True))
    return sorted(set(session.scalars(query)))


def _refuse_if_locked(session: Session, data: Data) -> None:
    locked = _locking_datasets(session, data, locked_only=True)
    if locked:
        raise Conflict(f"data {data.id} is in dataset {locked[0]}, which a job has used: its files cannot change "
                       "(copy the dataset and upload new data instead)")


def add_files(session: Session, principal: Principal, data_id: int, files: list[tuple[str, str, int]],
              fields: dict[str, Any] | None = None) -> Data:
    v.reject_unknown(fields or {}, ())
    if not files:
        raise ServiceError("send at least one file", field="files")
    data = get(session, principal, data_id)
    _refuse_if_locked(session, data)
    taken = {f.name for f in data.files}
    for name, sha, size in files:
        if name in taken:
            raise Conflict(f"data {data.id} already has a file named {name!r}", field="files")
        taken.add(name)
        data.files.append(DataFile(name=name, sha256=sha, size=size))
    session.flush()
    return data


def remove_file(session: Session, principal: Principal, data_id: int, file_id: int) -> str:
    """Remove one file; return its hash for the blob clean-up after commit."""
    found = get_file(session, principal, data_id, file_id)
    _refuse_if_locked(session, found.data)
    if len(found.data.files) == 1:
        raise Conflict("a data record keeps at least one file: delete the record instead")
    found.data.files.remove(found)
    session.flush()
    return found.sha256


def delete(session: Session, principal: Principal, data_id: int) -> list[str]:
    """Delete a record; return its files' hashes for the blob clean-up after commit."""
    data = get(session, principal, data_id)
    used = _locking_datasets(session, data, locked_only=False)
    if used:
        raise Conflict(f"data {data.id} is used by dataset(s) {', '.join(map(str, used))}: remove it there first")
    job_id = session.scalar(select(JobSource.job_id).where(JobSource.data_id == data.id).order_by(JobSource.job_id).limit(1))
    if job_id is not None:  # a run's input stays, so its lineage keeps meaning
        raise Conflict(f"data {data.id} is the input of run {job_id}: delete that run's history entry first")
    shas = [f.sha256 for f in data.files]
    session.delete(data)
    session.flush()
    return shas


def file_dict(f: DataFile) -> dict[str, Any]:
    return {"id": f.id, "name": f.name, "size": f.size, "sha256": f.sha256}


def as_dict(data: Data) -> dict[str, Any]:
    return {
        "id": data.id,
        "name": data.name,
        "memo": data.memo,
        "tags": tags_of(data),
        "user": data.user.username,
        "files": [file_dict(f) for f in data.files],
        "size": sum(f.size for f in data.files),
        "created_at": data.created_at.isoformat(timespec="seconds") + "Z",
    }
