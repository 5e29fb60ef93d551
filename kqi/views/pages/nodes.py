"""The node list, and registering a node (admins)."""
from __future__ import annotations

from flask import abort, current_app, request

from kqi import node_registry
from kqi.errors import ServiceError
from kqi.extensions import db
from kqi.views.pages import blueprint, member_page, page


@blueprint.route("/nodes", methods=["GET", "POST"])
@member_page
def node_list(who):
    error = None
    form = request.form
    if request.method == "POST":
        if not who.is_admin:
            abort(403)
        body = {k: form.get(k, "").strip() for k in ("name", "url", "gpus", "partition", "address")}
        try:
            node_registry.register(db.session, {k: v for k, v in body.items() if v},
                                   timeout_s=current_app.config["KQI"]["docker_timeout_s"])
            db.session.commit()
            form = {}
        except ServiceError as exc:
            db.session.rollback()
            error = exc
    # The table's poll gets the table alone; a register post gets the whole page (hx-select="main"), so the
    # form keeps its inline error and the values typed, and the next poll cannot wipe them.
    fragment = "nodes/_table.html" if request.method == "GET" else None
    return page("nodes/list.html", fragment, nodes=node_registry.listing(db.session), error=error,
                form=form, can_register=who.is_admin), (422 if error else 200)
