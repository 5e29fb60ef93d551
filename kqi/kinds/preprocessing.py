"""Preprocessing: definitions run on data items, each run's /kqi/output/{name}/ folders becoming new data.

As in KAMONOHASHI: a definition needs only a name (image and command are needed to run it); a
run is a job of kind "preprocessing" on one data item (at /kqi/input/{data id}/), queued, placed
and collected like any job; a data item is preprocessed once per definition (a queued, running or
completed run stands in the way) until that history entry is deleted, which deletes the data it
made. A definition's image, code and command cannot change while it has history, so every entry
of its history ran the same thing.

Every query is scoped to the caller's tenant. The caller commits; after deleting a history entry
it removes the job's files and the blobs the returned hashes name, once committed.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy import update as sql_update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, joinedload, selectinload

from kqi import validation as v
from kqi.accounts.auth import Principal
from kqi.config import Settings
from kqi.crypto import SecretBox
from kqi.data import gitsource
from kqi.data import items as data_service
from kqi.data.blobs import BlobStore
from kqi.errors import Conflict, NotFound, ServiceError
from kqi.jobs import lifecycle as jobs
from kqi.jobs.files import JobFiles
from kqi.jobs.kinds import JobKind, register
from kqi.models import Job, JobPart, JobStatus, utcnow
from kqi.models.data import Data, DataFile
from kqi.models.preprocessing import (
    Preprocessing,
    PreprocessingOutput,
    PreprocessingRun,
)
from kqi.resources import limits_as_api

KIND = "preprocessing"
FIELDS = ("name", "image", "git", "command", "cpu", "memory_gb", "gpu", "partition", "memo")
LOCKED = ("image", "git", "command")  # fixed while the definition has history (its lineage)
RUN_FIELDS = ("data_ids", "cpu", "memory_gb", "gpu", "partition", "env")
RESOURCES = ("cpu", "memory_gb", "gpu", "partition")
BLOCKING = (JobStatus.QUEUED, JobStatus.STARTING, JobStatus.RUNNING, JobStatus.COMPLETED)
MAX_RUN_DATA = 100  # data items in one run request
MAX_OUTPUT_FOLDERS = 100  # data items one run may make
OUTPUT_RULE = "each folder /kqi/output/{name}/ becomes a data item named {name}"


# -- definitions

def _git(session: Session, settings: Settings, box: SecretBox, principal: Principal, value: Any) -> dict[str, str]:
    """The definition's code pinned to a commit now (a branch or the default head), or nothing."""
    if value is None or value == {} or value == "":
        return {"git_repository": "", "git_branch": "", "git_commit": ""}
    pinned = gitsource.resolve(session, settings, box, principal, value)
    return {"git_repository": pinned["repository"], "git_branch": pinned["branch"], "git_commit": pinned["commit"]}


def _resources(body: dict[str, Any]) -> dict[str, Any]:
    """Default resources, checked by the very rules a run's submission is checked by."""
    given = {k: body[k] for k in RESOURCES if body.get(k) not in (None, "")}
    parsed = jobs.parse_submission({"name": "x", "image": "x", "command": "x", "cpu": 1, "memory_gb": 1, **given})
    return {"cpu_milli": parsed["cpu_milli"] if "cpu" in given else None,
            "memory_mib": parsed["memory_mib"] if "memory_gb" in given else None,
            "gpu_milli": parsed["gpu_milli"] if "gpu" in given else None,
            "partition": parsed["partition"]}


def _name(session: Session, principal: Principal, body: dict[str, Any], current: Preprocessing | None) -> str:
    name = v.text(body, "name", required=True, max_len=30, pattern=jobs.NAME, rule=jobs.NAME_RULE)
    taken = session.scalar(select(Preprocessing.id).where(Preprocessing.tenant_id == principal.tenant.id,
                                                          Preprocessing.name == name))
    if taken is not None and (current is None or taken != current.id):
        raise Conflict(f"a preprocessing named {name} already exists", field="name")
    return name


