"""Administration pages (tenants, users and memberships, site settings, resource monitor, usage, audit
log), the tenant manager's members page, the tenant switch in the header, and the user's own
notification choices. Forms go through the same services as the API; a refused form comes back
with its inline error and status 422."""
from __future__ import annotations

from functools import wraps

from flask import Response, abort, g, redirect, request, session, url_for
from flask_login import current_user
from sqlalchemy import select

from kqi.accounts import auth as accounts
from kqi.accounts import users
from kqi.admin import accounting, audit, notify, site_settings
from kqi.cluster import monitor
from kqi.errors import ServiceError
from kqi.extensions import db
from kqi.models import Role, Tenant
from kqi.validation import paging
from kqi.views import audit_buffer, sealer
from kqi.views.pages import blueprint, member_page, page, scheduler

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@blueprint.after_request
def audit_page_request(response):
    """The pages' twin of the API's audit hook: every form post, by whom, how it ended."""
    if request.method not in MUTATING or request.endpoint is None:
        return response
    username = current_user.username if current_user.is_authenticated else g.get("audit_username", "")
    audit.record(audit_buffer(), username=username, tenant=session.get("tenant") or "",
                 action="page:" + request.endpoint.removeprefix("pages."), target=request.path,
                 status=response.status_code, ip=request.remote_addr or "")
    return response


def admin_page(view):
    @wraps(view)
    @member_page
    def wrapped(who, *args, **kwargs):
        if not who.is_admin:
            abort(403)
        return view(who, *args, **kwargs)

    return wrapped


def manager_page(view):
    @wraps(view)
    @member_page
    def wrapped(who, *args, **kwargs):
        if not (who.is_admin or who.role in (Role.MANAGER, Role.ADMIN)):
            abort(403)
        return view(who, *args, **kwargs)

    return wrapped


def _attempt(action):
    """Run a form's service call: None when it committed, the error when it was refused."""
    try:
        action()
        db.session.commit()
        return None
    except ServiceError as exc:
        db.session.rollback()
        return exc


def _after_post(error, endpoint, render, **values):
    """Post/redirect/get on success; the page again with the inline error (422) when refused."""
    if error is None:
        return redirect(url_for(endpoint, **values), code=303)
    return render(error), 422


def _blank_is_none(form, *keys):
    return {key: (form.get(key, "").strip() or None) for key in keys}


# -- the tenant switch in the header, and the user's own notifications

@blueprint.post("/account/tenant")
@member_page
def switch_tenant(who):
    name = request.form.get("tenant", "")
    accounts.principal_in(db.session, who.user, name)  # 403 unless a member there
    session["tenant"] = name
    target = request.form.get("next", "")
    return redirect(target if target.startswith("/") and not target.startswith("//") else url_for("pages.home"), code=303)


@blueprint.route("/account/notifications", methods=["GET", "POST"])
@member_page
def notifications(who):
    error = None
    if request.method == "POST":
        body = {"email": request.form.get("email", "").strip()}
        if request.form.get("webhook_url", "").strip() or request.form.get("webhook_off"):
            body["webhook_url"] = "" if request.form.get("webhook_off") else request.form["webhook_url"].strip()
        error = _attempt(lambda: notify.set_preferences(db.session, sealer(), who.user, body))
        if error is None:
            return redirect(url_for("pages.notifications"), code=303)
    return page("admin/notifications.html", choice=notify.preferences(db.session, who.user), error=error), \
        (422 if error else 200)


# -- tenants

@blueprint.route("/admin/tenants", methods=["GET", "POST"])
@admin_page
def admin_tenants(who):
    def render(error=None):
        return page("admin/tenants.html", tenants=accounts.all_tenants(db.session), error=error, form=request.form)

    if request.method == "GET":
        return render()
    form = request.form
    body = {"name": form.get("name", "").strip(), "display_name": form.get("display_name", "").strip(),
            "quota": _blank_is_none(form, "cpu", "memory_gb", "gpu"),
            **{k: v for k, v in _blank_is_none(form, *accounts.NOTEBOOK_POLICY).items() if v is not None}}
    tenant_id = form.get("tenant_id")
    if tenant_id:
        body.pop("name")
        if not tenant_id.isdigit():
            abort(404)
        error = _attempt(lambda: accounts.update_tenant(db.session, int(tenant_id), body))
        scheduler().wake()  # a raised quota may let queued jobs start
    else:
        error = _attempt(lambda: accounts.create_tenant(db.session, body))
    return _after_post(error, "pages.admin_tenants", render)


# -- users and memberships

@blueprint.route("/admin/users", methods=["GET", "POST"])
@admin_page
def admin_users(who):
    page_no, per_page = paging(request.args)

    def render(error=None):
        items, total = users.page(db.session, page_no, per_page, request.args.get("q"))
        return page("admin/users.html", users=[users.user_dict(db.session, u) for u in items], total=total,
                    page_no=page_no, per_page=per_page, tenants=accounts.all_tenants(db.session), error=error,
                    form=request.form)

    if request.method == "GET":
        return render()
    form = request.form
    body = {"username": form.get("username", "").strip(), "password": form.get("password", ""),
            "tenants": [{"tenant": form.get("tenant", ""), "role": form.get("role", "user")}]}
    return _after_post(_attempt(lambda: users.create(db.session, body)), "pages.admin_users", render)


