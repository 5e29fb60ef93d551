"""Carries jobs out on their nodes: start containers, watch them, collect what they leave.

Only the scheduler loop calls start/watch (one writer per job); the views call the readers at
the end. A job has one part per node it runs on (a gang job several, rank 0 the master), and
each part is one container labelled with the site, the job and the rank.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from kqi import jobs
from kqi.models import Job, JobPart, JobStatus, Node, utcnow
from kqi.nodes import (LABEL_JOB, LABEL_KIND, LABEL_RANK, LABEL_SITE, ContainerSpec, ContainerState, NodeDriver,
                       NodeError)
from kqi.storage import JobFiles, OutputFile, kqi_folders_archive, list_archive, read_from_archive

log = logging.getLogger(__name__)
OUTPUT_DIR = "/kqi/output"
OUTPUT_PREFIX = "output"  # how the engine names /kqi/output's members in an archive of it
GANG_PORT_BASE, GANG_PORT_SPAN = 20000, 20000  # MASTER_PORT = base + job id mod span


@dataclass
class RunContext:
    """What the runner needs from the app: where files go, which site it is, how to reach nodes."""

    instance: Path
    site: str
    driver: Callable[[Node], NodeDriver]
    stop_grace_s: int = 10


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


def container_env(job: Job, part: JobPart) -> dict[str, str]:
    env = dict(job.env or {})
    env.update(gpu_env(list(part.gpu_indices or [])))
    env.update(gang_env(job, part.rank))
    env.update({"TRAINING_ID": str(job.id), "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"})
    return env


def spec_for(job: Job, part: JobPart, ctx: RunContext) -> ContainerSpec:
    return ContainerSpec(
        name=container_name(job, part.rank, ctx.site),
        image=job.image,
        command=job.command,
        env=container_env(job, part),
        labels={LABEL_SITE: ctx.site, LABEL_JOB: str(job.id), LABEL_RANK: str(part.rank), LABEL_KIND: job.kind},
        cpu_milli=job.cpu_milli,
        memory_mib=job.memory_mib,
        gpu_indices=tuple(part.gpu_indices or ()),
        nvidia_runtime=part.node.nvidia_runtime,
        host_network=job.nodes > 1,
        archives=(kqi_folders_archive(),),
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
    try:
        for part in job.parts:
            part.container_id = ctx.driver(part.node).start(spec_for(job, part, ctx))
    except NodeError as exc:
        log.warning("job %s could not start: %s", job.id, exc)
        _discard(ctx, job)
        session.rollback()
        jobs.transition(session, job.id, JobStatus.STARTING, JobStatus.ERROR, reason=str(exc)[:2000])
        session.commit()
        return
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
    """One listing of this site's containers per node, for one watch pass."""

    def __init__(self, session: Session, ctx: RunContext):
        self.ctx = ctx
        self.reachable: set[int] = set()
        self.by_part: dict[tuple[int, int], ContainerState] = {}
        self.where: dict[tuple[int, int], Node] = {}
        for node in session.scalars(select(Node).order_by(Node.name)):
            try:
                found = ctx.driver(node).containers(ctx.site)
            except NodeError as exc:
                log.warning("node %s: %s", node.name, exc)
                node.last_error = str(exc)[:1000]
                continue
            node.last_error = ""
            self.reachable.add(node.id)
            for state in found:
                self.by_part[(state.job_id, state.rank)] = state
                self.where[(state.job_id, state.rank)] = node
        session.commit()

    def refresh(self, job: Job) -> list[ContainerState | None]:
        for node in {part.node for part in job.parts}:
            for state in self.ctx.driver(node).containers(self.ctx.site):
                if state.job_id == job.id:
                    self.by_part[(job.id, state.rank)] = state
        return self.of(job)

    def of(self, job: Job) -> list[ContainerState | None]:
        return [self.by_part.get((job.id, part.rank)) for part in job.parts]


