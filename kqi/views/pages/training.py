"""Training and inference pages (one set of views, kqi/views/kinds.py): the history list with filters,
stars and tags; the detail with its live status and timeline, log, output files, memo and tag edits, halt,
delete, and a shell into the running container."""
from __future__ import annotations

from flask import (
    abort,
    current_app,
    flash,
    render_template,
    request,
    url_for,
)

from kqi.errors import ServiceError
from kqi.extensions import db
from kqi.jobs import history as runs
from kqi.jobs import lifecycle as jobs
from kqi.jobs import runner as job_runner
from kqi.jobs import shell as job_exec
from kqi.models import JobStatus
from kqi.validation import paging
from kqi.views import audit_buffer, downloads, settings
from kqi.views.kinds import kind_route, lookup_kind
from kqi.views.pages import STOP_POLLING, blueprint, go_to, member_page, page, polled, scheduler


@kind_route(blueprint, "")
@member_page
def training_list(who, kind: str):
    """The history: filters in the query string (bookmarkable); the rows poll themselves while any
    job on the page can still change, and the poll stops (286) once none can."""
    page_no, per_page = paging(request.args)
    filters = {k: request.args.get(k, "").strip() for k in runs.FILTERS}
    error = None
    try:
        items, total = jobs.page(db.session, who, page_no, per_page, status=filters["status"] or None, kind=kind,
                                 filters=filters)
    except ServiceError as exc:
        db.session.rollback()
        items, total, error = [], 0, exc
    active = any(not job.status.finished for job in items)
    response = page("training/list.html", "training/_rows.html", kind=kind, jobs=items, total=total,
                    page_no=page_no, per_page=per_page, filters=filters, error=error,
                    query={k: v for k, v in filters.items() if v}, statuses=[s.value for s in JobStatus],
                    starred=runs.favorite_ids(db.session, who, [j.id for j in items]), active=active)
    if request.args.get("poll") == "1" and not active:
        response.status_code = STOP_POLLING
    return response


@blueprint.app_template_global()
def new_run_url(kind: str, **args) -> str | None:
    """The submit form of a kind (copy=ID, parent=ID prefill it), or None while it has none."""
    endpoint = f"pages.{kind}_new"
    return url_for(endpoint, **args) if endpoint in current_app.view_functions else None


def _job(who, job_id: int, kind: str):
    try:
        return jobs.get(db.session, who, job_id, lookup_kind(kind))
    except ServiceError:
        abort(404)


def _ctx():
    return scheduler().run_context()




@kind_route(blueprint, "/<int:job_id>")
@member_page
def training_detail(who, job_id: int, kind: str):
    job = _job(who, job_id, kind)
    return render_template("training/detail.html", job=job, kind=kind, timeline=runs.timeline(db.session, job),
                           favorite=bool(runs.favorite_ids(db.session, who, [job.id])))


@kind_route(blueprint, "/<int:job_id>/status")
@member_page
def training_status(who, job_id: int, kind: str):
    job = _job(who, job_id, kind)
    return polled(render_template("training/_status.html", job=job, kind=kind,
                                   timeline=runs.timeline(db.session, job)), job)


@kind_route(blueprint, "/<int:job_id>/log")
@member_page
def training_log(who, job_id: int, kind: str):
    job = _job(who, job_id, kind)
    whole = request.args.get("whole") == "1"
    tail = job_runner.LOG_VIEW_LINES if whole else settings().log_tail_lines
    text = job_runner.read_log(_ctx(), job, tail=tail).decode("utf-8", "replace")
    return polled(render_template("training/_log.html", job=job, kind=kind, log=text, whole=whole,
                                  view=job_runner.LOG_VIEW_LINES), job)


@kind_route(blueprint, "/<int:job_id>/log/download")
@member_page
def training_log_download(who, job_id: int, kind: str):
    return downloads.log(job_runner.stream_log(_ctx(), _job(who, job_id, kind)), attachment=True)


@kind_route(blueprint, "/<int:job_id>/files")
@member_page
def training_files(who, job_id: int, kind: str):
    job = _job(who, job_id, kind)
    files = job_runner.output_files(_ctx(), job)
    return polled(render_template("training/_files.html", job=job, kind=kind, files=files), job)


