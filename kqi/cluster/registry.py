"""Registered nodes: registration (reading the inventory from the engine), the admin's settings,
SSH host key confirmation, inventory refresh and GPU discovery.

A node's URL names its backend (kqi/backends/registry.py): the Docker Engine's unix:// (local
socket), tcp:// (plain, or TLS with tls_ca, tls_cert, tls_key) and ssh://user@host:port[/socket]
(ssh_private_key, host key pinned by its SHA256 fingerprint). Which credentials a node takes, and
the rules for them, are its backend's credentials schema; secret ones are sealed (kqi/crypto.py)
and never shown again.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from kqi import validation as v
from kqi.backends import registry as backends
from kqi.backends.base import Credentials, GpuInfo, HostKeyMismatch, NodeError
from kqi.backends.docker.gpus import model_label
from kqi.cluster import health as node_health
from kqi.crypto import SecretBox
from kqi.errors import Conflict, NotFound, ServiceError
from kqi.jobs import lifecycle as jobs
from kqi.models import GpuAllocation, Node, Tenant
from kqi.models.nodes import NodeCacheEntry, NodeEvent, NodeGpu
from kqi.resources import ZERO, Resources

NODE_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{0,62}$")
ADDRESS = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.:-]{0,254}$")
GPU_MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,127}$")
HOST_KEY_FIELD = "ssh_host_key_fingerprint"  # the pinned host key: stored with the node, not sealed
SHARED_STORAGE = re.compile(r"^(/[A-Za-z0-9._-]+)+\Z")
MAX_CACHE_GB = 1_000_000
SETTINGS_FIELDS = ("partition", "address", "gpus", "gpu_model", "tenants", "allow_notebooks", "allow_tensorboard",
                   "shared_storage", "cache_gb")
UPDATE_FIELDS = ("state", *SETTINGS_FIELDS)
LOCAL_ENGINE = "unix:///var/run/docker.sock"
MAX_GPUS = 64


# -- credentials

def _credential(body: Mapping[str, Any], item: backends.CredentialField, required: bool = False) -> str:
    value = v.text(body, item.name, required=required, max_len=item.max_len)
    problem = value and item.problem(value)
    if problem:
        raise ServiceError(problem, field=item.name)
    return value


def _parse_credentials(body: Mapping[str, Any], backend: backends.Backend, scheme: str) -> Credentials:
    """The node's credentials, checked against its backend's schema: each field's format first,
    then which fields its URL scheme takes, then the material itself (a key that loads)."""
    schema = backend.credentials
    for item in backends.credential_fields():
        if item.name not in schema.names() and body.get(item.name):
            raise ServiceError(f"{item.name} is not for {backend.name} nodes", field=item.name)
    creds = Credentials(**{item.name: _credential(body, item) for item in schema.fields})
    try:
        schema.check(creds, scheme)
    except backends.CredentialsError as exc:
        raise ServiceError(str(exc), field=exc.field) from None
    return creds


def _seal(box: SecretBox, creds: Credentials) -> str:
    secrets = {field: getattr(creds, field) for field in backends.secret_fields() if getattr(creds, field)}
    return box.seal(json.dumps(secrets)) if secrets else ""


def credentials(box: SecretBox, node: Node) -> Credentials:
    """The node's keys, unsealed for the driver that is about to connect."""
    secrets = json.loads(box.unseal(node.credentials_sealed)) if node.credentials_sealed else {}
    fingerprint = node.ssh_host_key_fingerprint if node.host_key_confirmed else ""
    return Credentials(**secrets, ssh_host_key_fingerprint=fingerprint)


def transport(node: Node) -> str:
    try:
        return backends.backend_for(node.url).transport(node.url, bool(node.credentials_sealed))
    except NodeError:  # a backend no longer installed: the scheme is all there is to show
        return urlsplit(node.url).scheme


# -- settings shared by register and update

