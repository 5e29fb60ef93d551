"""Site administration: settings, the resource monitor and kill, usage (administrators: every tenant;
a tenant's manager: their own), and the audit log with the hook that writes it."""
from __future__ import annotations

from flask import Response, g, jsonify, request
from sqlalchemy import select

from kqi.admin import accounting, audit, site_settings
from kqi.cluster import monitor
from kqi.extensions import db
from kqi.jobs import lifecycle as jobs
from kqi.models import Tenant
from kqi.validation import paging
from kqi.views import audit_buffer
from kqi.views.api import blueprint, json_body, paged, require_admin, scheduler
from kqi.views.api.openapi import NULLABLE_STRING, PAGING, body, obj, ok, op, page_of, path_id, query
from kqi.views.api.users import require_manager

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@blueprint.after_request
def audit_request(response):
    """Record every state-changing call: who, which route, which path, how it ended. Never a body."""
    if request.method not in MUTATING or request.endpoint is None:
        return response
    who = g.get("principal")
    audit.record(audit_buffer(), username=who.username if who else g.get("audit_username", ""),
                 tenant=who.tenant_name if who else "", action=request.endpoint.removeprefix("api."),
                 target=request.path, status=response.status_code, ip=request.remote_addr or "")
    return response


@blueprint.get("/admin/settings")
def get_settings():
    require_admin()
    return jsonify(site_settings.current(db.session))


@blueprint.put("/admin/settings")
def update_settings():
    require_admin()
    values = site_settings.update(db.session, json_body())
    db.session.commit()
    return jsonify(values)


@blueprint.get("/admin/monitor")
def resource_monitor():
    require_admin()
    return jsonify(monitor.snapshot(db.session))


@blueprint.post("/admin/jobs/<int:job_id>/kill")
def kill_job(job_id: int):
    require_admin()
    job = monitor.kill(db.session, job_id)
    db.session.commit()
    scheduler().wake()
    return jsonify(jobs.as_dict(job))


@blueprint.post("/admin/jobs/<int:job_id>/force-end")
def force_end_job(job_id: int):
    require_admin()
    job = monitor.force_end(db.session, job_id)
    db.session.commit()
    scheduler().wake()  # its resources are free: the queue may start something
    return jsonify(jobs.as_dict(job))


def _usage(tenant_id: int | None):
    query_args = accounting.parse_query(request.args)
    rows = accounting.summary(db.session, query_args, tenant_id=tenant_id)
    if request.args.get("format") == "csv":
        return Response(accounting.as_csv(rows), mimetype="text/csv",
                        headers={"Content-Disposition": 'attachment; filename="kqi-usage.csv"'})
    page_no, per_page = paging(request.args)
    return paged(rows[(page_no - 1) * per_page:page_no * per_page], len(rows), page_no, per_page)


@blueprint.get("/admin/usage")
def admin_usage():
    require_admin()
    tenant = request.args.get("tenant")
    tenant_id = None
    if tenant:
        found = db.session.scalar(select(Tenant.id).where(Tenant.name == tenant))
        tenant_id = found if found is not None else -1  # an unknown tenant used nothing
    return _usage(tenant_id)


@blueprint.get("/tenant/usage")
def tenant_usage():
    require_manager()
    return _usage(g.principal.tenant.id)


@blueprint.get("/admin/audit")
def audit_log():
    require_admin()
    page_no, per_page = paging(request.args)
    items, total = audit.page(db.session, audit_buffer(), request.args, page_no, per_page)
    return paged([audit.as_dict(e) for e in items], total, page_no, per_page)


SETTINGS_PROPS = {
    "http_proxy": {"type": "string"}, "https_proxy": {"type": "string"}, "no_proxy": {"type": "string"},
    "notebook_image": {"type": "string"}, "default_cpu": {"type": "number"}, "default_memory_gb": {"type": "number"},
    "default_gpu": {"type": "number"},
    "max_log_gb": {"type": "number", "description": "each log a job leaves is cut there (default 10)"},
    "max_output_gb": {"type": "number", "description": "a job's /kqi/output is kept up to this (default 50)"},
    "smtp_host": {"type": "string"}, "smtp_port": {"type": "integer"},
    "smtp_from": {"type": "string"},
    "notebook_command": {"type": "string", "description": "argv template: {port} and {token} replaced, no shell"},
    "notebook_port": {"type": "integer"}, "tensorboard_image": {"type": "string"},
    "tensorboard_command": {"type": "string", "description": "argv template: {port} replaced, no shell"},
    "tensorboard_port": {"type": "integer"},
}
NUMBER = {"type": "number"}
CONTAINER = obj({"job_id": {"type": "integer"}, "kind": {"type": "string"}, "name": {"type": "string"},
                 "tenant": {"type": "string"}, "user": {"type": "string"}, "status": {"type": "string"},
                 "rank": {"type": "integer"}, "cpu": NUMBER, "memory_gb": NUMBER, "gpu": NUMBER,
                 "gpu_indices": {"type": "array", "items": {"type": "integer"}}, "started_at": NULLABLE_STRING,
                 "halt_requested": {"type": "boolean"}})
