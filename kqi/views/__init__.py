"""Blueprints: the JSON API under /api/v1 and the HTMX pages, plus /healthz."""
from __future__ import annotations

from flask import Flask, abort, current_app, jsonify
from sqlalchemy import text
from werkzeug.exceptions import HTTPException

from kqi import config, crypto
from kqi.accounts import ratelimit
from kqi.admin import audit
from kqi.extensions import db

MAX_ID = 2**63 - 1


# What the app factory built once, for the views to hand to the domain (which never reads the app).

def settings() -> config.Settings:
    return current_app.extensions[config.EXTENSION]


def sealer() -> crypto.SecretBox:
    """The box that seals and unseals this app's stored secrets."""
    return current_app.extensions[crypto.EXTENSION]


def audit_buffer() -> audit.AuditBuffer:
    return current_app.extensions[audit.EXTENSION]


def login_limiter() -> ratelimit.LoginLimiter:
    return current_app.extensions[ratelimit.EXTENSION]


def register_views(app: Flask) -> None:
    from kqi.views import api, pages

    app.register_blueprint(api.blueprint)
    app.register_blueprint(pages.blueprint)
    app.register_error_handler(HTTPException, api.http_error)
    app.jinja_env.globals["kqi_settings"] = app.extensions[config.EXTENSION]  # the templates' limits and intervals

    @app.url_value_preprocessor
    def ids_in_range(_endpoint, values):
        # A number in a URL larger than any id cannot name a row (and would overflow the database's integer).
        if any(isinstance(value, int) and not 0 <= value <= MAX_ID for value in (values or {}).values()):
            abort(404)

    @app.get("/healthz")
    def healthz():
        db.session.execute(text("SELECT 1"))
        return jsonify({"status": "ok"})
