"""Training and inference runs: submit, list with filters, read, edit (memo, tags, star), timeline, halt,
delete, exec, log and output files. One set of views serves /training and /inference (kqi/views/kinds.py)."""
from __future__ import annotations

from flask import g, jsonify, request, url_for

from kqi.errors import NotFound
from kqi.extensions import db
from kqi.jobs import history as runs
from kqi.jobs import lifecycle as jobs
from kqi.jobs import runner as job_runner
from kqi.jobs import shell as job_exec
from kqi.validation import paging
from kqi.views import audit_buffer, downloads, sealer, settings
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
from kqi.views.kinds import kind_route, lookup_kind


@kind_route(blueprint, "/run", methods=("POST",))
def run_training(kind: str):
    job = jobs.submit(db.session, settings(), sealer(), g.principal, json_body(), kind=kind)
    answer = _job_dict(job, jobs.Shown.of(job))  # before the commit expires the job: nothing to read back
    db.session.commit()
    scheduler().wake()
    return created(answer, url_for(f"api.get_{kind}", job_id=answer["id"]))


@kind_route(blueprint, "")
def list_training(kind: str):
    page_no, per_page = paging(request.args)
    items, total = jobs.page(db.session, g.principal, page_no, per_page, status=request.args.get("status"),
                             kind=kind, filters=request.args, collections=False)
    shown = jobs.shown_on(db.session, [j.id for j in items], g.principal.user)
    return paged([_job_dict(j, shown) for j in items], total, page_no, per_page)


@kind_route(blueprint, "/<int:job_id>")
def get_training(job_id: int, kind: str):
    return jsonify(_job_dict(_job(job_id, kind)))


@kind_route(blueprint, "/<int:job_id>", methods=("PATCH",))
def edit_training(job_id: int, kind: str):
    job = runs.update(db.session, g.principal, _job(job_id, kind), json_body())
    db.session.commit()
    return jsonify(_job_dict(job))


@kind_route(blueprint, "/<int:job_id>/timeline")
def training_timeline(job_id: int, kind: str):
    return jsonify({"items": runs.timeline(db.session, _job(job_id, kind))})


@kind_route(blueprint, "/<int:job_id>/halt", methods=("POST",))
def halt_training(job_id: int, kind: str):
    job = jobs.halt(db.session, _job(job_id, kind))
    db.session.commit()
    scheduler().wake()
    return jsonify(_job_dict(job))


@kind_route(blueprint, "/<int:job_id>", methods=("DELETE",))
def delete_training(job_id: int, kind: str):
    attached = jobs.remove(db.session, g.principal, _job(job_id, kind).id)
    db.session.commit()
    jobs.discard_files(db.session, _ctx().instance, job_id, attached)
    return "", 204


@kind_route(blueprint, "/<int:job_id>/exec", methods=("POST",))
def exec_training(job_id: int, kind: str):
    limits = settings()
    return jsonify(job_exec.run(db.session, _ctx(), g.principal, job_id, json_body(), kind=lookup_kind(kind),
                                timeout_s=limits.exec_timeout_s, limit_bytes=limits.exec_output_kb * 1024,
                                ip=request.remote_addr or "", audit_log=audit_buffer()))


@kind_route(blueprint, "/<int:job_id>/log")
def training_log(job_id: int, kind: str):
    return downloads.log(job_runner.stream_log(_ctx(), _job(job_id, kind)))


@kind_route(blueprint, "/<int:job_id>/files")
def training_files(job_id: int, kind: str):
    job = _job(job_id, kind)
    return jsonify({"items": [{"path": f.path, "size": f.size} for f in job_runner.output_files(_ctx(), job)]})


@kind_route(blueprint, "/<int:job_id>/files/<path:path>")
def training_file(job_id: int, path: str, kind: str):
    found = job_runner.output_file(_ctx(), _job(job_id, kind), path)
    if found is None:
        raise NotFound("file")
    return downloads.send(found, path.rsplit("/", 1)[-1], "application/octet-stream")


def _job(job_id: int, kind: str):
    return jobs.get(db.session, g.principal, job_id, lookup_kind(kind))


