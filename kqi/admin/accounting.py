"""Accounting: what each ended job used (CPU-, memory- and GPU-hours), summed per tenant or user and
per day or month, as rows, CSV and an SVG bar chart."""
from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from kqi import charts
from kqi.errors import ServiceError
from kqi.models import Job, Tenant, User
from kqi.models.admin import UsageRecord
from kqi.resources import Resources

GROUPS = ("tenant", "user")
PERIODS = ("day", "month", "all")
METRICS = ("cpu_hours", "memory_gb_hours", "gpu_hours")
CSV_COLUMNS = ("period", "tenant", "user", "jobs", *METRICS)


def record_usage(session: Session, job_id: int) -> None:
    """Write the usage of a job that has just ended (called in the transaction that ends it).
    A job that never started used nothing and gets no record."""
    row = session.execute(
        select(Job.tenant_id, Job.user_id, Job.kind, Job.status, Job.started_at, Job.completed_at, Job.cpu_milli,
               Job.memory_mib, Job.gpu_milli, Job.nodes).where(Job.id == job_id)
    ).one()
    if row.started_at is None or row.completed_at is None:
        return
    hours = max(0.0, (row.completed_at - row.started_at).total_seconds()) / 3600
    held = Resources.of(row) * (row.nodes or 1)  # every part of a gang job
    session.add(UsageRecord(
        job_id=job_id, tenant_id=row.tenant_id, user_id=row.user_id, kind=row.kind, status=row.status.value,
        started_at=row.started_at, ended_at=row.completed_at,
        cpu_hours=held.cores * hours, memory_gb_hours=held.memory_gb * hours, gpu_hours=held.gpus * hours,
    ))


def _day(value: Any, field: str) -> datetime | None:
    if value in (None, ""):
        return None
    try:
        return datetime.strptime(str(value), "%Y-%m-%d")
    except ValueError:
        raise ServiceError(f"{field} must be a date, YYYY-MM-DD", field=field) from None


def parse_query(args: Mapping[str, Any]) -> dict[str, Any]:
    """group (tenant|user), period (day|month|all), since and until (dates, until inclusive)."""
    group = args.get("group") or "tenant"
    if group not in GROUPS:
        raise ServiceError(f"group must be one of {', '.join(GROUPS)}", field="group")
    period = args.get("period") or "month"
    if period not in PERIODS:
        raise ServiceError(f"period must be one of {', '.join(PERIODS)}", field="period")
    since, until = _day(args.get("since"), "since"), _day(args.get("until"), "until")
    if since and until and until < since:
        raise ServiceError("until is before since", field="until")
    return {"group": group, "period": period, "since": since, "until": until}


def _period_of(moment: datetime, period: str) -> str:
    return {"day": moment.strftime("%Y-%m-%d"), "month": moment.strftime("%Y-%m"), "all": "all"}[period]


def summary(session: Session, query: Mapping[str, Any], tenant_id: int | None = None) -> list[dict[str, Any]]:
    """Usage summed per period and tenant (or tenant and user), oldest period first."""
    stmt = (select(UsageRecord, Tenant.name, User.username).join(Tenant, Tenant.id == UsageRecord.tenant_id)
            .join(User, User.id == UsageRecord.user_id))
    if tenant_id is not None:
        stmt = stmt.where(UsageRecord.tenant_id == tenant_id)
    if query["since"]:
        stmt = stmt.where(UsageRecord.ended_at >= query["since"])
    if query["until"]:
        stmt = stmt.where(UsageRecord.ended_at < query["until"] + timedelta(days=1))
    sums: dict[tuple[str, str, str], dict[str, Any]] = {}
    for record, tenant, username in session.execute(stmt):
        key = (_period_of(record.ended_at, query["period"]), tenant, username if query["group"] == "user" else "")
        row = sums.setdefault(key, {"period": key[0], "tenant": tenant, "user": key[2] or None, "jobs": 0,
                                    **{m: 0.0 for m in METRICS}})
        row["jobs"] += 1
        for metric in METRICS:
            row[metric] += getattr(record, metric)
    rows = [sums[key] for key in sorted(sums)]
    for row in rows:
        for metric in METRICS:
            row[metric] = round(row[metric], 4)
    return rows


def as_csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        # A leading =, +, - or @ would be a formula to a spreadsheet; names cannot start so, but be sure.
        writer.writerow({k: ("'" + v if isinstance(v, str) and v[:1] in "=+-@" else v) for k, v in row.items()})
    return out.getvalue()


def svg_chart(rows: list[dict[str, Any]], metric: str = "gpu_hours", width: int = 640, height: int = 240) -> str:
    """A bar per period (the sum over tenants or users), drawn on the server: no script, no CDN."""
    totals: dict[str, float] = {}
    for row in rows:
        totals[row["period"]] = totals.get(row["period"], 0.0) + row[metric]
    return charts.bar_chart(sorted(totals.items()), f"{metric} per period", width, height)