def _values(session: Session, settings: Settings, box: SecretBox, principal: Principal, body: dict[str, Any],
            current: Preprocessing | None) -> dict[str, Any]:
    """Column values for the fields present in `body` (all of them for a new definition)."""
    values: dict[str, Any] = {}
    if current is None or "name" in body:
        values["name"] = _name(session, principal, body, current)
    if current is None or "image" in body:
        values["image"] = v.text(body, "image", max_len=512, pattern=jobs.IMAGE, rule="not a valid image reference")
    if current is None or "command" in body:
        values["command"] = v.text(body, "command", max_len=20000)
    if current is None or "memo" in body:
        values["memo"] = v.text(body, "memo", max_len=4096)
    if current is None or any(k in body for k in RESOURCES):
        merged = {} if current is None else _defaults(current)
        merged.update({k: body[k] for k in RESOURCES if k in body})
        values.update(_resources(merged))
    if current is None or "git" in body:
        values.update(_git(session, settings, box, principal, body.get("git")))
    return values


def _defaults(d: Preprocessing) -> dict[str, Any]:
    """A definition's default resources as run fields (absent: no default)."""
    fields: dict[str, Any] = {name: amount for name, amount in limits_as_api(d.default_resources, gb_digits=None).items()
                              if amount is not None}
    if d.partition:
        fields["partition"] = d.partition
    return fields


def create(session: Session, settings: Settings, box: SecretBox, principal: Principal, body: Any) -> Preprocessing:
    body = v.require_object(body)
    v.reject_unknown(body, FIELDS)
    definition = Preprocessing(tenant_id=principal.tenant.id, user_id=principal.user.id,
                               **_values(session, settings, box, principal, body, None))
    session.add(definition)
    _flush_name(session, definition)
    return definition


def _flush_name(session: Session, definition: Preprocessing) -> None:
    """Flush; a name another request took meanwhile (the unique constraint) is the same 409."""
    try:
        session.flush()
    except IntegrityError:
        raise Conflict(f"a preprocessing named {definition.name} already exists", field="name") from None


def get(session: Session, principal: Principal, preprocessing_id: int) -> Preprocessing:
    found = session.scalar(select(Preprocessing).where(Preprocessing.id == preprocessing_id,
                                                       Preprocessing.tenant_id == principal.tenant.id))
    if found is None:
        raise NotFound("preprocessing")
    return found


def run_count(session: Session, definition: Preprocessing) -> int:
    return session.scalar(select(func.count()).where(PreprocessingRun.preprocessing_id == definition.id))


def page(session: Session, principal: Principal, page_no: int, per_page: int) -> tuple[list[Preprocessing], int, dict[int, int]]:
    """A page of definitions (newest first), their total, and each one's number of history entries."""
    query = select(Preprocessing).where(Preprocessing.tenant_id == principal.tenant.id)
    total = session.scalar(select(func.count()).select_from(query.subquery()))
    items = list(session.scalars(query.order_by(Preprocessing.id.desc()).offset((page_no - 1) * per_page).limit(per_page)))
    counts = dict(session.execute(select(PreprocessingRun.preprocessing_id, func.count())
                                  .where(PreprocessingRun.preprocessing_id.in_([d.id for d in items]))
                                  .group_by(PreprocessingRun.preprocessing_id)).all()) if items else {}
    return items, total, counts


def _git_unchanged(d: Preprocessing, value: Any) -> bool:
    """Whether a git field names the code the definition already has (no commit: its pinned one)."""
    if not value:
        return not d.git_commit
    if not isinstance(value, dict):
        return False
    commit = value.get("commit") or ""
    return (value.get("repository") == d.git_repository and (value.get("branch") or "") == d.git_branch
            and (not commit or (isinstance(commit, str) and d.git_commit.startswith(commit.lower()))))


def update(session: Session, settings: Settings, box: SecretBox, principal: Principal, preprocessing_id: int,
           body: Any) -> Preprocessing:
    """Change the fields given. With history, image, git and command stay as they ran."""
    body = v.require_object(body)
    v.reject_unknown(body, FIELDS)
    definition = get(session, principal, preprocessing_id)
    if run_count(session, definition):
        for field in LOCKED:
            if field not in body:
                continue
            same = _git_unchanged(definition, body[field]) if field == "git" else \
                (body[field] or "") == getattr(definition, field)
            if not same:
                raise Conflict(f"preprocessing {definition.name} has history: its {field} stays as it ran "
                               "(delete its history, or create a new preprocessing)", field=field)
        body = {k: val for k, val in body.items() if k not in LOCKED}
    for key, value in _values(session, settings, box, principal, body, definition).items():
        setattr(definition, key, value)
    _flush_name(session, definition)
    return definition