def _tenants(session: Session, body: Any) -> list[str] | None:
    names = body.get("tenants")
    if names is None:
        return None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or len(names) > 1000:
        raise ServiceError("tenants must be a list of tenant names, or null for a public node", field="tenants")
    known = set(session.scalars(select(Tenant.name).where(Tenant.name.in_(names))))
    unknown = sorted(set(names) - known)
    if unknown:
        raise ServiceError(f"no tenant named {unknown[0]!r}", field="tenants")
    return sorted(set(names))


def _flag(body: Any, field: str) -> bool | None:
    value = body.get(field)
    if value is None:
        return None
    if isinstance(value, str) and value in ("true", "false", "on", "off"):  # form posts
        return value in ("true", "on")
    if not isinstance(value, bool):
        raise ServiceError(f"{field} must be true or false", field=field)
    return value


def _shared_storage(body: Any) -> str:
    """A folder the server and the node both mount at this path (an NFS share), or "" for none.
    kqi writes read-only inputs under it and binds them into containers (kqi/jobs/node_cache.py)."""
    path = v.text(body, "shared_storage", max_len=200, pattern=SHARED_STORAGE,
                  rule="an absolute folder path of letters, digits, '.', '_', '-' and '/', e.g. /mnt/share")
    if path and {".", ".."} & set(path.split("/")):
        raise ServiceError("shared_storage may not contain '.' or '..' parts", field="shared_storage")
    if path and not os.path.isdir(path):
        raise ServiceError(f"shared_storage {path} is not a folder on the kqi server: mount the share at the same "
                           "path on the server and on the node", field="shared_storage")
    return path


def _apply_settings(session: Session, node: Node, body: Any) -> None:
    if "shared_storage" in body:
        node.shared_storage = _shared_storage(body)
    if "cache_gb" in body:  # null: the site's node_cache_gb
        node.cache_gb = v.number(body, "cache_gb", minimum=0, maximum=MAX_CACHE_GB)
    if "partition" in body:
        node.partition = v.text(body, "partition", max_len=64, pattern=v.PARTITION,
                                rule=v.PARTITION_RULE)
    if "address" in body:
        node.address = v.text(body, "address", max_len=255, pattern=ADDRESS, rule="a host name or IP address",
                              default=urlsplit(node.url).hostname or "")
    if "tenants" in body:
        node.tenants = _tenants(session, body)
    for flag in ("allow_notebooks", "allow_tensorboard"):
        value = _flag(body, flag)
        if value is not None:
            setattr(node, flag, value)
    if "gpus" in body or "gpu_model" in body:
        if node.gpu_source == "nvidia-smi":
            raise ServiceError("this node's GPUs are discovered with nvidia-smi; refresh its inventory instead",
                               field="gpus")
        count = v.number(body, "gpus", minimum=0, maximum=MAX_GPUS, integer=True, default=node.gpu_count or 0)
        model = v.text(body, "gpu_model", max_len=128, pattern=GPU_MODEL, rule="letters, digits, spaces, '.', '_', '-'",
                       default=_declared_model(session, node))
        _set_gpus(session, node, [GpuInfo(index=i, uuid="", model=model, memory_mib=0) for i in range(count)])


def _declared_model(session: Session, node: Node) -> str:
    if node.id is None:
        return ""
    return session.scalar(select(NodeGpu.model).where(NodeGpu.node_id == node.id).limit(1)) or ""


def _set_gpus(session: Session, node: Node, found: list[GpuInfo]) -> None:
    """Make the node's GPU rows match `found`. A GPU running processes kqi did not start is busy."""
    session.flush()  # the node has its id
    busy = node_health.busy_indices(session, node.id, found)
    session.execute(delete(NodeGpu).where(NodeGpu.node_id == node.id))
    session.add_all(NodeGpu(node_id=node.id, gpu_index=g.index, uuid=g.uuid, model=g.model, memory_mib=g.memory_mib,
                            busy=g.index in busy) for g in found)
    node.gpu_count = len(found)


# -- register, confirm, refresh, update

