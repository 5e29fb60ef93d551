"""The HTMX pages in a real browser (headless system Chromium via Playwright) against a live kqi
server: waitress in a thread, the scheduler loop running by itself, the test engines as nodes.

Full-page screenshots of the main pages go to test-artifacts/screenshots/ (git-ignored)."""
from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest

import kqi
from kqi.extensions import db
from kqi.models import Role
from tests.browser import CHROMIUM, CHROMIUM_ARGS, LiveServer, require_chromium, submit_training
from tests.conftest import Factory, make_app

IMAGE = "kqi-test/busybox:1"
SHOTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "screenshots"
TIMEOUT_MS = 30_000  # a job's status reaching the page: scheduler tick + container + 2 s poll


@pytest.fixture(scope="module")
def browser():
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """A live kqi server with its scheduler running, and an admin who logs in through the page."""
    app = make_app(tmp_path_factory.mktemp("browser"), "", scheduler_enabled=True, scheduler_interval_s=0.5)
    factory = Factory(app)
    username, password = factory.user(admin=True, role=Role.ADMIN)
    server = LiveServer(app).start()
    scheduler = app.extensions["kqi_scheduler"]
    scheduler.start()
    yield SimpleNamespace(app=app, url=server.url, username=username, password=password, factory=factory)
    scheduler.shutdown()
    server.stop()
    with app.app_context():
        db.engine.dispose()


@pytest.fixture(scope="module")
def cluster(live, docker_engines):
    """The live server with both test engines registered as node1/node2 (2 declared GPUs each)."""
    import docker

    admin = live.factory.api(admin=True, role=Role.ADMIN)
    for i, engine in enumerate(docker_engines):
        response = admin.post("/api/v1/admin/nodes", json={"name": f"node{i + 1}", "url": engine.unix_url, "gpus": 2})
        assert response.status_code == 201, response.get_json()
    yield live
    kqi.shutdown(live.app)
    for engine in docker_engines:  # what the jobs left (a halted or unfinished one)
        client = docker.DockerClient(base_url=engine.unix_url, timeout=30)
        try:
            for container in client.containers.list(all=True, filters={"label": f"kqi.site={kqi.settings_of(live.app).site_id}"}):
                container.remove(force=True, v=True)
        finally:
            client.close()


def new_page(browser, live):
    context = browser.new_context(viewport={"width": 1280, "height": 800}, base_url=live.url)
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    return page


def log_in(page, live):
    page.goto("/login?next=/training")  # without `next`, a login lands on the dashboard (tests/test_dashboard_browser.py)
    page.fill("input[name=username]", live.username)
    page.fill("input[name=password]", live.password)
    page.click("button:has-text('Log in')")
    page.wait_for_url(re.compile(r"/training$"))


@pytest.fixture
def page(browser, live):
    page = new_page(browser, live)
    log_in(page, live)
    yield page
    page.context.close()


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def is_nodes_poll(response) -> bool:
    return response.request.method == "GET" and response.url.endswith("/nodes") and \
        response.request.headers.get("hx-request") == "true"


def mark_no_reload(page) -> None:
    """Tag the document: if a later check still sees the tag, the page was never reloaded."""
    page.evaluate("window.__kqiNoReload = true")


def assert_no_reload(page) -> None:
    assert page.evaluate("window.__kqiNoReload === true"), "the page was reloaded"


def test_login_shows_an_inline_error_then_lands_on_the_training_list(browser, live):
    from playwright.sync_api import expect

    page = new_page(browser, live)
    try:
        page.goto("/training")
        expect(page).to_have_url(re.compile(r"/login\?next="))
        page.fill("input[name=username]", live.username)
        page.fill("input[name=password]", "not-the-password")
        page.click("button:has-text('Log in')")
        expect(page.get_by_role("alert")).to_have_text("wrong username or password")
        expect(page.locator("input[name=username]")).to_have_value(live.username)
        expect(page.locator("input[name=password]")).to_have_value("")
        shot(page, "01-login-error")

        page.fill("input[name=password]", live.password)
        page.click("button:has-text('Log in')")
        expect(page).to_have_url(re.compile(r"/training$"))
        expect(page.locator("h1")).to_have_text("Training")
        expect(page.locator("header .who")).to_contain_text(live.username)
        expect(page.get_by_role("alert")).to_have_count(0)
    finally:
        page.context.close()


@pytest.mark.engines
def test_a_submitted_run_shows_live_until_completed(page, cluster):
    from playwright.sync_api import expect

    # the form's own checks (a bad name corrected, step by step) are in tests/test_submit_browser.py
    submit_training(page, name="hello-1", image=IMAGE, command="echo hello-from-job; echo 7 > /kqi/output/value.txt",
                    cpu="0.5", memory_gb="0.25", env="GREETING=hi", memo="from the browser test")
    expect(page.locator("h1")).to_contain_text("hello-1")
    mark_no_reload(page)

    expect(page.locator("#job-status")).to_have_text("Completed", timeout=TIMEOUT_MS)
    expect(page.locator("#status")).to_contain_text("exit code 0")
    expect(page.locator("#status button:has-text('Halt')")).to_have_count(0)
    expect(page.locator("#log pre.log")).to_contain_text("hello-from-job", timeout=TIMEOUT_MS)
    files = page.locator("#files table.files")
    expect(files.locator("td a")).to_have_text(["value.txt"], timeout=TIMEOUT_MS)
    expect(files.locator("td.num")).to_have_text(["2"])
    assert_no_reload(page)
    shot(page, "04-job-detail-completed")

    with page.expect_download() as download:
        files.locator("td a").click()
    assert Path(download.value.path()).read_bytes() == b"7\n"