def delete(session: Session, principal: Principal, preprocessing_id: int) -> None:
    definition = get(session, principal, preprocessing_id)
    count = run_count(session, definition)
    if count:
        raise Conflict(f"preprocessing {definition.name} has {count} history entr{'y' if count == 1 else 'ies'}: "
                       "delete them first")
    session.delete(definition)
    session.flush()


# -- runs

def _data_ids(value: Any) -> list[int]:
    if not isinstance(value, list) or not value or \
            not all(isinstance(i, int) and not isinstance(i, bool) for i in value):
        raise ServiceError("data_ids must be a non-empty list of data ids", field="data_ids")
    ids = list(dict.fromkeys(value))
    if len(ids) > MAX_RUN_DATA:
        raise ServiceError(f"at most {MAX_RUN_DATA} data items in one run", field="data_ids")
    return ids


def earlier_run(session: Session, definition: Preprocessing, data_id: int) -> PreprocessingRun | None:
    """The history entry that keeps `data_id` from being preprocessed by `definition` again."""
    return session.scalar(select(PreprocessingRun).join(Job, Job.id == PreprocessingRun.job_id)
                          .where(PreprocessingRun.preprocessing_id == definition.id,
                                 PreprocessingRun.data_id == data_id, Job.status.in_(BLOCKING))
                          .order_by(PreprocessingRun.job_id).limit(1))


def run(session: Session, settings: Settings, box: SecretBox, principal: Principal, preprocessing_id: int,
        body: Any) -> list[PreprocessingRun]:
    """Queue one job per data item (all or none): `data_ids`, and resources overriding the defaults."""
    body = v.require_object(body)
    v.reject_unknown(body, RUN_FIELDS)
    definition = get(session, principal, preprocessing_id)
    missing = [label for label, value in (("an image", definition.image), ("a command", definition.command)) if not value]
    if missing:
        raise Conflict(f"preprocessing {definition.name} cannot run without {' and '.join(missing)}: edit it first")
    ids = _data_ids(body.get("data_ids"))
    # Written first: two requests running this definition wait for each other here, so the
    # once-per-data check below sees the other's runs.
    session.execute(sql_update(Preprocessing).where(Preprocessing.id == definition.id).values(last_run_at=utcnow())
                    .execution_options(synchronize_session=False))
    items = {d.id: d for d in session.scalars(select(Data).where(Data.id.in_(ids), Data.tenant_id == principal.tenant.id))}
    for data_id in ids:
        if data_id not in items:
            raise ServiceError(f"data {data_id} not found", field="data_ids")
        earlier = earlier_run(session, definition, data_id)
        if earlier is not None:
            raise Conflict(f"data {data_id} was already preprocessed by {definition.name}: run {earlier.job_id} "
                           f"({earlier.job.status.value}); delete that history entry to run it again", field="data_ids")
    pinned = None
    if definition.git_commit:  # the runner's own access to the pinned code is checked now, once
        pinned = gitsource.resolve(session, settings, box, principal, {"repository": definition.git_repository,
                                                                       "commit": definition.git_commit})
    submission = {"name": definition.name, "image": definition.image, "command": definition.command,
                  **_defaults(definition), **{k: body[k] for k in (*RESOURCES, "env") if k in body}}
    runs = []
    for data_id in ids:
        job = jobs.submit(session, settings, box, principal, {**submission, "memo": f"{definition.name} on data {data_id}"},
                          kind=KIND)
        job.source.data_id = data_id
        if pinned is not None:
            job.source.git_repository, job.source.git_branch = definition.git_repository, definition.git_branch
            job.source.git_commit = pinned["commit"]
        entry = PreprocessingRun(job_id=job.id, tenant_id=principal.tenant.id, preprocessing_id=definition.id,
                                 data_id=data_id)
        session.add(entry)
        runs.append(entry)
    session.flush()
    return runs


