"""The HTMX pages. A route returns the whole page, or only its fragment for an HTMX request.

One blueprint; each area adds its pages from its own module (imported at the end)."""
from __future__ import annotations

from functools import wraps

from flask import Blueprint, Response, abort, current_app, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, login_user, logout_user
from werkzeug.exceptions import BadRequest, default_exceptions

from kqi.accounts import auth as accounts
from kqi.errors import ServiceError
from kqi.extensions import db, login_manager
from kqi.models import User
from kqi.views import login_limiter

blueprint = Blueprint("pages", __name__)
STOP_POLLING = 286  # htmx stops an hx-trigger="every ..." poll on this status


@login_manager.user_loader
def load_user(user_id: str):
    return db.session.get(User, int(user_id))


login_manager.login_view = "pages.login"


def principal() -> accounts.Principal:
    """The logged-in user in the tenant chosen at login."""
    try:
        return accounts.principal_in(db.session, current_user, session.get("tenant"))
    except ServiceError:
        logout_user()
        abort(403)


def page(template: str, fragment: str | None = None, **context) -> Response:
    """The full page, or just `fragment` when htmx asks (Vary keeps caches apart)."""
    name = fragment if fragment and request.headers.get("HX-Request") else template
    response = current_app.make_response(render_template(name, **context))
    response.headers["Vary"] = "HX-Request"
    return response


def go_to(target: str) -> Response:
    """After a form that worked: htmx follows HX-Redirect (a 3xx would be swapped in), a plain
    browser the redirect."""
    if request.headers.get("HX-Request"):
        return Response(status=204, headers={"HX-Redirect": target})
    return redirect(target)


def found(get, who, object_id: int):
    """`get(session, who, id)` from a service, or a 404 page: another tenant's object, or none."""
    try:
        return get(db.session, who, object_id)
    except ServiceError:
        abort(404)


def polled(body: str, job) -> Response:
    """A fragment that polls while `job` runs; 286 stops htmx polling once it has ended."""
    return Response(body, status=STOP_POLLING if job.status.finished else 200)


def scheduler():
    return current_app.extensions["kqi_scheduler"]


def member_page(view):
    @wraps(view)
    @login_required
    def wrapped(*args, **kwargs):
        return view(principal(), *args, **kwargs)

    return wrapped


@blueprint.errorhandler(ServiceError)
def service_error(exc: ServiceError):
    """A service's refusal that no page turned into an inline error (another tenant's object: 404)."""
    db.session.rollback()
    return default_exceptions.get(exc.status, BadRequest)(exc.message)


@blueprint.app_template_filter("num")
def number(value) -> str:
    """2.0 -> "2", 0.25 -> "0.25", 15.999 -> "16": amounts read as people write them."""
    return f"{round(float(value), 2):g}"


@blueprint.app_context_processor
def inject_principal():
    if current_user.is_authenticated:
        return {"principal": principal()}
    return {}


# -- login

@blueprint.route("/login", methods=["GET", "POST"])
def login():
    error, status = None, 200
    form = request.form
    if request.method == "POST":
        username, ip = form.get("username", ""), request.remote_addr or ""
        limiter = login_limiter()
        try:
            limiter.check(username, ip)
            who = accounts.authenticate(db.session, username, form.get("password", ""), form.get("tenant") or None)
        except ServiceError as exc:
            error, status = exc.message, (exc.status if exc.status == 429 else 401)
            if exc.status == 401:
                limiter.failed(username, ip)
        else:
            limiter.succeeded(username, ip)
            login_user(who.user)
            session["tenant"] = who.tenant.name
            target = request.args.get("next", "")
            return redirect(target if target.startswith("/") and not target.startswith("//") else url_for("pages.dashboard_page"))
    return render_template("login.html", error=error, form=form), status


@blueprint.post("/logout")
def logout():
    logout_user()
    session.clear()
    return redirect(url_for("pages.login"))


@blueprint.get("/")
def home():
    return redirect(url_for("pages.dashboard_page"))



from kqi.views.pages import admin, dashboard, data, nodes, notebooks, preprocessing, submit, training  # noqa: E402,F401  (register their pages)
