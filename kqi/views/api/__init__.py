"""The JSON API, /api/v1. Thin: parse, call the service layer, shape the answer.

One blueprint; each area adds its routes from its own module (imported at the end). Every module
also documents its routes in `PATHS` (OpenAPI 3 path items), merged into /api/v1/openapi.json.
"""
from __future__ import annotations

import logging

from flask import Blueprint, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException

from kqi.accounts import auth as accounts
from kqi.errors import ServiceError
from kqi.extensions import csrf, db
from kqi.jobs.history import KINDS  # not `runs`: that name is this package's module of run routes
from kqi.validation import require_object

log = logging.getLogger(__name__)

def error_response(status: int, code: str, message: str, field: str | None = None):
    response = jsonify({"error": {"code": code, "message": message, "field": field}})
    response.status_code = status
    return response

blueprint = Blueprint("api", __name__, url_prefix="/api/v1")
csrf.exempt(blueprint)  # bearer tokens, never cookies: nothing for a forged request to ride on
PUBLIC = {"api.login"}
# What pollers ask for most: a page of jobs and one job. On PostgreSQL they read without a transaction:
# no BEGIN and no ROLLBACK, two round trips on top of their three statements. They write nothing, and
# under READ COMMITTED each statement takes its own snapshot inside a transaction too: they read the same.
READS_WITHOUT_TRANSACTION = frozenset(f"api.{view}_{kind}" for kind in KINDS for view in ("list", "get"))


def json_body():
    if not request.data:
        raise ServiceError("the request body must be a JSON object")
    body = request.get_json(silent=True)
    if body is None:
        raise ServiceError("the request body is not valid JSON (send Content-Type: application/json)")
    return require_object(body)


def paged(items, total, page_no, per_page):
    return jsonify({"items": items, "total": total, "page": page_no, "per_page": per_page})


@blueprint.before_request
def authenticate():
    if request.endpoint in PUBLIC:
        return None
    if request.endpoint in READS_WITHOUT_TRANSACTION and db.session.get_bind().dialect.name == "postgresql":
        db.session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    principal = accounts.principal_for_token(db.session, token.strip()) if scheme.lower() == "bearer" and token else None
    if principal is None:
        return error_response(401, "unauthorized", "a valid 'Authorization: Bearer TOKEN' header is required")
    g.principal = principal
    return None


def scheduler():
    return current_app.extensions["kqi_scheduler"]


def created(payload: dict, location: str):
    response = jsonify(payload)
    response.status_code = 201
    response.headers["Location"] = location
    return response


def require_admin():
    if not g.principal.is_admin:
        raise ServiceError("only a system administrator may do this", code="forbidden", status=403)


@blueprint.errorhandler(ServiceError)
def service_error(exc: ServiceError):
    db.session.rollback()
    return error_response(exc.status, exc.code, exc.message, exc.field)


def http_error(exc: HTTPException):
    """Registered on the app (routing errors happen before a blueprint is chosen): API paths
    answer in the API's error shape, pages keep Flask's own error pages."""
    if not request.path.startswith(blueprint.url_prefix + "/"):
        return exc
    db.session.rollback()
    code = (exc.name or "error").lower().replace(" ", "_")
    return error_response(exc.code or 500, code, exc.description or exc.name)


@blueprint.errorhandler(Exception)
def internal_error(exc: Exception):
    if isinstance(exc, HTTPException):  # e.g. 413 from reading a body: this handler outranks the app's
        return http_error(exc)
    db.session.rollback()
    log.exception("API error")
    return error_response(500, "internal", "internal error; the server log has the details")


from kqi.views.api import (  # noqa: E402,F401  (register their routes)
    account,
    admin,
    dashboard,
    data,
    datasets,
    estimate,
    nodes,
    notebooks,
    openapi,
    preprocessing,
    runs,
    site,
    sources,
    training,
    users,
)
