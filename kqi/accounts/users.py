"""Administering users and memberships: system administrators for everyone, tenant managers for the
members of their own tenant. Passwords are only ever hashed (kqi.accounts)."""
from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session
from werkzeug.security import generate_password_hash

from kqi import validation as v
from kqi.accounts import auth as accounts
from kqi.errors import Conflict, NotFound, ServiceError
from kqi.models import ApiToken, Membership, Role, Tenant, User

ROLES = {"manager": Role.MANAGER, "user": Role.USER}  # the system administrator role is User.is_admin
ROLE_RULE = "role must be manager or user"


def _role(body: Any, field: str = "role") -> Role:
    value = body.get(field) if isinstance(body, dict) else None
    if value not in ROLES:
        raise ServiceError(ROLE_RULE, field=field)
    return ROLES[value]


def _flag(body: dict, field: str) -> bool:
    value = body[field]
    if not isinstance(value, bool):
        raise ServiceError(f"{field} must be true or false", field=field)
    return value


def membership_dict(m: Membership) -> dict[str, Any]:
    return {"tenant": {"id": m.tenant.id, "name": m.tenant.name}, "role": m.role.value}


def user_dict(session: Session, user: User) -> dict[str, Any]:
    return {"id": user.id, "username": user.username, "is_admin": user.is_admin, "disabled": user.disabled,
            "created_at": user.created_at.isoformat(timespec="seconds") + "Z",
            "tenants": [membership_dict(m) for m in accounts.memberships_of(session, user)]}


def get(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound("user")
    return user


def page(session: Session, page_no: int, per_page: int, search: str | None = None) -> tuple[list[User], int]:
    query = select(User)
    if search:
        query = query.where(User.username.contains(search[:64], autoescape=True))
    total = session.scalar(select(func.count()).select_from(query.subquery()))
    users = session.scalars(query.order_by(User.username).offset((page_no - 1) * per_page).limit(per_page))
    return list(users), total


def _tenant_named(session: Session, name: Any, field: str) -> Tenant:
    tenant = session.scalar(select(Tenant).where(Tenant.name == name)) if isinstance(name, str) else None
    if tenant is None:
        raise ServiceError(f"no tenant named {str(name)[:64]!r}", field=field)
    return tenant


def create(session: Session, body: Any) -> User:
    """{"username", "password", "is_admin"?, "tenants": [{"tenant": name, "role": "manager"|"user"}]}."""
    body = v.require_object(body)
    v.reject_unknown(body, ("username", "password", "is_admin", "tenants"))
    wanted = body.get("tenants") or []
    if not isinstance(wanted, list) or len(wanted) > 1000:
        raise ServiceError("tenants must be a list of {tenant, role}", field="tenants")
    memberships = []  # every tenant checked before anything is written
    for entry in wanted:
        if not isinstance(entry, dict) or set(entry) - {"tenant", "role"}:
            raise ServiceError("tenants must be a list of {tenant, role}", field="tenants")
        memberships.append((_tenant_named(session, entry.get("tenant"), "tenants"), _role(entry)))
    is_admin = _flag(body, "is_admin") if "is_admin" in body else False
    if not memberships and not is_admin:
        raise ServiceError("a user needs at least one tenant", field="tenants")
    username, password = body.get("username"), body.get("password")
    if not isinstance(username, str):
        raise ServiceError("username is required", field="username")
    if not isinstance(password, str):
        raise ServiceError("password is required", field="password")
    user = accounts.create_user(session, username, password, is_admin=is_admin)
    for tenant, role in memberships:
        accounts.add_membership(session, user, tenant, role)
    if not memberships:
        accounts.add_membership(session, user, accounts.get_or_create_tenant(session, accounts.DEFAULT_TENANT), Role.ADMIN)
    return user


def update(session: Session, actor: User, user_id: int, body: Any) -> User:
    """Reset the password, disable or enable, grant or take the administrator flag."""
    body = v.require_object(body)
    v.reject_unknown(body, ("password", "disabled", "is_admin"))
    if not body:
        raise ServiceError("nothing to change: send password, disabled or is_admin")
    user = get(session, user_id)
    disabled = _flag(body, "disabled") if "disabled" in body else user.disabled
    is_admin = _flag(body, "is_admin") if "is_admin" in body else user.is_admin
    if user.id == actor.id and (disabled or not is_admin):
        raise Conflict("you cannot disable yourself or drop your own administrator flag", field="disabled")
    if "password" in body:
        password = body["password"]
        if not isinstance(password, str) or len(password) < accounts.MIN_PASSWORD:
            raise ServiceError(f"password must have at least {accounts.MIN_PASSWORD} characters", field="password")
        user.password_hash = generate_password_hash(password)
    if "password" in body or disabled:
        # A reset or a disable ends every session that the old password opened.
        session.execute(delete(ApiToken).where(ApiToken.user_id == user.id))
    user.disabled, user.is_admin = disabled, is_admin
    session.flush()
    return user


def _membership(session: Session, user_id: int, tenant_id: int) -> Membership | None:
    return session.scalar(select(Membership).where(Membership.user_id == user_id, Membership.tenant_id == tenant_id))


def set_membership(session: Session, user_id: int, tenant_id: int, body: Any) -> Membership:
    body = v.require_object(body)
    v.reject_unknown(body, ("role",))
    role = _role(body)
    user = get(session, user_id)
    tenant = session.get(Tenant, tenant_id)
    if tenant is None:
        raise NotFound("tenant")
    return accounts.add_membership(session, user, tenant, role)


def remove_membership(session: Session, user_id: int, tenant_id: int) -> None:
    membership = _membership(session, user_id, tenant_id)
    if membership is None:
        raise NotFound("membership")
    session.delete(membership)
    session.flush()


# -- a tenant manager's view: the members of the current tenant

def member_dict(m: Membership) -> dict[str, Any]:
    return {"user_id": m.user.id, "username": m.user.username, "role": m.role.value, "disabled": m.user.disabled}


def members(session: Session, tenant: Tenant, page_no: int, per_page: int) -> tuple[list[Membership], int]:
    query = select(Membership).join(User).where(Membership.tenant_id == tenant.id)
    total = session.scalar(select(func.count()).select_from(query.subquery()))
    rows = session.scalars(query.order_by(User.username).offset((page_no - 1) * per_page).limit(per_page))
    return list(rows), total


def add_member(session: Session, tenant: Tenant, body: Any) -> Membership:
    """{"username", "role"}: an existing user joins (or changes role in) the tenant."""
    body = v.require_object(body)
    v.reject_unknown(body, ("username", "role"))
    role = _role(body)
    username = v.text(body, "username", required=True, max_len=64)
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise ServiceError(f"no user named {username!r}", field="username")
    existing = _membership(session, user.id, tenant.id)
    if existing is not None and existing.role == Role.ADMIN:
        raise ServiceError("a system administrator's membership is changed by an administrator", code="forbidden",
                           status=403)
    return accounts.add_membership(session, user, tenant, role)


def tenant_member(session: Session, tenant: Tenant, user_id: int) -> Membership:
    membership = _membership(session, user_id, tenant.id)
    if membership is None:
        raise NotFound("member")
    if membership.role == Role.ADMIN:
        raise ServiceError("a system administrator's membership is changed by an administrator", code="forbidden",
                           status=403)
    return membership


def set_member_role(session: Session, tenant: Tenant, user_id: int, body: Any) -> Membership:
    membership = tenant_member(session, tenant, user_id)  # first: another tenant's member is a 404, whatever the body
    body = v.require_object(body)
    v.reject_unknown(body, ("role",))
    membership.role = _role(body)
    session.flush()
    return membership
