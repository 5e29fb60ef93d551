"""Carries jobs out on their nodes: start containers, watch them, collect what they leave.

The scheduler loop calls watch (database only) and hands each job's next step (start, finish,
remove) to the executors of its node (kqi/scheduler/executors.py), one step per job at a time;
each step re-reads the job in its own session and changes its status by compare-and-set, and
whatever goes wrong in it is that job's. The views call the readers at the end. A job has one
part per node it runs on (a gang job several, rank 0 the master), and each part is one container
labelled with the site, the job and the rank.
"""
from __future__ import annotations

import errno
import logging
import tarfile
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, object_session, selectinload

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
# A node operation (starting a job, ending it) that fails for the node's sake is tried again after
# FIRST_RETRY_S, then twice as long each time; the MAX_TRIES-th failure in a row ends the job as Error.
MAX_TRIES, FIRST_RETRY_S = 5, 2.0
CONTAINER_GONE = "container disappeared from the node"


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


def _remove_all(ctx: RunContext, containers: list[tuple[Node, str]]) -> None:
    """Remove these containers (best effort: the watch removes leftovers of ended jobs once their
    node answers)."""
    for node, container_id in containers:
        if container_id:
            try:
                ctx.driver(node).remove(container_id)
            except NodeError:
                pass


def _discard(ctx: RunContext, job: Job) -> None:
    """Remove whatever containers a job that will not run has on its nodes (best effort)."""
    _remove_all(ctx, [(part.node, part.container_id) for part in job.parts])


def _hold_nothing(session: Session) -> None:
    """End the action's transaction before node I/O (a pull, a shipment, a stop's grace, a
    collection), keeping what it loaded: no pooled connection is held and no SQLite snapshot kept
    open meanwhile. What it loaded may go stale; every status change after is a compare-and-set."""
    expire, session.expire_on_commit = session.expire_on_commit, False
    try:
        session.commit()
    finally:
        session.expire_on_commit = expire


def _describe(exc: BaseException) -> str:
    """What went wrong, for a job's reason: an engine's message, an OS error's words (never the
    server's paths), else the exception's type and text."""
    if isinstance(exc, NodeError):
        text = str(exc)
    elif isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    else:
        text = f"{type(exc).__name__}: {exc}"
    return text[:1000]


def _failed_try(session: Session, ctx: RunContext, job_id: int, expected: JobStatus, doing: str,
                exc: BaseException) -> bool:
    """An infrastructure failure while `doing` (starting a job, ending it): the job is tried again
    after a backoff (FIRST_RETRY_S, doubling), or after MAX_TRIES failures in a row ends as Error
    saying what happened. True when it ended."""
    session.rollback()
    job = session.get(Job, job_id)
    if job is None or job.status != expected:
        return False  # ended meanwhile: nothing left to try
    tries = job.failed_tries + 1
    what = f"{doing} failed: {_describe(exc)}"
    log.warning("job %s: %s (try %d of %d)", job_id, what, tries, MAX_TRIES)
    if tries >= MAX_TRIES:
        ended = jobs.transition(session, job_id, expected, JobStatus.ERROR, failed_tries=tries, retry_at=None,
                                reason=f"gave up after {tries} tries: {what}"[:2000])
        session.commit()
        if ended:
            _discard(ctx, job)
        return ended
    delay_s = FIRST_RETRY_S * 2 ** (tries - 1)
    session.execute(update(Job).where(Job.id == job_id, Job.status == expected).values(
        failed_tries=tries, retry_at=utcnow() + timedelta(seconds=delay_s),
        reason=f"{what}; try {tries + 1} of {MAX_TRIES} in {delay_s:g} s"[:2000],
    ).execution_options(synchronize_session=False))
    session.commit()
    return False


