"""Blueprints: the JSON API under /api/v1 and the HTMX pages, plus /healthz."""
from __future__ import annotations

from flask import Flask, abort, jsonify
from sqlalchemy import text
from werkzeug.exceptions import HTTPException

from kqi.extensions import db

MAX_ID = 2**63 - 1


def register_views(app: Flask) -> None:
    from kqi.views import api, pages

    app.register_blueprint(api.blueprint)
    app.register_blueprint(pages.blueprint)
    app.register_error_handler(HTTPException, api.http_error)

    @app.url_value_preprocessor
    def ids_in_range(_endpoint, values):
        # A number in a URL larger than any id cannot name a row (and would overflow the database's integer).
        if any(isinstance(value, int) and not 0 <= value <= MAX_ID for value in (values or {}).values()):
            abort(404)

    @app.get("/healthz")
    def healthz():
        db.session.execute(text("SELECT 1"))
        return jsonify({"status": "ok"})
