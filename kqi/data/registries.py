"""Image registries (admin) and each user's credentials for them (sealed at rest).

An image reference names its registry by its first component when that looks like a host
(`registry.example.com/team/img:1`, `localhost:5000/img`); a job's pull then uses the
submitting user's credentials for that registry, passed to the engine as auth_config only.
"""
from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from kqi import validation as v
from kqi.accounts.auth import Principal
from kqi.crypto import SecretBox
from kqi.errors import Conflict, NotFound, ServiceError
from kqi.models.data import Registry, RegistryCredential

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
HOST = re.compile(r"^[A-Za-z0-9.-]+(:[0-9]{1,5})?$")


def image_host(image: str) -> str | None:
    first, sep, _ = image.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return None


def register(session: Session, body: Any) -> Registry:
    body = v.require_object(body)
    v.reject_unknown(body, ("name", "host"))
    name = v.text(body, "name", required=True, max_len=64, pattern=NAME, rule="letters, digits, '.', '_' and '-'")
    host = v.text(body, "host", required=True, max_len=255, pattern=HOST,
                  rule="host[:port] as written in image references, e.g. registry.example.com:5000")
    if session.scalar(select(Registry.id).where((Registry.name == name) | (Registry.host == host))):
        raise Conflict(f"a registry named {name} or at {host} exists already", field="name")
    registry = Registry(name=name, host=host)
    session.add(registry)
    session.flush()
    return registry


def all_registries(session: Session) -> list[Registry]:
    return list(session.scalars(select(Registry).order_by(Registry.name)))


def delete(session: Session, registry_id: int) -> None:
    registry = session.get(Registry, registry_id)
    if registry is None:
        raise NotFound("registry")
    session.delete(registry)
    session.flush()


def as_dict(registry: Registry) -> dict[str, Any]:
    return {"id": registry.id, "name": registry.name, "host": registry.host}


def set_credential(session: Session, box: SecretBox, principal: Principal, body: Any) -> RegistryCredential:
    body = v.require_object(body)
    v.reject_unknown(body, ("registry_id", "username", "password"))
    registry_id = v.number(body, "registry_id", required=True, minimum=1, maximum=2**31, integer=True)
    registry = session.get(Registry, registry_id)
    if registry is None:
        raise ServiceError(f"registry {registry_id} not found", field="registry_id")
    username = v.text(body, "username", required=True, max_len=128)
    password = v.text(body, "password", required=True, max_len=4096)
    row = session.scalar(select(RegistryCredential).where(RegistryCredential.user_id == principal.user.id,
                                                          RegistryCredential.registry_id == registry.id))
    if row is None:
        row = RegistryCredential(user_id=principal.user.id, registry_id=registry.id)
        session.add(row)
    row.username = username
    row.sealed_password = box.seal(password)
    session.flush()
    return row


def credentials(session: Session, principal: Principal) -> list[RegistryCredential]:
    return list(session.scalars(select(RegistryCredential).where(RegistryCredential.user_id == principal.user.id)
                                .order_by(RegistryCredential.id)))


def delete_credential(session: Session, principal: Principal, registry_id: int) -> None:
    row = session.scalar(select(RegistryCredential).where(RegistryCredential.user_id == principal.user.id,
                                                          RegistryCredential.registry_id == registry_id))
    if row is None:
        raise NotFound("registry credential")
    session.delete(row)
    session.flush()


def credential_dict(row: RegistryCredential) -> dict[str, Any]:
    """Never the password."""
    return {"registry_id": row.registry_id, "registry": row.image_registry.name, "host": row.image_registry.host,
            "username": row.username}


def auth_config(session: Session, box: SecretBox, user_id: int, image: str) -> dict[str, str] | None:
    """The engine's auth_config for pulling `image` as this user, or None (anonymous pull)."""
    host = image_host(image)
    if host is None:
        return None
    row = session.scalar(select(RegistryCredential).join(Registry).where(
        RegistryCredential.user_id == user_id, Registry.host == host))
    if row is None:
        return None
    return {"username": row.username, "password": box.unseal(row.sealed_password), "serveraddress": host}
