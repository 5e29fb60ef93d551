"""Jobs: submit, list, read, halt, and every status change (compare-and-set, one writer each)."""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Integer, bindparam, delete, func, literal_column, null, select, union_all, update
from sqlalchemy.orm import Session, joinedload, selectinload

from kqi import validation as v
from kqi.accounts.auth import Principal
from kqi.admin import accounting, notify
from kqi.config import Settings
from kqi.crypto import SecretBox
from kqi.data.blobs import BlobStore
from kqi.errors import Conflict, NotFound, ServiceError
from kqi.jobs import history as runs
from kqi.jobs import sources as job_sources
from kqi.jobs.files import JobFiles
from kqi.models import GpuAllocation, Job, JobPart, JobStatus, Node, User, utcnow
from kqi.models.data import JobParent
from kqi.models.preprocessing import PreprocessingRun
from kqi.models.runs import JobFavorite, JobTag
from kqi.resources import Resources
from kqi.validation import IMAGE, MAX_CPU, MAX_GPU, MAX_MEMORY_GB  # noqa: F401  (part of the submit rules)

NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{0,29}$")
NAME_RULE = "lower-case letters, digits, '-' and '.', starting with a letter or digit, at most 30"
PRIORITIES = {"low": -1, "normal": 0, "high": 1}
# Set by kqi in every container; a user's env may not replace them.
RESERVED_ENV = frozenset({
    "TRAINING_ID", "DATASET_ID", "PARENT_ID", "MODEL_REPOSITORY", "COMMIT_ID", "LC_ALL", "LANG",
    "COLUMNS", "NVIDIA_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES", "MASTER_ADDR", "MASTER_PORT",
    "WORLD_SIZE", "NODE_RANK", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy",
    "no_proxy",
})
SUBMIT_FIELDS = ("name", "image", "command", "cpu", "memory_gb", "gpu", "env", "memo", "time_limit_s",
                 "priority", "partition", "nodes", "requeue_on_node_loss", *job_sources.SUBMIT_FIELDS)
MAX_GANG = 64
MAX_TIME_LIMIT_S = 90 * 24 * 3600
MIN_MEMORY_MIB = 8  # the engine refuses less


def parse_submission(body: Any) -> dict[str, Any]:
    """Validate a training submission; return the column values of the new job."""
    body = v.require_object(body)
    v.reject_unknown(body, SUBMIT_FIELDS)
    cpu = v.number(body, "cpu", required=True, minimum=0, exclusive_min=True, maximum=MAX_CPU)
    memory_gb = v.number(body, "memory_gb", required=True, minimum=0, exclusive_min=True, maximum=MAX_MEMORY_GB)
    gpu = v.number(body, "gpu", minimum=0, maximum=MAX_GPU, default=0)
    if gpu > 1 and gpu != int(gpu):
        raise ServiceError("gpu: more than one GPU must be a whole number (a share is between 0 and 1)", field="gpu")
    priority = v.text(body, "priority", default="normal", max_len=16)
    if priority not in PRIORITIES:
        raise ServiceError(f"priority must be one of {', '.join(PRIORITIES)}", field="priority")
    nodes = v.number(body, "nodes", minimum=1, maximum=MAX_GANG, integer=True, default=1)
    if nodes > 1 and gpu and gpu < 1:
        raise ServiceError("gpu: a gang job (nodes > 1) takes whole GPUs on each node", field="gpu")
    resources = Resources.from_api(cpu, memory_gb, gpu)
    if resources.memory_mib < MIN_MEMORY_MIB:
        raise ServiceError("memory_gb must be at least 0.008 (8 MiB, the engine's minimum)", field="memory_gb")
    return {
        "name": v.text(body, "name", required=True, max_len=30, pattern=NAME, rule=NAME_RULE),
        "image": v.text(body, "image", required=True, max_len=512, pattern=IMAGE, rule="not a valid image reference"),
        "command": v.text(body, "command", required=True, max_len=20000),
        **resources.as_fields(),
        "env": v.env_vars(body.get("env"), reserved=RESERVED_ENV),
        "memo": v.text(body, "memo", max_len=4096),
        "time_limit_s": v.number(body, "time_limit_s", minimum=1, maximum=MAX_TIME_LIMIT_S, integer=True),
        "priority": PRIORITIES[priority],
        "partition": v.text(body, "partition", max_len=64, pattern=v.PARTITION, rule=v.PARTITION_RULE),
        "nodes": nodes,
        "requeue_on_node_loss": _flag(body, "requeue_on_node_loss"),
    }