def _read_inventory(session: Session, node: Node, creds: Credentials, timeout_s: int) -> str:
    """Fill the node's capacity and GPUs from the engine (and nvidia-smi over SSH); return a summary."""
    driver = backends.driver_for(node.url, timeout_s=timeout_s, credentials=creds)
    try:
        inventory = driver.inventory()
        try:
            discovered = driver.gpus()
        except NodeError as exc:  # no nvidia-smi there: the declared GPUs stay
            if isinstance(exc, HostKeyMismatch):
                raise
            discovered = None
    finally:
        driver.close()
    node.cpu_milli, node.memory_mib = inventory.cpu_milli, inventory.memory_mib
    node.engine_version, node.nvidia_runtime = inventory.engine_version[:64], inventory.nvidia_runtime
    if discovered:
        node.gpu_source = "nvidia-smi"
        _set_gpus(session, node, discovered)
    capacity = Resources(inventory.cpu_milli, inventory.memory_mib)
    return (f"{int(capacity.cores)} CPUs, {int(capacity.memory_gb)} GiB, engine {inventory.engine_version}"
            f"{', nvidia runtime' if inventory.nvidia_runtime else ''}, {node.gpu_count} GPU(s)"
            f"{' (nvidia-smi)' if discovered else ''}")


def _unreachable(exc: NodeError, url: str) -> ServiceError:
    if isinstance(exc, HostKeyMismatch):
        return ServiceError(str(exc), field=HOST_KEY_FIELD, code="host_key_mismatch", status=422)
    return ServiceError(f"cannot reach the {backends.backend_for(url).reaches} at {url}: {exc}", field="url",
                        code="unreachable", status=422)


def register(session: Session, box: SecretBox, body: Any, timeout_s: int = 30) -> Node:
    """Register a node. An SSH node registered without a host key fingerprint is kept Unconfirmed,
    with the fingerprint its server presented, until an admin confirms it (see `confirm_host_key`)."""
    body = v.require_object(body)
    v.reject_unknown(body, ("name", "url", *SETTINGS_FIELDS, *(item.name for item in backends.credential_fields())))
    name = v.text(body, "name", required=True, max_len=63, pattern=NODE_NAME,
                  rule="lower-case letters, digits, '-' and '.'")
    url = v.text(body, "url", required=True, max_len=512)
    problem = backends.validate_url(url)
    if problem:
        raise ServiceError(problem, field="url")
    backend = backends.backend_for(url)
    creds = _parse_credentials(body, backend, urlsplit(url).scheme)
    if session.scalar(select(Node.id).where(Node.name == name)) is not None:
        raise Conflict(f"node {name} already exists", field="name")
    node = Node(name=name, url=url, cpu_milli=0, memory_mib=0, gpu_count=0, partition="", address="",
                credentials_sealed=_seal(box, creds), state=node_health.READY, admin_state=node_health.READY,
                schedulable=True, gpu_source="declared")
    session.add(node)
    _apply_settings(session, node, {"address": "", **body})
    if backend.pins_host_key(url) and not creds.ssh_host_key_fingerprint:
        try:
            seen = backend.scan_host_key(url, timeout_s)
        except NodeError as exc:
            raise _unreachable(exc, url) from None
        node.ssh_host_key_fingerprint, node.host_key_confirmed = seen, False
        node.state, node.schedulable = node_health.UNCONFIRMED, False
        session.flush()
        node_health.note(session, node, f"registered; SSH host key {seen} awaits confirmation")
        return node
    node.ssh_host_key_fingerprint = creds.ssh_host_key_fingerprint
    try:
        summary = _read_inventory(session, node, creds, timeout_s)
    except NodeError as exc:
        raise _unreachable(exc, url) from None
    session.flush()
    node_health.note(session, node, f"registered: {summary}")
    return node


