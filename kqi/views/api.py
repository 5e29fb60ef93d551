"""The JSON API, /api/v1. Thin: parse, call the service layer, shape the answer."""
from __future__ import annotations

import io
import logging
from datetime import timedelta

from flask import Blueprint, Response, current_app, g, jsonify, request, send_file, url_for
from werkzeug.exceptions import HTTPException

from kqi import accounts, job_runner, jobs, node_registry
from kqi.errors import NotFound, ServiceError, error_response
from kqi.extensions import csrf, db
from kqi.models import Tenant
from kqi.storage import LOG_NAME
from kqi.validation import paging, require_object

log = logging.getLogger(__name__)
blueprint = Blueprint("api", __name__, url_prefix="/api/v1")
csrf.exempt(blueprint)  # bearer tokens, never cookies: nothing for a forged request to ride on
PUBLIC = {"api.login"}


def _body():
    if not request.data:
        raise ServiceError("the request body must be a JSON object")
    body = request.get_json(silent=True)
    if body is None:
        raise ServiceError("the request body is not valid JSON (send Content-Type: application/json)")
    return require_object(body)


def _page(items, total, page_no, per_page):
    return jsonify({"items": items, "total": total, "page": page_no, "per_page": per_page})


@blueprint.before_request
def authenticate():
    if request.endpoint in PUBLIC:
        return None
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    principal = accounts.principal_for_token(db.session, token.strip()) if scheme.lower() == "bearer" and token else None
    if principal is None:
        return error_response(401, "unauthorized", "a valid 'Authorization: Bearer TOKEN' header is required")
    g.principal = principal
    return None


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
    db.session.rollback()
    log.exception("API error")
    return error_response(500, "internal", "internal error; the server log has the details")


# -- account

@blueprint.post("/account/login")
def login():
    body = _body()
    principal = accounts.authenticate(db.session, str(body.get("username") or ""), str(body.get("password") or ""),
                                      body.get("tenant") or None)
    ttl = timedelta(hours=current_app.config["KQI"]["token_ttl_hours"])
    token, expires_at = accounts.issue_token(db.session, principal, ttl)
    db.session.commit()
    return jsonify({"token": token, "tenant": {"id": principal.tenant.id, "name": principal.tenant.name},
                    "expires_at": expires_at.isoformat(timespec="seconds") + "Z"})


@blueprint.get("/account")
def account():
    p = g.principal
    return jsonify({"username": p.user.username, "is_admin": p.user.is_admin,
                    "tenant": {"id": p.tenant.id, "name": p.tenant.name}, "role": p.role.value,
                    "tenants": [{"id": m.tenant.id, "name": m.tenant.name, "role": m.role.value}
                                for m in accounts.memberships_of(db.session, p.user)]})


# -- tenants

@blueprint.post("/admin/tenants")
def create_tenant():
    require_admin()
    tenant = accounts.create_tenant(db.session, _body())
    db.session.commit()
    response = jsonify(accounts.tenant_dict(tenant))
    response.status_code = 201
    response.headers["Location"] = url_for("api.get_tenant", tenant_id=tenant.id)
    return response


@blueprint.get("/admin/tenants")
def list_tenants():
    require_admin()
    return jsonify({"items": [accounts.tenant_dict(t) for t in accounts.all_tenants(db.session)]})


@blueprint.get("/admin/tenants/<int:tenant_id>")
def get_tenant(tenant_id: int):
    require_admin()
    tenant = db.session.get(Tenant, tenant_id)
    if tenant is None:
        raise NotFound("tenant")
    return jsonify(accounts.tenant_dict(tenant))


@blueprint.put("/admin/tenants/<int:tenant_id>")
def update_tenant(tenant_id: int):
    require_admin()
    tenant = accounts.update_tenant(db.session, tenant_id, _body())
    db.session.commit()
    _scheduler().wake()  # a raised quota may let queued jobs start
    return jsonify(accounts.tenant_dict(tenant))


# -- nodes

@blueprint.post("/admin/nodes")
def register_node():
    require_admin()
    node = node_registry.register(db.session, _body(), timeout_s=current_app.config["KQI"]["docker_timeout_s"])
    db.session.commit()
    response = jsonify(node_registry.as_dict(node))
    response.status_code = 201
    response.headers["Location"] = url_for("api.get_node", node_id=node.id)
    return response


@blueprint.get("/admin/nodes")
def list_nodes():
    require_admin()
    return jsonify({"items": node_registry.listing(db.session)})


@blueprint.get("/admin/nodes/<int:node_id>")
def get_node(node_id: int):
    require_admin()
    node = node_registry.get(db.session, node_id)
    return jsonify(node_registry.as_dict(node, jobs.node_usage(db.session).get(node.id)))


# -- training

def _scheduler():
    return current_app.extensions["kqi_scheduler"]


@blueprint.post("/training/run")
def run_training():
    job = jobs.submit(db.session, g.principal, _body())
    db.session.commit()
    _scheduler().wake()
    response = jsonify(jobs.as_dict(job))
    response.status_code = 201
    response.headers["Location"] = url_for("api.get_training", job_id=job.id)
    return response


@blueprint.get("/training")
def list_training():
    page_no, per_page = paging(request.args)
    items, total = jobs.page(db.session, g.principal, page_no, per_page, status=request.args.get("status"))
    return _page([jobs.as_dict(j) for j in items], total, page_no, per_page)


@blueprint.get("/training/<int:job_id>")
def get_training(job_id: int):
    return jsonify(jobs.as_dict(jobs.get(db.session, g.principal, job_id)))


@blueprint.post("/training/<int:job_id>/halt")
def halt_training(job_id: int):
    job = jobs.request_halt(db.session, g.principal, job_id)
    db.session.commit()
    _scheduler().wake()
    return jsonify(jobs.as_dict(job))


@blueprint.get("/training/<int:job_id>/log")
def training_log(job_id: int):
    job = jobs.get(db.session, g.principal, job_id)
    data = job_runner.read_log(_ctx(), job)
    return Response(data, mimetype="text/plain",
                    headers={"Content-Disposition": f'inline; filename="{LOG_NAME}"'})


@blueprint.get("/training/<int:job_id>/files")
def training_files(job_id: int):
    job = jobs.get(db.session, g.principal, job_id)
    return jsonify({"items": [{"path": f.path, "size": f.size} for f in job_runner.output_files(_ctx(), job)]})


@blueprint.get("/training/<int:job_id>/files/<path:path>")
def training_file(job_id: int, path: str):
    job = jobs.get(db.session, g.principal, job_id)
    found = job_runner.output_file(_ctx(), job, path)
    if found is None:
        raise NotFound("file")
    name = path.rsplit("/", 1)[-1]
    return send_file(io.BytesIO(found) if isinstance(found, bytes) else found, as_attachment=True,
                     download_name=name, mimetype="application/octet-stream")


def _ctx():
    return _scheduler().run_context()
