"""Account: log in for a token, who am I, switch tenant, job-end notification choices."""
from __future__ import annotations

from datetime import timedelta

from flask import g, jsonify, request
from sqlalchemy import select

from kqi import validation as v
from kqi.accounts import auth as accounts
from kqi.accounts import ratelimit
from kqi.admin import notify
from kqi.errors import ServiceError
from kqi.extensions import db
from kqi.models import User
from kqi.views import login_limiter, sealer, settings
from kqi.views.api import blueprint, error_response, json_body
from kqi.views.api.openapi import NULLABLE_STRING, body, obj, ok, op


def _token_answer(principal: accounts.Principal):
    ttl = timedelta(hours=settings().token_ttl_hours)
    token, expires_at = accounts.issue_token(db.session, principal, ttl)
    db.session.commit()
    return jsonify({"token": token, "tenant": {"id": principal.tenant.id, "name": principal.tenant.name},
                    "expires_at": expires_at.isoformat(timespec="seconds") + "Z"})


@blueprint.post("/account/login")
def login():
    body = json_body()
    username, password = str(body.get("username") or ""), str(body.get("password") or "")
    tenant = v.text(body, "tenant", max_len=64) or None
    limiter, ip = login_limiter(), request.remote_addr or ""
    try:
        limiter.check(username, ip)
    except ratelimit.TooManyAttempts as exc:
        response = error_response(exc.status, exc.code, exc.message)
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    # Named in the audit log only when it is a user's name (never what may be a mistyped password).
    if db.session.scalar(select(User.id).where(User.username == username)) is not None:
        g.audit_username = username
    try:
        principal = accounts.authenticate(db.session, username, password, tenant)
    except ServiceError as exc:
        if exc.status == 401:
            limiter.failed(username, ip)
        raise
    limiter.succeeded(username, ip)
    g.principal = principal
    return _token_answer(principal)


@blueprint.get("/account")
def account():
    p = g.principal
    return jsonify({"username": p.user.username, "is_admin": p.user.is_admin,
                    "tenant": {"id": p.tenant.id, "name": p.tenant.name}, "role": p.role.value,
                    "tenants": [{"id": m.tenant.id, "name": m.tenant.name, "role": m.role.value}
                                for m in accounts.memberships_of(db.session, p.user)]})


@blueprint.post("/account/tenant")
def switch_tenant():
    """A new token for the same user in another of their tenants (the calling token stays valid)."""
    tenant = v.text(json_body(), "tenant", required=True, max_len=64)
    principal = accounts.principal_in(db.session, g.principal.user, tenant)
    g.principal = principal
    return _token_answer(principal)


@blueprint.get("/account/notifications")
def get_notifications():
    return jsonify(notify.preferences(db.session, g.principal.user))


@blueprint.put("/account/notifications")
def set_notifications():
    choice = notify.set_preferences(db.session, sealer(), g.principal.user, json_body())
    db.session.commit()
    return jsonify(choice)


TENANT_REF = obj({"id": {"type": "integer"}, "name": {"type": "string"}})
TOKEN = obj({"token": {"type": "string"}, "tenant": TENANT_REF, "expires_at": {"type": "string"}})
NOTIFICATIONS = obj({"webhook": {"type": "boolean", "description": "a webhook URL is set (it is never shown)"},
                     "email": NULLABLE_STRING})
TAGS = ["account"]
PATHS = {
    "/account/login": {"post": op(
        "Log in: a bearer token for one of your tenants", ok(TOKEN), tags=TAGS, public=True,
        request=body(obj({"username": {"type": "string"}, "password": {"type": "string"},
                          "tenant": {"type": "string", "description": "default: your first tenant"}},
                         required=["username", "password"])),
        description="After login_max_failures failures for one username from one address within "
                    "login_window_s seconds, further attempts get 429 with Retry-After.")},
    "/account": {"get": op("Who am I: user, current tenant and role, all my tenants", ok(obj({
        "username": {"type": "string"}, "is_admin": {"type": "boolean"}, "tenant": TENANT_REF,
        "role": {"type": "string", "enum": ["admin", "manager", "user"]},
        "tenants": {"type": "array", "items": obj({"id": {"type": "integer"}, "name": {"type": "string"},
                                                    "role": {"type": "string"}})}})), tags=TAGS)},
    "/account/tenant": {"post": op(
        "Switch tenant: a new token for the same user in another of their tenants", ok(TOKEN), tags=TAGS,
        request=body(obj({"tenant": {"type": "string"}})),
        description="The token that made the call stays valid until it expires.")},
    "/account/notifications": {
        "get": op("My job-end notification choices", ok(NOTIFICATIONS), tags=TAGS),
        "put": op("Choose job-end notifications: a Slack-compatible webhook and/or e-mail", ok(NOTIFICATIONS),
                  tags=TAGS, request=body(obj({"webhook_url": NULLABLE_STRING, "email": NULLABLE_STRING}, required=[])),
                  description="null or an empty string turns a channel off; an absent key leaves it unchanged."),
    },
}
