"""Preprocessing pages: definitions (list, form, detail with live history), running a definition on
data items selected in the data list, a run's log, and the lineage shown on a data item's page."""
from __future__ import annotations

from flask import (
    Response,
    abort,
    render_template,
    request,
    url_for,
)
from sqlalchemy import select

from kqi.errors import ServiceError
from kqi.extensions import db
from kqi.jobs import lifecycle as jobs
from kqi.jobs import runner as job_runner
from kqi.kinds import preprocessing
from kqi.models.data import Data
from kqi.models.preprocessing import Preprocessing
from kqi.validation import paging
from kqi.views import downloads, sealer, settings
from kqi.views.pages import STOP_POLLING, blueprint, found, go_to, member_page, page, scheduler

TEXT_FIELDS = ("name", "image", "command", "partition", "memo")
NUMBER_FIELDS = ("cpu", "memory_gb", "gpu")
GIT_FIELDS = ("repository", "branch", "commit")


def _definition(who, preprocessing_id: int):
    return found(preprocessing.get, who, preprocessing_id)


@blueprint.get("/preprocessing")
@member_page
def preprocessing_list(who):
    page_no, per_page = paging(request.args)
    items, total, counts = preprocessing.page(db.session, who, page_no, per_page)
    return page("preprocessing/list.html", "preprocessing/_rows.html", items=items, total=total, counts=counts,
                page_no=page_no, per_page=per_page)


def _form_body(form) -> dict:
    """The definition form as the API's body: only the fields the form sent (a locked definition's
    image, code and command are shown read-only, not sent); an empty resource clears its default."""
    body = {key: form.get(key, "") for key in (*TEXT_FIELDS, *NUMBER_FIELDS) if key in form}
    for key in ("name", "image", "partition"):
        if key in body:
            body[key] = body[key].strip()
    for key in NUMBER_FIELDS:
        if key in body:
            body[key] = body[key].strip() or None
    if f"git_{GIT_FIELDS[0]}" in form:
        git = {key: form.get(f"git_{key}", "").strip() for key in GIT_FIELDS}
        body["git"] = {k: value for k, value in git.items() if value} if git["repository"] else None
    return body


def _form_values(definition) -> dict:
    if definition is None:
        return {}
    values = {key: getattr(definition, key) for key in TEXT_FIELDS}
    values.update({key: f"{value:g}" for key, value in preprocessing.as_dict(definition, 0).items()
                   if key in NUMBER_FIELDS and value is not None})
    values.update({"git_repository": definition.git_repository, "git_branch": definition.git_branch,
                   "git_commit": definition.git_commit})
    return values


@blueprint.route("/preprocessing/new", methods=["GET", "POST"])
@blueprint.route("/preprocessing/<int:preprocessing_id>/edit", methods=["GET", "POST"])
@member_page
def preprocessing_edit(who, preprocessing_id: int | None = None):
    definition = _definition(who, preprocessing_id) if preprocessing_id else None
    locked = bool(definition and preprocessing.run_count(db.session, definition))
    error = None
    if request.method == "POST":
        try:
            body = _form_body(request.form)
            definition = (preprocessing.update(db.session, settings(), sealer(), who, preprocessing_id, body)
                          if preprocessing_id else preprocessing.create(db.session, settings(), sealer(), who, body))
            db.session.commit()
        except ServiceError as exc:
            db.session.rollback()
            error = exc
        else:
            target = url_for("pages.preprocessing_detail", preprocessing_id=definition.id)
            return go_to(target)
        definition = _definition(who, preprocessing_id) if preprocessing_id else None
    form = request.form if request.method == "POST" else _form_values(definition)
    return page("preprocessing/edit.html", "preprocessing/_form.html", definition=definition, form=form,
                locked=locked, error=error), (422 if error else 200)


def _history_context(who, definition):
    page_no, per_page = paging(request.args)
    entries, total = preprocessing.history(db.session, who, definition.id, page_no, per_page)
    return {"definition": definition, "entries": entries, "total": total, "page_no": page_no, "per_page": per_page,
            "active": preprocessing.any_active(entries)}


@blueprint.get("/preprocessing/<int:preprocessing_id>")
@member_page
def preprocessing_detail(who, preprocessing_id: int):
    definition = _definition(who, preprocessing_id)
    return render_template("preprocessing/detail.html", runs=preprocessing.run_count(db.session, definition),
                           **_history_context(who, definition))


def _history_fragment(who, definition, message: str | None = None, status: int | None = None) -> Response:
    context = _history_context(who, definition)
    body = render_template("preprocessing/_history.html", message=message, **context)
    return Response(body, status=status or (200 if context["active"] else STOP_POLLING))


@blueprint.get("/preprocessing/<int:preprocessing_id>/history")
@member_page
def preprocessing_history(who, preprocessing_id: int):
    return _history_fragment(who, _definition(who, preprocessing_id))


