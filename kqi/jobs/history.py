"""The run history: list filters, tags, favorites, memo edits, the status timeline, and the value an
inference leaves in /kqi/output/value.txt.

The kinds with their own list and detail (training, inference) share everything here; a kind is
only a column of the job."""
from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from kqi import validation as v
from kqi.accounts.auth import Principal
from kqi.errors import Conflict, ServiceError
from kqi.jobs import sources as job_sources
from kqi.jobs.files import JobFiles, Streamed, reader
from kqi.models import Job, JobStatus, User
from kqi.models.runs import JobEvent, JobFavorite, JobTag

log = logging.getLogger(__name__)
KINDS = ("training", "inference")  # the kinds listed under /<kind> in the pages and the API
FILTERS = ("status", "name", "tag", "user", "created_from", "created_to", "favorites")
TAG = re.compile(r"^[\w][\w .:+/-]{0,63}$")
TAG_RULE = "letters, digits, spaces and . : + / - _, at most 64"
MAX_TAGS = 20
VALUE_FILE = "value.txt"
VALUE_MAX_BYTES = 1024
EDIT_FIELDS = ("memo", "tags", "favorite")


def _flag(value: Any, field: str) -> bool:
    if value in (True, "1", "true", "on", "yes"):
        return True
    if value in (None, False, "", "0", "false", "off", "no"):
        return False
    raise ServiceError(f"{field} must be true or false", field=field)


def filter_query(query, principal: Principal, args: Mapping[str, Any]):
    """Narrow a jobs query (already scoped to the tenant and kind) by the history filters in `args`.
    Each filter is one indexed condition on jobs or a subquery: no per-row work."""
    name = v.text(args, "name", max_len=64)
    if name:
        query = query.where(Job.name.contains(name, autoescape=True))
    tag = v.text(args, "tag", max_len=64)
    if tag:
        query = query.where(Job.id.in_(select(JobTag.job_id).where(JobTag.tenant_id == principal.tenant.id,
                                                                     JobTag.tag == tag.strip())))
    username = v.text(args, "user", max_len=64)
    if username:
        query = query.where(Job.user_id == select(User.id).where(User.username == username).scalar_subquery())
    since, until = v.moment(args, "created_from"), v.moment(args, "created_to", end_of_day=True)
    if since:
        query = query.where(Job.created_at >= since)
    if until:
        query = query.where(Job.created_at <= until)
    if _flag(args.get("favorites"), "favorites"):
        query = query.where(Job.id.in_(select(JobFavorite.job_id).where(JobFavorite.user_id == principal.user.id)))
    return query


def check_kind(session: Session, job: Job) -> None:
    """An inference runs on what trainings left: it needs at least one parent, every one a training."""
    if job.kind != "inference":
        return
    kinds = list(session.scalars(select(Job.kind).where(Job.id.in_(job_sources.parent_ids(session, job)))))
    if not kinds:
        raise ServiceError("an inference needs at least one parent training (parent_ids)", field="parent_ids")
    if any(kind != "training" for kind in kinds):
        raise ServiceError("the parents of an inference must be trainings", field="parent_ids")


# -- tags, favorites, memo

def tag_value(raw: Any) -> str:
    if not isinstance(raw, str) or not TAG.match(raw.strip()):
        raise ServiceError(f"tags: {str(raw)[:70]!r} is not a tag ({TAG_RULE})", field="tags")
    return raw.strip()


def set_tags(session: Session, job: Job, tags: Iterable[Any]) -> None:
    wanted = sorted({tag_value(t) for t in tags})
    if len(wanted) > MAX_TAGS:
        raise ServiceError(f"tags: at most {MAX_TAGS} per job", field="tags")
    have = {row.tag: row for row in job.tag_rows}
    for tag, row in have.items():
        if tag not in wanted:
            job.tag_rows.remove(row)
    for tag in wanted:
        if tag not in have:
            job.tag_rows.append(JobTag(job_id=job.id, tag=tag, tenant_id=job.tenant_id))
    session.flush()


