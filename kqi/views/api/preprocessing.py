"""Preprocessing: definitions, runs on data items, history with live status and logs."""
from __future__ import annotations

from flask import g, jsonify, request, url_for

from kqi.extensions import db
from kqi.jobs import lifecycle as jobs
from kqi.jobs import runner as job_runner
from kqi.kinds import preprocessing
from kqi.validation import paging
from kqi.views import downloads, sealer, settings
from kqi.views.api import blueprint, created, json_body, paged, scheduler
from kqi.views.api.openapi import (
    NULLABLE_INTEGER,
    NULLABLE_NUMBER,
    NULLABLE_STRING,
    PAGING,
    body,
    obj,
    ok,
    op,
    page_of,
    path_id,
)


def _definition_dict(definition):
    return preprocessing.as_dict(definition, preprocessing.run_count(db.session, definition))


@blueprint.post("/preprocessings")
def create_preprocessing():
    definition = preprocessing.create(db.session, settings(), sealer(), g.principal, json_body())
    db.session.commit()
    return created(_definition_dict(definition), url_for("api.get_preprocessing", preprocessing_id=definition.id))


@blueprint.get("/preprocessings")
def list_preprocessings():
    page_no, per_page = paging(request.args)
    items, total, counts = preprocessing.page(db.session, g.principal, page_no, per_page)
    return paged([preprocessing.as_dict(d, counts.get(d.id, 0)) for d in items], total, page_no, per_page)


@blueprint.get("/preprocessings/<int:preprocessing_id>")
def get_preprocessing(preprocessing_id: int):
    return jsonify(_definition_dict(preprocessing.get(db.session, g.principal, preprocessing_id)))


@blueprint.put("/preprocessings/<int:preprocessing_id>")
def update_preprocessing(preprocessing_id: int):
    definition = preprocessing.update(db.session, settings(), sealer(), g.principal, preprocessing_id, json_body())
    db.session.commit()
    return jsonify(_definition_dict(definition))


@blueprint.delete("/preprocessings/<int:preprocessing_id>")
def delete_preprocessing(preprocessing_id: int):
    preprocessing.delete(db.session, g.principal, preprocessing_id)
    db.session.commit()
    return "", 204


@blueprint.post("/preprocessings/<int:preprocessing_id>/run")
def run_preprocessing(preprocessing_id: int):
    runs = preprocessing.run(db.session, settings(), sealer(), g.principal, preprocessing_id, json_body())
    db.session.commit()
    scheduler().wake()
    response = jsonify({"items": [preprocessing.run_dict(r) for r in runs]})
    response.status_code = 201
    return response


@blueprint.get("/preprocessings/<int:preprocessing_id>/histories")
def list_preprocessing_histories(preprocessing_id: int):
    page_no, per_page = paging(request.args)
    entries, total = preprocessing.history(db.session, g.principal, preprocessing_id, page_no, per_page)
    return paged([preprocessing.run_dict(e) for e in entries], total, page_no, per_page)


@blueprint.get("/preprocessings/<int:preprocessing_id>/histories/<int:run_id>")
def get_preprocessing_history(preprocessing_id: int, run_id: int):
    return jsonify(preprocessing.run_dict(preprocessing.get_run(db.session, g.principal, preprocessing_id, run_id)))


@blueprint.delete("/preprocessings/<int:preprocessing_id>/histories/<int:run_id>")
def delete_preprocessing_history(preprocessing_id: int, run_id: int):
    shas = preprocessing.delete_run(db.session, g.principal, preprocessing_id, run_id)
    db.session.commit()
    jobs.discard_files(db.session, settings().instance_path, run_id, shas)
    return "", 204


@blueprint.post("/preprocessings/<int:preprocessing_id>/histories/<int:run_id>/halt")
def halt_preprocessing_history(preprocessing_id: int, run_id: int):
    entry = preprocessing.get_run(db.session, g.principal, preprocessing_id, run_id)
    jobs.halt(db.session, entry.job)
    db.session.commit()
    scheduler().wake()
    return jsonify(preprocessing.run_dict(entry))


@blueprint.get("/preprocessings/<int:preprocessing_id>/histories/<int:run_id>/log")
def preprocessing_history_log(preprocessing_id: int, run_id: int):
    entry = preprocessing.get_run(db.session, g.principal, preprocessing_id, run_id)
    return downloads.log(job_runner.stream_log(scheduler().run_context(), entry.job))


STATUSES = ["Queued", "Starting", "Running", "Completed", "Failed", "Killed", "UserCanceled", "Error"]
GIT = {"type": ["object", "null"], "properties": {"repository": {"type": "string"}, "branch": NULLABLE_STRING,
                                                  "commit": {"type": "string"}}}
