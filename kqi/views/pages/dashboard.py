"""The dashboard, the page a user lands on after login. Its panels poll for their fragment: the
jobs, tenant and cluster panels every few seconds, the history chart at the sampling interval."""
from __future__ import annotations

from datetime import datetime

from flask import redirect, request, url_for

from kqi.cluster import dashboard
from kqi.extensions import db
from kqi.models import utcnow
from kqi.views import settings
from kqi.views.pages import blueprint, member_page, page

# Where a job of each kind is shown; a kind without a page per run (preprocessing) opens on the
# training page, which shows any run of the tenant (kqi/views/kinds.py).
DETAIL_PAGES = {"inference": "pages.inference_detail", "notebook": "pages.notebook_detail"}


@blueprint.app_template_global()
def job_url(job: dict) -> str:
    return url_for(DETAIL_PAGES.get(job["kind"], "pages.training_detail"), job_id=job["id"])


def _live(who, now: datetime) -> dict:
    return {"mine": dashboard.my_jobs(db.session, who), "week": dashboard.gpu_hours_this_week(db.session, who, now),
            "tenant": dashboard.tenant_use(db.session, who.tenant), "cluster": dashboard.cluster(db.session),
            "resources": dashboard.RESOURCES}


def _history(now: datetime) -> dict:
    interval_s = settings().cluster_sample_interval_s
    found = dashboard.history(db.session, now)
    return {"charts": dashboard.history_charts(found["samples"], found["since"], found["until"], interval_s),
            "sample_count": len(found["samples"]), "history_poll_s": max(5, round(interval_s))}


@blueprint.get("/dashboard")
@member_page
def dashboard_page(who):
    now = utcnow()
    context = _live(who, now)
    if not request.headers.get("HX-Request"):
        context.update(_history(now))
    return page("dashboard/page.html", "dashboard/_live.html", **context)


@blueprint.get("/dashboard/history")
@member_page
def dashboard_history(who):
    if not request.headers.get("HX-Request"):
        return redirect(url_for("pages.dashboard_page"))
    return page("dashboard/page.html", "dashboard/_history.html", **_history(utcnow()))
