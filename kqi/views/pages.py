"""The HTMX pages. A route returns the whole page, or only its fragment for an HTMX request."""
from __future__ import annotations

import io
from functools import wraps

from flask import (Blueprint, Response, abort, current_app, flash, redirect, render_template, request,
                   send_file, session, url_for)
from flask_login import current_user, login_required, login_user, logout_user

from kqi import accounts, job_runner, jobs, node_registry
from kqi.errors import ServiceError
from kqi.extensions import db, login_manager
from kqi.models import JobStatus, User
from kqi.storage import LOG_NAME
from kqi.validation import paging

blueprint = Blueprint("pages", __name__)
STOP_POLLING = 286  # htmx stops an hx-trigger="every ..." poll on this status


@login_manager.user_loader
def load_user(user_id: str):
    return db.session.get(User, int(user_id))


login_manager.login_view = "pages.login"


def principal() -> accounts.Principal:
    """The logged-in user in the tenant chosen at login."""
    try:
        return accounts.principal_in(db.session, current_user, session.get("tenant"))
    except ServiceError:
        logout_user()
        abort(403)


def page(template: str, fragment: str | None = None, **context) -> Response:
    """The full page, or just `fragment` when htmx asks (Vary keeps caches apart)."""
    name = fragment if fragment and request.headers.get("HX-Request") else template
    response = current_app.make_response(render_template(name, **context))
    response.headers["Vary"] = "HX-Request"
    return response


def member_page(view):
    @wraps(view)
    @login_required
    def wrapped(*args, **kwargs):
        return view(principal(), *args, **kwargs)

    return wrapped


@blueprint.app_template_filter("num")
def number(value) -> str:
    """2.0 -> "2", 0.25 -> "0.25", 15.999 -> "16": amounts read as people write them."""
    return f"{round(float(value), 2):g}"


@blueprint.app_context_processor
def inject_principal():
    if current_user.is_authenticated:
        return {"principal": principal()}
    return {}


# -- login

@blueprint.route("/login", methods=["GET", "POST"])
def login():
    error = None
    form = request.form
    if request.method == "POST":
        try:
            who = accounts.authenticate(db.session, form.get("username", ""), form.get("password", ""),
                                        form.get("tenant") or None)
        except ServiceError as exc:
            error = exc.message
        else:
            login_user(who.user)
            session["tenant"] = who.tenant.name
            target = request.args.get("next", "")
            return redirect(target if target.startswith("/") and not target.startswith("//") else url_for("pages.training_list"))
    return render_template("login.html", error=error, form=form), (401 if error else 200)


@blueprint.post("/logout")
def logout():
    logout_user()
    session.clear()
    return redirect(url_for("pages.login"))


@blueprint.get("/")
def home():
    return redirect(url_for("pages.training_list"))


# -- training

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
    return {k: v for k, v in body.items() if v not in ("", None) or k in ("name", "image", "command", "cpu", "memory_gb")}


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
            current_app.extensions["kqi_scheduler"].wake()
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
    return current_app.extensions["kqi_scheduler"].run_context()


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
    current_app.extensions["kqi_scheduler"].wake()
    return render_template("training/_status.html", job=job)


# -- nodes

@blueprint.route("/nodes", methods=["GET", "POST"])
@member_page
def node_list(who):
    error = None
    form = request.form
    if request.method == "POST":
        if not who.is_admin:
            abort(403)
        body = {k: form.get(k, "").strip() for k in ("name", "url", "gpus", "partition", "address")}
        try:
            node_registry.register(db.session, {k: v for k, v in body.items() if v},
                                   timeout_s=current_app.config["KQI"]["docker_timeout_s"])
            db.session.commit()
            form = {}
        except ServiceError as exc:
            db.session.rollback()
            error = exc
    # The table's poll gets the table alone; a register post gets the whole page (hx-select="main"), so the
    # form keeps its inline error and the values typed, and the next poll cannot wipe them.
    fragment = "nodes/_table.html" if request.method == "GET" else None
    return page("nodes/list.html", fragment, nodes=node_registry.listing(db.session), error=error,
                form=form, can_register=who.is_admin), (422 if error else 200)
