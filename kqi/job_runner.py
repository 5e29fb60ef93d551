"""Carries jobs out on their nodes: start containers, watch them, collect what they leave.

Only the scheduler loop calls start/watch (one writer per job); the views call the live_* readers.
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
from kqi.models import Job, JobStatus, Node, utcnow
from kqi.nodes import LABEL_JOB, LABEL_KIND, LABEL_SITE, ContainerSpec, ContainerState, NodeDriver, NodeError
from kqi.storage import JobFiles, OutputFile, kqi_folders_archive, list_archive, read_from_archive

log = logging.getLogger(__name__)
OUTPUT_DIR = "/kqi/output"
OUTPUT_PREFIX = "output"  # how the engine names /kqi/output's members in an archive of it


@dataclass
class RunContext:
    """What the runner needs from the app: where files go, which site it is, how to reach nodes."""

    instance: Path
    site: str
    driver: Callable[[Node], NodeDriver]
    stop_grace_s: int = 10


def container_name(job: Job, site: str) -> str:
    return f"{job.kind}-{job.name}-{job.id}-{site}"


def gpu_env(indices: list[int]) -> dict[str, str]:
    listed = ",".join(str(i) for i in indices)
    return {"NVIDIA_VISIBLE_DEVICES": listed or "none", "KQI_GPU_INDICES": listed}


def container_env(job: Job) -> dict[str, str]:
    env = dict(job.env or {})
    env.update(gpu_env(list(job.gpu_indices or [])))
    env.update({"TRAINING_ID": str(job.id), "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"})
    return env


def spec_for(job: Job, ctx: RunContext) -> ContainerSpec:
    return ContainerSpec(
        name=container_name(job, ctx.site),
        image=job.image,
        command=job.command,
        env=container_env(job),
        labels={LABEL_SITE: ctx.site, LABEL_JOB: str(job.id), LABEL_KIND: job.kind},
        cpu_milli=job.cpu_milli,
        memory_mib=job.memory_mib,
        gpu_indices=tuple(job.gpu_indices or ()),
        nvidia_runtime=job.node.nvidia_runtime,
        archives=(kqi_folders_archive(),),
    )


def start(session: Session, ctx: RunContext, job: Job) -> None:
    """Start a job the planner placed (status Starting). Idempotent across restarts."""
    if job.halt_requested:
        jobs.transition(session, job.id, JobStatus.STARTING, JobStatus.USER_CANCELED, reason="halted by user")
        session.commit()
        return
    try:
        container_id = ctx.driver(job.node).start(spec_for(job, ctx))
    except NodeError as exc:
        log.warning("job %s could not start on %s: %s", job.id, job.node.name, exc)
        jobs.transition(session, job.id, JobStatus.STARTING, JobStatus.ERROR, reason=str(exc)[:2000])
        session.commit()
        return
    jobs.transition(session, job.id, JobStatus.STARTING, JobStatus.RUNNING, container_id=container_id)
    session.commit()


def _final_status(state: ContainerState) -> tuple[JobStatus, str]:
    if state.oom_killed:
        return JobStatus.KILLED, "OOMKilled"
    if state.exit_code == 0:
        return JobStatus.COMPLETED, ""
    if state.error:
        return JobStatus.ERROR, state.error
    return JobStatus.FAILED, f"exit code {state.exit_code}"


def _collect(session: Session, ctx: RunContext, driver: NodeDriver, job: Job, state: ContainerState,
             status: JobStatus, reason: str) -> None:
    """Keep the log and /kqi/output, remove the container, end the job and release its resources."""
    files = JobFiles(ctx.instance, job.id)
    try:
        files.write_log(driver.logs(state.container_id))
        refused = files.store_output(driver.archive(state.container_id, OUTPUT_DIR), OUTPUT_PREFIX)
        if refused:
            reason = (reason + "; " if reason else "") + f"refused {len(refused)} unsafe output entries"
        driver.remove(state.container_id)
    except NodeError as exc:
        log.warning("collecting job %s failed, will retry: %s", job.id, exc)
        return
    jobs.transition(session, job.id, job.status, status, exit_code=state.exit_code, reason=reason)
    session.commit()


def watch_node(session: Session, ctx: RunContext, node: Node) -> int:
    """Bring every job on one node up to date with its container; return how many jobs ended."""
    driver = ctx.driver(node)
    containers = driver.containers(ctx.site)
    active = {job.id: job for job in jobs.active_on(session, node)}
    ended = 0
    for job in active.values():
        if job.status != JobStatus.RUNNING:
            continue  # Starting jobs belong to start()
        state = containers.get(job.id)
        if state is None:
            jobs.transition(session, job.id, JobStatus.RUNNING, JobStatus.ERROR, reason="container disappeared from the node")
            session.commit()
            ended += 1
        elif not state.running:
            status, reason = _final_status(state)
            if job.halt_requested:
                status, reason = JobStatus.USER_CANCELED, "halted by user"
            _collect(session, ctx, driver, job, state, status, reason)
            ended += 1
        elif job.halt_requested or _past_time_limit(job):
            reason = "halted by user" if job.halt_requested else "time limit"
            driver.stop(state.container_id, ctx.stop_grace_s)
            stopped = driver.containers(ctx.site).get(job.id, state)
            status = JobStatus.USER_CANCELED if job.halt_requested else JobStatus.KILLED
            _collect(session, ctx, driver, job, stopped, status, reason)
            ended += 1
    for job_id, state in containers.items():
        if job_id not in active:
            # Left by a crash between collecting and removing, or by a job ended elsewhere.
            driver.remove(state.container_id)
    return ended


def _past_time_limit(job: Job) -> bool:
    return bool(job.time_limit_s and job.started_at and utcnow() - job.started_at > timedelta(seconds=job.time_limit_s))


def jobs_starting(session: Session) -> list[Job]:
    return list(session.scalars(select(Job).where(Job.status == JobStatus.STARTING).order_by(Job.id)))


# Reading a job's log and outputs: live from its node while it runs, from storage after.

def _live(job: Job) -> bool:
    return job.status == JobStatus.RUNNING and bool(job.container_id) and job.node is not None


def read_log(ctx: RunContext, job: Job, tail: int | None = None) -> bytes:
    if _live(job):
        try:
            return ctx.driver(job.node).logs(job.container_id, tail=tail)
        except NodeError:
            pass  # ended meanwhile: the stored log is being written
    data = JobFiles(ctx.instance, job.id).read_log() or b""
    return b"\n".join(data.splitlines()[-tail:]) if tail else data


def output_files(ctx: RunContext, job: Job) -> list[OutputFile]:
    if _live(job):
        try:
            return list_archive(ctx.driver(job.node).archive(job.container_id, OUTPUT_DIR), OUTPUT_PREFIX)
        except NodeError:
            pass
    return JobFiles(ctx.instance, job.id).list_output()


def output_file(ctx: RunContext, job: Job, path: str) -> bytes | Path | None:
    """The file's bytes while the job runs, its stored path after; None when there is no such file."""
    if _live(job):
        try:
            return read_from_archive(ctx.driver(job.node).archive(job.container_id, OUTPUT_DIR), OUTPUT_PREFIX, path)
        except NodeError:
            pass
    return JobFiles(ctx.instance, job.id).output_path(path)
