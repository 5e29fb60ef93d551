"""Carries jobs out on their nodes: start containers, watch them, collect what they leave.

Only the scheduler loop calls start/watch (one writer per job); the views call the readers at
the end. A job has one part per node it runs on (a gang job several, rank 0 the master), and
each part is one container labelled with the site, the job and the rank.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, object_session

from kqi.admin import site_settings
from kqi.backends import registry as backends
from kqi.backends.base import (
    LABEL_JOB,
    LABEL_KIND,
    LABEL_RANK,
    LABEL_SITE,
    ContainerSpec,
    ContainerState,
    NodeDriver,
    NodeError,
)
from kqi.config import Settings
from kqi.crypto import SecretBox
from kqi.errors import ServiceError
from kqi.jobs import history as runs
from kqi.jobs import lifecycle as jobs
from kqi.jobs import sources as job_sources
from kqi.jobs.files import (
    JobFiles,
    OutputFile,
    SizeLimit,
    StoredOutput,
    Streamed,
    keep_end,
    kqi_folders_archive,
    list_archive,
    open_from_archive,
    reader,
)
from kqi.jobs.kinds import kind_of
from kqi.models import Job, JobPart, JobStatus, Node, utcnow

log = logging.getLogger(__name__)
OUTPUT_DIR = "/kqi/output"
OUTPUT_PREFIX = "output"  # how the engine names /kqi/output's members in an archive of it
GANG_PORT_BASE, GANG_PORT_SPAN = 20000, 20000  # MASTER_PORT = base + job id mod span
LOG_VIEW_BYTES = 2 << 20  # the most of a log's end a page shows
LOG_VIEW_LINES = 20_000  # the lines of a page's "whole log" (the download has all of it)


@dataclass(frozen=True)
class RunContext:
    """What the runner needs from the app: its settings (where files go, which site it is), the box
    that unseals git and registry credentials, and how to reach nodes."""

    settings: Settings
    box: SecretBox
    driver: Callable[[Node], NodeDriver]

    @property
    def instance(self) -> Path:
        return self.settings.instance_path

    @property
    def site(self) -> str:
        return self.settings.site_id

    @property
    def stop_grace_s(self) -> int:
        return self.settings.stop_grace_s

    @property
    def node_cache_gb(self) -> float:
        """The site's budget of each node's cached read-only inputs (kqi/jobs/node_cache.py)."""
        return self.settings.node_cache_gb


def container_name(job: Job, rank: int, site: str) -> str:
    gang = f"-{rank}" if job.nodes > 1 else ""
    return f"{job.kind}-{job.name}-{job.id}{gang}-{site}"


def gpu_env(indices: list[int]) -> dict[str, str]:
    listed = ",".join(str(i) for i in indices)
    return {"NVIDIA_VISIBLE_DEVICES": listed or "none", "KQI_GPU_INDICES": listed}


def gang_env(job: Job, rank: int) -> dict[str, str]:
    """What torchrun needs to join the parts of a gang job."""
    if job.nodes == 1:
        return {}
    master = job.parts[0].node
    return {"MASTER_ADDR": master.address or "127.0.0.1", "MASTER_PORT": str(GANG_PORT_BASE + job.id % GANG_PORT_SPAN),
            "WORLD_SIZE": str(job.nodes), "NODE_RANK": str(rank)}


def container_env(job: Job, part: JobPart, settings: Settings) -> dict[str, str]:
    env = dict(job.env or {})
    env.update(site_settings.proxy_env(object_session(job)))
    env.update(gpu_env(list(part.gpu_indices or [])))
    env.update(gang_env(job, part.rank))
    env.update({"TRAINING_ID": str(job.id), "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"})
    env.update(job_sources.contract_env(object_session(job), settings, job))
    return env


def spec_for(job: Job, part: JobPart, ctx: RunContext,
             shipment: job_sources.Shipment | None = None) -> ContainerSpec:
    """The container of one part; `shipment` (job_sources.prepare) adds git, inputs, parents,
    attachments, and puts the read-only ones on the part's node first."""
    session = object_session(job)
    cached = shipment.place(session, part.node, ctx.driver(part.node), ctx.site, ctx.node_cache_gb) if shipment else ()
    return ContainerSpec(
        name=container_name(job, part.rank, ctx.site),
        image=job.image,
        command=job.command,
        env=container_env(job, part, ctx.settings),
        labels={LABEL_SITE: ctx.site, LABEL_JOB: str(job.id), LABEL_RANK: str(part.rank), LABEL_KIND: job.kind},
        resources=job.resources,
        gpu_indices=tuple(part.gpu_indices or ()),
        nvidia_runtime=part.node.nvidia_runtime,
        host_network=job.nodes > 1,
        archives=(kqi_folders_archive(c.path for c in cached), *(shipment.archives if shipment else ())),
        cached=cached,
        registry_auth=job_sources.registry_auth(session, ctx.box, job),
        pull=job_sources.pull_requested(job),
        progress=job_sources.PullProgress(ctx.instance, job.id),
    )