def _change_user(who, user_id: int, form) -> None:
    action = form.get("action")
    if action == "password":
        users.update(db.session, who.user, user_id, {"password": form.get("password", "")})
    elif action in ("disable", "enable"):
        users.update(db.session, who.user, user_id, {"disabled": action == "disable"})
    elif action in ("join", "leave"):
        tenant = db.session.scalar(select(Tenant).where(Tenant.name == form.get("tenant", "")))
        if tenant is None:
            raise ServiceError("choose a tenant", field="tenant")
        if action == "join":
            users.set_membership(db.session, user_id, tenant.id, {"role": form.get("role")})
        else:
            users.remove_membership(db.session, user_id, tenant.id)
    else:
        raise ServiceError("unknown action", field="action")


@blueprint.post("/admin/users/<int:user_id>")
@admin_page
def admin_user_change(who, user_id: int):
    """One of: reset the password, disable/enable, add to a tenant, remove from a tenant."""
    users.get(db.session, user_id)  # 404 first
    error = _attempt(lambda: _change_user(who, user_id, request.form))

    def render(error):
        items, total = users.page(db.session, 1, 100)
        return page("admin/users.html", users=[users.user_dict(db.session, u) for u in items], total=total,
                    page_no=1, per_page=100, tenants=accounts.all_tenants(db.session), error=error, form={})

    return _after_post(error, "pages.admin_users", render)


# -- a tenant manager's members page

@blueprint.route("/tenant/members", methods=["GET", "POST"])
@manager_page
def tenant_members(who):
    page_no, per_page = paging(request.args)

    def render(error=None):
        items, total = users.members(db.session, who.tenant, page_no, per_page)
        usage = accounting.summary(db.session, accounting.parse_query({"group": "user", "period": "month"}),
                                   tenant_id=who.tenant.id)
        return page("admin/members.html", members=[users.member_dict(m) for m in items], total=total,
                    page_no=page_no, per_page=per_page, rows=usage, error=error, form=request.form)

    if request.method == "GET":
        return render()
    form = request.form
    user_id = form.get("user_id", "")
    if form.get("action") == "remove":
        if not user_id.isdigit():
            abort(404)
        error = _attempt(lambda: db.session.delete(users.tenant_member(db.session, who.tenant, int(user_id))))
    else:
        error = _attempt(lambda: users.add_member(db.session, who.tenant, {"username": form.get("username", "").strip(),
                                                                         "role": form.get("role")}))
    return _after_post(error, "pages.tenant_members", render)


# -- site settings

@blueprint.route("/admin/settings", methods=["GET", "POST"])
@admin_page
def admin_settings(who):
    error = None
    if request.method == "POST":
        body = {key: request.form.get(key, "").strip() for key in site_settings.DEFAULTS if key in request.form}
        error = _attempt(lambda: site_settings.update(db.session, body))
        if error is None:
            return redirect(url_for("pages.admin_settings"), code=303)
    values = dict(site_settings.current(db.session), **(request.form if error else {}))
    return page("admin/settings.html", values=values, error=error), (422 if error else 200)


# -- resource monitor

@blueprint.get("/admin/monitor")
@admin_page
def admin_monitor(who):
    return page("admin/monitor.html", "admin/_monitor.html", snap=monitor.snapshot(db.session))


def _monitor_action(action):
    error = _attempt(action)
    scheduler().wake()
    response = page("admin/monitor.html", "admin/_monitor.html", snap=monitor.snapshot(db.session), error=error)
    return response, (422 if error else 200)


@blueprint.post("/admin/monitor/kill/<int:job_id>")
@admin_page
def admin_kill(who, job_id: int):
    return _monitor_action(lambda: monitor.kill(db.session, job_id))


@blueprint.post("/admin/monitor/force-end/<int:job_id>")
@admin_page
def admin_force_end(who, job_id: int):
    return _monitor_action(lambda: monitor.force_end(db.session, job_id))


# -- usage and audit

@blueprint.get("/admin/usage")
@admin_page
def admin_usage(who):
    return _usage_page(None)


@blueprint.get("/admin/usage.csv")
@admin_page
def admin_usage_csv(who):
    return _usage_page(None, csv=True)


def _usage_page(tenant_id, csv=False):
    try:
        query = accounting.parse_query(request.args)
        error = None
    except ServiceError as exc:
        query, error = accounting.parse_query({}), exc
    rows = accounting.summary(db.session, query, tenant_id=tenant_id)
    if csv:
        return Response(accounting.as_csv(rows), mimetype="text/csv",
                        headers={"Content-Disposition": 'attachment; filename="kqi-usage.csv"'})
    metric = request.args.get("metric") if request.args.get("metric") in accounting.METRICS else "gpu_hours"
    return page("admin/usage.html", rows=rows, chart=accounting.svg_chart(rows, metric), metric=metric,
                metrics=accounting.METRICS, query=query, args=request.args, error=error), (422 if error else 200)


@blueprint.get("/admin/audit")
@admin_page
def admin_audit(who):
    page_no, per_page = paging(request.args, max_per_page=200)
    try:
        events, total = audit.page(db.session, audit_buffer(), request.args, page_no, per_page)
        error = None
    except ServiceError as exc:
        events, total, error = [], 0, exc
    return page("admin/audit.html", "admin/_audit_rows.html", events=[audit.as_dict(e) for e in events], total=total,
                page_no=page_no, per_page=per_page, args=request.args, error=error)


@blueprint.app_context_processor
def inject_tenants():
    """The header's tenant switch lists the user's tenants."""
    if current_user.is_authenticated:
        return {"my_memberships": accounts.memberships_of(db.session, current_user)}
    return {}

