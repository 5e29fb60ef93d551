"""Preprocessing in a real browser (headless system Chromium) against a live server whose scheduler
runs the test engines: define a preprocessing, tick two data items in the data list, run it on
them, watch the history reach Completed by itself, and open the data it made."""
from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

import kqi
from kqi.extensions import db
from kqi.models import Role
from tests.browser import CHROMIUM, CHROMIUM_ARGS, LiveServer, require_chromium
from tests.conftest import Factory, make_app
from tests.test_data_api import upload
from tests.test_pages_browser import IMAGE, shot

pytestmark = pytest.mark.engines
DONE_MS = 90_000  # two runs: scheduler tick, containers on the engines, collection, the 2 s poll


@pytest.fixture(scope="module")
def live(tmp_path_factory, docker_engines):
    require_chromium()
    from playwright.sync_api import sync_playwright

    app = make_app(tmp_path_factory.mktemp("preprocessing-browser"), "", scheduler_enabled=True,
                   scheduler_interval_s=0.5)
    factory = Factory(app)
    admin = factory.api(admin=True, role=Role.ADMIN)
    for i, engine in enumerate(docker_engines):
        response = admin.post("/api/v1/admin/nodes", json={"name": f"node{i + 1}", "url": engine.unix_url})
        assert response.status_code == 201, response.get_json()
    username, password = factory.user(role=Role.USER)
    server = LiveServer(app).start()
    app.extensions["kqi_scheduler"].start()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield SimpleNamespace(app=app, url=server.url, username=username, password=password, browser=browser,
                              api=factory.api())
        browser.close()
    kqi.shutdown(app)
    server.stop()
    with app.app_context():
        db.engine.dispose()


def test_preprocess_two_selected_data_items_and_see_the_new_data(live):
    from playwright.sync_api import expect

    inputs = [upload(live.api, name, files=[(f"{name}.txt", f"{name} text\n".encode())]).get_json()
              for name in ("cats", "dogs")]
    upload(live.api, "not-this-one")
    page = live.browser.new_context(viewport={"width": 1280, "height": 800}, base_url=live.url).new_page()
    page.set_default_timeout(15_000)
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto("/login")
    page.fill("input[name=username]", live.username)
    page.fill("input[name=password]", live.password)
    page.click("button:has-text('Log in')")
    page.wait_for_url(lambda url: "/login" not in url)

    # Define it; a bad name is refused inline first.
    page.click("nav >> text=Preprocessing")
    page.click("text=New preprocessing")
    page.fill("input[name=name]", "Upper Case")
    page.fill("input[name=image]", IMAGE)
    page.fill("textarea[name=command]", "id=$(ls /kqi/input); mkdir -p /kqi/output/upper-$id; "
                                        "for f in /kqi/input/$id/*; do tr a-z A-Z < $f > /kqi/output/upper-$id/$(basename $f); done")
    page.fill("input[name=cpu]", "0.25")
    page.fill("input[name=memory_gb]", "0.0625")
    page.click("button:has-text('Create')")
    expect(page.locator("#err-name")).to_contain_text("lower-case letters")
    page.fill("input[name=name]", "upper")
    page.click("button:has-text('Create')")
    page.wait_for_url(re.compile(r"/preprocessing/\d+$"))
    expect(page.locator("#history")).to_contain_text("Not run yet")
    page.goto("/preprocessing")
    expect(page.locator("#rows")).to_contain_text("upper")
    shot(page, "preprocessing-list")

    # Tick two data items in the data list and run it on them.
    page.goto("/data")
    for record in inputs:
        page.check(f"input[name=data_ids][value='{record['id']}']")
    shot(page, "preprocessing-data-selection")
    page.click("button:has-text('Preprocess selected')")
    expect(page.locator("h1")).to_have_text("Run preprocessing")
    checked = page.locator("input[name=data_ids]:checked")
    expect(checked).to_have_count(2)
    page.select_option("select[name=preprocessing_id]", label="upper")
    page.click("button:has-text('Run')")
    page.wait_for_url(re.compile(r"/preprocessing/\d+$"))

    # The history follows the runs by itself (HTMX polling) until both completed.
    rows = page.locator("#history tbody tr")
    expect(rows).to_have_count(2)
    expect(page.locator("#history .status")).to_have_text(["Completed", "Completed"], timeout=DONE_MS)
    for record in inputs:
        expect(page.locator("#history")).to_contain_text(f"upper-{record['id']}")
    shot(page, "preprocessing-detail-history")

    # The new data: its page shows where it came from, and its file is the uppercased input.
    page.click(f"#history a:has-text('upper-{inputs[0]['id']}')")
    expect(page.locator("#lineage")).to_contain_text("Made by preprocessing upper")
    expect(page.locator("#lineage")).to_contain_text(f"{inputs[0]['id']} · cats")
    expect(page.locator("table.files")).to_contain_text("cats.txt")
    shot(page, "preprocessing-made-data")
    page.goto(f"/data/{inputs[0]['id']}")
    expect(page.locator("#lineage")).to_contain_text("Preprocessed by")
    expect(page.locator("#lineage .status")).to_have_text("Completed")
    page.context.close()
