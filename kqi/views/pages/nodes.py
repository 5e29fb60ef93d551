"""The node list and a node's page; registering a node and the admin's actions on it."""
from __future__ import annotations

from flask import abort, request

from kqi.backends import registry as backends
from kqi.cluster import registry as node_registry
from kqi.errors import ServiceError
from kqi.extensions import db
from kqi.views import sealer, settings
from kqi.views.pages import blueprint, member_page, page, scheduler

# The register form's fields besides the backends' credentials
FORM_FIELDS = ("name", "url", "gpus", "gpu_model", "partition", "address", "shared_storage")


def _timeout() -> int:
    """An administrator's call to a node waits as long as the most patient backend's settings allow."""
    return backends.timeout_s(settings().backend)


@blueprint.route("/nodes", methods=["GET", "POST"])
@member_page
def node_list(who):
    error = None
    form = request.form
    if request.method == "POST":
        if not who.is_admin:
            abort(403)
        fields = (*FORM_FIELDS, *(item.name for item in backends.credential_fields()))
        body = {k: form.get(k, "").strip() for k in fields}
        try:
            node_registry.register(db.session, sealer(), {k: v for k, v in body.items() if v}, timeout_s=_timeout())
            db.session.commit()
            form = {}
        except ServiceError as exc:
            db.session.rollback()
            error = exc
    # The table's poll gets the table alone; a register post gets the whole page (hx-select="main"), so the
    # form keeps its inline error and the values typed, and the next poll cannot wipe them.
    fragment = "nodes/_table.html" if request.method == "GET" else None
    return page("nodes/list.html", fragment, nodes=node_registry.listing(db.session), error=error,
                form={k: v for k, v in form.items() if k not in backends.secret_fields()},
                can_register=who.is_admin, backends=list(backends.all_backends()), url_forms=backends.url_forms()), (422 if error else 200)


def _detail(who, node, error=None, status=200):
    return page("nodes/detail.html", "nodes/_detail.html", node=node_registry.describe(db.session, node),
                events=[node_registry.event_dict(e) for e in node_registry.events(db.session, node)],
                is_admin=who.is_admin, error=error, node_cache_gb=settings().node_cache_gb), status


@blueprint.get("/nodes/<int:node_id>")
@member_page
def node_detail(who, node_id: int):
    return _detail(who, node_registry.get(db.session, node_id))


def _admin_action(who, node_id: int, action):
    """Run an admin's action on the node and show its page again, with the error inline (422)."""
    if not who.is_admin:
        abort(403)
    node = node_registry.get(db.session, node_id)
    try:
        action(node)
        db.session.commit()
    except ServiceError as exc:
        db.session.rollback()
        return _detail(who, node_registry.get(db.session, node_id), error=exc, status=422)
    scheduler().wake()
    return _detail(who, node)


@blueprint.post("/nodes/<int:node_id>/state")
@member_page
def node_set_state(who, node_id: int):
    return _admin_action(who, node_id, lambda node: node_registry.update(
        db.session, node, {"state": request.form.get("state", "")}))


@blueprint.post("/nodes/<int:node_id>/access")
@member_page
def node_set_access(who, node_id: int):
    names = [n.strip() for n in request.form.get("tenants", "").split(",") if n.strip()]
    body = {"tenants": names or None, "allow_notebooks": "allow_notebooks" in request.form,
            "allow_tensorboard": "allow_tensorboard" in request.form}
    return _admin_action(who, node_id, lambda node: node_registry.update(db.session, node, body))


@blueprint.post("/nodes/<int:node_id>/storage")
@member_page
def node_set_storage(who, node_id: int):
    body = {"shared_storage": request.form.get("shared_storage", "").strip(),
            "cache_gb": request.form.get("cache_gb", "").strip() or None}
    return _admin_action(who, node_id, lambda node: node_registry.update(db.session, node, body))


@blueprint.post("/nodes/<int:node_id>/confirm-host-key")
@member_page
def node_confirm_host_key(who, node_id: int):
    body = {"ssh_host_key_fingerprint": request.form.get("ssh_host_key_fingerprint", "")}
    return _admin_action(who, node_id, lambda node: node_registry.confirm_host_key(db.session, sealer(), node, body,
                                                                                   timeout_s=_timeout()))


@blueprint.post("/nodes/<int:node_id>/refresh")
@member_page
def node_refresh(who, node_id: int):
    return _admin_action(who, node_id, lambda node: node_registry.refresh_inventory(db.session, sealer(), node,
                                                                                    timeout_s=_timeout()))
