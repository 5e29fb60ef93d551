"""Data: upload (multipart or a plain body), list and search, read, edit, download, delete."""
from __future__ import annotations

from flask import g, jsonify, request, send_file, url_for

from kqi.data import items as data
from kqi.data.blobs import BlobStore, TooLarge
from kqi.data.uploads import body_chunks, multipart
from kqi.extensions import db
from kqi.kinds import preprocessing
from kqi.validation import paging
from kqi.views import settings
from kqi.views.api import blueprint, created, json_body, paged


def store() -> BlobStore:
    return BlobStore(settings().instance_path)


def upload_limit() -> int:
    """Bytes one upload may carry; Flask's own request limit is lifted to it for upload routes."""
    limit = settings().max_upload_bytes
    if request.content_length is not None and request.content_length > limit:
        raise TooLarge(limit)
    request.max_content_length = limit
    return limit


def received_files():
    """The multipart upload of this request, stored: (text fields, files)."""
    limit = upload_limit()
    return data.receive(db.session, multipart(request.stream, request.mimetype_params.get("boundary")), store(), limit)


def keep(files, action):
    """Run the service call that names the stored files, and commit; on any failure drop the
    blobs this request stored that nothing else names (nothing half-written)."""
    try:
        result = action()
        db.session.commit()
        return result
    except BaseException:
        db.session.rollback()
        store().discard_unreferenced(db.session, [f[1] for f in files])
        raise


@blueprint.post("/data")
def create_data():
    fields, files = received_files()
    record = keep(files, lambda: data.create(db.session, g.principal, fields, files))
    return created(data.as_dict(record), url_for("api.get_data", data_id=record.id))


@blueprint.get("/data")
def list_data():
    page_no, per_page = paging(request.args)
    items, total = data.page(db.session, g.principal, page_no, per_page, q=request.args.get("q", "").strip(),
                             tag=request.args.get("tag", "").strip())
    return paged([data.as_dict(d) for d in items], total, page_no, per_page)


@blueprint.get("/data/<int:data_id>")
def get_data(data_id: int):
    record = data.get(db.session, g.principal, data_id)
    return jsonify({**data.as_dict(record), "lineage": preprocessing.data_lineage(db.session, record)})


@blueprint.put("/data/<int:data_id>")
def update_data(data_id: int):
    record = data.update(db.session, g.principal, data_id, json_body())
    db.session.commit()
    return jsonify(data.as_dict(record))


@blueprint.delete("/data/<int:data_id>")
def delete_data(data_id: int):
    shas = data.delete(db.session, g.principal, data_id)
    db.session.commit()
    store().discard_unreferenced(db.session, shas)
    return "", 204


@blueprint.post("/data/<int:data_id>/files")
def add_data_files(data_id: int):
    """More files: multipart `files`, or a plain body with ?name=FILE (curl -T)."""
    data.get(db.session, g.principal, data_id)  # 404 before reading a large body
    if request.mimetype == "multipart/form-data":
        fields, files = received_files()
    else:
        name = data.file_name(request.args.get("name", ""))
        limit = upload_limit()  # before the stream is touched: it is bounded when first opened
        fields, files = {}, [(name, *store().put_chunks(body_chunks(request.stream), limit))]
    record = keep(files, lambda: data.add_files(db.session, g.principal, data_id, files, fields))
    return jsonify(data.as_dict(record)), 201


blueprint.add_url_rule("/data/<int:data_id>/files", view_func=add_data_files, methods=["PUT"],
                       endpoint="put_data_file")


@blueprint.get("/data/<int:data_id>/files/<int:file_id>")
def download_data_file(data_id: int, file_id: int):
    found = data.get_file(db.session, g.principal, data_id, file_id)
    return send_file(store().path(found.sha256), as_attachment=True, download_name=found.name,
                     mimetype="application/octet-stream", etag=found.sha256)


@blueprint.delete("/data/<int:data_id>/files/<int:file_id>")
def delete_data_file(data_id: int, file_id: int):
    sha = data.remove_file(db.session, g.principal, data_id, file_id)
    db.session.commit()
    store().discard_unreferenced(db.session, [sha])
    return "", 204


_DATA = {"type": "object", "properties": {"id": {"type": "integer"}, "name": {"type": "string"},
                                          "memo": {"type": "string"}, "tags": {"type": "array"},
                                          "files": {"type": "array"}}}
_ERR = {"description": "error: {\"error\": {\"code\", \"message\", \"field\"}}"}
PATHS = {
    "/data": {
        "post": {"summary": "Upload data: multipart with name, memo, tags (comma-separated) and one or more files",
                 "requestBody": {"content": {"multipart/form-data": {"schema": {"type": "object", "properties": {
                     "name": {"type": "string"}, "memo": {"type": "string"}, "tags": {"type": "string"},
                     "files": {"type": "array", "items": {"type": "string", "format": "binary"}}},
                     "required": ["name", "files"]}}}},
                 "responses": {"201": {"description": "created", "content": {"application/json": {"schema": _DATA}}},
                               "400": _ERR, "413": _ERR}},
        "get": {"summary": "List data (newest first); q searches name, memo and tags; tag matches one tag",
                "parameters": [{"name": n, "in": "query", "schema": {"type": t}} for n, t in
                               (("page", "integer"), ("per_page", "integer"), ("q", "string"), ("tag", "string"))],
                "responses": {"200": {"description": "items, total, page, per_page"}}},
    },
    "/data/{data_id}": {
        "get": {"summary": "One data record", "responses": {"200": {"description": "the record"}, "404": _ERR}},
        "put": {"summary": "Edit name, memo, tags", "responses": {"200": {"description": "the record"}, "400": _ERR}},
        "delete": {"summary": "Delete the record; its files go when nothing else uses them",
                   "responses": {"204": {"description": "deleted"}, "409": _ERR}},
    },
    "/data/{data_id}/files": {
        "post": {"summary": "Add files: multipart 'files', or a raw body with ?name=FILE",
                 "responses": {"201": {"description": "the record"}, "409": _ERR, "413": _ERR}},
        "put": {"summary": "Add one file from a raw body (curl -T FILE '.../files?name=FILE')",
                "responses": {"201": {"description": "the record"}, "409": _ERR, "413": _ERR}},
    },
    "/data/{data_id}/files/{file_id}": {
        "get": {"summary": "Download a file", "responses": {"200": {"description": "the bytes"}, "404": _ERR}},
        "delete": {"summary": "Remove a file from the record", "responses": {"204": {"description": "removed"}}},
    },
}
