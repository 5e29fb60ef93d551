"""Data and dataset pages: list and search, upload with a progress bar, edit, download, delete;
datasets made by selecting data into each area, locked once a job used them, copied to derive."""
from __future__ import annotations

from flask import Response, abort, jsonify, redirect, render_template, request, send_file, url_for
from flask_wtf.csrf import CSRFError, validate_csrf
from markupsafe import escape
from sqlalchemy import select
from wtforms import ValidationError

from kqi.data import datasets
from kqi.data import items as data
from kqi.data.uploads import multipart
from kqi.errors import ServiceError
from kqi.extensions import csrf, db
from kqi.jobs import sources as job_sources
from kqi.models.data import Dataset, DatasetEntry
from kqi.validation import paging
from kqi.views import settings
from kqi.views.api.data import keep, store, upload_limit
from kqi.views.pages import blueprint, found, go_to, member_page, page


def _data(who, data_id: int):
    return found(data.get, who, data_id)


def _dataset(who, dataset_id: int):
    return found(datasets.get, who, dataset_id)


@blueprint.get("/data")
@member_page
def data_list(who):
    page_no, per_page = paging(request.args)
    q = request.args.get("q", "").strip()
    items, total = data.page(db.session, who, page_no, per_page, q=q)
    return page("data/list.html", "data/_rows.html", items=items, total=total, page_no=page_no, per_page=per_page,
                q=q, tags_of=data.tags_of)


def _upload_error(exc: ServiceError):
    response = jsonify({"error": {"code": exc.code, "message": exc.message, "field": exc.field}})
    response.status_code = exc.status
    return response


@blueprint.post("/data/upload")
@blueprint.post("/data/<int:data_id>/upload")
@csrf.exempt  # the token travels in X-CSRFToken: reading a form field would spool the whole upload first
@member_page
def data_upload(who, data_id: int | None = None):
    """The page's XHR upload (progress events in the browser); answers JSON like the API."""
    try:
        validate_csrf(request.headers.get("X-CSRFToken", ""))
    except (ValidationError, CSRFError):
        return _upload_error(ServiceError("the page expired: reload it and upload again", code="csrf", status=400))
    try:
        if data_id is not None:
            _data(who, data_id)
        limit = upload_limit()  # before the stream is touched: it is bounded when first opened
        fields, files = data.receive(db.session, multipart(request.stream, request.mimetype_params.get("boundary")),
                                     store(), limit)
        if data_id is None:
            record = keep(files, lambda: data.create(db.session, who, fields, files))
        else:
            record = keep(files, lambda: data.add_files(db.session, who, data_id, files))
    except ServiceError as exc:
        db.session.rollback()
        return _upload_error(exc)
    return jsonify({"id": record.id, "url": url_for("pages.data_detail", data_id=record.id)}), 201


@blueprint.get("/data/new")
@member_page
def data_new(who):
    return render_template("data/new.html", limit_gb=settings().max_upload_gb)


@blueprint.route("/data/<int:data_id>", methods=["GET", "POST"])
@member_page
def data_detail(who, data_id: int):
    record = _data(who, data_id)
    error = None
    if request.method == "POST":
        try:
            data.update(db.session, who, data_id, {k: request.form.get(k, "") for k in ("name", "memo", "tags")})
            db.session.commit()
        except ServiceError as exc:
            db.session.rollback()
            error = exc
            record = _data(who, data_id)
    used_by = datasets_using(record)
    status = 422 if error else 200
    return page("data/detail.html", "data/_edit.html", record=record, error=error, tags=data.tags_of(record),
                used_by=used_by, limit_gb=settings().max_upload_gb), status


def datasets_using(record) -> list:
    return list(db.session.scalars(select(Dataset).join(DatasetEntry).where(DatasetEntry.data_id == record.id)
                                   .distinct().order_by(Dataset.id)))


@blueprint.get("/data/<int:data_id>/files/<int:file_id>")
@member_page
def data_file(who, data_id: int, file_id: int):
    try:
        found = data.get_file(db.session, who, data_id, file_id)
    except ServiceError:
        abort(404)
    return send_file(store().path(found.sha256), as_attachment=True, download_name=found.name,
                     mimetype="application/octet-stream", etag=found.sha256)


@blueprint.post("/data/<int:data_id>/files/<int:file_id>/delete")
@member_page
def data_file_delete(who, data_id: int, file_id: int):
    _data(who, data_id)  # another tenant's: 404
    try:
        sha = data.remove_file(db.session, who, data_id, file_id)
        db.session.commit()
        store().discard_unreferenced(db.session, [sha])
        message = None
    except ServiceError as exc:
        db.session.rollback()
        message = exc.message
    record = _data(who, data_id)
    return render_template("data/_files.html", record=record, message=message)


