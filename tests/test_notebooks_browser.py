"""Notebook pages in a real browser against a live server with the test engines: the create form
with an inline error corrected, the list and detail updating live, the "open notebook" link
reachable, stop and run again; a run's TensorBoard panel. Screenshots: 40-notebook-*.png."""
from __future__ import annotations

import re

import docker
import pytest

import kqi
from kqi.models import Role
from tests.conftest import wait_for
from tests.test_notebooks_on_engines import (
    NOTEBOOK_COMMAND,
    TENSORBOARD_COMMAND,
    reachable,
)
from tests.test_pages_browser import (  # noqa: F401  (fixtures)
    IMAGE,
    TIMEOUT_MS,
    browser,
    live,
    log_in,
    new_page,
    shot,
)

pytestmark = pytest.mark.engines


@pytest.fixture(scope="module")
def services(live, docker_engines):  # noqa: F811
    """The live server with both engines as nodes (with their addresses: the links point there),
    a tenant maximum of 12 hours, and busybox httpd as the notebook and TensorBoard commands."""
    admin = live.factory.api(admin=True, role=Role.ADMIN)
    for i, engine in enumerate(docker_engines):
        response = admin.post("/api/v1/admin/nodes", json={"name": f"node{i + 1}", "url": engine.unix_url,
                                                           "address": engine.address})
        assert response.status_code == 201, response.get_json()
    settings = {"notebook_image": IMAGE, "notebook_command": NOTEBOOK_COMMAND, "tensorboard_image": IMAGE,
                "tensorboard_command": TENSORBOARD_COMMAND, "default_cpu": 0.25, "default_memory_gb": 0.125}
    assert admin.put("/api/v1/admin/settings", json=settings).status_code == 200
    tenant = next(t for t in admin.get("/api/v1/admin/tenants?per_page=100").get_json()["items"] if t["name"] == "default")
    assert admin.put(f"/api/v1/admin/tenants/{tenant['id']}", json={"notebook_max_hours": 12}).status_code == 200
    yield live
    kqi.shutdown(live.app)
    for engine in docker_engines:
        client = docker.DockerClient(base_url=engine.unix_url, timeout=30)
        try:
            for container in client.containers.list(all=True, filters={"label": f"kqi.site={kqi.settings_of(live.app).site_id}"}):
                container.remove(force=True, v=True)
        finally:
            client.close()


def test_create_open_stop_and_rerun_a_notebook(browser, services):  # noqa: F811
    from playwright.sync_api import expect

    page = new_page(browser, services)
    try:
        log_in(page, services)
        page.click("header nav a:has-text('Notebooks')")
        expect(page.locator("h1")).to_have_text("Notebooks")
        page.click("a:has-text('New notebook')")
        expect(page.locator("input[name=cpu]")).to_have_value("0.25")  # the site's defaults
        page.fill("input[name=name]", "explore")
        page.fill("input[name=lifetime_hours]", "13")
        page.fill("textarea[name=memo]", "a first look at the data")
        expect(page.locator("input[name=unlimited]")).to_have_count(0)  # the tenant sets a maximum
        shot(page, "40-notebook-create-form")
        page.click("button:has-text('Start notebook')")
        expect(page.locator("#err-lifetime_hours")).to_contain_text("at most 12 hours")
        page.fill("input[name=lifetime_hours]", "2")
        page.click("button:has-text('Start notebook')")
        expect(page).to_have_url(re.compile(r"/notebooks/\d+$"))
        nb_id = int(page.url.rsplit("/", 1)[1])

        expect(page.locator("#job-status")).to_have_text("Running", timeout=TIMEOUT_MS)
        link = page.locator("#status a.open-notebook")
        expect(link).to_be_visible(timeout=TIMEOUT_MS)
        href = link.get_attribute("href")
        assert re.match(r"^http://10\.213\.\d+\.\d+:\d+/lab\?token=[0-9a-f]{48}$", href), href
        assert wait_for(lambda: reachable(href), timeout=20) == b"lab\n"
        expect(page.locator("#status")).to_contain_text(re.compile(r"1 h 5\d min left"))
        expect(page.locator("#log-text")).to_be_visible()
        shot(page, "41-notebook-detail")

        opened = page.context.new_page()  # the link opens in the browser too
        opened.goto(href)
        expect(opened.locator("body")).to_contain_text("lab")
        opened.close()

        page.click("header nav a:has-text('Notebooks')")
        row = page.locator("table.notebooks tbody tr").first
        expect(row).to_contain_text("explore")
        expect(row).to_contain_text("Running")
        expect(row.locator("a.open-notebook")).to_have_attribute("href", href)
        shot(page, "42-notebook-list")

        page.goto(f"/notebooks/{nb_id}")
        page.click("#status button:has-text('Stop')")
        expect(page.locator("#job-status")).to_have_text("UserCanceled", timeout=TIMEOUT_MS)
        page.click("#status button:has-text('Run again')")
        expect(page).not_to_have_url(re.compile(rf"/notebooks/{nb_id}$"))
        expect(page.locator("#job-status")).to_have_text("Running", timeout=TIMEOUT_MS)
        href = page.locator("#status a.open-notebook").get_attribute("href")
        base = href.split("/lab?", 1)[0]
        assert wait_for(lambda: reachable(f"{base}/runs.txt"), timeout=20) == b"run\nrun\n"
        page.click("#status button:has-text('Stop')")
        expect(page.locator("#job-status")).to_have_text("UserCanceled", timeout=TIMEOUT_MS)
    finally:
        page.context.close()


def test_a_runs_page_starts_and_links_its_tensorboard(browser, services):  # noqa: F811
    from playwright.sync_api import expect

    api = services.factory.api()
    run = api.post("/api/v1/training/run", json={"name": "curves", "image": IMAGE, "cpu": 0.25, "memory_gb": 0.125,
                                                  "command": "echo loss > /kqi/output/scalars.txt"}).get_json()
    page = new_page(browser, services)
    try:
        log_in(page, services)
        page.goto(f"/training/{run['id']}")
        expect(page.locator("#job-status")).to_have_text("Completed", timeout=TIMEOUT_MS)
        page.click("#tensorboard button:has-text('Start TensorBoard')")
        link = page.locator("#open-tensorboard")
        expect(link).to_be_visible(timeout=TIMEOUT_MS)
        assert wait_for(lambda: reachable(link.get_attribute("href") + "scalars.txt"), timeout=20) == b"loss\n"
        page.locator("#tensorboard").scroll_into_view_if_needed()
        shot(page, "43-training-tensorboard")
        page.click("#tensorboard button:has-text('Stop')")
        expect(page.locator("#tensorboard-status")).to_have_text("UserCanceled", timeout=TIMEOUT_MS)
    finally:
        page.context.close()