def start(session: Session, ctx: RunContext, job_id: int) -> bool:
    """Start every part of a job the planner placed (status Starting); True when the job ended
    instead (halted meanwhile, refused by its node: its resources are free). Safe to repeat after
    a crash or a failed try: the driver adopts a started container of the same name and replaces
    an unstarted one, so a job never runs twice."""
    job = session.get(Job, job_id)
    if job is None or job.status != JobStatus.STARTING:
        return False  # started or ended meanwhile
    if job.halt_requested:
        _discard(ctx, job)
        ended = jobs.transition(session, job.id, JobStatus.STARTING, JobStatus.USER_CANCELED, reason="halted by user")
        session.commit()
        return ended
    shipment = None
    try:
        kind = kind_of(job.kind)
        shipment = job_sources.prepare(session, ctx.settings, ctx.box, job, writable_git=kind.writable_git)
        kind.ship(session, ctx.instance, job, shipment)
        specs = [kind.adapt(session, ctx.box, job, spec_for(job, part, ctx, shipment)) for part in job.parts]
        for part, spec in zip(job.parts, specs):  # every part's backend can run it, before any starts
            backends.refuse_unsupported(part.node.url, spec)
        drivers = [ctx.driver(part.node) for part in job.parts]
        _hold_nothing(session)
        for part, driver, spec in zip(job.parts, drivers, specs):
            part.container_id = driver.start(spec)
        image = drivers[0].image_identity(job.image)
        kind.on_started(session, drivers[0], job)
        job_sources.record_provenance(session, job, specs[0].env, image)
        session.flush()
    except (NodeError, ServiceError) as exc:
        if isinstance(exc, NodeError) and exc.infrastructure:  # tried again; a started container is adopted then
            return _failed_try(session, ctx, job_id, JobStatus.STARTING, "starting", exc)
        log.warning("job %s could not start: %s", job_id, exc)
        _discard(ctx, job)
        session.rollback()
        ended = jobs.transition(session, job_id, JobStatus.STARTING, JobStatus.ERROR, reason=str(exc)[:2000])
        session.commit()
        return ended
    except Exception as exc:  # the shipment's files, a kind's hook: this job's failure, tried again, then Error
        log.exception("job %s: starting failed", job_id)
        return _failed_try(session, ctx, job_id, JobStatus.STARTING, "starting", exc)
    finally:
        if shipment is not None:
            shipment.discard()
        job_sources.PullProgress(ctx.instance, job_id).clear()
    started = [(part.node, part.container_id) for part in job.parts]
    cleared = {"reason": ""} if job.failed_tries else {}  # the failed tries' note
    if not jobs.transition(session, job_id, JobStatus.STARTING, JobStatus.RUNNING, **cleared):
        session.rollback()  # ended while it started (an administrator force-ended it): it must not run on
        _remove_all(ctx, started)
        return False
    session.commit()
    return False


def jobs_starting(session: Session, now: datetime) -> list[Job]:
    """Jobs placed and not yet started, but those waiting to try again after a failure."""
    return list(session.scalars(select(Job).where(Job.status == JobStatus.STARTING, _not_waiting(now))
                                .order_by(Job.id)))


def _not_waiting(now: datetime):
    return or_(Job.retry_at.is_(None), Job.retry_at <= now)


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


@dataclass(frozen=True)
class Listing:
    """The heartbeat's listing of this site's containers on one node that answered, and when it
    was asked for (naive UTC)."""

    asked_at: datetime
    containers: list[ContainerState]


@dataclass(frozen=True)
class Ending:
    """A running job the watch found must end, with its containers' states as listed (rank order;
    None where a container is gone) and, when the watch decided it (a halt, the time limit), how it
    ends; None: as its containers say once stopped."""

    job_id: int
    node_id: int  # the master's node: whose executor ends it
    states: tuple[ContainerState | None, ...]
    decided: tuple[JobStatus, str, int | None] | None

    @property
    def vanished(self) -> bool:
        return any(state is None for state in self.states)


@dataclass(frozen=True)
class Leftover:
    """A container of this site that no active job has on that node (a job that ended or was
    requeued while its node was away, a crash between an end's commit and its removal)."""

    node_id: int
    job_id: int
    container_id: str