def confirm_host_key(session: Session, box: SecretBox, node: Node, body: Any, timeout_s: int = 30) -> Node:
    """Pin the SSH host key the admin confirms: it must be the one the server presents now."""
    body = v.require_object(body)
    v.reject_unknown(body, (HOST_KEY_FIELD,))
    backend = backends.backend_for(node.url)
    if not backend.pins_host_key(node.url):
        raise ServiceError("only ssh:// nodes have a host key", field=HOST_KEY_FIELD)
    pinned = next(item for item in backend.credentials.fields if item.name == HOST_KEY_FIELD)
    given = _credential(body, pinned, required=True)
    try:
        seen = backend.scan_host_key(node.url, timeout_s)
    except NodeError as exc:
        raise _unreachable(exc, node.url) from None
    if seen != given:
        raise ServiceError(f"the server now presents {seen}, not {given}; nothing was changed",
                           field=HOST_KEY_FIELD, code="host_key_mismatch", status=422)
    node.ssh_host_key_fingerprint, node.host_key_confirmed = seen, True
    try:
        summary = _read_inventory(session, node, credentials(box, node), timeout_s)
    except NodeError as exc:
        raise _unreachable(exc, node.url) from None
    node.down_since, node.last_error = None, ""
    node_health.note(session, node, f"SSH host key {seen} confirmed; {summary}")
    node_health.set_state(session, node, node.admin_state, "host key confirmed")
    return node


def refresh_inventory(session: Session, box: SecretBox, node: Node, timeout_s: int = 30) -> Node:
    """Read CPU, memory, engine and GPUs again (GPUs installed later show up)."""
    if not node.host_key_confirmed:
        raise Conflict("confirm the node's SSH host key first")
    try:
        summary = _read_inventory(session, node, credentials(box, node), timeout_s)
    except NodeError as exc:
        raise _unreachable(exc, node.url) from None
    node_health.note(session, node, f"inventory refreshed: {summary}")
    return node


def update(session: Session, node: Node, body: Any) -> Node:
    """The admin's settings: state (Ready, Draining, Disabled), access, flags, partition, GPUs,
    shared storage and cache budget."""
    body = v.require_object(body)
    v.reject_unknown(body, UPDATE_FIELDS)
    if not body:
        raise ServiceError("nothing to change")
    state = v.text(body, "state", max_len=16)
    if state and state not in node_health.ADMIN_STATES:
        raise ServiceError(f"state must be one of {', '.join(node_health.ADMIN_STATES)}", field="state")
    _apply_settings(session, node, body)
    if state and state != node.admin_state:
        node.admin_state = state
        if node.state in node_health.ADMIN_STATES:  # the heartbeat's findings (Offline, ...) still win
            node_health.set_state(session, node, state, "set by an administrator")
        else:
            node_health.note(session, node, f"administrator chose {state}")
    session.flush()
    return node


def register_local_if_reachable(session: Session, box: SecretBox) -> Node | None:
    """`make run` offers the machine's own engine as node `local` when one answers."""
    if session.scalar(select(Node.id).where(Node.name == "local")) is not None:
        return None
    try:
        return register(session, box, {"name": "local", "url": LOCAL_ENGINE}, timeout_s=5)
    except ServiceError:
        return None


# -- reading

def get(session: Session, node_id: int) -> Node:
    node = session.get(Node, node_id)
    if node is None:
        raise NotFound("node")
    return node


def all_nodes(session: Session) -> list[Node]:
    return list(session.scalars(select(Node).order_by(Node.name)))


def gpus_of(session: Session, node_ids: list[int] | None = None) -> dict[int, list[NodeGpu]]:
    query = select(NodeGpu).order_by(NodeGpu.node_id, NodeGpu.gpu_index)
    if node_ids is not None:
        query = query.where(NodeGpu.node_id.in_(node_ids))
    found: dict[int, list[NodeGpu]] = {}
    for gpu in session.scalars(query):
        found.setdefault(gpu.node_id, []).append(gpu)
    return found


def labels(node: Node, gpus: list[NodeGpu]) -> list[str]:
    """The node's partitions: the one the admin set, and each GPU model (as a label)."""
    found = {node.partition} if node.partition else set()
    found.update(model_label(g.model) for g in gpus if g.model)
    return sorted(found - {""})


def events(session: Session, node: Node, limit: int = 50) -> list[NodeEvent]:
    return list(session.scalars(select(NodeEvent).where(NodeEvent.node_id == node.id)
                                .order_by(NodeEvent.id.desc()).limit(limit)))


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="seconds") + "Z" if moment else None


