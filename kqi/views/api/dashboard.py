"""The dashboard's figures as JSON: my jobs and GPU-hours, my tenant's quota and use, the cluster."""
from __future__ import annotations

from flask import g, jsonify, request

from kqi.cluster import dashboard
from kqi.extensions import db
from kqi.models import JobStatus, utcnow
from kqi.views.api import blueprint
from kqi.views.api.openapi import NULLABLE_INTEGER, NULLABLE_NUMBER, NULLABLE_STRING, obj, ok, op, query


@blueprint.get("/dashboard")
def get_dashboard():
    hours = dashboard.parse_hours(request.args)
    return jsonify(dashboard.summary(db.session, g.principal, utcnow(), hours))


NUMBER, INTEGER, STRING = {"type": "number"}, {"type": "integer", "minimum": 0}, {"type": "string"}
JOB = obj({"id": {"type": "integer"}, "kind": STRING, "name": STRING,
           "status": {"type": "string", "enum": [s.value for s in JobStatus]}, "reason": NULLABLE_STRING,
           "node": NULLABLE_STRING, "gpu": NUMBER, "queue_position": NULLABLE_INTEGER, "created_at": STRING,
           "started_at": NULLABLE_STRING, "completed_at": NULLABLE_STRING})
JOBS = {"type": "array", "items": JOB}
USED_OF = obj({"used": NUMBER, "total": NUMBER})
QUOTA = obj({"used": NUMBER, "quota": NULLABLE_NUMBER})
DASHBOARD = obj({
    "user": STRING, "tenant": STRING,
    "jobs": obj({"running": JOBS, "queued": JOBS, "recent": JOBS, "running_total": INTEGER, "queued_total": INTEGER},
                description="mine, in the current tenant, every kind; at most 20 running and queued, 10 recent"),
    "gpu_hours_week": obj({"since": STRING, "ended": NUMBER, "running": NUMBER, "total": NUMBER},
                          description="mine since Monday 00:00 UTC: ended jobs' part in the week plus running jobs so far"),
    "tenant_use": obj({"name": STRING, "display_name": STRING, "queued": INTEGER, "running": INTEGER,
                       "cpu": QUOTA, "memory_gb": QUOTA, "gpu": QUOTA},
                      description="the current tenant's quota (null: unlimited) and what its active jobs hold"),
    "cluster": obj({
        "nodes": {"type": "array", "items": obj({"id": {"type": "integer"}, "name": STRING, "state": STRING,
                                                 "labels": {"type": "array", "items": STRING},
                                                 "gpus": USED_OF, "cpu": USED_OF, "memory_gb": USED_OF})},
        "queued": INTEGER, "running": INTEGER,
        "gpus": obj({"total": INTEGER, "allocated": NUMBER, "utilisation_pct": NULLABLE_NUMBER})},
        description="every tenant's jobs counted; utilisation is null without GPUs"),
    "history": obj({"since": STRING, "until": STRING, "points": {"type": "array", "items": obj({
        "at": STRING, "gpu_total": INTEGER, "gpu_allocated": NUMBER, "utilisation_pct": NULLABLE_NUMBER,
        "queued": INTEGER, "running": INTEGER})}}, description="cluster samples, oldest first"),
})
PATHS = {
    "/dashboard": {"get": op(
        "The dashboard: my jobs and GPU-hours this week, my tenant's quota and use, the cluster and its history",
        ok(DASHBOARD), tags=["dashboard"],
        parameters=[query("hours", {"type": "integer", "minimum": 1, "maximum": dashboard.MAX_HOURS,
                                    "default": dashboard.DEFAULT_HOURS},
                          "how far back the history reaches, in hours")])},
}