def watch(session: Session, listings: dict[int, Listing], busy: Callable[[int], bool] = lambda _job_id: False
          ) -> tuple[list[Ending], list[Leftover]]:
    """Compare the running jobs with their containers as the heartbeat listed them (per node id
    that answered): which must end, and which containers are leftovers. Reads only the database:
    the executors stop, collect and remove. A job is judged only on listings asked for after it
    started, and not while an action of it is in flight (`busy`) or it waits to try again; jobs on
    a node that did not answer are left alone (kqi/cluster/health.py ends them once it is lost)."""
    rows = session.execute(select(JobPart.job_id, JobPart.rank, JobPart.node_id)
                           .join(Job, Job.id == JobPart.job_id).where(Job.status.in_(jobs.ACTIVE)))
    placed = {(job_id, rank): node_id for job_id, rank, node_id in rows}
    by_part: dict[tuple[int, int], ContainerState] = {}
    leftovers = []
    for node_id, listing in listings.items():
        for state in listing.containers:
            key = (state.job_id, state.rank)
            if placed.get(key) == node_id:
                by_part[key] = state
            else:
                leftovers.append(Leftover(node_id, state.job_id, state.container_id))
    now = utcnow()
    endings = []
    running = session.scalars(select(Job).where(Job.status == JobStatus.RUNNING, _not_waiting(now))
                              .options(selectinload(Job.parts)).order_by(Job.id))
    for job in running:
        seen = [listings.get(part.node_id) for part in job.parts]
        if busy(job.id) or any(listing is None or job.started_at is None or listing.asked_at <= job.started_at
                               for listing in seen):
            continue
        states = tuple(by_part.get((job.id, part.rank)) for part in job.parts)
        decided = _decide(job, states)
        if decided is not False:
            endings.append(Ending(job.id, job.parts[0].node_id, states, decided))
    return endings, leftovers


def _decide(job: Job, states: tuple[ContainerState | None, ...]
            ) -> tuple[JobStatus, str, int | None] | None | Literal[False]:
    """How the watch ends a running job: (status, reason, exit code) when that is decided now,
    None when its containers say it once stopped, False when it runs on."""
    if any(state is None for state in states):
        return JobStatus.ERROR, CONTAINER_GONE, None
    ended = _outcome(list(states))
    if job.halt_requested:
        # kqi's own halt (a notebook's lifetime, an idle TensorBoard) carries its reason; a user's does not
        status, reason = (JobStatus.KILLED, job.halt_reason) if job.halt_reason else (JobStatus.USER_CANCELED, "halted by user")
        return status, reason, ended[2] if ended else None
    if ended is not None:
        return ended
    if _past_time_limit(job):
        return JobStatus.KILLED, "time limit", None
    return False


def _listed_again(ctx: RunContext, job: Job) -> list[ContainerState | None]:
    """The job's containers as their nodes list them now (after a stop)."""
    found: dict[int, ContainerState] = {}
    for node in {part.node for part in job.parts}:
        for state in ctx.driver(node).containers(ctx.site):
            if state.job_id == job.id:
                found[state.rank] = state
    return [found.get(part.rank) for part in job.parts]


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


def _jobs_own(exc: Exception) -> bool:
    """Whether a failure while collecting comes from what the job left in its container (a file
    where /kqi/output should be, the folder removed, names the instance's file system refuses,
    the container gone) rather than from reaching its node: no retry helps those."""
    if isinstance(exc, NodeError):
        return not exc.infrastructure
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return False
    if isinstance(exc, OSError):
        return exc.errno is not None  # a file system's refusal; errors of a dropped engine stream carry none
    return isinstance(exc, (tarfile.TarError, UnicodeError, ValueError))


def _collection_fault(exc: Exception) -> str:
    if isinstance(exc, OSError) and exc.errno in (errno.EISDIR, errno.ENOTDIR):
        return f"outputs not collected: {OUTPUT_DIR} is not a folder of files and folders"
    if isinstance(exc, NodeError) and "could not find the file" in str(exc).lower():
        return f"outputs not collected: {OUTPUT_DIR} was removed from the container"
    return f"outputs not collected: {_describe(exc)}"


def _with_fault(status: JobStatus, reason: str, fault: str) -> tuple[JobStatus, str]:
    """A job that would have completed fails when what it left could not be collected; one that
    ended otherwise keeps its status, and its reason says both."""
    if status == JobStatus.COMPLETED:
        return JobStatus.FAILED, fault
    return status, f"{reason}; {fault}" if reason else fault


