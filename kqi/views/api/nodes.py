"""Nodes (administrators): register over unix, TCP+TLS or SSH, confirm an SSH host key, change
state and access, refresh the inventory, read the state changes."""
from __future__ import annotations

from typing import Any

from flask import jsonify, url_for

from kqi.backends import registry as backends
from kqi.cluster import registry as node_registry
from kqi.extensions import db
from kqi.views import sealer, settings
from kqi.views.api import blueprint, created, json_body, require_admin, scheduler
from kqi.views.api.openapi import NULLABLE_STRING, body, obj, ok, op, path_id


def _timeout() -> int:
    """An administrator's call to a node waits as long as the most patient backend's settings allow."""
    return backends.timeout_s(settings().backend)


def _node(node_id: int):
    require_admin()
    return node_registry.get(db.session, node_id)


@blueprint.post("/admin/nodes")
def register_node():
    require_admin()
    node = node_registry.register(db.session, sealer(), json_body(), timeout_s=_timeout())
    db.session.commit()
    response = created(node_registry.describe(db.session, node), url_for("api.get_node", node_id=node.id))
    if not node.host_key_confirmed:
        response.status_code = 202  # registered, but unused until an admin confirms the host key shown
    else:
        scheduler().wake()
    return response


@blueprint.get("/admin/nodes")
def list_nodes():
    require_admin()
    return jsonify({"items": node_registry.listing(db.session)})


@blueprint.get("/admin/nodes/<int:node_id>")
def get_node(node_id: int):
    return jsonify(node_registry.describe(db.session, _node(node_id)))


@blueprint.put("/admin/nodes/<int:node_id>")
def update_node(node_id: int):
    node = node_registry.update(db.session, _node(node_id), json_body())
    db.session.commit()
    scheduler().wake()
    return jsonify(node_registry.describe(db.session, node))


@blueprint.post("/admin/nodes/<int:node_id>/confirm-host-key")
def confirm_host_key(node_id: int):
    node = node_registry.confirm_host_key(db.session, sealer(), _node(node_id), json_body(), timeout_s=_timeout())
    db.session.commit()
    scheduler().wake()
    return jsonify(node_registry.describe(db.session, node))


@blueprint.post("/admin/nodes/<int:node_id>/refresh")
def refresh_node(node_id: int):
    node = node_registry.refresh_inventory(db.session, sealer(), _node(node_id), timeout_s=_timeout())
    db.session.commit()
    scheduler().wake()
    return jsonify(node_registry.describe(db.session, node))


@blueprint.get("/admin/nodes/<int:node_id>/events")
def node_events(node_id: int):
    node = _node(node_id)
    return jsonify({"items": [node_registry.event_dict(e) for e in node_registry.events(db.session, node)]})


STATES = ["Ready", "Draining", "Disabled", "Unconfirmed", "HostKeyChanged", "Unreachable", "Offline"]
GPU = obj({"index": {"type": "integer"}, "uuid": NULLABLE_STRING, "model": NULLABLE_STRING,
           "memory_mib": {"type": ["integer", "null"]}, "busy": {"type": "boolean"},
           "allocated": {"type": "number", "description": "GPUs' worth held by kqi jobs (a share is < 1)"}})
AMOUNT = obj({"total": {"type": "number"}, "used": {"type": "number"}, "free": {"type": "number"}})
SETTINGS = {
    "partition": {"type": "string"}, "address": {"type": "string"},
    "gpus": {"type": "integer", "minimum": 0, "maximum": 64, "description": "declared GPUs (nodes without nvidia-smi)"},
    "gpu_model": {"type": "string", "description": "model of the declared GPUs; becomes a partition label"},
    "tenants": {"type": ["array", "null"], "items": {"type": "string"}},
    "allow_notebooks": {"type": "boolean"}, "allow_tensorboard": {"type": "boolean"},
    "shared_storage": {"type": ["string", "null"], "description": "a folder the server and the node both mount at "
                       "this path (an NFS share): jobs' read-only inputs are kept there and bound read-only instead "
                       "of shipped; empty: none"},
    "cache_gb": {"type": ["number", "null"], "minimum": 0, "description": "budget of the node's cached read-only "
                 "inputs (least recently used ones no container uses are removed over it); null: node_cache_gb"},
}
FINGERPRINT = {"type": "string", "pattern": "^SHA256:[A-Za-z0-9+/]{43}$"}
ADMIN = ["nodes"]
NODE_ID = [path_id("node_id")]


