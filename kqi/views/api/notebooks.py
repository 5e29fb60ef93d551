"""Notebooks (/notebooks) and a run's TensorBoard (/training/<id>/tensorboard)."""
from __future__ import annotations

from flask import g, jsonify, request, url_for

from kqi.extensions import db
from kqi.jobs import lifecycle as jobs
from kqi.jobs import runner as job_runner
from kqi.kinds import notebook as notebooks
from kqi.kinds import tensorboard
from kqi.validation import paging
from kqi.views import downloads, sealer, settings
from kqi.views.api import blueprint, created, json_body, paged, scheduler
from kqi.views.api.openapi import (
    NULLABLE_INTEGER,
    NULLABLE_NUMBER,
    NULLABLE_STRING,
    PAGING,
    REASON_CODES,
    body,
    obj,
    ok,
    op,
    page_of,
    path_id,
    query,
)


@blueprint.post("/notebooks/run")
def run_notebook():
    job = notebooks.create(db.session, settings(), sealer(), g.principal, json_body())
    db.session.commit()
    scheduler().wake()
    return created(notebooks.as_dict(sealer(), job), url_for("api.get_notebook", job_id=job.id))


@blueprint.get("/notebooks")
def list_notebooks():
    page_no, per_page = paging(request.args)
    items, total = notebooks.page(db.session, g.principal, page_no, per_page, status=request.args.get("status"))
    return paged([notebooks.as_dict(sealer(), j) for j in items], total, page_no, per_page)


@blueprint.get("/notebooks/<int:job_id>")
def get_notebook(job_id: int):
    return jsonify(notebooks.as_dict(sealer(), notebooks.get(db.session, g.principal, job_id)))


@blueprint.post("/notebooks/<int:job_id>/halt")
def halt_notebook(job_id: int):
    job = notebooks.halt(db.session, g.principal, job_id)
    db.session.commit()
    scheduler().wake()
    return jsonify(notebooks.as_dict(sealer(), job))


@blueprint.post("/notebooks/<int:job_id>/rerun")
def rerun_notebook(job_id: int):
    job = notebooks.rerun(db.session, settings(), sealer(), g.principal, job_id)
    db.session.commit()
    scheduler().wake()
    return created(notebooks.as_dict(sealer(), job), url_for("api.get_notebook", job_id=job.id))


@blueprint.delete("/notebooks/<int:job_id>")
def delete_notebook(job_id: int):
    attached = notebooks.remove(db.session, g.principal, job_id)
    db.session.commit()
    instance = scheduler().run_context().instance
    jobs.discard_files(db.session, instance, job_id, attached)
    return "", 204


@blueprint.get("/notebooks/<int:job_id>/log")
def notebook_log(job_id: int):
    job = notebooks.get(db.session, g.principal, job_id)
    return downloads.log(job_runner.stream_log(scheduler().run_context(), job))


@blueprint.get("/training/<int:job_id>/tensorboard")
def get_tensorboard(job_id: int):
    job = tensorboard.for_run(db.session, g.principal, job_id)
    return jsonify({"tensorboard": tensorboard.as_dict(job) if job else None})


@blueprint.post("/training/<int:job_id>/tensorboard")
def start_tensorboard(job_id: int):
    job, new = tensorboard.start(db.session, settings(), sealer(), g.principal, job_id)
    db.session.commit()
    scheduler().wake()
    response = jsonify({"tensorboard": tensorboard.as_dict(job)})
    response.status_code = 201 if new else 200
    return response


@blueprint.delete("/training/<int:job_id>/tensorboard")
def stop_tensorboard(job_id: int):
    job = tensorboard.stop(db.session, g.principal, job_id)
    db.session.commit()
    scheduler().wake()
    return jsonify({"tensorboard": tensorboard.as_dict(job)})


