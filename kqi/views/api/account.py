"""Account: log in for a token, who am I."""
from __future__ import annotations

from datetime import timedelta

from flask import current_app, g, jsonify

from kqi import accounts
from kqi.extensions import db
from kqi.views.api import blueprint, json_body


@blueprint.post("/account/login")
def login():
    body = json_body()
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
