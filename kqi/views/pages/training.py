"""Training pages: list, submit form, detail with live status, log and output files, halt."""
from __future__ import annotations

import io

from flask import Response, abort, current_app, flash, redirect, render_template, request, send_file, url_for

from kqi import job_runner, job_sources, jobs
from kqi.errors import ServiceError
from kqi.extensions import db
from kqi.models import JobStatus
from kqi.storage import LOG_NAME
from kqi.validation import paging
from kqi.views.pages import STOP_POLLING, blueprint, member_page, page, scheduler


@blueprint.get("/training")
@member_page
def training_list(who):
    page_no, per_page = paging(request.args)
    status = request.args.get("status") or None
    try:
        items, total = jobs.page(db.session, who, page_no, per_page, status=status)
    except ServiceError:
        items, total, status = [], 0, None
    return page("training/list.html", "training/_rows.html", jobs=items, total=total, page_no=page_no,
                per_page=per_page, status=status, statuses=[s.value for s in JobStatus])


def _form_body(form) -> dict:
    """The submit form as the API's JSON body, so both go through the same validation."""
    body = {key: form.get(key, "").strip() for key in ("name", "image", "command", "cpu", "memory_gb", "gpu",
                                                         "memo", "time_limit_s", "priority", "partition")}
    body["command"] = form.get("command", "")
    env = {}
    for line in form.get("env", "").splitlines():
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ServiceError(f"env: write one NAME=value per line ({line.strip()[:40]!r} has no '=')", field="env")
        env[key.strip()] = value
    body["env"] = env
    body = {k: v for k, v in body.items() if v not in ("", None) or k in ("name", "image", "command", "cpu", "memory_gb")}
    return {**body, **job_sources.form_fields(form)}


@blueprint.route("/training/new", methods=["GET", "POST"])
@member_page
def training_new(who):
    form = request.form if request.method == "POST" else {"cpu": "1", "memory_gb": "1", "gpu": "0", "priority": "normal"}
    error = None
    if request.method == "POST":
        try:
            job = jobs.submit(db.session, who, _form_body(request.form))
            db.session.commit()
        except ServiceError as exc:
            db.session.rollback()
            error = exc
        else:
            scheduler().wake()
            target = url_for("pages.training_detail", job_id=job.id)
            if request.headers.get("HX-Request"):
                return Response(status=204, headers={"HX-Redirect": target})
            return redirect(target)
    status = 422 if error else 200
    return page("training/new.html", "training/_form.html", form=form, error=error), status


def _job(who, job_id: int):
    try:
        return jobs.get(db.session, who, job_id)
    except ServiceError:
        abort(404)


def _ctx():
    return scheduler().run_context()


@blueprint.get("/training/<int:job_id>")
@member_page
def training_detail(who, job_id: int):
    return render_template("training/detail.html", job=_job(who, job_id))


@blueprint.get("/training/<int:job_id>/status")
@member_page
def training_status(who, job_id: int):
    job = _job(who, job_id)
    body = render_template("training/_status.html", job=job)
    return Response(body, status=STOP_POLLING if job.status.finished else 200)


@blueprint.get("/training/<int:job_id>/log")
@member_page
def training_log(who, job_id: int):
    job = _job(who, job_id)
    whole = request.args.get("whole") == "1"
    tail = None if whole else current_app.config["KQI"]["log_tail_lines"]
    text = job_runner.read_log(_ctx(), job, tail=tail).decode("utf-8", "replace")
    body = render_template("training/_log.html", job=job, log=text, whole=whole)
    return Response(body, status=STOP_POLLING if job.status.finished else 200)


@blueprint.get("/training/<int:job_id>/log/download")
@member_page
def training_log_download(who, job_id: int):
    job = _job(who, job_id)
    data = job_runner.read_log(_ctx(), job)
    return send_file(io.BytesIO(data), as_attachment=True, download_name=LOG_NAME, mimetype="text/plain")


@blueprint.get("/training/<int:job_id>/files")
@member_page
def training_files(who, job_id: int):
    job = _job(who, job_id)
    body = render_template("training/_files.html", job=job, files=job_runner.output_files(_ctx(), job))
    return Response(body, status=STOP_POLLING if job.status.finished else 200)


@blueprint.get("/training/<int:job_id>/files/<path:path>")
@member_page
def training_file(who, job_id: int, path: str):
    job = _job(who, job_id)
    found = job_runner.output_file(_ctx(), job, path)
    if found is None:
        abort(404)
    name = path.rsplit("/", 1)[-1]
    return send_file(io.BytesIO(found) if isinstance(found, bytes) else found, as_attachment=True,
                     download_name=name, mimetype="application/octet-stream")


@blueprint.post("/training/<int:job_id>/halt")
@member_page
def training_halt(who, job_id: int):
    try:
        job = jobs.request_halt(db.session, who, job_id)
        db.session.commit()
    except ServiceError as exc:
        db.session.rollback()
        flash(exc.message)
        job = _job(who, job_id)
    scheduler().wake()
    return render_template("training/_status.html", job=job)
