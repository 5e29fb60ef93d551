"""What a run was given and what came of it: attachments (/kqi/attach), lineage, output.zip."""
from __future__ import annotations

from flask import g, jsonify, request

from kqi.backends.base import NodeError
from kqi.data.uploads import body_chunks
from kqi.errors import Conflict
from kqi.extensions import db
from kqi.jobs import history as runs
from kqi.jobs import lifecycle as jobs
from kqi.jobs import sources as job_sources
from kqi.jobs.files import JobFiles
from kqi.models import JobStatus
from kqi.views import downloads, settings
from kqi.views.api import blueprint, scheduler
from kqi.views.api.data import keep, store, upload_limit


def attachment_dict(row) -> dict:
    return {"id": row.id, "name": row.name, "size": row.size, "sha256": row.sha256}


@blueprint.put("/training/<int:job_id>/attachments")
def attach_file(job_id: int):
    """A raw body with ?name=FILE becomes /kqi/attach/FILE: before the run starts, or during it."""
    job = jobs.get(db.session, g.principal, job_id)
    if job.status.finished:
        raise Conflict(f"job {job.id} has ended ({job.status.value}): nothing can be attached any more")
    name = job_sources.file_name(request.args.get("name", ""))
    limit = upload_limit()  # before the stream is touched: it is bounded when first opened
    sha, size = store().put_chunks(body_chunks(request.stream), limit)
    row = keep([(name, sha, size)], lambda: job_sources.add_attachment(db.session, job, name, sha, size))
    db.session.refresh(job)
    shipped = job.status == JobStatus.RUNNING
    if shipped:
        for part in job.parts:
            try:
                job_sources.ship_attachment(store(), row, scheduler().driver(part.node), part.container_id,
                                            JobFiles(settings().instance_path, job.id).root / "shipping")
            except NodeError as exc:
                raise Conflict(f"attached, but the running container could not receive it: {exc}") from None
    return jsonify({**attachment_dict(row), "delivered": "now" if shipped else "at start"}), 201


@blueprint.get("/training/<int:job_id>/attachments")
def list_attachments(job_id: int):
    job = jobs.get(db.session, g.principal, job_id)
    return jsonify({"items": [attachment_dict(r) for r in job_sources.attachments(db.session, job)]})


@blueprint.get("/training/<int:job_id>/lineage")
def job_lineage(job_id: int):
    return jsonify(job_sources.lineage(db.session, jobs.get(db.session, g.principal, job_id)))


@blueprint.get("/training/<int:job_id>/output.zip")
def output_zip(job_id: int):
    """The kept /kqi/output as one zip, made as it is sent."""
    return downloads.send(runs.output_zip(settings().instance_path, jobs.get(db.session, g.principal, job_id)),
                          "output.zip", "application/zip")


_ERR = {"description": "error: {\"error\": {\"code\", \"message\", \"field\"}}"}
PATHS = {
    "/training/{job_id}/attachments": {
        "put": {"summary": "Attach a file (raw body, ?name=FILE) to /kqi/attach; a running job gets it at once",
                "responses": {"201": {"description": "attached"}, "409": _ERR, "413": _ERR}},
        "get": {"summary": "The run's attachments", "responses": {"200": {"description": "items"}}},
    },
    "/training/{job_id}/lineage": {
        "get": {"summary": "Datasets, parents and children of a run (nodes and edges, both directions)",
                "responses": {"200": {"description": "nodes, edges"}}},
    },
    "/training/{job_id}/output.zip": {
        "get": {"summary": "The kept /kqi/output as a zip", "responses": {"200": {"description": "zip"}, "409": _ERR}},
    },
}