def paths() -> dict[str, Any]:
    """The routes' document, built when it is asked for: a node's transports and credential fields
    are those of the backends registered by then (kqi/views/api/openapi.py calls it)."""
    node = obj({
        "id": {"type": "integer"}, "name": {"type": "string"}, "url": {"type": "string"},
        "transport": {"enum": list(backends.all_transports())}, "address": NULLABLE_STRING, "partition": NULLABLE_STRING,
        "labels": {"type": "array", "items": {"type": "string"}, "description": "partition and GPU models"},
        "engine_version": {"type": "string"}, "nvidia_runtime": {"type": "boolean"},
        "state": {"enum": STATES}, "admin_state": {"enum": STATES[:3]}, "schedulable": {"type": "boolean"},
        "last_error": NULLABLE_STRING, "last_seen_at": NULLABLE_STRING,
        "ssh_host_key_fingerprint": NULLABLE_STRING, "host_key_confirmed": {"type": "boolean"},
        "tenants": {"type": ["array", "null"], "items": {"type": "string"}, "description": "null: public"},
        "allow_notebooks": {"type": "boolean"}, "allow_tensorboard": {"type": "boolean"},
        "shared_storage": NULLABLE_STRING,
        "cache_gb": {"type": ["number", "null"], "description": "null: node_cache_gb"},
        "cache": obj({"volumes": {"type": "integer"}, "bytes": {"type": "integer"}},
                     description="the node's cache volumes"),
        "cpu": AMOUNT, "memory_gb": AMOUNT,
        "gpus": obj({"total": {"type": "number"}, "used": {"type": "number"}, "free": {"type": "number"},
                     "source": {"enum": ["declared", "nvidia-smi"]}, "devices": {"type": "array", "items": GPU}}),
    })
    register = obj({
        "name": {"type": "string"},
        "url": {"type": "string", "description": backends.url_forms()},
        **{item.name: {"type": "string", "pattern": item.pattern.pattern, "maxLength": item.max_len,
                       "description": item.label} for item in backends.credential_fields()},
        **SETTINGS,
    }, required=["name", "url"])
    return {
        "/admin/nodes": {
            "post": op("Register a node (administrators)",
                       {**ok(node, "Registered and reachable", 201),
                        **ok(node, "An SSH node registered without a fingerprint: state Unconfirmed, its "
                                   "ssh_host_key_fingerprint awaits confirmation", 202)},
                       tags=ADMIN, request=body(register)),
            "get": op("List nodes (administrators)", ok(obj({"items": {"type": "array", "items": node}})), tags=ADMIN),
        },
        "/admin/nodes/{node_id}": {
            "get": op("One node, its GPUs and what its jobs hold (administrators)", ok(node), tags=ADMIN,
                      parameters=NODE_ID),
            "put": op("Change a node's state (Ready, Draining, Disabled), access, declared GPUs, shared storage or "
                      "cache budget (administrators)",
                      ok(node), tags=ADMIN, parameters=NODE_ID,
                      request=body(obj({"state": {"enum": STATES[:3]}, **SETTINGS}, required=[]))),
        },
        "/admin/nodes/{node_id}/confirm-host-key": {
            "post": op("Pin the SSH host key the server presents (administrators)", ok(node), tags=ADMIN,
                       parameters=NODE_ID, request=body(obj({"ssh_host_key_fingerprint": FINGERPRINT}))),
        },
        "/admin/nodes/{node_id}/refresh": {
            "post": op("Read CPU, memory, engine and GPUs again (administrators)", ok(node), tags=ADMIN,
                       parameters=NODE_ID),
        },
        "/admin/nodes/{node_id}/events": {
            "get": op("The node's state changes, newest first (administrators)",
                      ok(obj({"items": {"type": "array", "items": obj({
                          "at": {"type": "string"}, "old_state": NULLABLE_STRING, "new_state": {"type": "string"},
                          "message": NULLABLE_STRING})}})), tags=ADMIN, parameters=NODE_ID),
        },
    }
