"""Registered nodes: registration (reading CPU and memory from the engine) and their use."""
from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from kqi import jobs
from kqi import validation as v
from kqi.errors import Conflict, NotFound, ServiceError
from kqi.models import Node
from kqi.nodes import NodeError, driver_for, validate_url

NODE_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{0,62}$")
PARTITION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
NODE_FIELDS = ("name", "url", "gpus", "partition", "address")
ADDRESS = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.:-]{0,254}$")
LOCAL_ENGINE = "unix:///var/run/docker.sock"


def register(session: Session, body: Any, timeout_s: int = 30) -> Node:
    body = v.require_object(body)
    v.reject_unknown(body, NODE_FIELDS)
    name = v.text(body, "name", required=True, max_len=63, pattern=NODE_NAME,
                  rule="lower-case letters, digits, '-' and '.'")
    url = v.text(body, "url", required=True, max_len=512)
    problem = validate_url(url)
    if problem:
        raise ServiceError(problem, field="url")
    gpus = v.number(body, "gpus", minimum=0, maximum=64, integer=True, default=0)
    partition = v.text(body, "partition", max_len=64, pattern=PARTITION, rule="letters, digits, '.', '_' and '-'")
    address = v.text(body, "address", max_len=255, pattern=ADDRESS, rule="a host name or IP address",
                     default=urlsplit(url).hostname or "")
    if session.scalar(select(Node.id).where(Node.name == name)) is not None:
        raise Conflict(f"node {name} already exists", field="name")
    try:
        driver = driver_for(url, timeout_s=timeout_s)
        try:
            inventory = driver.inventory()
        finally:
            driver.close()
    except NodeError as exc:
        raise ServiceError(f"cannot reach the Docker engine at {url}: {exc}", field="url", code="unreachable", status=422) from None
    node = Node(name=name, url=url, partition=partition, gpu_count=gpus, cpu_milli=inventory.cpu_milli,
                memory_mib=inventory.memory_mib, engine_version=inventory.engine_version, address=address,
                nvidia_runtime=inventory.nvidia_runtime)
    session.add(node)
    session.flush()
    return node


def register_local_if_reachable(session: Session) -> Node | None:
    """`make run` offers the machine's own engine as node `local` when one answers."""
    if session.scalar(select(Node.id).where(Node.name == "local")) is not None:
        return None
    try:
        return register(session, {"name": "local", "url": LOCAL_ENGINE}, timeout_s=5)
    except ServiceError:
        return None


def get(session: Session, node_id: int) -> Node:
    node = session.get(Node, node_id)
    if node is None:
        raise NotFound("node")
    return node


def all_nodes(session: Session) -> list[Node]:
    return list(session.scalars(select(Node).order_by(Node.name)))


def as_dict(node: Node, used: dict[str, int] | None = None) -> dict[str, Any]:
    used = used or {"cpu_milli": 0, "memory_mib": 0, "gpu_milli": 0}
    return {
        "id": node.id,
        "name": node.name,
        "url": node.url,
        "address": node.address or None,
        "partition": node.partition or None,
        "engine_version": node.engine_version,
        "schedulable": node.schedulable,
        "last_error": node.last_error or None,
        "cpu": {"total": node.cpu_milli / 1000, "used": used["cpu_milli"] / 1000,
                "free": (node.cpu_milli - used["cpu_milli"]) / 1000},
        "memory_gb": {"total": round(node.memory_mib / 1024, 2), "used": round(used["memory_mib"] / 1024, 2),
                      "free": round((node.memory_mib - used["memory_mib"]) / 1024, 2)},
        "gpus": {"total": node.gpu_count, "used": used["gpu_milli"] / 1000,
                 "free": node.gpu_count - used["gpu_milli"] / 1000},
    }


def listing(session: Session) -> list[dict[str, Any]]:
    usage = jobs.node_usage(session)
    return [as_dict(node, usage.get(node.id)) for node in all_nodes(session)]