def _flag(body: Any, field: str) -> bool:
    value = body.get(field, False)
    if not isinstance(value, bool):
        raise ServiceError(f"{field} must be true or false", field=field)
    return value


def submit(session: Session, settings: Settings, box: SecretBox, principal: Principal, body: Any,
           kind: str = "training") -> Job:
    # A new job has no parts and no tags yet: said here, its JSON reads them without a query.
    job = Job(tenant_id=principal.tenant.id, user_id=principal.user.id, kind=kind, status=JobStatus.QUEUED,
              parts=[], tag_rows=[], **parse_submission(body))
    session.add(job)
    session.flush()
    job_sources.attach(session, settings, box, principal, job, body)  # dataset, git commit, parents: pinned now
    runs.check_kind(session, job)
    runs.record_event(session, job.id, JobStatus.QUEUED, "submitted")
    return job


# Built once (every poll of a job runs it); the submitter and the sources come in the same row.
_BY_ID = (select(Job).where(Job.id == bindparam("job_id"), Job.tenant_id == bindparam("tenant_id"))
          .options(joinedload(Job.user), joinedload(Job.source)))
_BY_ID_OF_KIND = _BY_ID.where(Job.kind == bindparam("kind"))


def get(session: Session, principal: Principal, job_id: int, kind: str | None = None) -> Job:
    """The tenant's job; with `kind`, only a job of that kind (/inference/<id> is never a training)."""
    params = {"job_id": job_id, "tenant_id": principal.tenant.id}
    job = session.scalar(_BY_ID_OF_KIND, {**params, "kind": kind}) if kind else session.scalar(_BY_ID, params)
    if job is None:
        raise NotFound("job")
    return job


# Built once, the tenant and kind as parameters: a page without filters (what pollers ask for)
# then costs no statement building and no cache-key computation.
_OF_KIND = select(Job).where(Job.tenant_id == bindparam("tenant_id"), Job.kind == bindparam("kind"))
# What as_dict reads, loaded for the whole page instead of per job (the tenant is the caller's,
# already in the session): the submitter and the sources in the same row; the collections (parts,
# parents, tags) as ORM collections for the pages' templates, or by shown_on in one statement.
_IN_ROW = (joinedload(Job.user), joinedload(Job.source))
_COLLECTIONS = (selectinload(Job.parts).joinedload(JobPart.node), selectinload(Job.parent_links),
                selectinload(Job.tag_rows))


def _count_and_page(query, collections: bool):
    """The statements reading one page of `query`'s jobs, newest first, each row with the count of
    them all (an uncorrelated subquery, computed once: no second round trip), and counting them
    alone (for a page past the end, which has no row to carry the count)."""
    options = _IN_ROW + _COLLECTIONS if collections else _IN_ROW
    count = select(func.count()).select_from(query.subquery())
    return (count, query.add_columns(count.scalar_subquery()).options(*options).order_by(Job.id.desc())
            .offset(bindparam("offset")).limit(bindparam("limit")))


_UNFILTERED = {collections: _count_and_page(_OF_KIND, collections) for collections in (True, False)}


def page(session: Session, principal: Principal, page_no: int, per_page: int, status: str | None = None,
         kind: str = "training", filters: Mapping[str, Any] | None = None,
         collections: bool = True) -> tuple[list[Job], int]:
    """`filters`: the history filters of kqi/jobs/history.py (name, tag, user, dates, favorites).
    `collections`: load each job's parts, parents and tags (else read them with shown_on)."""
    query = _OF_KIND
    if status:
        try:
            query = query.where(Job.status == JobStatus(status))
        except ValueError:
            raise ServiceError(f"status must be one of {', '.join(s.value for s in JobStatus)}", field="status") from None
    if filters:
        query = runs.filter_query(query, principal, filters)
    count, rows = _UNFILTERED[collections] if query is _OF_KIND else _count_and_page(query, collections)
    params = {"tenant_id": principal.tenant.id, "kind": kind}
    offset = (page_no - 1) * per_page
    found = session.execute(rows, {**params, "offset": offset, "limit": per_page}).all()
    if found:
        return [job for job, _ in found], found[0][1]
    return [], 0 if offset == 0 else session.scalar(count, params)