AMOUNTS = obj({"cpu": NUMBER, "memory_gb": NUMBER, "gpu": NUMBER})
MONITOR = obj({
    "nodes": {"type": "array", "items": obj({"id": {"type": "integer"}, "name": {"type": "string"},
                                             "schedulable": {"type": "boolean"}, "capacity": AMOUNTS, "used": AMOUNTS,
                                             "containers": {"type": "array", "items": CONTAINER}})},
    "tenants": {"type": "array", "items": obj({"tenant": {"type": "string"}, "jobs": {"type": "integer"},
                                               "containers": {"type": "integer"}, "cpu": NUMBER, "memory_gb": NUMBER,
                                               "gpu": NUMBER})},
})
USAGE_ROW = obj({"period": {"type": "string"}, "tenant": {"type": "string"}, "user": NULLABLE_STRING,
                 "jobs": {"type": "integer"}, "cpu_hours": NUMBER, "memory_gb_hours": NUMBER, "gpu_hours": NUMBER})
USAGE_PARAMS = [
    *PAGING,
    query("group", {"type": "string", "enum": list(accounting.GROUPS)}, "sum per tenant (default) or per user"),
    query("period", {"type": "string", "enum": list(accounting.PERIODS)}, "per day, month (default) or all time"),
    query("since", {"type": "string", "format": "date"}, "first day, YYYY-MM-DD"),
    query("until", {"type": "string", "format": "date"}, "last day, YYYY-MM-DD (inclusive)"),
    query("format", {"type": "string", "enum": ["json", "csv"]}, "csv: every row as CSV, unpaged"),
]
USAGE_OK = {"200": {"description": "usage rows (JSON, paged; or CSV)", "content": {
    "application/json": {"schema": page_of(USAGE_ROW)}, "text/csv": {"schema": {"type": "string"}}}}}
EVENT = obj({"id": {"type": "integer"}, "at": {"type": "string"}, "username": NULLABLE_STRING,
             "tenant": NULLABLE_STRING, "action": {"type": "string"}, "target": {"type": "string"},
             "status": {"type": "integer"}, "ip": NULLABLE_STRING})
ADMIN = ["admin"]
PATHS = {
    "/admin/settings": {
        "get": op("Site settings (administrators)", ok(obj(SETTINGS_PROPS)), tags=ADMIN),
        "put": op("Change site settings: proxies for containers, notebook image, default resources, log and "
                  "output limits per job, SMTP relay",
                  ok(obj(SETTINGS_PROPS)), tags=ADMIN, request=body(obj(SETTINGS_PROPS, required=[]))),
    },
    "/admin/monitor": {"get": op("Resource monitor: containers per node, held resources per tenant",
                                 ok(MONITOR), tags=ADMIN)},
    "/admin/jobs/{job_id}/kill": {"post": op("Stop any tenant's job (administrators)",
                                             ok({"type": "object"}), tags=ADMIN, parameters=[path_id("job_id")])},
    "/admin/jobs/{job_id}/force-end": {"post": op(
        "End any tenant's job at once (administrators): Killed, reason 'force-ended by an administrator', its "
        "resources released now; nothing is collected, its containers are removed when their node answers",
        ok({"type": "object"}), tags=ADMIN, parameters=[path_id("job_id")])},
    "/admin/usage": {"get": op("Usage of every tenant: CPU-, memory- and GPU-hours of ended jobs", USAGE_OK,
                               tags=ADMIN, parameters=[*USAGE_PARAMS, query("tenant", {"type": "string"})])},
    "/tenant/usage": {"get": op("Usage of the current tenant (its managers)", USAGE_OK, tags=["tenant"],
                                parameters=USAGE_PARAMS)},
    "/admin/audit": {"get": op("The audit log, newest first", ok(page_of(EVENT)), tags=ADMIN, parameters=[
        *PAGING, query("username", {"type": "string"}), query("tenant", {"type": "string"}),
        query("action", {"type": "string"}, "part of the action (the route's name, e.g. run_training)"),
        query("since", {"type": "string"}, "ISO 8601 date or time"),
        query("until", {"type": "string"}, "ISO 8601 date or time (a date covers the whole day)")])},
}