@blueprint.post("/data/<int:data_id>/delete")
@member_page
def data_delete(who, data_id: int):
    _data(who, data_id)
    try:
        shas = data.delete(db.session, who, data_id)
        db.session.commit()
    except ServiceError as exc:
        db.session.rollback()
        return Response(f'<p class="error">{_escape(exc.message)}</p>', status=422)
    store().discard_unreferenced(db.session, shas)
    target = url_for("pages.data_list")
    return go_to(target)


def _escape(text: str) -> str:
    return str(escape(text))


# -- datasets

@blueprint.get("/datasets")
@member_page
def dataset_list(who):
    page_no, per_page = paging(request.args)
    items, total = datasets.page(db.session, who, page_no, per_page)
    return page("datasets/list.html", "datasets/_rows.html", items=items, total=total, page_no=page_no,
                per_page=per_page)


def _form_body(form) -> dict:
    """The dataset form as the API's JSON body: one multi-select of data ids per area."""
    def ids(name):
        try:
            return [int(x) for x in form.getlist(name)]
        except ValueError:
            raise ServiceError("choose data from the lists", field="entries") from None

    body = {"name": form.get("name", "").strip(), "memo": form.get("memo", "")}
    if form.get("flat"):
        return {**body, "flat": True, "data_ids": ids("flat")}
    return {**body, "entries": {area: ids(area) for area in datasets.AREAS}}


def _choices(who):
    items, _ = data.page(db.session, who, 1, 1000)
    return items


def _selected(dataset) -> dict:
    if dataset is None:
        return {}
    chosen: dict[str, set[int]] = {}
    for entry in dataset.entries:
        chosen.setdefault(entry.area or "flat", set()).add(entry.data_id)
    return chosen


@blueprint.route("/datasets/new", methods=["GET", "POST"])
@blueprint.route("/datasets/<int:dataset_id>/edit", methods=["GET", "POST"])
@member_page
def dataset_edit(who, dataset_id: int | None = None):
    dataset = _dataset(who, dataset_id) if dataset_id else None
    error = None
    form = request.form
    if request.method == "POST":
        try:
            body = _form_body(form)
            dataset = (datasets.update(db.session, who, dataset_id, body) if dataset_id
                       else datasets.create(db.session, who, body))
            db.session.commit()
        except ServiceError as exc:
            db.session.rollback()
            error = exc
        else:
            target = url_for("pages.dataset_detail", dataset_id=dataset.id)
            return go_to(target)
        dataset = _dataset(who, dataset_id) if dataset_id else None
    if request.method == "GET" and dataset is not None and dataset.locked:
        return redirect(url_for("pages.dataset_detail", dataset_id=dataset.id))
    chosen = _selected(dataset)
    if request.method == "POST":
        chosen = {area: {int(x) for x in form.getlist(area) if x.isdigit()} for area in (*datasets.AREAS, "flat")}
    values = {"name": form.get("name", dataset.name if dataset else ""),
              "memo": form.get("memo", dataset.memo if dataset else ""),
              "flat": bool(form.get("flat")) if request.method == "POST" else bool(dataset and dataset.flat)}
    return page("datasets/edit.html", "datasets/_form.html", dataset=dataset, choices=_choices(who), chosen=chosen,
                values=values, areas=datasets.AREAS, error=error), (422 if error else 200)


@blueprint.get("/datasets/<int:dataset_id>")
@member_page
def dataset_detail(who, dataset_id: int):
    return render_template("datasets/detail.html", dataset=_dataset(who, dataset_id), areas=datasets.AREAS)


@blueprint.post("/datasets/<int:dataset_id>/copy")
@member_page
def dataset_copy(who, dataset_id: int):
    copy = datasets.copy(db.session, who, _dataset(who, dataset_id).id)
    db.session.commit()
    return redirect(url_for("pages.dataset_edit", dataset_id=copy.id))


@blueprint.post("/datasets/<int:dataset_id>/delete")
@member_page
def dataset_delete(who, dataset_id: int):
    _dataset(who, dataset_id)
    try:
        datasets.delete(db.session, who, dataset_id)
        db.session.commit()
    except ServiceError as exc:
        db.session.rollback()
        return Response(f'<p class="error">{_escape(exc.message)}</p>', status=422)
    return go_to(url_for("pages.dataset_list"))


# -- what the run page shows of a job's sources (templates/training/*.html call these)

@blueprint.app_template_global()
def pull_progress(job) -> str:
    return job_sources.PullProgress(settings().instance_path, job.id).read()


@blueprint.app_template_global()
def job_contract(job) -> dict:
    return job_sources.details(db.session, job)