def _collect(ctx: RunContext, job: Job, states: list[ContainerState]) -> None:
    """Keep the logs (every rank) and rank 0's /kqi/output, then remove the containers."""
    files = JobFiles(ctx.instance, job.id)
    for part, state in zip(job.parts, states):
        driver = ctx.driver(part.node)
        files.write_log(driver.logs(state.container_id), rank=part.rank)
        if part.rank == 0:
            refused = files.store_output(driver.archive(state.container_id, OUTPUT_DIR), OUTPUT_PREFIX)
            if refused:
                log.warning("job %s: refused %d unsafe output entries: %s", job.id, len(refused), refused[:5])
    for part, state in zip(job.parts, states):
        ctx.driver(part.node).remove(state.container_id)


def _finish(session: Session, ctx: RunContext, nodes: _NodeStates, job: Job, states: list[ContainerState],
            decided: tuple[JobStatus, str, int | None] | None) -> bool:
    """Stop what still runs, collect, end the job. False when a node failed midway (retried)."""
    try:
        if any(s.running for s in states):
            for part, state in zip(job.parts, states):
                if state.running:
                    ctx.driver(part.node).stop(state.container_id, ctx.stop_grace_s)
            states = nodes.refresh(job)
        status, reason, exit_code = decided or _outcome(states) or (JobStatus.KILLED, "stopped", None)
        _collect(ctx, job, states)
    except NodeError as exc:
        log.warning("finishing job %s failed, will retry: %s", job.id, exc)
        return False
    jobs.transition(session, job.id, JobStatus.RUNNING, status, exit_code=exit_code, reason=reason)
    session.commit()
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
        decided = (JobStatus.USER_CANCELED, "halted by user", ended[2] if ended else None)
        return _finish(session, ctx, nodes, job, states, decided)
    outcome = _outcome(states)
    if outcome is not None:
        return _finish(session, ctx, nodes, job, states, outcome)
    if _past_time_limit(job):
        return _finish(session, ctx, nodes, job, states, (JobStatus.KILLED, "time limit", None))
    return False


def watch(session: Session, ctx: RunContext) -> int:
    """Bring every running job up to date with its containers; return how many ended."""
    nodes = _NodeStates(session, ctx)
    running = [job for job in jobs.active(session) if job.status == JobStatus.RUNNING]
    ended = 0
    for job in running:
        if all(part.node_id in nodes.reachable for part in job.parts):
            ended += _watch_job(session, ctx, nodes, job)
    active_ids = {job.id for job in jobs.active(session)}
    for key, state in nodes.by_part.items():
        if state.job_id not in active_ids:
            # Left by a crash between collecting and removing, or by a job that ended elsewhere.
            try:
                ctx.driver(nodes.where[key]).remove(state.container_id)
            except NodeError:
                pass
    return ended


# Reading a job's log and outputs: live from its node while it runs, from storage after.

def _master(job: Job) -> JobPart | None:
    if job.status == JobStatus.RUNNING and job.parts and job.parts[0].container_id:
        return job.parts[0]
    return None


def read_log(ctx: RunContext, job: Job, tail: int | None = None) -> bytes:
    master = _master(job)
    if master is not None:
        try:
            return ctx.driver(master.node).logs(master.container_id, tail=tail)
        except NodeError:
            pass  # ended meanwhile: the stored log is being written
    data = JobFiles(ctx.instance, job.id).read_log() or b""
    return b"\n".join(data.splitlines()[-tail:]) if tail else data


def output_files(ctx: RunContext, job: Job) -> list[OutputFile]:
    master = _master(job)
    if master is not None:
        try:
            return list_archive(ctx.driver(master.node).archive(master.container_id, OUTPUT_DIR), OUTPUT_PREFIX)
        except NodeError:
            pass
    return JobFiles(ctx.instance, job.id).list_output()


def output_file(ctx: RunContext, job: Job, path: str) -> bytes | Path | None:
    """The file's bytes while the job runs, its stored path after; None when there is no such file."""
    master = _master(job)
    if master is not None:
        try:
            return read_from_archive(ctx.driver(master.node).archive(master.container_id, OUTPUT_DIR), OUTPUT_PREFIX, path)
        except NodeError:
            pass
    return JobFiles(ctx.instance, job.id).output_path(path)
