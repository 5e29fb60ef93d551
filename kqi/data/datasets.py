"""Datasets: data placed into training / validation / testing (or one flat area).

A dataset is locked (read-only, for good) when the first job names it, so every run's input can
be rebuilt from the record; copy it to derive a new one. Its content hash covers every file's
place and SHA-256, and is recorded on each job that uses it.
"""
from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from kqi import validation as v
from kqi.accounts.auth import Principal
from kqi.data.blobs import BlobStore
from kqi.errors import Conflict, NotFound, ServiceError
from kqi.models.data import Data, Dataset, DatasetEntry

AREAS = ("training", "validation", "testing")
FLAT = ""  # the area of every entry in a flat dataset
FIELDS = ("name", "memo", "entries", "flat", "data_ids")
MAX_ENTRIES = 10000


def _ids(value: Any, field: str) -> list[int]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in value):
        raise ServiceError(f"{field} must be a list of data ids", field=field)
    return list(dict.fromkeys(value))


def _placement(body: dict[str, Any]) -> tuple[bool, dict[str, list[int]]]:
    """(flat, {area: [data ids]}) from either {"entries": {...}} or {"flat": true, "data_ids": [...]}."""
    flat = body.get("flat", False)
    if not isinstance(flat, bool):
        raise ServiceError("flat must be true or false", field="flat")
    if flat:
        if "entries" in body:
            raise ServiceError("a flat dataset takes data_ids, not entries", field="entries")
        return True, {FLAT: _ids(body.get("data_ids"), "data_ids")}
    if "data_ids" in body:
        raise ServiceError("data_ids is for a flat dataset (\"flat\": true); use entries", field="data_ids")
    entries = body.get("entries") or {}
    if not isinstance(entries, dict):
        raise ServiceError("entries must be an object: {\"training\": [data ids], ...}", field="entries")
    unknown = sorted(set(entries) - set(AREAS))
    if unknown:
        raise ServiceError(f"entries: unknown area {unknown[0]!r} (use {', '.join(AREAS)})", field="entries")
    return False, {area: _ids(entries.get(area), f"entries.{area}") for area in AREAS if entries.get(area)}


def _entries(session: Session, principal: Principal, placement: dict[str, list[int]]) -> list[DatasetEntry]:
    wanted = {i for ids in placement.values() for i in ids}
    if sum(len(ids) for ids in placement.values()) > MAX_ENTRIES:
        raise ServiceError(f"at most {MAX_ENTRIES} entries", field="entries")
    found = set(session.scalars(select(Data.id).where(Data.id.in_(wanted), Data.tenant_id == principal.tenant.id))) \
        if wanted else set()
    missing = sorted(wanted - found)
    if missing:
        raise ServiceError(f"data {missing[0]} not found", field="entries")
    return [DatasetEntry(area=area, data_id=i) for area, ids in placement.items() for i in ids]


def content_hash(dataset: Dataset) -> str:
    """SHA-256 over every file's place and content hash, in a fixed order."""
    return placed_hash([(e.area, e.data) for e in dataset.entries])


def placed_hash(placed: list[tuple[str, Data]]) -> str:
    """content_hash of data items placed in areas, as write_data_tar lays them out."""
    lines = sorted(f"{area}\0{record.id}\0{f.name}\0{f.sha256}\n" for area, record in placed for f in record.files)
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def _apply(session: Session, principal: Principal, dataset: Dataset, body: dict[str, Any]) -> None:
    dataset.name = v.text(body, "name", required=True, max_len=256)
    dataset.memo = v.text(body, "memo", max_len=4096)
    dataset.flat, placement = _placement(body)
    entries = _entries(session, principal, placement)
    if dataset.entries:
        dataset.entries = []
        session.flush()  # the old rows go before the new ones (same area and data) arrive
    dataset.entries = entries
    session.flush()
    session.refresh(dataset)
    dataset.content_hash = content_hash(dataset)


def create(session: Session, principal: Principal, body: Any) -> Dataset:
    body = v.require_object(body)
    v.reject_unknown(body, FIELDS)
    dataset = Dataset(tenant_id=principal.tenant.id, user_id=principal.user.id)
    session.add(dataset)
    _apply(session, principal, dataset, body)
    return dataset


def get(session: Session, principal: Principal, dataset_id: int) -> Dataset:
    dataset = session.scalar(select(Dataset).where(Dataset.id == dataset_id, Dataset.tenant_id == principal.tenant.id))
    if dataset is None:
        raise NotFound("dataset")
    return dataset