def request_halt(session: Session, principal: Principal, job_id: int) -> Job:
    """Stop a job: a queued one at once; a started one by the scheduler, which owns its container."""
    return halt(session, get(session, principal, job_id))


def halt(session: Session, job: Job) -> Job:
    """request_halt for a job already found (an administrator's kill reaches any tenant's)."""
    if job.status == JobStatus.QUEUED and transition(session, job.id, JobStatus.QUEUED, JobStatus.USER_CANCELED, reason="halted by user"):
        session.refresh(job)
        return job
    session.refresh(job)
    if job.status.finished:
        raise Conflict(f"job {job.id} has already ended ({job.status.value})")
    session.execute(update(Job).where(Job.id == job.id).values(halt_requested=True))
    session.refresh(job)
    return job


def remove(session: Session, principal: Principal, job_id: int) -> list[str]:
    """Forget an ended job (its usage record stays). Returns the blobs its attachments named: the
    caller removes the job's files and those blobs nothing else names, after commit."""
    job = get(session, principal, job_id)
    if not job.status.finished:
        raise Conflict(f"job {job.id} is {job.status.value}: halt it first")
    job_sources.refuse_if_parent(session, job)
    if session.get(PreprocessingRun, job.id) is not None:  # its history entry goes first, with the data it made
        raise Conflict(f"job {job.id} is a preprocessing run: delete its entry in the preprocessing's history")
    attached = [row.sha256 for row in job_sources.attachments(session, job)]
    session.delete(job)
    session.flush()
    return attached


def discard_files(session: Session, instance, job_id: int, blob_shas: list[str]) -> None:
    """After the commit that removed a job: its log and outputs, and the blobs (attachments, data
    it made) that no other record names."""
    JobFiles(instance, job_id).delete()
    BlobStore(instance).discard_unreferenced(session, blob_shas)


