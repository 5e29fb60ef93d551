"""Users, tenants, memberships, passwords and API tokens."""
from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from kqi import validation as v
from kqi.errors import NotFound, ServiceError
from kqi.models import ApiToken, Membership, Role, Tenant, User, utcnow
from kqi.resources import API_UNITS, limits_as_api, limits_from_api

TENANT_NAME = re.compile(r"^[0-9a-z-]{1,64}$")
USERNAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
DEFAULT_TENANT = "default"
MIN_PASSWORD = 8

# A fixed hash checked when the user does not exist, so a login takes as long either way.
_DUMMY_HASH = generate_password_hash("kqi-timing-equaliser")


@dataclass(frozen=True)
class Principal:
    """Who is calling, in which tenant, with which role there."""

    user: User
    tenant: Tenant
    role: Role
    # Read when the call is authenticated: the audit hook names them after the route's commit has
    # expired the rows above (reading those again would cost two queries per change).
    username: str = field(init=False)
    tenant_name: str = field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "username", self.user.username)
        object.__setattr__(self, "tenant_name", self.tenant.name)

    @property
    def is_admin(self) -> bool:
        return self.user.is_admin


def get_or_create_tenant(session: Session, name: str, display_name: str = "") -> Tenant:
    if not TENANT_NAME.match(name):
        raise ServiceError("tenant name may use lower-case letters, digits and '-'", field="name")
    tenant = session.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is None:
        tenant = Tenant(name=name, display_name=display_name or name)
        session.add(tenant)
        session.flush()
    return tenant


TENANT_FIELDS = ("name", "display_name", "quota", "notebook_default_hours", "notebook_max_hours")
NOTEBOOK_POLICY = ("notebook_default_hours", "notebook_max_hours")
MAX_NOTEBOOK_HOURS = 24 * 365
QUOTA_FIELDS = tuple(name for name, _field, _scale in API_UNITS)  # cpu, memory_gb, gpu


def _quota(body: Any) -> dict[str, int | None]:
    """{"cpu": cores, "memory_gb": GB, "gpu": GPUs}, each null or absent for unlimited."""
    if body is None:
        return {"quota_cpu_milli": None, "quota_memory_mib": None, "quota_gpu_milli": None}
    if not isinstance(body, dict):
        raise ServiceError("quota must be an object with cpu, memory_gb and gpu", field="quota")
    unknown = sorted(set(body) - set(QUOTA_FIELDS))
    if unknown:
        raise ServiceError(f"quota: unknown field {unknown[0]}", field="quota")
    limits = limits_from_api({key: v.number(body, key, minimum=0, maximum=1_000_000) for key in QUOTA_FIELDS})
    return {f"quota_{field}": amount for field, amount in limits.items()}


def _notebook_policy(body: Any, current: dict[str, int | None]) -> dict[str, int | None]:
    """Hours a notebook lives unless asked otherwise, and the most it may ask; null: no limit."""
    values = dict(current)
    for key in NOTEBOOK_POLICY:
        if key in body:
            values[key] = v.number(body, key, minimum=1, maximum=MAX_NOTEBOOK_HOURS, integer=True)
    default, most = values.get("notebook_default_hours"), values.get("notebook_max_hours")
    if default is not None and most is not None and default > most:
        raise ServiceError("notebook_default_hours is more than notebook_max_hours", field="notebook_default_hours")
    return values


def create_tenant(session: Session, body: Any) -> Tenant:
    body = v.require_object(body)
    v.reject_unknown(body, TENANT_FIELDS)
    name = v.text(body, "name", required=True, max_len=64, pattern=TENANT_NAME,
                  rule="lower-case letters, digits and '-'")
    if session.scalar(select(Tenant.id).where(Tenant.name == name)) is not None:
        raise ServiceError(f"tenant {name} already exists", field="name", code="conflict", status=409)
    tenant = Tenant(name=name, display_name=v.text(body, "display_name", max_len=128, default=name),
                    **_quota(body.get("quota")), **_notebook_policy(body, {}))
    session.add(tenant)
    session.flush()
    return tenant


def update_tenant(session: Session, tenant_id: int, body: Any) -> Tenant:
    body = v.require_object(body)
    v.reject_unknown(body, TENANT_FIELDS[1:])
    tenant = session.get(Tenant, tenant_id)
    if tenant is None:
        raise NotFound("tenant")
    current = {key: getattr(tenant, key) for key in NOTEBOOK_POLICY}
    for column, value in _notebook_policy(body, current).items():
        setattr(tenant, column, value)
    if "display_name" in body:
        tenant.display_name = v.text(body, "display_name", max_len=128, default=tenant.name)
    if "quota" in body:
        for column, value in _quota(body["quota"]).items():
            setattr(tenant, column, value)
    session.flush()
    return tenant


def tenant_dict(tenant: Tenant) -> dict[str, Any]:
    return {"id": tenant.id, "name": tenant.name, "display_name": tenant.display_name,
            "quota": limits_as_api(tenant.quota, gb_digits=None),
            "notebook_default_hours": tenant.notebook_default_hours, "notebook_max_hours": tenant.notebook_max_hours}


