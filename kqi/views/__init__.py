"""Blueprints: the JSON API under /api/v1 and the HTMX pages, plus /healthz."""
from __future__ import annotations

from flask import Flask, jsonify
from sqlalchemy import text
from werkzeug.exceptions import HTTPException

from kqi.extensions import db


def register_views(app: Flask) -> None:
    from kqi.views import api, pages

    app.register_blueprint(api.blueprint)
    app.register_blueprint(pages.blueprint)
    app.register_error_handler(HTTPException, api.http_error)

    @app.get("/healthz")
    def healthz():
        db.session.execute(text("SELECT 1"))
        return jsonify({"status": "ok"})
