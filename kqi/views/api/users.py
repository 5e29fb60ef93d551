"""Users and memberships: administrators manage everyone; a tenant manager, the current tenant's
members (add an existing user, change a role, remove)."""
from __future__ import annotations

from flask import g, jsonify, request, url_for

from kqi.accounts import users
from kqi.errors import ServiceError
from kqi.extensions import db
from kqi.models import Role
from kqi.validation import paging
from kqi.views.api import blueprint, created, json_body, paged, require_admin
from kqi.views.api.openapi import PAGING, body, obj, ok, op, page_of, path_id, query


def require_manager():
    """The current tenant's manager (or a system administrator, who manages every tenant)."""
    if not (g.principal.is_admin or g.principal.role in (Role.MANAGER, Role.ADMIN)):
        raise ServiceError("only a manager of this tenant may do this", code="forbidden", status=403)


# -- administrators

@blueprint.post("/admin/users")
def create_user():
    require_admin()
    user = users.create(db.session, json_body())
    db.session.commit()
    return created(users.user_dict(db.session, user), url_for("api.get_user", user_id=user.id))


@blueprint.get("/admin/users")
def list_users():
    require_admin()
    page_no, per_page = paging(request.args)
    items, total = users.page(db.session, page_no, per_page, request.args.get("q"))
    return paged([users.user_dict(db.session, u) for u in items], total, page_no, per_page)


@blueprint.get("/admin/users/<int:user_id>")
def get_user(user_id: int):
    require_admin()
    return jsonify(users.user_dict(db.session, users.get(db.session, user_id)))


@blueprint.put("/admin/users/<int:user_id>")
def update_user(user_id: int):
    require_admin()
    user = users.update(db.session, g.principal.user, user_id, json_body())
    db.session.commit()
    return jsonify(users.user_dict(db.session, user))


@blueprint.put("/admin/users/<int:user_id>/tenants/<int:tenant_id>")
def set_membership(user_id: int, tenant_id: int):
    require_admin()
    users.set_membership(db.session, user_id, tenant_id, json_body())
    db.session.commit()
    return jsonify(users.user_dict(db.session, users.get(db.session, user_id)))


@blueprint.delete("/admin/users/<int:user_id>/tenants/<int:tenant_id>")
def remove_membership(user_id: int, tenant_id: int):
    require_admin()
    users.remove_membership(db.session, user_id, tenant_id)
    db.session.commit()
    return "", 204


# -- a tenant's manager

@blueprint.get("/tenant/members")
def list_members():
    require_manager()
    page_no, per_page = paging(request.args)
    items, total = users.members(db.session, g.principal.tenant, page_no, per_page)
    return paged([users.member_dict(m) for m in items], total, page_no, per_page)


@blueprint.post("/tenant/members")
def add_member():
    require_manager()
    membership = users.add_member(db.session, g.principal.tenant, json_body())
    db.session.commit()
    return jsonify(users.member_dict(membership))


@blueprint.put("/tenant/members/<int:user_id>")
def set_member_role(user_id: int):
    require_manager()
    membership = users.set_member_role(db.session, g.principal.tenant, user_id, json_body())
    db.session.commit()
    return jsonify(users.member_dict(membership))


@blueprint.delete("/tenant/members/<int:user_id>")
def remove_member(user_id: int):
    require_manager()
    db.session.delete(users.tenant_member(db.session, g.principal.tenant, user_id))
    db.session.commit()
    return "", 204


TENANT_REF = obj({"id": {"type": "integer"}, "name": {"type": "string"}})
ROLE = {"type": "string", "enum": ["manager", "user"]}
USER = obj({"id": {"type": "integer"}, "username": {"type": "string"}, "is_admin": {"type": "boolean"},
            "disabled": {"type": "boolean"}, "created_at": {"type": "string"},
            "tenants": {"type": "array", "items": obj({"tenant": TENANT_REF,
                                                       "role": {"type": "string", "enum": ["admin", "manager", "user"]}})}})
MEMBER = obj({"user_id": {"type": "integer"}, "username": {"type": "string"},
              "role": {"type": "string", "enum": ["admin", "manager", "user"]}, "disabled": {"type": "boolean"}})
USER_ID, TENANT_ID = path_id("user_id"), path_id("tenant_id")
DELETED = {"204": {"description": "removed"}}
ADMIN, MANAGER = ["admin"], ["tenant"]
PATHS = {
    "/admin/users": {
        "post": op("Create a user with memberships (administrators)", ok(USER, "Created", 201), tags=ADMIN,
                   request=body(obj({"username": {"type": "string"}, "password": {"type": "string", "minLength": 8},
                                     "is_admin": {"type": "boolean"},
                                     "tenants": {"type": "array", "items": obj({"tenant": {"type": "string"},
                                                                                "role": ROLE})}},
                                    required=["username", "password", "tenants"]))),
        "get": op("List users (administrators)", ok(page_of(USER)), tags=ADMIN,
                  parameters=[*PAGING, query("q", {"type": "string"}, "part of the username")]),
    },
    "/admin/users/{user_id}": {
        "get": op("One user (administrators)", ok(USER), tags=ADMIN, parameters=[USER_ID]),
        "put": op("Reset a password, disable or enable, grant or take the administrator flag", ok(USER), tags=ADMIN,
                  parameters=[USER_ID],
                  request=body(obj({"password": {"type": "string", "minLength": 8}, "disabled": {"type": "boolean"},
                                    "is_admin": {"type": "boolean"}}, required=[])),
                  description="A password reset or a disable revokes the user's tokens."),
    },
    "/admin/users/{user_id}/tenants/{tenant_id}": {
        "put": op("Add the user to a tenant, or change their role there", ok(USER), tags=ADMIN,
                  parameters=[USER_ID, TENANT_ID], request=body(obj({"role": ROLE}))),
        "delete": op("Remove the user from a tenant", DELETED, tags=ADMIN, parameters=[USER_ID, TENANT_ID]),
    },
    "/tenant/members": {
        "get": op("The current tenant's members (its managers)", ok(page_of(MEMBER)), tags=MANAGER, parameters=PAGING),
        "post": op("Add an existing user to the current tenant, or change their role", ok(MEMBER), tags=MANAGER,
                   request=body(obj({"username": {"type": "string"}, "role": ROLE}))),
    },
    "/tenant/members/{user_id}": {
        "put": op("Change a member's role", ok(MEMBER), tags=MANAGER, parameters=[USER_ID],
                  request=body(obj({"role": ROLE}))),
        "delete": op("Remove a member from the current tenant", DELETED, tags=MANAGER, parameters=[USER_ID]),
    },
}