def finish(session: Session, ctx: RunContext, ending: Ending) -> bool:
    """End a running job the watch found done: stop what still runs, collect its logs and outputs,
    write its end, remove its containers. True when it ended. A failure reaching a node is tried
    again (then Error); whatever the job did to its own container ends the job, never the loop."""
    job = session.get(Job, ending.job_id)
    if job is None or job.status != JobStatus.RUNNING:
        return False  # ended meanwhile (force-ended, lost with its node): the watch removes its containers
    try:
        return _finish(session, ctx, job, ending)
    except Exception as exc:  # a node that failed midway, the database: tried again after a backoff, then Error
        if not isinstance(exc, NodeError):
            log.exception("job %s: ending it failed", ending.job_id)
        return _failed_try(session, ctx, ending.job_id, JobStatus.RUNNING, "ending it", exc)


def _finish(session: Session, ctx: RunContext, job: Job, ending: Ending) -> bool:
    limits = site_settings.current(session)
    states = list(ending.states)
    if not ending.vanished:
        drivers = [ctx.driver(part.node) for part in job.parts]
        _hold_nothing(session)
        if any(state.running for state in states):
            for driver, state in zip(drivers, states):
                if state.running:
                    try:
                        driver.stop(state.container_id, ctx.stop_grace_s)
                    except NodeError as exc:
                        if exc.infrastructure:
                            raise
                        # the engine refused: the container went meanwhile, which the listing below shows
            states = _listed_again(ctx, job)
    if any(state is None for state in states):
        return _gone(session, ctx, job)
    status, reason, exit_code = ending.decided or _outcome(states) or (JobStatus.KILLED, "stopped", None)
    try:
        stored, notes = _collect(ctx, job, states, SizeLimit(limits["max_log_gb"]), SizeLimit(limits["max_output_gb"]))
    except Exception as exc:
        if not _jobs_own(exc):
            raise
        if isinstance(exc, NodeError) and any(state is None for state in _listed_again(ctx, job)):
            return _gone(session, ctx, job)  # removed behind kqi's back while it was being collected
        log.warning("job %s: collecting failed: %s", job.id, exc, exc_info=True)
        stored, notes = StoredOutput(), []
        status, reason = _with_fault(status, reason, _collection_fault(exc))
    for refusals in (stored.unsafe, stored.over_limit):
        refusals.names = [_printable(name) for name in refusals.names]
    job_sources.record_refused_outputs(session, job, stored)
    status, reason = kind_of(job.kind).on_collected(session, ctx.settings, job, status, reason)
    reason = "; ".join(part for part in (reason, *notes) if part)
    if not jobs.transition(session, job.id, JobStatus.RUNNING, status, exit_code=exit_code, reason=reason[:2000],
                           value=runs.read_value(ctx.instance, job.id)):  # /kqi/output/value.txt, as collected
        session.rollback()  # ended meanwhile: nothing of this end is kept but its files
        _remove_all(ctx, [(part.node, state.container_id) for part, state in zip(job.parts, states)])
        return False
    session.commit()
    # Removed only now: a server killed before the commit finds the containers again and ends the
    # job in its true state; one killed after it leaves them as leftovers, removed on a later pass.
    _remove_all(ctx, [(part.node, state.container_id) for part, state in zip(job.parts, states)])
    return True


def _gone(session: Session, ctx: RunContext, job: Job) -> bool:
    """End a job one of whose containers is no longer on its node (its other parts are removed)."""
    _discard(ctx, job)
    ended = jobs.transition(session, job.id, JobStatus.RUNNING, JobStatus.ERROR, reason=CONTAINER_GONE)
    session.commit()
    return ended


def _printable(name: str) -> str:
    """An archive member's name as text any database takes: bytes that were not UTF-8 (kept by
    tarfile as lone surrogates) shown as \\xNN."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def remove(session: Session, ctx: RunContext, node_id: int, container_id: str) -> bool:
    """Remove one container (a leftover, or a part of a job lost with another node); True when it
    is gone. A node that fails is asked again on a later pass."""
    node = session.get(Node, node_id)
    if node is None:
        return False
    try:
        ctx.driver(node).remove(container_id)
    except NodeError as exc:
        log.info("removing container %s on node %s failed: %s", container_id[:12], node.name, exc)
        return False
    return True


def containers_off(job: Job, skip_nodes: set[int]) -> list[tuple[int, str]]:
    """A job's containers, as (node id, container id), except on `skip_nodes` (nodes that do not answer)."""
    return [(part.node_id, part.container_id) for part in job.parts
            if part.container_id and part.node_id not in skip_nodes]


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
