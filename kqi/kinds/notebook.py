"""Notebooks: JupyterLab in a long-running container, with a lifetime, reachable by a link.

A notebook is a job of kind "notebook" (see kqi/kinds/interactive.py for what it shares with TensorBoard):
the site's notebook image (or the user's), the site's command with {port} and {token}, dataset,
git and parents shipped in as for training, /kqi as the working folder. Its lifetime comes from
the tenant's policy: `notebook_default_hours` unless the user asks, at most `notebook_max_hours`;
unlimited only where the tenant sets no maximum. A rerun is a new job of the same notebook that
starts with the earlier run's collected /kqi/output restored.
"""
from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session, object_session

from kqi import validation as v
from kqi.accounts import auth as accounts
from kqi.accounts.auth import Principal
from kqi.admin import site_settings
from kqi.config import Settings
from kqi.crypto import SecretBox
from kqi.errors import Conflict, ServiceError
from kqi.jobs import lifecycle as jobs
from kqi.jobs import sources as job_sources
from kqi.jobs.kinds import register
from kqi.kinds import interactive as services
from kqi.models import Job, Tenant, utcnow

KIND = "notebook"
FIELDS = ("name", "image", "cpu", "memory_gb", "gpu", "lifetime_hours", "partition", "env", "memo",
          *job_sources.SUBMIT_FIELDS)
MAX_LIFETIME_HOURS = accounts.MAX_NOTEBOOK_HOURS
OPEN_PATH = "/lab?token="  # JupyterLab's entry page; the token logs the browser in


def lifetime_s(tenant: Tenant, body: dict[str, Any]) -> int | None:
    """Seconds the notebook may live (None: until stopped), by the tenant's policy. Hours may be
    fractional (0.5: half an hour)."""
    most = tenant.notebook_max_hours
    if "lifetime_hours" not in body:
        hours = tenant.notebook_default_hours or most
        return None if hours is None else hours * 3600
    if body["lifetime_hours"] is None:
        if most is not None:
            raise ServiceError(f"lifetime_hours: tenant {tenant.name} allows notebooks of at most {most} hours, "
                               "not unlimited ones", field="lifetime_hours")
        return None
    hours = v.number(body, "lifetime_hours", required=True, minimum=0, exclusive_min=True, maximum=MAX_LIFETIME_HOURS)
    if most is not None and hours > most:
        raise ServiceError(f"lifetime_hours: tenant {tenant.name} allows at most {most} hours", field="lifetime_hours")
    return max(1, round(hours * 3600))


def _submit(session: Session, settings: Settings, box: SecretBox, principal: Principal, body: Any, command: str,
            previous_id: int | None = None) -> Job:
    body = dict(v.require_object(body))
    v.reject_unknown(body, FIELDS)
    lifetime = lifetime_s(principal.tenant, body)
    body.pop("lifetime_hours", None)
    site = site_settings.current(session)
    if not body.get("image"):
        body["image"] = site["notebook_image"]
    for field, default in (("cpu", "default_cpu"), ("memory_gb", "default_memory_gb"), ("gpu", "default_gpu")):
        if body.get(field) in (None, ""):
            body[field] = site[default]
    job = jobs.submit(session, settings, box, principal, {**body, "command": command}, kind=KIND)
    services.record(session, job, site["notebook_port"], lifetime_s=lifetime, previous_id=previous_id,
                    token_sealed=box.seal(secrets.token_hex(24)))
    return job


def create(session: Session, settings: Settings, box: SecretBox, principal: Principal, body: Any) -> Job:
    """A new notebook with the site's current command template (kept with the job: a rerun uses it too)."""
    return _submit(session, settings, box, principal, body, site_settings.current(session)["notebook_command"])


def get(session: Session, principal: Principal, job_id: int) -> Job:
    return jobs.get(session, principal, job_id, kind=KIND)


def page(session: Session, principal: Principal, page_no: int, per_page: int, status: str | None = None):
    return jobs.page(session, principal, page_no, per_page, status=status, kind=KIND)


def halt(session: Session, principal: Principal, job_id: int) -> Job:
    return jobs.halt(session, get(session, principal, job_id))


def remove(session: Session, principal: Principal, job_id: int) -> list[str]:
    get(session, principal, job_id)
    return jobs.remove(session, principal, job_id)


def rerun(session: Session, settings: Settings, box: SecretBox, principal: Principal, job_id: int) -> Job:
    """The same notebook again (same image, resources, lifetime, sources), its earlier /kqi/output
    restored. The lifetime is checked against the tenant's policy as it is now."""
    previous = get(session, principal, job_id)
    if not previous.status.finished:
        raise Conflict(f"notebook {job_id} is {previous.status.value}: stop it before running it again")
    row = services.row_of(session, previous)
    sources = job_sources.as_dict(previous)
    body: dict[str, Any] = {
        "name": previous.name, "image": previous.image, **previous.resources.as_api(gb_digits=None),
        "env": dict(previous.env or {}),
        "memo": previous.memo, "partition": previous.partition,
        "lifetime_hours": row.lifetime_s / 3600 if row and row.lifetime_s else None,
    }
    if sources["dataset_id"]:
        body["dataset_id"] = sources["dataset_id"]
    if sources["git"]:
        body["git"] = {"repository": sources["git"]["repository"], "commit": sources["git"]["commit"]}
    if sources["parent_ids"]:
        body["parent_ids"] = sources["parent_ids"]
    return _submit(session, settings, box, principal, body, previous.command, previous_id=previous.id)


def open_url(box: SecretBox, job: Job) -> str | None:
    """The "open notebook" link with its token, while it runs (shown to its tenant only)."""
    row = services.row_of(object_session(job), job)
    base = services.base_url(job, row)
    return f"{base}{OPEN_PATH}{services.token(box, row)}" if base else None


def expires_at(job: Job) -> datetime | None:
    row = services.row_of(object_session(job), job)
    if row is None or row.lifetime_s is None or job.started_at is None:
        return None
    return job.started_at + timedelta(seconds=row.lifetime_s)


def lifetime_hours(job: Job) -> float | None:
    row = services.row_of(object_session(job), job)
    return round(row.lifetime_s / 3600, 4) if row and row.lifetime_s else None


def as_dict(box: SecretBox, job: Job) -> dict[str, Any]:
    session = object_session(job)
    row = services.row_of(session, job)
    ends = expires_at(job)
    return {
        **jobs.as_dict(job),
        "lifetime_hours": lifetime_hours(job),
        "expires_at": ends.isoformat(timespec="seconds") + "Z" if ends else None,
        "remaining_s": services.seconds_left(job, row, utcnow()),
        "previous_id": row.previous_id if row else None,
        "url": open_url(box, job),
    }


class NotebookKind(services.InteractiveKind):
    writable_git = True  # a notebook is where the code gets edited

    def enforce(self, session, driver, settings, now):
        return services.expire_lifetimes(session, now)


JOB_KIND = register(NotebookKind(KIND, "notebooks", "allow_notebooks"))