STATUSES = ["Queued", "Starting", "Running", "Completed", "Failed", "Killed", "UserCanceled", "Error"]
RUN = {
    "id": {"type": "integer"}, "kind": {"type": "string"}, "name": {"type": "string"}, "tenant": {"type": "string"},
    "user": {"type": "string"}, "image": {"type": "string"}, "cpu": {"type": "number"},
    "memory_gb": {"type": "number"}, "gpu": {"type": "number"}, "status": {"type": "string", "enum": STATUSES},
    "reason": NULLABLE_STRING, "node": NULLABLE_STRING, "pending_reasons": {"type": "array", "items": {"type": "string"}},
    "pending_reason_codes": REASON_CODES, "queue_position": NULLABLE_INTEGER, "halt_requested": {"type": "boolean"}, "created_at": NULLABLE_STRING,
    "started_at": NULLABLE_STRING, "completed_at": NULLABLE_STRING,
}
NOTEBOOK = obj({
    **RUN,
    "lifetime_hours": {**NULLABLE_NUMBER, "description": "null: until stopped"},
    "expires_at": NULLABLE_STRING, "remaining_s": NULLABLE_INTEGER, "previous_id": NULLABLE_INTEGER,
    "url": {**NULLABLE_STRING, "description": "the 'open notebook' link with its token, while it runs"},
}, required=["id", "name", "status", "url", "lifetime_hours"])
CREATE = obj({
    "name": {"type": "string", "pattern": "^[a-z0-9][a-z0-9.-]{0,29}$"},
    "image": {"type": "string", "description": "default: the site's notebook image"},
    "cpu": {"type": "number", "exclusiveMinimum": 0}, "memory_gb": {"type": "number", "exclusiveMinimum": 0},
    "gpu": {"type": "number", "minimum": 0},
    "lifetime_hours": {**NULLABLE_NUMBER, "description": "omitted: the tenant's default; null: unlimited "
                                                          "(only where the tenant sets no maximum)"},
    "partition": {"type": "string"}, "env": {"type": "object", "additionalProperties": {"type": "string"}},
    "memo": {"type": "string"}, "dataset_id": {"type": "integer"},
    "git": obj({"repository": {"type": "string"}, "branch": {"type": "string"}, "commit": {"type": "string"}},
               required=["repository"]),
    "parent_ids": {"type": "array", "items": {"type": "integer"}}, "pull": {"type": "boolean"},
}, required=["name"])
TENSORBOARD = obj({"tensorboard": {"oneOf": [{"type": "null"}, obj({
    **RUN, "run_id": NULLABLE_INTEGER, "url": {**NULLABLE_STRING, "description": "its link, while it runs"}},
    required=["id", "status", "url", "run_id"])]}})
JOB_ID = [path_id("job_id")]
TAGS = ["notebooks"]
PATHS = {
    "/notebooks/run": {"post": op("Start a notebook (JupyterLab)", ok(NOTEBOOK, "Created (Location: the notebook)", 201),
                                  tags=TAGS, request=body(CREATE))},
    "/notebooks": {"get": op("List the tenant's notebooks, newest first", ok(page_of(NOTEBOOK)), tags=TAGS,
                             parameters=[*PAGING, query("status", {"type": "string", "enum": STATUSES})])},
    "/notebooks/{job_id}": {
        "get": op("One notebook, with its open link while it runs", ok(NOTEBOOK), tags=TAGS, parameters=JOB_ID),
        "delete": op("Delete an ended notebook run and its stored output", {"204": {"description": "deleted"}},
                     tags=TAGS, parameters=JOB_ID),
    },
    "/notebooks/{job_id}/halt": {"post": op("Stop a notebook", ok(NOTEBOOK), tags=TAGS, parameters=JOB_ID)},
    "/notebooks/{job_id}/rerun": {"post": op(
        "Run an ended notebook again (same settings), its earlier /kqi/output restored",
        ok(NOTEBOOK, "Created (Location: the new run)", 201), tags=TAGS, parameters=JOB_ID)},
    "/notebooks/{job_id}/log": {"get": op(
        "The notebook's log", {"200": {"description": "stdout and stderr", "content": {
            "text/plain": {"schema": {"type": "string"}}}}}, tags=TAGS, parameters=JOB_ID)},
    "/training/{job_id}/tensorboard": {
        "get": op("The run's TensorBoard (the newest; null if it never had one)", ok(TENSORBOARD), tags=TAGS,
                  parameters=JOB_ID),
        "post": op("Start a TensorBoard on the run's outputs (an ended run); the one already up is returned (200)",
                   {**ok(TENSORBOARD), **ok(TENSORBOARD, "Created", 201)}, tags=TAGS, parameters=JOB_ID),
        "delete": op("Stop the run's TensorBoard", ok(TENSORBOARD), tags=TAGS, parameters=JOB_ID),
    },
}