def transition(session: Session, job_id: int, expected: JobStatus, new: JobStatus, **values: Any) -> bool:
    """Compare-and-set the status: True when the job was still `expected` and is now `new`.

    Entering a finished state stamps completed_at and releases the job's GPUs in the same
    transaction, so resources are never held by a job that has ended."""
    if new == JobStatus.RUNNING:
        values.setdefault("started_at", utcnow())
    if new in (JobStatus.RUNNING, JobStatus.QUEUED):  # a new step: its node failures start from none
        values.setdefault("failed_tries", 0)
        values.setdefault("retry_at", None)
    if new.finished:
        values.setdefault("completed_at", utcnow())
        values.setdefault("queue_position", None)
        values.setdefault("pending_reasons", [])
        values.setdefault("pending_reason_codes", [])
    result = session.execute(
        update(Job).where(Job.id == job_id, Job.status == expected).values(status=new, **values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return False
    runs.record_event(session, job_id, new, values.get("reason", ""))  # the job's timeline
    if new.finished or new == JobStatus.QUEUED:
        session.execute(delete(GpuAllocation).where(GpuAllocation.job_id == job_id))
    if new.finished:  # in the same transaction: an ended job always has its usage and notices
        accounting.record_usage(session, job_id)
        notify.queue_job_end(session, job_id)
    if new == JobStatus.QUEUED:  # back to the queue: it will be placed afresh
        session.execute(delete(JobPart).where(JobPart.job_id == job_id))
    return True


@dataclass(frozen=True)
class Shown:
    """What the API shows of jobs' parts, parents and tags, and which of them the caller starred, by
    job id. A list reads it for its page in one statement of plain rows (shown_on): loading them as
    ORM collections cost more than the whole rest of a list request."""

    parts: dict[int, list[dict[str, Any]]]  # {"rank", "node", "gpu_indices"}, by rank
    parent_ids: dict[int, list[int]]  # in the order given at submit
    tags: dict[int, list[str]]  # sorted
    starred: set[int]

    @classmethod
    def of(cls, job: Job) -> Shown:
        """From the job's own collections, stars left out (a job read on its own; the API's views
        read the caller's star with shown_on, and a job just submitted has none)."""
        parts = [{"rank": p.rank, "node": p.node.name, "gpu_indices": list(p.gpu_indices)} for p in job.parts]
        return cls({job.id: parts}, {job.id: [link.parent_id for link in job.parent_links]},
                   {job.id: [row.tag for row in job.tag_rows]}, set())


_PARTS, _PARENTS, _TAGS, _STARRED = 0, 1, 2, 3
_IDS = bindparam("ids", expanding=True)
# One statement for the three collections and the stars: (what, job id, order, number, text, GPU indices).
_SHOWN_ON = union_all(
    select(literal_column(str(_PARTS), Integer), JobPart.job_id, JobPart.rank, null(), Node.name, JobPart.gpu_indices)
    .join(Node, Node.id == JobPart.node_id).where(JobPart.job_id.in_(_IDS)),
    select(literal_column(str(_PARENTS), Integer), JobParent.job_id, JobParent.position, JobParent.parent_id, null(), null())
    .where(JobParent.job_id.in_(_IDS)),
    select(literal_column(str(_TAGS), Integer), JobTag.job_id, literal_column("0", Integer), null(), JobTag.tag, null())
    .where(JobTag.job_id.in_(_IDS)),
    select(literal_column(str(_STARRED), Integer), JobFavorite.job_id, literal_column("0", Integer), null(), null(), null())
    .where(JobFavorite.user_id == bindparam("user_id"), JobFavorite.job_id.in_(_IDS)),
)


def shown_on(session: Session, job_ids: list[int], starred_by: User) -> Shown:
    """The parts, parents and tags of these jobs, and which of them `starred_by` starred, in one
    statement."""
    shown = Shown({}, {}, {}, set())
    if not job_ids:
        return shown
    # sorted by kind, job, then rank (parts), position (parents) or the tag itself
    rows = sorted(session.execute(_SHOWN_ON, {"ids": job_ids, "user_id": starred_by.id}).all(),
                  key=lambda row: row[:3] + (row[4] or "",))
    for what, job_id, order, number, text, gpu_indices in rows:
        if what == _PARTS:
            shown.parts.setdefault(job_id, []).append({"rank": order, "node": text, "gpu_indices": list(gpu_indices or [])})
        elif what == _PARENTS:
            shown.parent_ids.setdefault(job_id, []).append(number)
        elif what == _TAGS:
            shown.tags.setdefault(job_id, []).append(text)
        else:
            shown.starred.add(job_id)
    return shown


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="milliseconds") + "Z" if moment else None


def as_dict(job: Job, shown: Shown | None = None) -> dict[str, Any]:
    """The job's JSON; `shown`: its parts, parents and tags as a list read them (else its own)."""
    shown = Shown.of(job) if shown is None else shown
    parts = shown.parts.get(job.id, [])
    return {
        "id": job.id,
        "kind": job.kind,
        "name": job.name,
        "tenant": job.tenant.name,
        "user": job.user.username,
        "image": job.image,
        "command": job.command,
        **job.resources.as_api(),
        "env": job.env,
        "memo": job.memo,
        "time_limit_s": job.time_limit_s,
        "priority": next(k for k, p in PRIORITIES.items() if p == job.priority),
        "partition": job.partition or None,
        "status": job.status.value,
        "reason": job.reason or None,
        "exit_code": job.exit_code,
        "node": parts[0]["node"] if parts else None,  # the gang master's
        "gpu_indices": list(parts[0]["gpu_indices"]) if parts else [],
        "nodes": job.nodes,
        "parts": parts,
        "queue_position": job.queue_position,
        "pending_reasons": list(job.pending_reasons or []),
        "pending_reason_codes": list(job.pending_reason_codes or []),
        "halt_requested": job.halt_requested,
        "requeue_on_node_loss": job.requeue_on_node_loss,
        "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at),
        "completed_at": _iso(job.completed_at),
        **job_sources.as_dict(job, shown.parent_ids.get(job.id, [])),
        **runs.as_dict(job, shown.tags.get(job.id, [])),
    }


ACTIVE = (JobStatus.STARTING, JobStatus.RUNNING)


def node_usage(session: Session) -> dict[int, Resources]:
    """CPU, memory and GPU held by active jobs, per node id."""
    rows = session.execute(
        select(JobPart.node_id, func.sum(Job.cpu_milli), func.sum(Job.memory_mib), func.sum(Job.gpu_milli))
        .join(Job, Job.id == JobPart.job_id).where(Job.status.in_(ACTIVE)).group_by(JobPart.node_id)
    )
    return {node_id: Resources(cpu or 0, mem or 0, gpu or 0) for node_id, cpu, mem, gpu in rows}


def active(session: Session) -> list[Job]:
    return list(session.scalars(select(Job).where(Job.status.in_(ACTIVE)).order_by(Job.id)))
