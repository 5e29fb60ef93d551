"""What a job runs on, pinned at submit and shipped at start: its dataset, its code from git, its
parents' outputs and its attachments; and what it actually ran with (provenance) and where it
sits in the lineage of runs.

In the container: /kqi/git (the repository at the pinned commit; read-only, but for kinds with
`writable_git`: notebooks), /kqi/input/{area}/{data id}/{file} (read-only), /kqi/parent (one
parent) or /kqi/parent/{id} (several; read-only), /kqi/attach. The read-only ones are kept on each
node by content and shared by its jobs (kqi/jobs/node_cache.py); the rest is unpacked into each
container.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from kqi.accounts.auth import Principal
from kqi.backends.base import Archive, CachedInput, NodeDriver
from kqi.config import Settings
from kqi.crypto import SecretBox
from kqi.data import datasets, gitsource, registries
from kqi.data.blobs import BlobStore
from kqi.data.items import file_name
from kqi.errors import Conflict, ServiceError
from kqi.jobs import node_cache
from kqi.jobs.files import OUTPUT_NAME_RULE, JobFiles, StoredOutput
from kqi.models import Job, Node
from kqi.models.data import Dataset, JobAttachment, JobParent, JobSource

SUBMIT_FIELDS = ("dataset_id", "git", "parent_ids", "pull")
MAX_PARENTS = 16
INPUT_DIR, PARENT_DIR, GIT_DIR = "/kqi/input", "/kqi/parent", "/kqi/git"
INPUT_LAYOUT = "kqi-input-1"  # see input_hash
SECRET_NAME = re.compile(r"(?i)(pass|secret|token|key|credential|auth)")


def _parent_ids(value: Any) -> list[int]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in value):
        raise ServiceError("parent_ids must be a list of job ids", field="parent_ids")
    ids = list(dict.fromkeys(value))
    if len(ids) > MAX_PARENTS:
        raise ServiceError(f"at most {MAX_PARENTS} parents", field="parent_ids")
    return ids


def attach(session: Session, settings: Settings, box: SecretBox, principal: Principal, job: Job,
           body: dict[str, Any]) -> JobSource:
    """Pin a new job's sources (cheap checks first, the git fetch last); raise before anything is kept."""
    source = JobSource(job_id=job.id, provenance={})
    pull = body.get("pull", False)
    if not isinstance(pull, bool):
        raise ServiceError("pull must be true or false", field="pull")
    source.pull = pull
    links = []
    for position, parent_id in enumerate(_parent_ids(body.get("parent_ids"))):
        parent = session.scalar(select(Job).where(Job.id == parent_id, Job.tenant_id == principal.tenant.id))
        if parent is None or parent.id == job.id:
            raise ServiceError(f"parent job {parent_id} not found", field="parent_ids")
        if not parent.status.finished:
            raise ServiceError(f"parent job {parent_id} has not ended yet ({parent.status.value})", field="parent_ids")
        links.append(JobParent(job_id=job.id, parent_id=parent.id, position=position))
    session.add_all(links)
    if body.get("dataset_id") is not None:
        dataset = datasets.lock_for_job(session, principal, body["dataset_id"])
        source.dataset_id, source.dataset_hash = dataset.id, dataset.content_hash
    if body.get("git") is not None:
        pinned = gitsource.resolve(session, settings, box, principal, body["git"])
        source.git_repository, source.git_branch, source.git_commit = pinned["repository"], pinned["branch"], pinned["commit"]
    session.add(source)
    session.flush()
    # the new job's JSON then reads its sources and parents without a query
    set_committed_value(job, "source", source)
    set_committed_value(job, "parent_links", links)
    return source


def details(session: Session, job: Job) -> dict[str, Any]:
    """For the run page: sources, provenance, lineage and attachments."""
    return {**as_dict(job), "lineage": lineage(session, job), "attachments": attachments(session, job)}


def parent_ids(session: Session, job: Job) -> list[int]:
    return list(session.scalars(select(JobParent.parent_id).where(JobParent.job_id == job.id).order_by(JobParent.position)))


def child_ids(session: Session, job: Job) -> list[int]:
    return list(session.scalars(select(JobParent.job_id).where(JobParent.parent_id == job.id).order_by(JobParent.job_id)))


def refuse_if_parent(session: Session, job: Job) -> None:
    """A run other runs were built on stays, so their lineage and provenance keep meaning."""
    children = child_ids(session, job)
    if children:
        raise Conflict(f"job {job.id} is the parent of job {children[0]}: it is kept for their lineage")


