"""Training jobs: submit, list, read, halt, log and output files."""
from __future__ import annotations

import io

from flask import Response, g, jsonify, request, send_file, url_for

from kqi import job_runner, jobs
from kqi.errors import NotFound
from kqi.extensions import db
from kqi.blobs import BlobStore
from kqi.storage import LOG_NAME, JobFiles
from kqi.validation import paging
from kqi.views.api import blueprint, created, json_body, paged, scheduler
from kqi.views.api.openapi import NULLABLE_INTEGER, NULLABLE_STRING, PAGING, body, obj, ok, op, page_of, path_id, query


@blueprint.post("/training/run")
def run_training():
    job = jobs.submit(db.session, g.principal, json_body())
    db.session.commit()
    scheduler().wake()
    return created(jobs.as_dict(job), url_for("api.get_training", job_id=job.id))


@blueprint.get("/training")
def list_training():
    page_no, per_page = paging(request.args)
    items, total = jobs.page(db.session, g.principal, page_no, per_page, status=request.args.get("status"))
    return paged([jobs.as_dict(j) for j in items], total, page_no, per_page)


@blueprint.get("/training/<int:job_id>")
def get_training(job_id: int):
    return jsonify(jobs.as_dict(jobs.get(db.session, g.principal, job_id)))


@blueprint.post("/training/<int:job_id>/halt")
def halt_training(job_id: int):
    job = jobs.request_halt(db.session, g.principal, job_id)
    db.session.commit()
    scheduler().wake()
    return jsonify(jobs.as_dict(job))


@blueprint.delete("/training/<int:job_id>")
def delete_training(job_id: int):
    attached = jobs.remove(db.session, g.principal, job_id)
    db.session.commit()
    JobFiles(_ctx().instance, job_id).delete()
    BlobStore(_ctx().instance).discard_unreferenced(db.session, attached)
    return "", 204


@blueprint.get("/training/<int:job_id>/log")
def training_log(job_id: int):
    job = jobs.get(db.session, g.principal, job_id)
    data = job_runner.read_log(_ctx(), job)
    return Response(data, mimetype="text/plain",
                    headers={"Content-Disposition": f'inline; filename="{LOG_NAME}"'})


@blueprint.get("/training/<int:job_id>/files")
def training_files(job_id: int):
    job = jobs.get(db.session, g.principal, job_id)
    return jsonify({"items": [{"path": f.path, "size": f.size} for f in job_runner.output_files(_ctx(), job)]})


@blueprint.get("/training/<int:job_id>/files/<path:path>")
def training_file(job_id: int, path: str):
    job = jobs.get(db.session, g.principal, job_id)
    found = job_runner.output_file(_ctx(), job, path)
    if found is None:
        raise NotFound("file")
    name = path.rsplit("/", 1)[-1]
    return send_file(io.BytesIO(found) if isinstance(found, bytes) else found, as_attachment=True,
                     download_name=name, mimetype="application/octet-stream")


def _ctx():
    return scheduler().run_context()


STATUSES = ["Queued", "Starting", "Running", "Completed", "Failed", "Killed", "UserCanceled", "Error"]
JOB = obj({
    "id": {"type": "integer"}, "kind": {"type": "string"}, "name": {"type": "string"}, "tenant": {"type": "string"},
    "user": {"type": "string"}, "image": {"type": "string"}, "command": {"type": "string"}, "cpu": {"type": "number"},
    "memory_gb": {"type": "number"}, "gpu": {"type": "number"},
    "env": {"type": "object", "additionalProperties": {"type": "string"}}, "memo": {"type": "string"},
    "time_limit_s": NULLABLE_INTEGER, "priority": {"type": "string", "enum": ["low", "normal", "high"]},
    "partition": NULLABLE_STRING, "status": {"type": "string", "enum": STATUSES}, "reason": NULLABLE_STRING,
    "exit_code": NULLABLE_INTEGER, "node": NULLABLE_STRING, "gpu_indices": {"type": "array", "items": {"type": "integer"}},
    "nodes": {"type": "integer"},
    "parts": {"type": "array", "items": obj({"rank": {"type": "integer"}, "node": {"type": "string"},
                                              "gpu_indices": {"type": "array", "items": {"type": "integer"}}})},
    "queue_position": NULLABLE_INTEGER, "pending_reasons": {"type": "array", "items": {"type": "string"}},
    "halt_requested": {"type": "boolean"}, "created_at": NULLABLE_STRING, "started_at": NULLABLE_STRING,
    "completed_at": NULLABLE_STRING,
}, required=["id", "name", "status"])
SUBMIT = obj({
    "name": {"type": "string", "pattern": "^[a-z0-9][a-z0-9.-]{0,29}$"}, "image": {"type": "string"},
    "command": {"type": "string"}, "cpu": {"type": "number", "exclusiveMinimum": 0},
    "memory_gb": {"type": "number", "exclusiveMinimum": 0},
    "gpu": {"type": "number", "minimum": 0, "description": "whole GPUs, or a share of one between 0 and 1"},
    "env": {"type": "object", "additionalProperties": {"type": "string"}}, "memo": {"type": "string"},
    "time_limit_s": {"type": "integer", "minimum": 1}, "priority": {"type": "string", "enum": ["low", "normal", "high"]},
    "partition": {"type": "string"}, "nodes": {"type": "integer", "minimum": 1, "description": "gang size"},
}, required=["name", "image", "command", "cpu", "memory_gb"])
JOB_ID = [path_id("job_id")]
TEXT = {"200": {"description": "the log, stdout and stderr together", "content": {"text/plain": {"schema": {"type": "string"}}}}}
FILE = {"200": {"description": "the file", "content": {"application/octet-stream": {"schema": {"type": "string",
                                                                                               "format": "binary"}}}}}
TAGS = ["training"]
PATHS = {
    "/training/run": {"post": op("Submit a training job", ok(JOB, "Created (Location: the job)", 201), tags=TAGS,
                                 request=body(SUBMIT))},
    "/training": {"get": op("List the tenant's training jobs, newest first", ok(page_of(JOB)), tags=TAGS,
                            parameters=[*PAGING, query("status", {"type": "string", "enum": STATUSES})])},
    "/training/{job_id}": {
        "get": op("One training job", ok(JOB), tags=TAGS, parameters=JOB_ID),
        "delete": op("Delete an ended job, its log and outputs", {"204": {"description": "deleted"}}, tags=TAGS,
                     parameters=JOB_ID),
    },
    "/training/{job_id}/halt": {"post": op("Halt a job: a queued one at once, a running one by the scheduler",
                                           ok(JOB), tags=TAGS, parameters=JOB_ID)},
    "/training/{job_id}/log": {"get": op("The job's log, live while it runs", TEXT, tags=TAGS, parameters=JOB_ID)},
    "/training/{job_id}/files": {"get": op("The files under /kqi/output", ok(obj({"items": {"type": "array", "items": obj(
        {"path": {"type": "string"}, "size": {"type": "integer"}})}})), tags=TAGS, parameters=JOB_ID)},
    "/training/{job_id}/files/{path}": {"get": op(
        "Download one output file", FILE, tags=TAGS,
        parameters=[*JOB_ID, {"name": "path", "in": "path", "required": True, "schema": {"type": "string"}}])},
}