# What run_dict reads of a page of entries, loaded for the whole page: the job with its submitter and
# input in the row, then its node and the data it made in one statement each (not a query per entry).
_RUN_DICT = (joinedload(PreprocessingRun.job).options(joinedload(Job.user), selectinload(Job.parts).joinedload(JobPart.node)),
             joinedload(PreprocessingRun.data), selectinload(PreprocessingRun.outputs).joinedload(PreprocessingOutput.data))


def history(session: Session, principal: Principal, preprocessing_id: int, page_no: int,
            per_page: int) -> tuple[list[PreprocessingRun], int]:
    definition = get(session, principal, preprocessing_id)
    query = select(PreprocessingRun).where(PreprocessingRun.preprocessing_id == definition.id)
    total = session.scalar(select(func.count()).select_from(query.subquery()))
    entries = session.scalars(query.options(*_RUN_DICT).order_by(PreprocessingRun.job_id.desc())
                              .offset((page_no - 1) * per_page).limit(per_page))
    return list(entries), total


def any_active(entries: list[PreprocessingRun]) -> bool:
    return any(not e.job.status.finished for e in entries)


def get_run(session: Session, principal: Principal, preprocessing_id: int, run_id: int) -> PreprocessingRun:
    entry = session.scalar(select(PreprocessingRun).where(PreprocessingRun.job_id == run_id,
                                                          PreprocessingRun.preprocessing_id == preprocessing_id,
                                                          PreprocessingRun.tenant_id == principal.tenant.id))
    if entry is None:
        raise NotFound("preprocessing run")
    return entry


def delete_run(session: Session, principal: Principal, preprocessing_id: int, run_id: int) -> list[str]:
    """Delete a history entry of an ended run with the data it made; return the blob hashes to
    discard after commit (the caller also removes the job's files)."""
    entry = get_run(session, principal, preprocessing_id, run_id)
    if not entry.job.status.finished:
        raise Conflict(f"run {run_id} is {entry.job.status.value}: halt it first")
    made = [out.data_id for out in entry.outputs]
    session.delete(entry)
    session.flush()
    shas = []
    for data_id in made:  # refused (and all of it rolled back) when a dataset or a job uses the data
        shas += data_service.delete(session, principal, data_id)
    shas += jobs.remove(session, principal, run_id)
    return shas


# -- collecting a run's outputs (called by kqi/jobs/runner.py when a job ends)

def _output_folders(output: Path) -> dict[str, list[tuple[str, Path]]]:
    """{folder name: [(path inside the folder, file)]} for each folder directly under /kqi/output
    that holds files (subfolders included); files directly under /kqi/output are not data."""
    folders = {}
    if not output.is_dir():
        return folders
    for folder in sorted(p for p in output.iterdir() if p.is_dir() and not p.is_symlink()):
        members = sorted((f.relative_to(folder).as_posix(), f) for f in folder.rglob("*")
                         if f.is_file() and not f.is_symlink())
        if members:
            folders[folder.name] = members
    return folders


def _check_outputs(folders: dict[str, list[tuple[str, Path]]]) -> None:
    if not folders:
        raise ServiceError(f"nothing under /kqi/output/{{name}}/: {OUTPUT_RULE}, and none held files")
    if len(folders) > MAX_OUTPUT_FOLDERS:
        raise ServiceError(f"{len(folders)} output folders: at most {MAX_OUTPUT_FOLDERS} data items per run")
    for name, members in folders.items():
        if len(members) > data_service.MAX_FILES:
            raise ServiceError(f"/kqi/output/{name}/ holds {len(members)} files: a data item takes at most "
                               f"{data_service.MAX_FILES}")
        for relative, _path in members:
            if len(relative.encode()) > 255:
                raise ServiceError(f"/kqi/output/{name}/{relative[:60]}...: file paths in a data item are at most 255 bytes")