def contract_env(session: Session, settings: Settings, job: Job) -> dict[str, str]:
    """The reserved variables kqi sets from a job's sources (users cannot override them)."""
    env = {"COLUMNS": str(settings.job_columns)}
    source = job.source
    if source is not None:
        if source.dataset_id:
            env["DATASET_ID"] = str(source.dataset_id)
        if source.git_commit:
            env["MODEL_REPOSITORY"], env["COMMIT_ID"] = source.git_repository, source.git_commit
    parents = parent_ids(session, job)
    if parents:
        env["PARENT_ID"] = ",".join(map(str, parents))
    return env


# -- shipping at start

@dataclass
class Shipment:
    """What one start of a job ships: tars unpacked into its containers (`archives`; per-job ones
    live in `scratch`, removed once every part started) and read-only inputs kept on the nodes by
    content (`inputs`, kqi/jobs/node_cache.py), pinned there (`pins`) until the containers exist."""

    scratch: Path
    archives: list[Archive] = field(default_factory=list)
    inputs: list[node_cache.ReadOnlyInput] = field(default_factory=list)
    pins: node_cache.Pins = field(default_factory=node_cache.Pins)

    def place(self, session: Session, node: Node, driver: NodeDriver, site: str,
              budget_gb: float) -> tuple[CachedInput, ...]:
        """The read-only inputs on `node` (shipped now where it lacks them), as mounts for its container."""
        return node_cache.place(session, node, driver, self.inputs, scratch=self.scratch, pins=self.pins, site=site,
                                budget_gb=budget_gb)

    def discard(self) -> None:
        self.pins.release()
        shutil.rmtree(self.scratch, ignore_errors=True)


def input_hash(kind: str, *identity: str) -> str:
    """The content hash of a read-only input, from what determines its tar byte for byte. The
    version changes whenever a tar's layout does, so no node keeps mounting the old layout."""
    return hashlib.sha256("\0".join((INPUT_LAYOUT, kind, *identity)).encode()).hexdigest()


def _cached_input(instance: Path, dataset: Dataset, store: BlobStore) -> Path:
    """The dataset's /kqi/input tar, built once per content hash (a locked dataset never changes)."""
    cache = instance / "cache" / "inputs"
    target = cache / f"{dataset.content_hash}.tar"
    if not target.exists():
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=cache, suffix=".partial", delete=False) as partial:
            pass
        try:
            datasets.write_input_tar(dataset, store, Path(partial.name))
            Path(partial.name).replace(target)
        finally:
            Path(partial.name).unlink(missing_ok=True)
    return target