def _discard(ctx: RunContext, job: Job) -> None:
    """Remove whatever containers a job that will not run has on its nodes (best effort)."""
    for part in job.parts:
        if part.container_id:
            try:
                ctx.driver(part.node).remove(part.container_id)
            except NodeError:
                pass  # the watch loop removes leftovers of ended jobs once the node answers


def start(session: Session, ctx: RunContext, job: Job) -> None:
    """Start every part of a job the planner placed (status Starting). Safe to repeat after a
    crash: the driver adopts a started container of the same name and replaces an unstarted one."""
    if job.halt_requested:
        _discard(ctx, job)
        jobs.transition(session, job.id, JobStatus.STARTING, JobStatus.USER_CANCELED, reason="halted by user")
        session.commit()
        return
    shipment = None
    try:
        kind = kind_of(job.kind)
        shipment = job_sources.prepare(session, ctx.settings, ctx.box, job, writable_git=kind.writable_git)
        kind.ship(session, ctx.instance, job, shipment)
        specs = [kind.adapt(session, ctx.box, job, spec_for(job, part, ctx, shipment)) for part in job.parts]
        for part, spec in zip(job.parts, specs):  # every part's backend can run it, before any starts
            backends.refuse_unsupported(part.node.url, spec)
        for part, spec in zip(job.parts, specs):
            part.container_id = ctx.driver(part.node).start(spec)
        kind.on_started(session, ctx.driver(job.parts[0].node), job)
        master = job.parts[0]
        job_sources.record_provenance(session, job, specs[0].env, ctx.driver(master.node).image_identity(job.image))
    except (NodeError, ServiceError) as exc:
        log.warning("job %s could not start: %s", job.id, exc)
        _discard(ctx, job)
        session.rollback()
        jobs.transition(session, job.id, JobStatus.STARTING, JobStatus.ERROR, reason=str(exc)[:2000])
        session.commit()
        return
    finally:
        if shipment is not None:
            shipment.discard()
        job_sources.PullProgress(ctx.instance, job.id).clear()
    session.flush()
    jobs.transition(session, job.id, JobStatus.STARTING, JobStatus.RUNNING)
    session.commit()


def jobs_starting(session: Session) -> list[Job]:
    return list(session.scalars(select(Job).where(Job.status == JobStatus.STARTING).order_by(Job.id)))


def _past_time_limit(job: Job) -> bool:
    return bool(job.time_limit_s and job.started_at and utcnow() - job.started_at > timedelta(seconds=job.time_limit_s))


def _outcome(states: list[ContainerState]) -> tuple[JobStatus, str, int | None] | None:
    """How a job whose parts are in `states` (rank order) ends, or None while it runs on."""
    for state in states:
        if not state.running and state.oom_killed:
            return JobStatus.KILLED, "OOMKilled", state.exit_code
    failed = [s for s in states if not s.running and s.exit_code != 0]
    if failed:
        first = failed[0]
        if first.error:
            return JobStatus.ERROR, first.error, first.exit_code
        where = f"rank {first.rank} " if len(states) > 1 else ""
        return JobStatus.FAILED, f"{where}exit code {first.exit_code}", first.exit_code
    if all(not s.running for s in states):
        return JobStatus.COMPLETED, "", states[0].exit_code
    return None