def add_tag(session: Session, job: Job, tag: Any) -> None:
    set_tags(session, job, [*(row.tag for row in job.tag_rows), tag])


def remove_tag(session: Session, job: Job, tag: str) -> None:
    set_tags(session, job, [row.tag for row in job.tag_rows if row.tag != tag])


def set_favorite(session: Session, principal: Principal, job: Job, on: bool) -> None:
    mine = (JobFavorite.user_id == principal.user.id, JobFavorite.job_id == job.id)
    starred = session.scalar(select(JobFavorite.job_id).where(*mine)) is not None
    if on and not starred:
        session.add(JobFavorite(user_id=principal.user.id, job_id=job.id))
    elif not on and starred:
        session.execute(delete(JobFavorite).where(*mine))
    session.flush()


def favorite_ids(session: Session, principal: Principal, job_ids: Iterable[int]) -> set[int]:
    """Which of these jobs the user starred: one query for a whole page."""
    ids = list(job_ids)
    if not ids:
        return set()
    return set(session.scalars(select(JobFavorite.job_id).where(JobFavorite.user_id == principal.user.id,
                                                                JobFavorite.job_id.in_(ids))))


def update(session: Session, principal: Principal, job: Job, body: Any) -> Job:
    """Edit what a job's owner may change at any time: memo, tags, the caller's star."""
    body = v.require_object(body)
    v.reject_unknown(body, EDIT_FIELDS)
    if "memo" in body:
        memo = body["memo"]
        if not isinstance(memo, str):
            raise ServiceError("memo must be a string", field="memo")
        job.memo = v.text(body, "memo", max_len=4096)
    if "tags" in body:
        if not isinstance(body["tags"], list):
            raise ServiceError("tags must be a list of strings", field="tags")
        set_tags(session, job, body["tags"])
    if "favorite" in body:
        if not isinstance(body["favorite"], bool):
            raise ServiceError("favorite must be true or false", field="favorite")
        set_favorite(session, principal, job, body["favorite"])
    session.flush()
    return job


# -- the timeline

def record_event(session: Session, job_id: int, status: JobStatus, reason: str = "") -> None:
    """Called by jobs.submit and jobs.transition, in the caller's transaction."""
    session.execute(insert(JobEvent).values(job_id=job_id, status=status.value, reason=(reason or "")[:2000]))


def timeline(session: Session, job: Job) -> list[dict[str, Any]]:
    rows = session.scalars(select(JobEvent).where(JobEvent.job_id == job.id).order_by(JobEvent.id))
    return [{"at": row.at.isoformat(timespec="milliseconds") + "Z", "status": row.status, "reason": row.reason or None}
            for row in rows]


# -- the value of an inference

def read_value(instance: Path, job_id: int) -> float | None:
    """The one number in the collected /kqi/output/value.txt, or None (missing, too big, not a number).
    kqi/jobs/runner.py stores it with the status that ends the job."""
    path = JobFiles(instance, job_id).output_path(VALUE_FILE)
    if path is None or not path.is_file() or path.stat().st_size > VALUE_MAX_BYTES:
        return None
    try:
        value = float(path.read_text("utf-8").strip())
    except (ValueError, UnicodeDecodeError):
        log.info("job %s: %s does not hold a number", job_id, VALUE_FILE)
        return None
    return value if math.isfinite(value) else None



def output_zip(instance: Path, job: Job) -> Streamed:
    """The kept /kqi/output of an ended job as one zip, made as it is sent: the API's output.zip
    and the run page's link."""
    if not job.status.finished:
        raise Conflict(f"job {job.id} is {job.status.value}: the zip is made from the kept output once it ends")
    return Streamed(reader(JobFiles(instance, job.id).zip_output()))


def as_dict(job: Job, tags: list[str]) -> dict[str, Any]:
    """What the history adds to a job's JSON (jobs.as_dict reads its tags)."""
    return {"value": job.value, "tags": tags}