@blueprint.post("/preprocessing/<int:preprocessing_id>/history/<int:run_id>/delete")
@member_page
def preprocessing_history_delete(who, preprocessing_id: int, run_id: int):
    definition = _definition(who, preprocessing_id)
    try:
        shas = preprocessing.delete_run(db.session, who, preprocessing_id, run_id)
        db.session.commit()
    except ServiceError as exc:
        db.session.rollback()
        if exc.status == 404:
            abort(404)
        return _history_fragment(who, definition, exc.message, status=200)
    jobs.discard_files(db.session, settings().instance_path, run_id, shas)
    return _history_fragment(who, definition, f"Deleted run {run_id} and the data it made.", status=200)


@blueprint.post("/preprocessing/<int:preprocessing_id>/history/<int:run_id>/halt")
@member_page
def preprocessing_history_halt(who, preprocessing_id: int, run_id: int):
    definition = _definition(who, preprocessing_id)
    try:
        jobs.halt(db.session, preprocessing.get_run(db.session, who, preprocessing_id, run_id).job)
        db.session.commit()
        message = None
    except ServiceError as exc:
        db.session.rollback()
        if exc.status == 404:
            abort(404)
        message = exc.message
    scheduler().wake()
    return _history_fragment(who, definition, message, status=200)


@blueprint.get("/preprocessing/<int:preprocessing_id>/history/<int:run_id>/log")
@member_page
def preprocessing_history_log(who, preprocessing_id: int, run_id: int):
    entry = _run(who, preprocessing_id, run_id)
    text = job_runner.read_log(scheduler().run_context(), entry.job, tail=job_runner.LOG_VIEW_LINES)
    return render_template("preprocessing/log.html", entry=entry, log=text.decode("utf-8", "replace"),
                           view=job_runner.LOG_VIEW_LINES)


@blueprint.get("/preprocessing/<int:preprocessing_id>/history/<int:run_id>/log/download")
@member_page
def preprocessing_history_log_download(who, preprocessing_id: int, run_id: int):
    entry = _run(who, preprocessing_id, run_id)
    return downloads.log(job_runner.stream_log(scheduler().run_context(), entry.job), attachment=True)


def _run(who, preprocessing_id: int, run_id: int):
    try:
        return preprocessing.get_run(db.session, who, preprocessing_id, run_id)
    except ServiceError:
        abort(404)


@blueprint.post("/preprocessing/<int:preprocessing_id>/delete")
@member_page
def preprocessing_delete(who, preprocessing_id: int):
    _definition(who, preprocessing_id)
    try:
        preprocessing.delete(db.session, who, preprocessing_id)
        db.session.commit()
    except ServiceError as exc:
        db.session.rollback()
        return Response(render_template("preprocessing/_message.html", message=exc.message), status=422)
    return go_to(url_for("pages.preprocessing_list"))


# -- running a definition on data items (from the data list's selection, a data item, or a definition)

def _run_body(form) -> dict:
    try:
        ids = [int(x) for x in form.getlist("data_ids")]
    except ValueError:
        raise ServiceError("choose data from the list", field="data_ids") from None
    body: dict = {"data_ids": ids}
    for key in (*NUMBER_FIELDS, "partition"):
        value = form.get(key, "").strip()
        if value:
            body[key] = value
    env = {}
    for line in form.get("env", "").splitlines():
        if line.strip():
            key, sep, value = line.partition("=")
            if not sep:
                raise ServiceError(f"env: write one NAME=value per line ({line.strip()[:40]!r} has no '=')", field="env")
            env[key.strip()] = value
    if env:
        body["env"] = env
    return body


def _offered_data(who, ids: list[int]) -> list[Data]:
    """The data items the run form lists: those selected, or else the most recent ones to choose from."""
    query = select(Data).where(Data.tenant_id == who.tenant.id)
    if ids:
        return list(db.session.scalars(query.where(Data.id.in_(ids)).order_by(Data.id)))
    return list(db.session.scalars(query.order_by(Data.id.desc()).limit(50)))


@blueprint.route("/preprocessing/run", methods=["GET", "POST"])
@member_page
def preprocessing_run(who):
    values = request.form if request.method == "POST" else request.args
    ids = [int(x) for x in values.getlist("data_ids") if x.isdigit()]
    chosen = values.get("preprocessing_id", "")
    error = None
    if request.method == "POST":
        try:
            if not chosen.isdigit():
                raise ServiceError("choose a preprocessing", field="preprocessing_id")
            preprocessing.run(db.session, settings(), sealer(), who, int(chosen), _run_body(request.form))
            db.session.commit()
        except ServiceError as exc:
            db.session.rollback()
            error = exc
            if exc.status == 404:  # another tenant's definition reads as one that is not there
                error = ServiceError("choose a preprocessing", field="preprocessing_id")
        else:
            scheduler().wake()
            target = url_for("pages.preprocessing_detail", preprocessing_id=int(chosen))
            return go_to(target)
    definitions = list(db.session.scalars(select(Preprocessing).where(Preprocessing.tenant_id == who.tenant.id)
                                          .order_by(Preprocessing.name)))
    return page("preprocessing/run.html", "preprocessing/_run_form.html", definitions=definitions,
                chosen=chosen, items=_offered_data(who, ids), checked=set(ids), form=values, error=error), (422 if error else 200)


@blueprint.app_template_global()
def preprocessing_lineage(record) -> dict:
    """For the data page: the run that made this data item, and the runs that took it as input."""
    return preprocessing.data_lineage(db.session, record)
