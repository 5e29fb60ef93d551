"""The dashboard in a real browser (headless system Chromium) against a live kqi server whose
scheduler runs jobs on the test engines: a user logs in, lands on the dashboard, and sees a job
of theirs appear in "running" and move to "recently ended" without a reload, beside the chart of
the cluster samples the scheduler records."""
from __future__ import annotations

import re

import pytest

import kqi
from kqi.extensions import db
from kqi.models import Role
from tests.browser import CHROMIUM, CHROMIUM_ARGS, LiveServer, require_chromium
from tests.conftest import ApiClient, Factory, make_app
from tests.test_pages_browser import IMAGE, TIMEOUT_MS, assert_no_reload, mark_no_reload, shot

pytestmark = pytest.mark.engines


@pytest.fixture
def live(tmp_path, docker_engines_clean):
    """A live server with its scheduler (sampling every second), both engines as nodes with 2 GPUs."""
    app = make_app(tmp_path, "", scheduler_enabled=True, scheduler_interval_s=0.5, cluster_sample_interval_s=1)
    factory = Factory(app)
    admin = factory.api(admin=True, role=Role.ADMIN)
    for i, engine in enumerate(docker_engines_clean):
        response = admin.post("/api/v1/admin/nodes", json={"name": f"node{i + 1}", "url": engine.unix_url, "gpus": 2})
        assert response.status_code == 201, response.get_json()
    username, password = factory.user()
    token = app.test_client().post("/api/v1/account/login", json={"username": username, "password": password})
    server = LiveServer(app).start()
    app.extensions["kqi_scheduler"].start()
    yield server.url, username, password, ApiClient(app.test_client(), token.get_json()["token"])
    kqi.shutdown(app)
    server.stop()
    with app.app_context():
        db.engine.dispose()


def test_login_lands_on_the_dashboard_with_my_running_job_and_the_chart(live):
    from playwright.sync_api import expect, sync_playwright

    require_chromium()
    url, username, password, api = live
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 800}, base_url=url)
        page.set_default_timeout(10_000)
        try:
            page.goto("/login")
            page.fill("input[name=username]", username)
            page.fill("input[name=password]", password)
            page.click("button:has-text('Log in')")
            page.wait_for_url(re.compile(r"/dashboard$"))
            expect(page.locator("h1")).to_contain_text("Dashboard")
            expect(page.locator("header nav a.on")).to_have_text("Dashboard")
            expect(page.locator("#dash-nodes tbody td:first-child")).to_have_text(["node1", "node2"])
            expect(page.locator("#cluster-gpus")).to_have_text("0 / 4")
            mark_no_reload(page)

            submitted = api.post("/api/v1/training/run", json={"name": "dash-sleeper", "image": IMAGE, "cpu": 0.5,
                                                               "memory_gb": 0.25, "gpu": 1, "command": "sleep 300"})
            assert submitted.status_code == 201, submitted.get_json()
            job_id = submitted.get_json()["id"]
            running = page.locator("#dash-running tbody tr", has=page.locator(f"a[href='/training/{job_id}']"))
            expect(running.locator(".status")).to_have_text("Running", timeout=TIMEOUT_MS)
            expect(running).to_contain_text("dash-sleeper")
            expect(running).to_contain_text("training")
            expect(running).to_contain_text(re.compile(r"node[12]"))
            expect(page.locator("#my-running")).to_have_text("1")
            expect(page.locator("#cluster-gpus")).to_have_text("1 / 4")
            # the samples taken every second draw a line once the chart's own poll brings them
            charts = page.locator("#dash-history svg.chart")
            expect(charts).to_have_count(2)
            for chart in charts.all():
                expect(chart.locator("polyline").first).to_be_attached(timeout=TIMEOUT_MS)
            assert_no_reload(page)
            shot(page, "dashboard")

            assert api.post(f"/api/v1/training/{job_id}/halt").status_code == 200
            ended = page.locator("#dash-recent tbody tr", has=page.locator(f"a[href='/training/{job_id}']"))
            expect(ended.locator(".status")).to_have_text("UserCanceled", timeout=TIMEOUT_MS)
            expect(page.locator("#dash-running")).to_contain_text("Nothing of yours runs now.")
            assert_no_reload(page)
        finally:
            browser.close()