@pytest.mark.engines
def test_halt_a_running_job_from_its_page(page, cluster):
    from playwright.sync_api import expect

    submit_training(page, name="sleeper", image=IMAGE, command="echo up; sleep 300", cpu="0.5", memory_gb="0.25")
    mark_no_reload(page)

    expect(page.locator("#job-status")).to_have_text("Running", timeout=TIMEOUT_MS)
    expect(page.locator("#log pre.log")).to_contain_text("up", timeout=TIMEOUT_MS)
    dialogs = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))
    page.click("#status button:has-text('Halt')")
    expect(page.locator("#job-status")).to_have_text("UserCanceled", timeout=TIMEOUT_MS)
    expect(page.locator("#status")).to_contain_text("halted by user")
    expect(page.locator("#status button:has-text('Halt')")).to_have_count(0)
    assert dialogs and dialogs[0].startswith("Stop job")
    assert_no_reload(page)


@pytest.mark.engines
def test_training_list_updates_live_and_nodes_page_lists_the_nodes(page, cluster, docker_engines):
    from playwright.sync_api import expect

    expect(page.locator("h1")).to_have_text("Training")
    api = cluster.factory.api(admin=True, role=Role.ADMIN)  # another admin; the list shows the whole tenant
    response = api.post("/api/v1/training/run", json={"name": "listed", "image": IMAGE, "command": "sleep 4",
                                                      "cpu": 0.5, "memory_gb": 0.25})
    assert response.status_code == 201, response.get_json()
    job_id = response.get_json()["id"]
    # The rows poll only while a run on the page can change (286 stops them): open the list anew.
    page.goto("/training")
    mark_no_reload(page)

    row = page.locator("table.jobs tbody tr", has=page.locator(f"a[href='/training/{job_id}']"))
    expect(row).to_have_count(1, timeout=TIMEOUT_MS)
    expect(row.locator(".status")).to_have_text(re.compile("Queued|Starting|Running"))
    expect(row.locator(".status")).to_have_text("Completed", timeout=TIMEOUT_MS)
    expect(row).to_contain_text(re.compile(r"node[12]"))
    for name in ("hello-1", "sleeper"):
        expect(page.locator("table.jobs tbody")).to_contain_text(name)
    assert_no_reload(page)
    shot(page, "02-training-list")

    page.click("header nav a:has-text('Nodes')")
    expect(page.locator("h1")).to_have_text("Nodes")
    table = page.locator("#nodes table.nodes")
    headers = table.locator("thead th")
    expect(headers).to_contain_text(["Name", "CPU", "GPU"])
    expect(table.locator("tbody tr td:first-child")).to_have_text(["node1", "node2"])
    gpu_col = [h.lower() for h in headers.all_inner_texts()].index("gpus used / total")
    expect(table.locator(f"tbody tr td:nth-child({gpu_col + 1})")).to_have_text([re.compile(r"^0(\.0)? / 2$")] * 2)
    expect(table.locator("tbody .status")).to_have_text(["Ready", "Ready"])
    mark_no_reload(page)
    with page.expect_response(is_nodes_poll, timeout=10_000):  # the table's 5 s refresh: still there
        pass
    expect(table.locator("tbody tr td:first-child")).to_have_text(["node1", "node2"])
    assert_no_reload(page)
    shot(page, "05-nodes")

    # registering from the form (a second name for engine 1's URL): the row appears, the form empties
    form = page.locator("form:has(button:has-text('Register'))")
    form.locator("input[name=name]").fill("node3")
    form.locator("input[name=url]").fill(docker_engines[0].unix_url)
    form.locator("button:has-text('Register')").click()
    expect(table.locator("tbody tr td:first-child")).to_have_text(["node1", "node2", "node3"])
    expect(form.locator("input[name=name]")).to_have_value("")
    expect(form.locator("input[name=url]")).to_have_value("")
    expect(page.get_by_role("alert")).to_have_count(0)


def test_admin_registering_a_node_with_a_bad_url_sees_an_inline_error(page, live):
    from playwright.sync_api import expect

    page.goto("/nodes")
    form = page.locator("form:has(button:has-text('Register'))")
    form.locator("input[name=name]").fill("node9")
    form.locator("input[name=url]").fill("ftp://example.invalid/docker")
    form.locator("input[name=gpus]").fill("1")
    form.locator("button:has-text('Register')").click()
    error = page.get_by_role("alert")
    expect(error).to_have_text("url must start with unix:// or tcp:// or ssh://")
    expect(form.locator("input[name=name]")).to_have_value("node9")
    expect(form.locator("input[name=url]")).to_have_value("ftp://example.invalid/docker")
    expect(form.locator("input[name=gpus]")).to_have_value("1")
    shot(page, "06-nodes-register-error")
    with page.expect_response(is_nodes_poll, timeout=10_000):  # the table's refresh leaves the form alone
        pass
    expect(error).to_have_text("url must start with unix:// or tcp:// or ssh://")
    expect(form.locator("input[name=name]")).to_have_value("node9")
    expect(page.locator("#nodes")).not_to_contain_text("node9")