def page(session: Session, principal: Principal, page_no: int, per_page: int) -> tuple[list[Dataset], int]:
    query = select(Dataset).where(Dataset.tenant_id == principal.tenant.id)
    total = session.scalar(select(func.count()).select_from(query.subquery()))
    items = session.scalars(query.order_by(Dataset.id.desc()).offset((page_no - 1) * per_page).limit(per_page))
    return list(items), total


def update(session: Session, principal: Principal, dataset_id: int, body: Any) -> Dataset:
    body = v.require_object(body)
    v.reject_unknown(body, FIELDS)
    dataset = get(session, principal, dataset_id)
    if dataset.locked:
        raise Conflict(f"dataset {dataset.id} is locked: a job has used it (copy it to derive a new one)")
    _apply(session, principal, dataset, body)
    return dataset


def delete(session: Session, principal: Principal, dataset_id: int) -> None:
    dataset = get(session, principal, dataset_id)
    if dataset.locked:
        raise Conflict(f"dataset {dataset.id} is locked: jobs have used it and keep naming it")
    session.delete(dataset)
    session.flush()


def copy(session: Session, principal: Principal, dataset_id: int, body: Any = None) -> Dataset:
    """A new, unlocked dataset with the same entries (name: `body.name` or "<name> (copy)")."""
    source = get(session, principal, dataset_id)
    body = v.require_object(body or {})
    v.reject_unknown(body, ("name", "memo"))
    duplicate = Dataset(tenant_id=principal.tenant.id, user_id=principal.user.id, flat=source.flat,
                        name=v.text(body, "name", max_len=256, default=f"{source.name} (copy)"[:256]),
                        memo=v.text(body, "memo", max_len=4096, default=source.memo),
                        content_hash=source.content_hash)
    duplicate.entries = [DatasetEntry(area=e.area, data_id=e.data_id) for e in source.entries]
    session.add(duplicate)
    session.flush()
    return duplicate


def lock_for_job(session: Session, principal: Principal, dataset_id: Any) -> Dataset:
    """The dataset a job names, locked from now on."""
    if isinstance(dataset_id, bool) or not isinstance(dataset_id, int):
        raise ServiceError("dataset_id must be a dataset id", field="dataset_id")
    try:
        dataset = get(session, principal, dataset_id)
    except NotFound:
        raise ServiceError(f"dataset {dataset_id} not found", field="dataset_id") from None
    if not dataset.entries:
        raise ServiceError(f"dataset {dataset_id} is empty", field="dataset_id")
    dataset.locked = True
    return dataset


def member_path(area: str, data_id: int, name: str) -> str:
    """Where a file lands under /kqi/input."""
    return f"{area}/{data_id}/{name}" if area else f"{data_id}/{name}"


def write_input_tar(dataset: Dataset, store: BlobStore, target: Path) -> None:
    """The tar of /kqi/input's contents, read straight from the blob store (never whole in memory)."""
    write_data_tar([(entry.area, entry.data) for entry in dataset.entries], store, target)


def write_data_tar(placed: list[tuple[str, Data]], store: BlobStore, target: Path) -> None:
    """A tar of data items' files, each under member_path(area, data id, name)."""
    with tarfile.open(target, "w") as archive:
        for area, record in placed:
            for f in record.files:
                info = archive.gettarinfo(str(store.path(f.sha256)), arcname=member_path(area, record.id, f.name))
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mode = 0o444
                with store.path(f.sha256).open("rb") as fh:
                    archive.addfile(info, fh)


def as_dict(dataset: Dataset) -> dict[str, Any]:
    def entry(e: DatasetEntry) -> dict[str, Any]:
        return {"id": e.data_id, "name": e.data.name, "files": len(e.data.files)}

    result = {"id": dataset.id, "name": dataset.name, "memo": dataset.memo, "flat": dataset.flat,
              "locked": dataset.locked, "content_hash": dataset.content_hash, "user": dataset.user.username,
              "created_at": dataset.created_at.isoformat(timespec="seconds") + "Z"}
    if dataset.flat:
        result["data_ids"] = [e.data_id for e in dataset.entries]
        result["data"] = [entry(e) for e in dataset.entries]
    else:
        result["entries"] = {area: [e.data_id for e in dataset.entries if e.area == area] for area in AREAS}
        result["data"] = {area: [entry(e) for e in dataset.entries if e.area == area] for area in AREAS}
    return result