class _NodeStates:
    """The heartbeat's listing of this site's containers on each node that answered, for one watch
    pass. A container counts for a job's part only on the node that part is placed on; any other
    (a job that ended or was requeued while its node was away, a crash between collect and remove)
    is a leftover."""

    def __init__(self, session: Session, ctx: RunContext, listings: dict[int, list[ContainerState]]):
        self.ctx = ctx
        self.reachable: set[int] = set(listings)
        self.by_part: dict[tuple[int, int], ContainerState] = {}
        self.leftovers: list[tuple[int, ContainerState]] = []
        rows = session.execute(select(JobPart.job_id, JobPart.rank, JobPart.node_id)
                               .join(Job, Job.id == JobPart.job_id).where(Job.status.in_(jobs.ACTIVE)))
        placed = {(job_id, rank): node_id for job_id, rank, node_id in rows}
        for node_id, found in listings.items():
            for state in found:
                key = (state.job_id, state.rank)
                if placed.get(key) == node_id:
                    self.by_part[key] = state
                else:
                    self.leftovers.append((node_id, state))

    def refresh(self, job: Job) -> list[ContainerState | None]:
        for node in {part.node for part in job.parts}:
            for state in self.ctx.driver(node).containers(self.ctx.site):
                if state.job_id == job.id:
                    self.by_part[(job.id, state.rank)] = state
        return self.of(job)

    def of(self, job: Job) -> list[ContainerState | None]:
        return [self.by_part.get((job.id, part.rank)) for part in job.parts]


def _collect(ctx: RunContext, job: Job, states: list[ContainerState], max_log: SizeLimit,
             max_output: SizeLimit) -> tuple[StoredOutput, list[str]]:
    """Keep the logs (every rank, each cut at `max_log`) and rank 0's /kqi/output (up to
    `max_output`), streamed to disk; return what the output left out and what the job's reason
    must add (empty: nothing). The containers stay until the job's end is committed."""
    files = JobFiles(ctx.instance, job.id)
    stored, log_cut = StoredOutput(), False
    for part, state in zip(job.parts, states):
        driver = ctx.driver(part.node)
        log_cut |= files.write_log(driver.logs(state.container_id), rank=part.rank, limit=max_log) > 0
        if part.rank == 0:
            stored = files.store_output(driver.archive(state.container_id, OUTPUT_DIR), OUTPUT_PREFIX, max_output)
            if stored.unsafe.count:
                log.warning("job %s: refused %d output entries: %s", job.id, stored.unsafe.count, stored.unsafe.names[:5])
    return stored, [f"log cut at {max_log}" if log_cut else "", stored.cut_note()]


def _finish(session: Session, ctx: RunContext, nodes: _NodeStates, job: Job, states: list[ContainerState],
            decided: tuple[JobStatus, str, int | None] | None) -> bool:
    """Stop what still runs, collect, end the job. False when a node failed midway (retried)."""
    limits = site_settings.current(session)
    try:
        if any(s.running for s in states):
            for part, state in zip(job.parts, states):
                if state.running:
                    ctx.driver(part.node).stop(state.container_id, ctx.stop_grace_s)
            states = nodes.refresh(job)
        status, reason, exit_code = decided or _outcome(states) or (JobStatus.KILLED, "stopped", None)
        stored, notes = _collect(ctx, job, states, SizeLimit(limits["max_log_gb"]), SizeLimit(limits["max_output_gb"]))
    except NodeError as exc:
        log.warning("finishing job %s failed, will retry: %s", job.id, exc)
        return False
    job_sources.record_refused_outputs(session, job, stored)
    status, reason = kind_of(job.kind).on_collected(session, ctx.settings, job, status, reason)
    reason = "; ".join(part for part in (reason, *notes) if part)
    jobs.transition(session, job.id, JobStatus.RUNNING, status, exit_code=exit_code, reason=reason,
                    value=runs.read_value(ctx.instance, job.id))  # /kqi/output/value.txt, as collected
    session.commit()
    # Removed only now: a server killed before the commit finds the containers again and ends the
    # job in its true state; one killed after it leaves them as leftovers, removed on a later pass.
    for part, state in zip(job.parts, states):
        try:
            ctx.driver(part.node).remove(state.container_id)
        except NodeError:
            pass
    return True