def on_collected(session: Session, settings: Settings, job: Job, status: JobStatus, reason: str) -> tuple[JobStatus, str]:
    """Turn a completed run's output folders into data items with lineage, all or none, in the
    job's ending transaction. Returns the job's (status, reason): Failed with the reason when no
    data could be made."""
    if job.kind != KIND or status != JobStatus.COMPLETED:
        return status, reason
    entry = session.get(PreprocessingRun, job.id)
    if entry is None:
        return status, reason
    files = JobFiles(settings.instance_path, job.id)
    folders = _output_folders(files.output)
    store = BlobStore(settings.instance_path)
    limit = settings.max_upload_bytes
    stored: dict[str, list[tuple[str, str, int]]] = {}
    try:  # every file into the blob store first (streamed in chunks): a failure leaves no row behind
        _check_outputs(folders)
        for name, members in folders.items():
            stored[name] = []
            for relative, path in members:
                with path.open("rb") as fh:
                    stored[name].append((relative, *store.put_file(fh, limit)))
    except (OSError, ServiceError) as exc:
        store.discard_unreferenced(session, [sha for made in stored.values() for _, sha, _ in made])
        message = exc.message if isinstance(exc, ServiceError) else f"{type(exc).__name__}: {exc}"
        return JobStatus.FAILED, f"no data made: {message}"[:2000]
    definition = entry.preprocessing.name
    for name, made_files in stored.items():
        made = Data(tenant_id=job.tenant_id, user_id=job.user_id, name=name, tags=f",{definition},",
                    memo=f"made by preprocessing {definition} (run {job.id}) from data {entry.data_id}",
                    files=[DataFile(name=relative, sha256=sha, size=size) for relative, sha, size in made_files])
        session.add(made)
        session.flush()
        session.add(PreprocessingOutput(data_id=made.id, run_id=job.id))
    session.flush()
    for name in folders:  # the files now live in the blob store, named by the new data
        shutil.rmtree(files.output / name, ignore_errors=True)
    return status, reason


# -- reading

def _iso(moment) -> str | None:
    return moment.isoformat(timespec="seconds") + "Z" if moment else None


def git_dict(d: Preprocessing) -> dict[str, Any] | None:
    if not d.git_commit:
        return None
    return {"repository": d.git_repository, "branch": d.git_branch or None, "commit": d.git_commit}


def as_dict(d: Preprocessing, runs: int) -> dict[str, Any]:
    return {
        "id": d.id, "name": d.name, "image": d.image or None, "command": d.command or None, "git": git_dict(d),
        **limits_as_api(d.default_resources),
        "partition": d.partition or None, "memo": d.memo, "user": d.user.username, "runs": runs,
        "locked": runs > 0, "runnable": bool(d.image and d.command),
        "created_at": _iso(d.created_at), "last_run_at": _iso(d.last_run_at),
    }


def _ref(d: Data) -> dict[str, Any]:
    return {"id": d.id, "name": d.name}


def run_dict(entry: PreprocessingRun) -> dict[str, Any]:
    job = entry.job
    return {
        "id": job.id, "preprocessing": {"id": entry.preprocessing_id, "name": entry.preprocessing.name},
        "data": _ref(entry.data), "status": job.status.value, "reason": job.reason or None, "exit_code": job.exit_code,
        "node": job.node.name if job.node else None, "queue_position": job.queue_position,
        **job.resources.as_api(),
        "outputs": [_ref(out.data) for out in entry.outputs], "user": job.user.username,
        "created_at": _iso(job.created_at), "started_at": _iso(job.started_at), "completed_at": _iso(job.completed_at),
    }


def data_lineage(session: Session, record: Data) -> dict[str, Any]:
    """Where a data item came from (the run and its input) and which runs took it as input."""
    made = session.get(PreprocessingOutput, record.id)
    produced_by = None
    if made is not None:
        produced_by = {"preprocessing": {"id": made.run.preprocessing_id, "name": made.run.preprocessing.name},
                       "run_id": made.run_id, "input": _ref(made.run.data)}
    runs = session.scalars(select(PreprocessingRun).where(PreprocessingRun.data_id == record.id,
                                                          PreprocessingRun.tenant_id == record.tenant_id)
                           .order_by(PreprocessingRun.job_id))
    return {"produced_by": produced_by,
            "preprocessed_by": [{"preprocessing": {"id": e.preprocessing_id, "name": e.preprocessing.name},
                                 "run_id": e.job_id, "status": e.job.status.value,
                                 "outputs": [_ref(out.data) for out in e.outputs]} for e in runs]}


class PreprocessingKind(JobKind):
    name, noun = KIND, "preprocessing runs"

    def on_collected(self, session, settings, job, status, reason):
        return on_collected(session, settings, job, status, reason)


JOB_KIND = register(PreprocessingKind())