def output_digest(instance: Path, job_id: int) -> str:
    """SHA-256 over a job's stored output files (each one's path and SHA-256), remembered beside
    them for as long as they stay as they are (the same paths, sizes and modification times)."""
    files = JobFiles(instance, job_id)
    listing = files.list_output()
    stamp = hashlib.sha256()
    for f in listing:
        st = (files.output / f.path).stat()
        stamp.update(f"{f.path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    memo = files.root / "output-digest.json"
    try:
        remembered = json.loads(memo.read_text())
        if remembered["stamp"] == stamp.hexdigest():
            return remembered["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    digest = hashlib.sha256()
    for f in listing:
        with (files.output / f.path).open("rb") as fh:
            digest.update(f"{f.path}\0{hashlib.file_digest(fh, 'sha256').hexdigest()}\n".encode())
    if files.root.is_dir():
        partial = memo.with_suffix(".partial")
        partial.write_text(json.dumps({"stamp": stamp.hexdigest(), "sha256": digest.hexdigest()}))
        partial.replace(memo)
    return digest.hexdigest()


def outputs_input(instance: Path, path: str, job_ids: list[int]) -> node_cache.ReadOnlyInput:
    """Jobs' stored outputs, read-only at `path`: at the top for one job, under <id>/ for several."""
    if len(job_ids) == 1:
        content = input_hash("output", output_digest(instance, job_ids[0]))
    else:
        content = input_hash("outputs", *(f"{i}={output_digest(instance, i)}" for i in job_ids))

    def build(scratch: Path) -> Path:
        _outputs_tar(instance, job_ids, scratch / f"{content}.tar")
        return scratch / f"{content}.tar"
    return node_cache.ReadOnlyInput(path, content, build)


def _outputs_tar(instance: Path, job_ids: list[int], target: Path) -> None:
    with tarfile.open(target, "w") as archive:
        for job_id in job_ids:
            files = JobFiles(instance, job_id)
            prefix = "" if len(job_ids) == 1 else f"{job_id}/"
            if len(job_ids) > 1:
                folder = tarfile.TarInfo(str(job_id))
                folder.type, folder.mode = tarfile.DIRTYPE, 0o555
                archive.addfile(folder)
            files.add_output_to(archive, prefix)


def attachments_tar(store: BlobStore, rows: list[JobAttachment], target: Path, prefix: str = "kqi/attach/") -> None:
    with tarfile.open(target, "w") as archive:
        for row in rows:
            path = store.path(row.sha256)
            info = archive.gettarinfo(str(path), arcname=prefix + row.name)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = 0o644
            with path.open("rb") as fh:
                archive.addfile(info, fh)


def _inputs(session: Session, settings: Settings, box: SecretBox, job: Job, store: BlobStore,
            writable_git: bool) -> list[node_cache.ReadOnlyInput]:
    """The job's read-only inputs, each named by its content before anything is built."""
    instance, source, found = settings.instance_path, job.source, []
    if source is not None and source.git_commit and not writable_git:
        url, commit = source.git_repository, source.git_commit
        found.append(node_cache.ReadOnlyInput(GIT_DIR, input_hash("git", url, commit), lambda _scratch: gitsource.tree_tar(
            session, settings, box, job.user_id, url, commit, prefix="")))
    if source is not None and source.dataset is not None:
        dataset = source.dataset
        found.append(node_cache.ReadOnlyInput(INPUT_DIR, input_hash("dataset", dataset.content_hash),
                                              lambda _scratch: _cached_input(instance, dataset, store)))
    elif source is not None and source.data is not None:  # one data item: /kqi/input/{id}/{file}
        placed = [(datasets.FLAT, source.data)]
        content = input_hash("data", datasets.placed_hash(placed))

        def data_tar(scratch: Path) -> Path:
            datasets.write_data_tar(placed, store, scratch / f"{content}.tar")
            return scratch / f"{content}.tar"
        found.append(node_cache.ReadOnlyInput(INPUT_DIR, content, data_tar))
    parents = parent_ids(session, job)
    if parents:
        found.append(outputs_input(instance, PARENT_DIR, parents))
    return found


def prepare(session: Session, settings: Settings, box: SecretBox, job: Job, writable_git: bool = False) -> Shipment:
    """Everything the job's containers get before they start (`writable_git`: its kind's
    JobKind.writable_git). Raises ServiceError when a source can no longer be read (the job then
    ends in Error with that reason), now or when a node lacks it (Shipment.place)."""
    instance = settings.instance_path
    store = BlobStore(instance)
    scratch = JobFiles(instance, job.id).root / "shipping"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    shipment = Shipment(scratch, inputs=_inputs(session, settings, box, job, store, writable_git))
    source = job.source
    if source is not None and source.git_commit and writable_git:
        shipment.archives.append(gitsource.tree_tar(session, settings, box, job.user_id, source.git_repository,
                                                    source.git_commit))
    rows = list(session.scalars(select(JobAttachment).where(JobAttachment.job_id == job.id).order_by(JobAttachment.id)))
    if rows:
        attachments_tar(store, rows, scratch / "attach.tar")
        shipment.archives.append(scratch / "attach.tar")
    return shipment


class PullProgress:
    """The image pull's progress line while a job is Starting (a file: the pull runs outside any
    transaction, and the job page reads it from another thread)."""

    def __init__(self, instance: Path, job_id: int):
        self.path = JobFiles(instance, job_id).root / "pull-progress.txt"

    def __call__(self, text: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".partial")
        partial.write_text(text[:500])
        partial.replace(self.path)

    def read(self) -> str:
        try:
            return self.path.read_text()
        except FileNotFoundError:
            return ""

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def registry_auth(session: Session, box: SecretBox, job: Job) -> dict[str, str] | None:
    return registries.auth_config(session, box, job.user_id, job.image)


def pull_requested(job: Job) -> bool:
    return bool(job.source and job.source.pull)


# -- provenance and lineage

def masked_env(env: dict[str, str]) -> dict[str, str]:
    return {k: ("****" if SECRET_NAME.search(k) else v) for k, v in env.items()}


def record_provenance(session: Session, job: Job, env: dict[str, str], image: dict[str, object]) -> None:
    """What the job actually ran with, written once when it starts."""
    source = job.source
    if source is None:
        source = JobSource(job_id=job.id, provenance={})
        session.add(source)
    source.provenance = {
        "image": {"reference": job.image, **image},
        "git": {"repository": source.git_repository, "branch": source.git_branch or None,
                "commit": source.git_commit} if source.git_commit else None,
        "dataset": {"id": source.dataset_id, "content_hash": source.dataset_hash} if source.dataset_id else None,
        "data": {"id": source.data_id, "files": [{"name": f.name, "sha256": f.sha256} for f in source.data.files]}
        if source.data is not None else None,
        "parents": parent_ids(session, job),
        "resources": {**job.resources.as_api(), "nodes": job.nodes},
        "placement": [{"rank": p.rank, "node": p.node.name, "gpu_indices": list(p.gpu_indices or [])} for p in job.parts],
        "environment": masked_env(env),
    }


def record_refused_outputs(session: Session, job: Job, stored: StoredOutput) -> None:
    """The output entries collection left out, in the job's provenance: `refused_outputs` (names or
    types not allowed) and `outputs_over_limit` (files past the site's max_output_gb)."""
    found = {}
    if stored.unsafe.count:
        found["refused_outputs"] = {
            "message": f"{stored.unsafe.count} output entries were not kept: names may only use {OUTPUT_NAME_RULE}, "
                       "and only files and folders inside /kqi/output are taken",
            "names": stored.unsafe.names}
    if stored.over_limit.count:
        found["outputs_over_limit"] = {
            "message": f"{stored.over_limit.count} output files ({stored.over_limit.size} bytes) were not kept: "
                       f"a job keeps at most {stored.limit} of output (max_output_gb)",
            "names": stored.over_limit.names}
    if not found:
        return
    source = job.source or JobSource(job_id=job.id, provenance={})
    session.add(source)
    source.provenance = {**(source.provenance or {}), **found}


def as_dict(job: Job, parent_ids: list[int] | None = None) -> dict[str, Any]:
    """The job's sources; `parent_ids` as jobs.as_dict read them (None: from the job)."""
    source = job.source
    git = None
    if source is not None and source.git_commit:
        git = {"repository": source.git_repository, "branch": source.git_branch or None, "commit": source.git_commit}
    return {
        "dataset_id": source.dataset_id if source else None,
        "dataset_hash": (source.dataset_hash or None) if source else None,
        "git": git,
        "parent_ids": [link.parent_id for link in job.parent_links] if parent_ids is None else parent_ids,
        "pull": bool(source and source.pull),
        "provenance": (source.provenance or None) if source else None,
    }


def lineage(session: Session, job: Job) -> dict[str, Any]:
    """Upstream (dataset, parents, their parents...) and downstream (children, theirs...) of a run,
    within its tenant: nodes and edges for the run page."""
    nodes: dict[str, dict[str, Any]] = {}
    edges: set[tuple[str, str]] = set()

    def job_node(j: Job) -> str:
        key = f"job:{j.id}"
        nodes[key] = {"key": key, "type": j.kind, "id": j.id, "label": j.name, "status": j.status.value}
        if j.source is not None and j.source.dataset_id:
            ds_key = f"dataset:{j.source.dataset_id}"
            nodes[ds_key] = {"key": ds_key, "type": "dataset", "id": j.source.dataset_id,
                             "label": j.source.dataset.name if j.source.dataset else str(j.source.dataset_id)}
            edges.add((ds_key, key))
        return key

    def walk(start: Job, step, forward: bool) -> None:
        frontier, seen = [start], {start.id}
        while frontier:
            current = frontier.pop()
            for other_id in step(session, current):
                other = session.scalar(select(Job).where(Job.id == other_id, Job.tenant_id == job.tenant_id))
                if other is None:
                    continue
                a, b = job_node(current), job_node(other)
                edges.add((a, b) if forward else (b, a))
                if other.id not in seen and len(seen) < 200:
                    seen.add(other.id)
                    frontier.append(other)

    job_node(job)
    walk(job, parent_ids, forward=False)
    walk(job, child_ids, forward=True)
    return {"nodes": list(nodes.values()), "edges": [{"from": a, "to": b} for a, b in sorted(edges)]}


def attachments(session: Session, job: Job) -> list[JobAttachment]:
    return list(session.scalars(select(JobAttachment).where(JobAttachment.job_id == job.id).order_by(JobAttachment.id)))


def add_attachment(session: Session, job: Job, name: str, sha: str, size: int) -> JobAttachment:
    """Attach a file to a job that has not ended; the caller ships it to a running container."""
    name = file_name(name)
    if job.status.finished:
        raise Conflict(f"job {job.id} has ended ({job.status.value}): nothing can be attached any more")
    if session.scalar(select(JobAttachment.id).where(JobAttachment.job_id == job.id, JobAttachment.name == name)):
        raise Conflict(f"job {job.id} already has an attachment named {name!r}", field="name")
    row = JobAttachment(job_id=job.id, name=name, sha256=sha, size=size)
    session.add(row)
    session.flush()
    return row


def ship_attachment(store: BlobStore, row: JobAttachment, driver, container_id: str, scratch: Path) -> None:
    """Put one attachment into a running container's /kqi/attach (from a tar on disk, streamed)."""
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=scratch, suffix=".tar") as tmp:
        attachments_tar(store, [row], Path(tmp.name), prefix="")
        driver.upload(container_id, "/kqi/attach", Path(tmp.name))
