"""Administration: tenants and their quotas, nodes."""
from __future__ import annotations

from flask import current_app, jsonify, url_for

from kqi import accounts, jobs, node_registry
from kqi.errors import NotFound
from kqi.extensions import db
from kqi.models import Tenant
from kqi.views.api import blueprint, created, json_body, require_admin, scheduler


@blueprint.post("/admin/tenants")
def create_tenant():
    require_admin()
    tenant = accounts.create_tenant(db.session, json_body())
    db.session.commit()
    return created(accounts.tenant_dict(tenant), url_for("api.get_tenant", tenant_id=tenant.id))


@blueprint.get("/admin/tenants")
def list_tenants():
    require_admin()
    return jsonify({"items": [accounts.tenant_dict(t) for t in accounts.all_tenants(db.session)]})


@blueprint.get("/admin/tenants/<int:tenant_id>")
def get_tenant(tenant_id: int):
    require_admin()
    tenant = db.session.get(Tenant, tenant_id)
    if tenant is None:
        raise NotFound("tenant")
    return jsonify(accounts.tenant_dict(tenant))


@blueprint.put("/admin/tenants/<int:tenant_id>")
def update_tenant(tenant_id: int):
    require_admin()
    tenant = accounts.update_tenant(db.session, tenant_id, json_body())
    db.session.commit()
    scheduler().wake()  # a raised quota may let queued jobs start
    return jsonify(accounts.tenant_dict(tenant))



@blueprint.post("/admin/nodes")
def register_node():
    require_admin()
    node = node_registry.register(db.session, json_body(), timeout_s=current_app.config["KQI"]["docker_timeout_s"])
    db.session.commit()
    return created(node_registry.as_dict(node), url_for("api.get_node", node_id=node.id))


@blueprint.get("/admin/nodes")
def list_nodes():
    require_admin()
    return jsonify({"items": node_registry.listing(db.session)})


@blueprint.get("/admin/nodes/<int:node_id>")
def get_node(node_id: int):
    require_admin()
    node = node_registry.get(db.session, node_id)
    return jsonify(node_registry.as_dict(node, jobs.node_usage(db.session).get(node.id)))