def _job_dict(job, shown: jobs.Shown | None = None) -> dict:
    """The job's JSON with the caller's star (a list reads them, and the parts, parents and tags,
    for its whole page at once)."""
    if shown is None:
        shown = jobs.shown_on(db.session, [job.id], g.principal.user)
    return {**jobs.as_dict(job, shown), "favorite": job.id in shown.starred}


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
    "pending_reason_codes": REASON_CODES, "halt_requested": {"type": "boolean"}, "created_at": NULLABLE_STRING, "started_at": NULLABLE_STRING,
    "completed_at": NULLABLE_STRING, "value": {**NULLABLE_NUMBER, "description": "/kqi/output/value.txt, read at the end"},
    "tags": {"type": "array", "items": {"type": "string"}}, "favorite": {"type": "boolean"},
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
EDIT = obj({"memo": {"type": "string"}, "tags": {"type": "array", "items": {"type": "string"}, "maxItems": runs.MAX_TAGS},
            "favorite": {"type": "boolean", "description": "the caller's star"}}, required=[])
EXEC = obj({"command": {"oneOf": [{"type": "string", "minLength": 1, "description": "run by /bin/sh -c in the container"},
                                  {"type": "array", "items": {"type": "string"}, "minItems": 1,
                                   "description": "argv, run as is"}]}})
EXEC_RESULT = obj({"exit_code": NULLABLE_INTEGER, "output": {"type": "string"}, "truncated": {"type": "boolean"},
                   "timed_out": {"type": "boolean"}, "timeout_s": {"type": "number"}})
TIMELINE = obj({"items": {"type": "array", "items": obj({"at": {"type": "string"}, "status": {"type": "string"},
                                                         "reason": NULLABLE_STRING})}})
FILTERS = [
    query("status", {"type": "string", "enum": STATUSES}),
    query("name", {"type": "string", "maxLength": 64}, "part of the name"),
    query("tag", {"type": "string", "maxLength": 64}, "one whole tag"),
    query("user", {"type": "string", "maxLength": 64}, "the submitter's username"),
    query("created_from", {"type": "string", "format": "date"}, "ISO 8601 date or time (UTC)"),
    query("created_to", {"type": "string", "format": "date"}, "ISO 8601 date or time (UTC); a date covers that day"),
    query("favorites", {"type": "boolean"}, "only the runs the caller starred"),
]


def _paths(kind: str) -> dict:
    """The same operations under /training and /inference."""
    tags, a = [kind], f"{kind} run"
    return {
        f"/{kind}/run": {"post": op(f"Submit a {a}" + (" (parent_ids: at least one training)" if kind == "inference" else ""),
                                    ok(JOB, "Created (Location: the job)", 201), tags=tags, request=body(SUBMIT))},
        f"/{kind}": {"get": op(f"List the tenant's {kind} runs, newest first, filtered", ok(page_of(JOB)), tags=tags,
                               parameters=[*PAGING, *FILTERS])},
        f"/{kind}/{{job_id}}": {
            "get": op(f"One {a}", ok(JOB), tags=tags, parameters=JOB_ID),
            "patch": op("Edit the memo, the tags or the caller's star", ok(JOB), tags=tags, parameters=JOB_ID,
                        request=body(EDIT)),
            "delete": op("Delete an ended run, its log and outputs", {"204": {"description": "deleted"}}, tags=tags,
                         parameters=JOB_ID),
        },
        f"/{kind}/{{job_id}}/timeline": {"get": op("Every status change with its time and reason", ok(TIMELINE),
                                                   tags=tags, parameters=JOB_ID)},
        f"/{kind}/{{job_id}}/halt": {"post": op("Halt a run: a queued one at once, a running one by the scheduler",
                                                ok(JOB), tags=tags, parameters=JOB_ID)},
        f"/{kind}/{{job_id}}/exec": {"post": op(
            "Run a command in the running container (time limit and output cap: exec_timeout_s, exec_output_kb)",
            ok(EXEC_RESULT), tags=tags, parameters=JOB_ID, request=body(EXEC))},
        f"/{kind}/{{job_id}}/log": {"get": op("The run's log, live while it runs", TEXT, tags=tags, parameters=JOB_ID)},
        f"/{kind}/{{job_id}}/files": {"get": op("The files under /kqi/output", ok(obj({"items": {"type": "array", "items": obj(
            {"path": {"type": "string"}, "size": {"type": "integer"}})}})), tags=tags, parameters=JOB_ID)},
        f"/{kind}/{{job_id}}/files/{{path}}": {"get": op(
            "Download one output file", FILE, tags=tags,
            parameters=[*JOB_ID, {"name": "path", "in": "path", "required": True, "schema": {"type": "string"}}])},
    }


PATHS = {path: item for kind in runs.KINDS for path, item in _paths(kind).items()}