@kind_route(blueprint, "/<int:job_id>/files/<path:path>")
@member_page
def training_file(who, job_id: int, path: str, kind: str):
    found = job_runner.output_file(_ctx(), _job(who, job_id, kind), path)
    if found is None:
        abort(404)
    return downloads.send(found, path.rsplit("/", 1)[-1], "application/octet-stream")


@kind_route(blueprint, "/<int:job_id>/output.zip")
@member_page
def training_output_zip(who, job_id: int, kind: str):
    return downloads.send(runs.output_zip(settings().instance_path, _job(who, job_id, kind)),
                          "output.zip", "application/zip")


@kind_route(blueprint, "/<int:job_id>/halt", methods=("POST",))
@member_page
def training_halt(who, job_id: int, kind: str):
    job = _job(who, job_id, kind)
    try:
        jobs.halt(db.session, job)
        db.session.commit()
    except ServiceError as exc:
        db.session.rollback()
        flash(exc.message)
        job = _job(who, job_id, kind)
    scheduler().wake()
    return render_template("training/_status.html", job=job, kind=kind, timeline=runs.timeline(db.session, job))


@kind_route(blueprint, "/<int:job_id>/meta")
@member_page
def training_meta(who, job_id: int, kind: str):
    """The memo and tags card, read-only or as its edit form (?edit=1)."""
    job = _job(who, job_id, kind)
    return render_template("training/_meta.html", job=job, kind=kind, editing=request.args.get("edit") == "1",
                           form={"memo": job.memo, "tags": ", ".join(r.tag for r in job.tag_rows)})


@kind_route(blueprint, "/<int:job_id>/meta", methods=("POST",))
@member_page
def training_edit(who, job_id: int, kind: str):
    """Memo and tags, edited in place (the tags as one comma-separated field)."""
    job = _job(who, job_id, kind)
    body = {"memo": request.form.get("memo", ""),
            "tags": [t for t in (part.strip() for part in request.form.get("tags", "").split(",")) if t]}
    try:
        runs.update(db.session, who, job, body)
        db.session.commit()
    except ServiceError as exc:
        db.session.rollback()
        job = _job(who, job_id, kind)
        return render_template("training/_meta.html", job=job, kind=kind, editing=True, error=exc,
                               form=request.form), 422
    return render_template("training/_meta.html", job=job, kind=kind, editing=False)


@kind_route(blueprint, "/<int:job_id>/favorite", methods=("POST",))
@member_page
def training_favorite(who, job_id: int, kind: str):
    job = _job(who, job_id, kind)
    on = request.form.get("on") == "1"
    runs.set_favorite(db.session, who, job, on)
    db.session.commit()
    return render_template("training/_star.html", job=job, kind=kind, favorite=on)


@kind_route(blueprint, "/<int:job_id>/delete", methods=("POST",))
@member_page
def training_delete(who, job_id: int, kind: str):
    """Delete an ended run with its log and outputs (the page asks first)."""
    job = _job(who, job_id, kind)
    try:
        attached = jobs.remove(db.session, who, job.id)
        db.session.commit()
    except ServiceError as exc:
        db.session.rollback()
        return render_template("training/_notice.html", error=exc.message), 422
    jobs.discard_files(db.session, _ctx().instance, job_id, attached)
    flash(f"{kind.capitalize()} {job_id} and its files were deleted.")
    target = url_for(f"pages.{kind}_list")
    return go_to(target)


@kind_route(blueprint, "/<int:job_id>/exec", methods=("POST",))
@member_page
def training_exec(who, job_id: int, kind: str):
    """The shell panel: one command (run by /bin/sh -c inside the job's container) and its output."""
    limits = settings()
    command = request.form.get("command", "")
    try:
        result = job_exec.run(db.session, _ctx(), who, job_id, {"command": command}, kind=lookup_kind(kind),
                              timeout_s=limits.exec_timeout_s, limit_bytes=limits.exec_output_kb * 1024,
                              ip=request.remote_addr or "", audit_log=audit_buffer())
    except ServiceError as exc:
        db.session.rollback()
        if exc.status == 404:
            abort(404)
        return render_template("training/_exec_result.html", command=command, error=exc.message), 422
    return render_template("training/_exec_result.html", command=command, result=result)
