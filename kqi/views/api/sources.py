"""Where code and images come from: git servers and registries (admin), each user's git tokens
and registry credentials (stored sealed; never shown again)."""
from __future__ import annotations

from flask import g, jsonify

from kqi.data import gitsource, registries
from kqi.extensions import db
from kqi.views import sealer
from kqi.views.api import blueprint, created, json_body, require_admin


@blueprint.post("/admin/git-servers")
def create_git_server():
    require_admin()
    server = gitsource.register_server(db.session, json_body())
    db.session.commit()
    return created(gitsource.server_dict(server), f"{blueprint.url_prefix}/admin/git-servers/{server.id}")


@blueprint.get("/admin/git-servers")
def list_git_servers():
    require_admin()
    return jsonify({"items": [gitsource.server_dict(s) for s in gitsource.servers(db.session)]})


@blueprint.delete("/admin/git-servers/<int:server_id>")
def delete_git_server(server_id: int):
    require_admin()
    gitsource.delete_server(db.session, server_id)
    db.session.commit()
    return "", 204


@blueprint.get("/git-servers")
def user_git_servers():
    """Every user may see which servers exist, to add a token for one."""
    return jsonify({"items": [gitsource.server_dict(s) for s in gitsource.servers(db.session)]})


@blueprint.put("/account/git-tokens")
def set_git_token():
    row = gitsource.set_token(db.session, sealer(), g.principal, json_body())
    db.session.commit()
    return jsonify(gitsource.token_dict(row))


@blueprint.get("/account/git-tokens")
def list_git_tokens():
    return jsonify({"items": [gitsource.token_dict(t) for t in gitsource.tokens(db.session, g.principal)]})


@blueprint.delete("/account/git-tokens/<int:server_id>")
def delete_git_token(server_id: int):
    gitsource.delete_token(db.session, g.principal, server_id)
    db.session.commit()
    return "", 204


@blueprint.post("/admin/registries")
def create_registry():
    require_admin()
    registry = registries.register(db.session, json_body())
    db.session.commit()
    return created(registries.as_dict(registry), f"{blueprint.url_prefix}/admin/registries/{registry.id}")


@blueprint.get("/admin/registries")
def list_registries():
    require_admin()
    return jsonify({"items": [registries.as_dict(r) for r in registries.all_registries(db.session)]})


@blueprint.delete("/admin/registries/<int:registry_id>")
def delete_registry(registry_id: int):
    require_admin()
    registries.delete(db.session, registry_id)
    db.session.commit()
    return "", 204


@blueprint.get("/registries")
def user_registries():
    return jsonify({"items": [registries.as_dict(r) for r in registries.all_registries(db.session)]})


@blueprint.put("/account/registry-credentials")
def set_registry_credential():
    row = registries.set_credential(db.session, sealer(), g.principal, json_body())
    db.session.commit()
    return jsonify(registries.credential_dict(row))


@blueprint.get("/account/registry-credentials")
def list_registry_credentials():
    return jsonify({"items": [registries.credential_dict(c) for c in registries.credentials(db.session, g.principal)]})


@blueprint.delete("/account/registry-credentials/<int:registry_id>")
def delete_registry_credential(registry_id: int):
    registries.delete_credential(db.session, g.principal, registry_id)
    db.session.commit()
    return "", 204


_ERR = {"description": "error: {\"error\": {\"code\", \"message\", \"field\"}}"}
_OK = {"200": {"description": "ok"}, "400": _ERR}
PATHS = {
    "/admin/git-servers": {
        "post": {"summary": "Register a git server {name, url, kind: github|gitlab|gitea|generic} (admin)",
                 "responses": {"201": {"description": "created"}, "409": _ERR}},
        "get": {"summary": "Git servers (admin)", "responses": _OK},
    },
    "/admin/git-servers/{server_id}": {"delete": {"summary": "Remove a git server and its tokens (admin)",
                                                  "responses": {"204": {"description": "removed"}}}},
    "/git-servers": {"get": {"summary": "Git servers a token can be added for", "responses": _OK}},
    "/account/git-tokens": {
        "put": {"summary": "Set my token for a server {git_server_id, token, username?}; stored encrypted",
                "responses": _OK},
        "get": {"summary": "My tokens (server and username only, never the token)", "responses": _OK},
    },
    "/account/git-tokens/{server_id}": {"delete": {"summary": "Forget my token for a server",
                                                   "responses": {"204": {"description": "removed"}}}},
    "/admin/registries": {
        "post": {"summary": "Register an image registry {name, host} (admin)",
                 "responses": {"201": {"description": "created"}, "409": _ERR}},
        "get": {"summary": "Registries (admin)", "responses": _OK},
    },
    "/admin/registries/{registry_id}": {"delete": {"summary": "Remove a registry (admin)",
                                                   "responses": {"204": {"description": "removed"}}}},
    "/registries": {"get": {"summary": "Registries credentials can be added for", "responses": _OK}},
    "/account/registry-credentials": {
        "put": {"summary": "Set my credentials for a registry {registry_id, username, password}; stored encrypted",
                "responses": _OK},
        "get": {"summary": "My registry credentials (never the password)", "responses": _OK},
    },
    "/account/registry-credentials/{registry_id}": {"delete": {"summary": "Forget my credentials for a registry",
                                                               "responses": {"204": {"description": "removed"}}}},
}
