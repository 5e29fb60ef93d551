"""Training jobs: submit, list, read, halt, log and output files."""
from __future__ import annotations

import io

from flask import Response, g, jsonify, request, send_file, url_for

from kqi import job_runner, jobs
from kqi.errors import NotFound
from kqi.extensions import db
from kqi.storage import LOG_NAME
from kqi.validation import paging
from kqi.views.api import blueprint, created, json_body, paged, scheduler


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