REF = obj({"id": {"type": "integer"}, "name": {"type": "string"}})
DEFINITION = obj({
    "id": {"type": "integer"}, "name": {"type": "string"}, "image": NULLABLE_STRING, "command": NULLABLE_STRING,
    "git": GIT, "cpu": NULLABLE_NUMBER, "memory_gb": NULLABLE_NUMBER, "gpu": NULLABLE_NUMBER,
    "partition": NULLABLE_STRING, "memo": {"type": "string"}, "user": {"type": "string"},
    "runs": {"type": "integer", "description": "history entries"},
    "locked": {"type": "boolean", "description": "image, git and command are fixed while there is history"},
    "runnable": {"type": "boolean", "description": "has an image and a command"},
    "created_at": NULLABLE_STRING, "last_run_at": NULLABLE_STRING,
})
FIELDS = {
    "name": {"type": "string", "pattern": "^[a-z0-9][a-z0-9.-]{0,29}$"},
    "image": {"type": "string"}, "command": {"type": "string", "description": "run with /bin/sh -c in /kqi/git"},
    "git": {"type": ["object", "null"], "properties": {"repository": {"type": "string"}, "branch": {"type": "string"},
                                                       "commit": {"type": "string"}},
            "description": "pinned to a commit when saved (a commit wins over a branch; neither: the default branch)"},
    "cpu": {"type": ["number", "null"], "exclusiveMinimum": 0}, "memory_gb": {"type": ["number", "null"], "exclusiveMinimum": 0},
    "gpu": {"type": ["number", "null"], "minimum": 0}, "partition": {"type": "string"}, "memo": {"type": "string"},
}
CREATE = obj(FIELDS, required=["name"])
UPDATE = obj(FIELDS, required=[])
RUN = obj({
    "data_ids": {"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": preprocessing.MAX_RUN_DATA},
    "cpu": {"type": "number", "exclusiveMinimum": 0}, "memory_gb": {"type": "number", "exclusiveMinimum": 0},
    "gpu": {"type": "number", "minimum": 0}, "partition": {"type": "string"},
    "env": {"type": "object", "additionalProperties": {"type": "string"}},
}, required=["data_ids"])
HISTORY = obj({
    "id": {"type": "integer", "description": "the run's job id"}, "preprocessing": REF, "data": REF,
    "status": {"type": "string", "enum": STATUSES}, "reason": NULLABLE_STRING, "exit_code": NULLABLE_INTEGER,
    "node": NULLABLE_STRING, "queue_position": NULLABLE_INTEGER, "cpu": {"type": "number"},
    "memory_gb": {"type": "number"}, "gpu": {"type": "number"},
    "outputs": {"type": "array", "items": REF, "description": "the data items the run made"},
    "user": {"type": "string"}, "created_at": NULLABLE_STRING, "started_at": NULLABLE_STRING,
    "completed_at": NULLABLE_STRING,
})
ID = [path_id("preprocessing_id")]
RUN_ID = [*ID, path_id("run_id", "the run's job id")]
TAGS = ["preprocessing"]
PATHS = {
    "/preprocessings": {
        "post": op("Create a preprocessing definition (only the name is required)",
                   ok(DEFINITION, "Created (Location: the definition)", 201), tags=TAGS, request=body(CREATE)),
        "get": op("List the tenant's preprocessing definitions, newest first", ok(page_of(DEFINITION)), tags=TAGS,
                  parameters=PAGING),
    },
    "/preprocessings/{preprocessing_id}": {
        "get": op("One definition", ok(DEFINITION), tags=TAGS, parameters=ID),
        "put": op("Change the fields given (with history: not image, git or command)", ok(DEFINITION), tags=TAGS,
                  parameters=ID, request=body(UPDATE)),
        "delete": op("Delete a definition that has no history", {"204": {"description": "deleted"}}, tags=TAGS,
                     parameters=ID),
    },
    "/preprocessings/{preprocessing_id}/run": {
        "post": op("Run on data items: one job each, /kqi/input/{data id}/; each /kqi/output/{name}/ becomes data",
                   ok(obj({"items": {"type": "array", "items": HISTORY}}), "the new history entries", 201),
                   tags=TAGS, parameters=ID, request=body(RUN),
                   description="409 when a data item was already preprocessed by this definition (a queued, "
                               "running or completed run): delete that history entry first."),
    },
    "/preprocessings/{preprocessing_id}/histories": {
        "get": op("The definition's runs, newest first", ok(page_of(HISTORY)), tags=TAGS, parameters=[*ID, *PAGING]),
    },
    "/preprocessings/{preprocessing_id}/histories/{run_id}": {
        "get": op("One run", ok(HISTORY), tags=TAGS, parameters=RUN_ID),
        "delete": op("Delete an ended run with the data it made and its files", {"204": {"description": "deleted"}},
                     tags=TAGS, parameters=RUN_ID),
    },
    "/preprocessings/{preprocessing_id}/histories/{run_id}/halt": {
        "post": op("Halt a run: a queued one at once, a running one by the scheduler", ok(HISTORY), tags=TAGS,
                   parameters=RUN_ID),
    },
    "/preprocessings/{preprocessing_id}/histories/{run_id}/log": {
        "get": op("The run's log (stdout_stderr.log), live while it runs",
                  {"200": {"description": "the log", "content": {"text/plain": {"schema": {"type": "string"}}}}},
                  tags=TAGS, parameters=RUN_ID),
    },
}