def all_tenants(session: Session) -> list[Tenant]:
    return list(session.scalars(select(Tenant).order_by(Tenant.name)))


def tenants_page(session: Session, page_no: int, per_page: int) -> tuple[list[Tenant], int]:
    total = session.scalar(select(func.count(Tenant.id)))
    return list(session.scalars(select(Tenant).order_by(Tenant.name).offset((page_no - 1) * per_page).limit(per_page))), total


def create_user(session: Session, username: str, password: str, *, is_admin: bool = False) -> User:
    if not USERNAME.match(username or ""):
        raise ServiceError("username: 1-64 letters, digits, '_', '.', '@' or '-'", field="username")
    if len(password or "") < MIN_PASSWORD:
        raise ServiceError(f"password must have at least {MIN_PASSWORD} characters", field="password")
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise ServiceError(f"user {username} already exists", field="username", code="conflict", status=409)
    user = User(username=username, password_hash=generate_password_hash(password), is_admin=is_admin)
    session.add(user)
    session.flush()
    return user


def add_membership(session: Session, user: User, tenant: Tenant, role: Role) -> Membership:
    membership = session.scalar(
        select(Membership).where(Membership.user_id == user.id, Membership.tenant_id == tenant.id)
    )
    if membership is None:
        membership = Membership(user_id=user.id, tenant_id=tenant.id, role=role)
        session.add(membership)
    else:
        membership.role = role
    session.flush()
    return membership


def ensure_admin(session: Session, username: str, password: str | None) -> tuple[User, str | None]:
    """Create the first admin in the default tenant unless one exists.

    Returns the admin and the generated password (None when it was given or the admin existed)."""
    existing = session.scalar(select(User).where(User.is_admin.is_(True)).order_by(User.id))
    if existing is not None:
        return existing, None
    generated = None
    if not password:
        password = generated = secrets.token_urlsafe(12)
    user = create_user(session, username, password, is_admin=True)
    add_membership(session, user, get_or_create_tenant(session, DEFAULT_TENANT, "Default tenant"), Role.ADMIN)
    return user, generated


def memberships_of(session: Session, user: User) -> list[Membership]:
    return list(
        session.scalars(
            select(Membership).join(Tenant).where(Membership.user_id == user.id).order_by(Tenant.name)
        )
    )


def authenticate(session: Session, username: str, password: str, tenant_name: str | None = None) -> Principal:
    """Check a password and choose the tenant (the named one, else the user's first)."""
    user = session.scalar(select(User).where(User.username == (username or "")))
    if user is None:
        check_password_hash(_DUMMY_HASH, password or "")
        raise ServiceError("wrong username or password", code="unauthorized", status=401)
    if not check_password_hash(user.password_hash, password or "") or user.disabled:
        raise ServiceError("wrong username or password", code="unauthorized", status=401)
    return principal_in(session, user, tenant_name)


def principal_in(session: Session, user: User, tenant_name: str | None) -> Principal:
    memberships = memberships_of(session, user)
    if tenant_name:
        memberships = [m for m in memberships if m.tenant.name == tenant_name]
        if not memberships:
            raise ServiceError(f"you are not a member of tenant {tenant_name}", field="tenant", code="forbidden", status=403)
    if not memberships:
        raise ServiceError("this account belongs to no tenant", code="forbidden", status=403)
    membership = memberships[0]
    return Principal(user=user, tenant=membership.tenant, role=membership.role)


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(session: Session, principal: Principal, ttl: timedelta) -> tuple[str, datetime]:
    token = "kqi_" + secrets.token_urlsafe(32)
    expires_at = utcnow() + ttl
    session.add(
        ApiToken(token_hash=_hash_token(token), user_id=principal.user.id, tenant_id=principal.tenant.id, expires_at=expires_at)
    )
    return token, expires_at


# Built once (a statement's cache key is then computed once too): this runs on every API call.
_PRINCIPAL_BY_TOKEN = (
    select(User, Tenant, Membership.role)
    .join(ApiToken, ApiToken.user_id == User.id)
    .join(Tenant, Tenant.id == ApiToken.tenant_id)
    .join(Membership, (Membership.user_id == ApiToken.user_id) & (Membership.tenant_id == ApiToken.tenant_id))
    .where(ApiToken.token_hash == bindparam("token_hash"), ApiToken.expires_at > bindparam("now"),
           User.disabled.is_(False))
)


def principal_for_token(session: Session, token: str) -> Principal | None:
    """The token's user in the token's tenant, or None. One query, never cached across requests: an
    expired token, a disabled user or a removed membership stops working at once."""
    found = session.execute(_PRINCIPAL_BY_TOKEN, {"token_hash": _hash_token(token), "now": utcnow()}).first()
    return None if found is None else Principal(user=found.User, tenant=found.Tenant, role=found.role)
