"""Administration: tenants and their quotas (nodes: kqi/views/api/nodes.py)."""
from __future__ import annotations

from flask import jsonify, request, url_for

from kqi.accounts import auth as accounts
from kqi.errors import NotFound
from kqi.extensions import db
from kqi.models import Tenant
from kqi.validation import paging
from kqi.views.api import blueprint, created, json_body, paged, require_admin, scheduler
from kqi.views.api.openapi import NULLABLE_INTEGER, NULLABLE_NUMBER, PAGING, body, obj, ok, op, page_of, path_id


@blueprint.post("/admin/tenants")
def create_tenant():
    require_admin()
    tenant = accounts.create_tenant(db.session, json_body())
    db.session.commit()
    return created(accounts.tenant_dict(tenant), url_for("api.get_tenant", tenant_id=tenant.id))


@blueprint.get("/admin/tenants")
def list_tenants():
    require_admin()
    page_no, per_page = paging(request.args)
    items, total = accounts.tenants_page(db.session, page_no, per_page)
    return paged([accounts.tenant_dict(t) for t in items], total, page_no, per_page)


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


QUOTA = obj({"cpu": NULLABLE_NUMBER, "memory_gb": NULLABLE_NUMBER, "gpu": NULLABLE_NUMBER}, required=[],
            description="cores, GB and GPUs the tenant's jobs may hold at once; null: unlimited")
TENANT = obj({"id": {"type": "integer"}, "name": {"type": "string"}, "display_name": {"type": "string"},
              "quota": QUOTA, "notebook_default_hours": NULLABLE_INTEGER, "notebook_max_hours": NULLABLE_INTEGER})
TENANT_FIELDS = {"display_name": {"type": "string", "maxLength": 128}, "quota": QUOTA,
                 "notebook_default_hours": NULLABLE_INTEGER, "notebook_max_hours": NULLABLE_INTEGER}
TENANT_ID = [path_id("tenant_id")]
ADMIN = ["admin"]
PATHS = {
    "/admin/tenants": {
        "post": op("Create a tenant (administrators)", ok(TENANT, "Created", 201), tags=ADMIN,
                   request=body(obj({"name": {"type": "string", "pattern": "^[0-9a-z-]{1,64}$"}, **TENANT_FIELDS},
                                    required=["name"]))),
        "get": op("List tenants (administrators)", ok(page_of(TENANT)), tags=ADMIN, parameters=PAGING),
    },
    "/admin/tenants/{tenant_id}": {
        "get": op("One tenant (administrators)", ok(TENANT), tags=ADMIN, parameters=TENANT_ID),
        "put": op("Change a tenant's display name, quota or notebook policy (administrators)", ok(TENANT),
                  tags=ADMIN, parameters=TENANT_ID, request=body(obj(TENANT_FIELDS, required=[]))),
    },
}
