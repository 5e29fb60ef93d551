"""Datasets: create, list, read, edit (until locked), delete, copy."""
from __future__ import annotations

from flask import g, jsonify, request, url_for

from kqi.data import datasets
from kqi.extensions import db
from kqi.validation import paging
from kqi.views.api import blueprint, created, json_body, paged


@blueprint.post("/datasets")
def create_dataset():
    dataset = datasets.create(db.session, g.principal, json_body())
    db.session.commit()
    return created(datasets.as_dict(dataset), url_for("api.get_dataset", dataset_id=dataset.id))


@blueprint.get("/datasets")
def list_datasets():
    page_no, per_page = paging(request.args)
    items, total = datasets.page(db.session, g.principal, page_no, per_page)
    return paged([datasets.as_dict(d) for d in items], total, page_no, per_page)


@blueprint.get("/datasets/<int:dataset_id>")
def get_dataset(dataset_id: int):
    return jsonify(datasets.as_dict(datasets.get(db.session, g.principal, dataset_id)))


@blueprint.put("/datasets/<int:dataset_id>")
def update_dataset(dataset_id: int):
    dataset = datasets.update(db.session, g.principal, dataset_id, json_body())
    db.session.commit()
    return jsonify(datasets.as_dict(dataset))


@blueprint.delete("/datasets/<int:dataset_id>")
def delete_dataset(dataset_id: int):
    datasets.delete(db.session, g.principal, dataset_id)
    db.session.commit()
    return "", 204


@blueprint.post("/datasets/<int:dataset_id>/copy")
def copy_dataset(dataset_id: int):
    body = request.get_json(silent=True) if request.data else None
    dataset = datasets.copy(db.session, g.principal, dataset_id, body)
    db.session.commit()
    return created(datasets.as_dict(dataset), url_for("api.get_dataset", dataset_id=dataset.id))


_BODY = {"content": {"application/json": {"example": {
    "name": "mnist", "memo": "", "entries": {"training": [1, 2], "validation": [3], "testing": []}}}}}
_ERR = {"description": "error: {\"error\": {\"code\", \"message\", \"field\"}}"}
PATHS = {
    "/datasets": {
        "post": {"summary": "Create a dataset: entries by area, or {\"flat\": true, \"data_ids\": [...]}",
                 "requestBody": _BODY, "responses": {"201": {"description": "created"}, "400": _ERR}},
        "get": {"summary": "List datasets (page, per_page)", "responses": {"200": {"description": "items, total"}}},
    },
    "/datasets/{dataset_id}": {
        "get": {"summary": "One dataset, with its content hash and lock", "responses": {"200": {"description": "ok"}}},
        "put": {"summary": "Replace name, memo and entries; 409 once a job has used (locked) it",
                "requestBody": _BODY, "responses": {"200": {"description": "ok"}, "409": _ERR}},
        "delete": {"summary": "Delete an unlocked dataset", "responses": {"204": {"description": "deleted"}, "409": _ERR}},
    },
    "/datasets/{dataset_id}/copy": {
        "post": {"summary": "Copy into a new, unlocked dataset (optional body: name, memo)",
                 "responses": {"201": {"description": "created"}}},
    },
}
