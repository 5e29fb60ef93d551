"""Before submitting: what the tenant can use now and whether a job would start at once."""
from __future__ import annotations

from flask import g, jsonify

from kqi.extensions import db
from kqi.scheduler import availability
from kqi.views.api import blueprint, json_body
from kqi.views.api.openapi import (
    NULLABLE_INTEGER,
    NULLABLE_NUMBER,
    NULLABLE_STRING,
    REASON_CODES,
    body,
    obj,
    ok,
    op,
)
from kqi.views.api.training import SUBMIT


@blueprint.post("/training/estimate")
def estimate_training():
    result = availability.estimate(db.session, g.principal, json_body())
    db.session.rollback()  # read only
    return jsonify(result)


NUMBER = {"type": "number"}
ESTIMATE = obj({
    "starts_now": {"type": "boolean"},
    "node": NULLABLE_STRING,
    "nodes": {"type": "array", "items": {"type": "string"}},
    "gpu_indices": {"type": "array", "items": {"type": "integer"}},
    "queue_position": NULLABLE_INTEGER,
    "reasons": {"type": "array", "items": {"type": "string"}},
    "reason_codes": REASON_CODES,
    "partitions": {"type": "array", "items": {"type": "string"}},
    "free": {"type": "array", "items": obj({
        "node": {"type": "string"}, "schedulable": {"type": "boolean"},
        "partitions": {"type": "array", "items": {"type": "string"}},
        "cpu_free": NUMBER, "cpu_total": NUMBER, "memory_free_gb": NUMBER, "memory_total_gb": NUMBER,
        "gpus_free": {"type": "integer"}, "gpus_total": {"type": "integer"}, "gpu_share_free": NUMBER})},
    "quota": obj({"cpu": NULLABLE_NUMBER, "memory_gb": NULLABLE_NUMBER, "gpu": NULLABLE_NUMBER,
                  "used": obj({"cpu": NUMBER, "memory_gb": NUMBER, "gpu": NUMBER})}),
})
PATHS = {
    "/training/estimate": {"post": op(
        "Estimate a submission: starts at once (on which node) or waits (why), with free capacity and quota",
        ok(ESTIMATE), tags=["training"], request=body({**SUBMIT, "required": []}),
        description="Takes the body of POST /training/run (name, image and command may be left out) and "
                    "runs the scheduler's own plan with the job added to the queue. Nothing is written.")},
}
