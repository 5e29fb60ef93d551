"""TensorBoard for a run: a job of kind "tensorboard" on a node flagged for it (kqi/kinds/interactive.py).

It reads the run's collected outputs, shipped read-only to /kqi/parent as a parent's are, so it
shows runs that have ended (a running run's /kqi/output lives in its container until the end).
One per run at a time: starting it again while one is queued or runs returns that one. It stops
itself when its container has received no network traffic for `tensorboard_idle_s`
(services.stop_idle, in the scheduler loop).
"""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, object_session

from kqi.accounts.auth import Principal
from kqi.admin import site_settings
from kqi.config import Settings
from kqi.crypto import SecretBox
from kqi.errors import Conflict, NotFound
from kqi.jobs import lifecycle as jobs
from kqi.jobs.kinds import register
from kqi.kinds import interactive as services
from kqi.models import Job
from kqi.models.services import ServiceRun

KIND = "tensorboard"


def _run(session: Session, principal: Principal, run_id: int) -> Job:
    run = jobs.get(session, principal, run_id)
    if services.is_interactive(run.kind):
        raise NotFound("run")
    return run


def current(session: Session, run: Job) -> Job | None:
    """The run's newest TensorBoard (running or ended), if it ever had one."""
    return session.scalar(select(Job).join(ServiceRun, ServiceRun.job_id == Job.id)
                          .where(ServiceRun.run_id == run.id, Job.kind == KIND).order_by(Job.id.desc()).limit(1))


def for_run(session: Session, principal: Principal, run_id: int) -> Job | None:
    return current(session, _run(session, principal, run_id))


def start(session: Session, settings: Settings, box: SecretBox, principal: Principal, run_id: int) -> tuple[Job, bool]:
    """The run's TensorBoard: the one queued or running, else a new one. (job, True when new)."""
    run = _run(session, principal, run_id)
    existing = current(session, run)
    if existing is not None and not existing.status.finished:
        return existing, False
    if not run.status.finished:
        raise Conflict(f"run {run.id} is {run.status.value}: TensorBoard reads a run's collected outputs, "
                       "so it starts once the run has ended")
    site = site_settings.current(session)
    name = f"tb-{run.name}"[:30]
    job = jobs.submit(session, settings, box, principal, {"name": name, "image": site["tensorboard_image"],
                                                          "command": site["tensorboard_command"], "cpu": site["default_cpu"],
                                                          "memory_gb": site["default_memory_gb"]}, kind=KIND)
    services.record(session, job, site["tensorboard_port"], run_id=run.id)
    return job, True


def stop(session: Session, principal: Principal, run_id: int) -> Job:
    job = for_run(session, principal, run_id)
    if job is None:
        raise NotFound("tensorboard")
    return jobs.halt(session, job)


def as_dict(job: Job) -> dict:
    row = services.row_of(object_session(job), job)
    base = services.base_url(job, row)
    return {**jobs.as_dict(job), "run_id": row.run_id if row else None, "url": f"{base}/" if base else None}


class TensorBoardKind(services.InteractiveKind):
    def enforce(self, session, driver, settings, now):
        return services.stop_idle(session, driver, settings.tensorboard_idle_s, now)


JOB_KIND = register(TensorBoardKind(KIND, "TensorBoard", "allow_tensorboard"))