def event_dict(event: NodeEvent) -> dict[str, Any]:
    return {"at": _iso(event.at), "old_state": event.old_state or None, "new_state": event.new_state,
            "message": event.message or None}


def as_dict(node: Node, used: Resources = ZERO, gpus: list[NodeGpu] | None = None,
            held: dict[int, int] | None = None, cached: tuple[int, int] = (0, 0)) -> dict[str, Any]:
    used = used or ZERO
    capacity = node.capacity
    free = capacity - used
    gpus = gpus or []
    held = held or {}
    return {
        "id": node.id,
        "name": node.name,
        "url": node.url,
        "transport": transport(node),
        "address": node.address or None,
        "partition": node.partition or None,
        "labels": labels(node, gpus),
        "engine_version": node.engine_version,
        "nvidia_runtime": node.nvidia_runtime,
        "state": node.state,
        "admin_state": node.admin_state,
        "schedulable": node.schedulable,
        "last_error": node.last_error or None,
        "last_seen_at": _iso(node.last_seen_at),
        "ssh_host_key_fingerprint": node.ssh_host_key_fingerprint or None,
        "host_key_confirmed": node.host_key_confirmed,
        "tenants": node.tenants,
        "allow_notebooks": node.allow_notebooks,
        "allow_tensorboard": node.allow_tensorboard,
        "shared_storage": node.shared_storage or None,
        "cache_gb": node.cache_gb,
        "cache": {"volumes": cached[0], "bytes": cached[1]},
        "cpu": {"total": capacity.cores, "used": used.cores, "free": free.cores},
        "memory_gb": {"total": round(capacity.memory_gb, 2), "used": round(used.memory_gb, 2),
                      "free": round(free.memory_gb, 2)},
        "gpus": {"total": node.gpu_count, "used": used.gpus, "free": free.gpus, "source": node.gpu_source,
                 "devices": [{"index": g.gpu_index, "uuid": g.uuid or None, "model": g.model or None,
                              "memory_mib": g.memory_mib or None, "busy": g.busy,
                              "allocated": Resources(gpu_milli=held.get(g.gpu_index, 0)).gpus} for g in gpus]},
    }


def _held(session: Session, node_ids: list[int]) -> dict[int, dict[int, int]]:
    rows = session.execute(select(GpuAllocation.node_id, GpuAllocation.gpu_index, func.sum(GpuAllocation.milli))
                           .where(GpuAllocation.node_id.in_(node_ids))
                           .group_by(GpuAllocation.node_id, GpuAllocation.gpu_index))
    held: dict[int, dict[int, int]] = {}
    for node_id, index, milli in rows:
        held.setdefault(node_id, {})[index] = milli or 0
    return held


def _cached(session: Session, node_ids: list[int]) -> dict[int, tuple[int, int]]:
    """Per node: how many cache volumes it keeps, and their bytes."""
    rows = session.execute(select(NodeCacheEntry.node_id, func.count(), func.sum(NodeCacheEntry.bytes))
                           .where(NodeCacheEntry.node_id.in_(node_ids)).group_by(NodeCacheEntry.node_id))
    return {node_id: (count, int(size or 0)) for node_id, count, size in rows}


def describe(session: Session, node: Node) -> dict[str, Any]:
    return as_dict(node, jobs.node_usage(session).get(node.id, ZERO), gpus_of(session, [node.id]).get(node.id),
                   _held(session, [node.id]).get(node.id), _cached(session, [node.id]).get(node.id, (0, 0)))


def listing(session: Session) -> list[dict[str, Any]]:
    usage = jobs.node_usage(session)
    nodes = all_nodes(session)
    gpus = gpus_of(session)
    ids = [n.id for n in nodes]
    held, cached = _held(session, ids), _cached(session, ids)
    return [as_dict(node, usage.get(node.id, ZERO), gpus.get(node.id), held.get(node.id), cached.get(node.id, (0, 0)))
            for node in nodes]
