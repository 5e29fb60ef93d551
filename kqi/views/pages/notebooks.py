"""Notebook pages (list, create form, detail with log, stop, rerun, delete) and the TensorBoard
panel of a run's page."""
from __future__ import annotations

from flask import (
    abort,
    render_template,
    request,
    url_for,
)

from kqi.admin import site_settings
from kqi.errors import ServiceError
from kqi.extensions import db
from kqi.jobs import lifecycle as jobs
from kqi.jobs import runner as job_runner
from kqi.kinds import interactive as services
from kqi.kinds import notebook as notebooks
from kqi.kinds import tensorboard
from kqi.models import JobStatus
from kqi.validation import paging
from kqi.views import sealer, settings
from kqi.views.pages import blueprint, found, go_to, member_page, page, polled, scheduler
from kqi.views.pages.submit import body_of, typed

FORM_FIELDS = ("name", "image", "cpu", "memory_gb", "gpu", "partition", "env", "memo", "git", "dataset_id",
               "parent_ids", "pull")


def _ctx():
    return scheduler().run_context()


def _notebook(who, job_id: int):
    return found(notebooks.get, who, job_id)




def _view(job) -> dict:
    """What the templates show of one notebook (the link carries its token: this tenant's pages only)."""
    return {"job": job, "url": notebooks.open_url(sealer(), job), "left_s": services.seconds_left(job, services.row_of(db.session, job)),
            "lifetime_hours": notebooks.lifetime_hours(job), "expires_at": notebooks.expires_at(job)}


@blueprint.get("/notebooks")
@member_page
def notebook_list(who):
    page_no, per_page = paging(request.args)
    status = request.args.get("status") or None
    try:
        items, total = notebooks.page(db.session, who, page_no, per_page, status=status)
    except ServiceError:
        items, total, status = [], 0, None
    return page("notebooks/list.html", "notebooks/_rows.html", rows=[_view(j) for j in items], total=total,
                page_no=page_no, per_page=per_page, status=status, statuses=[s.value for s in JobStatus])


def _form_body(who, form) -> dict:
    """The create form as the API's body: one validation for both."""
    body = body_of(db.session, typed(form), FORM_FIELDS)
    if form.get("unlimited"):
        body["lifetime_hours"] = None
    elif form.get("lifetime_hours", "").strip():
        body["lifetime_hours"] = form["lifetime_hours"].strip()
    return body


@blueprint.route("/notebooks/new", methods=["GET", "POST"])
@member_page
def notebook_new(who):
    site = site_settings.current(db.session)
    tenant = who.tenant
    error = None
    if request.method == "POST":
        form = request.form
        try:
            job = notebooks.create(db.session, settings(), sealer(), who, _form_body(who, form))
            db.session.commit()
        except ServiceError as exc:
            db.session.rollback()
            error = exc
        else:
            scheduler().wake()
            target = url_for("pages.notebook_detail", job_id=job.id)
            return go_to(target)
    else:
        form = {"cpu": f"{site['default_cpu']:g}", "memory_gb": f"{site['default_memory_gb']:g}",
                "gpu": f"{site['default_gpu']:g}",
                "lifetime_hours": str(tenant.notebook_default_hours or tenant.notebook_max_hours or "")}
        form.update({key: request.args[key] for key in ("dataset_id", "parent_ids") if request.args.get(key)})
    context = {"form": form, "error": error, "settings": site, "tenant": tenant}
    return page("notebooks/new.html", "notebooks/_form.html", **context), 422 if error else 200


@blueprint.get("/notebooks/<int:job_id>")
@member_page
def notebook_detail(who, job_id: int):
    return render_template("notebooks/detail.html", **_view(_notebook(who, job_id)))


@blueprint.get("/notebooks/<int:job_id>/status")
@member_page
def notebook_status(who, job_id: int):
    job = _notebook(who, job_id)
    return polled(render_template("notebooks/_status.html", **_view(job)), job)


@blueprint.get("/notebooks/<int:job_id>/log")
@member_page
def notebook_log(who, job_id: int):
    job = _notebook(who, job_id)
    text = job_runner.read_log(_ctx(), job, tail=settings().log_tail_lines).decode("utf-8", "replace")
    return polled(render_template("notebooks/_log.html", job=job, log=text), job)


@blueprint.post("/notebooks/<int:job_id>/halt")
@member_page
def notebook_halt(who, job_id: int):
    try:
        job = notebooks.halt(db.session, who, job_id)
        db.session.commit()
    except ServiceError as exc:
        db.session.rollback()
        job = _notebook(who, job_id)
        return render_template("notebooks/_status.html", notice=exc.message, **_view(job))
    scheduler().wake()
    return render_template("notebooks/_status.html", **_view(job))


@blueprint.post("/notebooks/<int:job_id>/rerun")
@member_page
def notebook_rerun(who, job_id: int):
    try:
        job = notebooks.rerun(db.session, settings(), sealer(), who, job_id)
        db.session.commit()
    except ServiceError as exc:
        db.session.rollback()
        return render_template("notebooks/_status.html", notice=exc.message, **_view(_notebook(who, job_id))), 409
    scheduler().wake()
    return go_to(url_for("pages.notebook_detail", job_id=job.id))


@blueprint.post("/notebooks/<int:job_id>/delete")
@member_page
def notebook_delete(who, job_id: int):
    try:
        attached = notebooks.remove(db.session, who, job_id)
        db.session.commit()
    except ServiceError as exc:
        db.session.rollback()
        return render_template("notebooks/_status.html", notice=exc.message, **_view(_notebook(who, job_id))), 409
    jobs.discard_files(db.session, _ctx().instance, job_id, attached)
    return go_to(url_for("pages.notebook_list"))


# -- a run's TensorBoard (a panel on the run page: templates/notebooks/_tensorboard.html)

def _board(who, run_id: int, notice: str | None = None) -> str:
    """The panel's content; it polls itself (templates/notebooks/_tensorboard_panel.html) while its
    TensorBoard is queued, starting or running."""
    try:
        job = tensorboard.for_run(db.session, who, run_id)
    except ServiceError:
        abort(404)
    return render_template("notebooks/_tensorboard_panel.html", run_id=run_id, board=job, notice=notice,
                           url=tensorboard.as_dict(job)["url"] if job else None)


@blueprint.get("/training/<int:job_id>/tensorboard")
@member_page
def tensorboard_panel(who, job_id: int):
    return _board(who, job_id)


@blueprint.post("/training/<int:job_id>/tensorboard")
@member_page
def tensorboard_start(who, job_id: int):
    return _change_board(who, job_id, lambda session, who, run_id: tensorboard.start(session, settings(), sealer(), who,
                                                                                     run_id))


@blueprint.post("/training/<int:job_id>/tensorboard/stop")
@member_page
def tensorboard_stop(who, job_id: int):
    return _change_board(who, job_id, tensorboard.stop)


def _change_board(who, job_id: int, change):
    try:
        change(db.session, who, job_id)
        db.session.commit()
    except ServiceError as exc:
        db.session.rollback()
        return _board(who, job_id, notice=exc.message)
    scheduler().wake()
    return _board(who, job_id)