def _watch_job(session: Session, ctx: RunContext, nodes: _NodeStates, job: Job) -> bool:
    states = nodes.of(job)
    if any(state is None for state in states):
        _discard(ctx, job)
        jobs.transition(session, job.id, JobStatus.RUNNING, JobStatus.ERROR, reason="container disappeared from the node")
        session.commit()
        return True
    if job.halt_requested:
        ended = _outcome(states)
        # kqi's own halt (a notebook's lifetime, an idle TensorBoard) carries its reason; a user's does not
        status, reason = (JobStatus.KILLED, job.halt_reason) if job.halt_reason else (JobStatus.USER_CANCELED, "halted by user")
        decided = (status, reason, ended[2] if ended else None)
        return _finish(session, ctx, nodes, job, states, decided)
    outcome = _outcome(states)
    if outcome is not None:
        return _finish(session, ctx, nodes, job, states, outcome)
    if _past_time_limit(job):
        return _finish(session, ctx, nodes, job, states, (JobStatus.KILLED, "time limit", None))
    return False


def watch(session: Session, ctx: RunContext, listings: dict[int, list[ContainerState]],
          until: float | None = None) -> int | None:
    """Bring every running job up to date with its containers (as the heartbeat listed them, per
    node id that answered); remove leftovers; return how many jobs ended, or None when time ran out
    (`until`, monotonic) first. Jobs on a node that did not answer are left alone
    (kqi/cluster/health.py ends them once the node is lost)."""
    nodes = _NodeStates(session, ctx, listings)
    running = [job for job in jobs.active(session) if job.status == JobStatus.RUNNING]
    ended = 0
    for job in running:
        if until is not None and time.monotonic() > until:
            return None
        if all(part.node_id in nodes.reachable for part in job.parts):
            ended += _watch_job(session, ctx, nodes, job)
    for node_id, state in nodes.leftovers:
        try:
            ctx.driver(session.get(Node, node_id)).remove(state.container_id)
        except NodeError:
            pass  # tried again on the next pass
    return ended


def discard_parts(ctx: RunContext, job: Job, skip_nodes: set[int]) -> None:
    """Remove a job's containers except on `skip_nodes` (nodes that do not answer), best effort."""
    for part in job.parts:
        if part.container_id and part.node_id not in skip_nodes:
            try:
                ctx.driver(part.node).remove(part.container_id)
            except NodeError:
                pass  # removed as a leftover once the node answers


# Reading a job's log and outputs: live from its node while it runs, from storage after.

def _master(job: Job) -> JobPart | None:
    if job.status == JobStatus.RUNNING and job.parts and job.parts[0].container_id:
        return job.parts[0]
    return None


def read_log(ctx: RunContext, job: Job, tail: int) -> bytes:
    """The log's last `tail` lines, at most LOG_VIEW_BYTES of them (a page shows them): asked of
    the engine with its own tail while the job runs, read from the end of the stored file after."""
    master = _master(job)
    if master is not None:
        try:
            pieces = ctx.driver(master.node).logs(master.container_id, tail=tail)
            with closing(pieces):
                return keep_end(pieces, tail, LOG_VIEW_BYTES)
        except NodeError:
            pass  # ended meanwhile: the stored log is being written
    return JobFiles(ctx.instance, job.id).log_end(tail, LOG_VIEW_BYTES)


def stream_log(ctx: RunContext, job: Job) -> Streamed | Path | None:
    """The whole log to send: the engine's, read as it is sent, while the job runs; the stored file
    after (None when there is none yet)."""
    master = _master(job)
    if master is not None:
        try:
            return Streamed(reader(ctx.driver(master.node).logs(master.container_id)))
        except NodeError:
            pass
    path = JobFiles(ctx.instance, job.id).log
    return path if path.is_file() else None


def output_files(ctx: RunContext, job: Job) -> list[OutputFile]:
    master = _master(job)
    if master is not None:
        try:
            return list_archive(ctx.driver(master.node).archive(master.container_id, OUTPUT_DIR), OUTPUT_PREFIX)
        except NodeError:
            pass
    return JobFiles(ctx.instance, job.id).list_output()


def output_file(ctx: RunContext, job: Job, path: str) -> Streamed | Path | None:
    """The file read out of the engine's archive as it is sent while the job runs; its stored path
    after; None when there is no such file."""
    master = _master(job)
    if master is not None:
        try:
            return open_from_archive(ctx.driver(master.node).archive(master.container_id, OUTPUT_DIR), OUTPUT_PREFIX, path)
        except NodeError:
            pass
    return JobFiles(ctx.instance, job.id).output_path(path)
