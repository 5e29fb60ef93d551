"""The upload page in a real browser (headless system Chromium): files go up by XHR with a
progress bar, then the browser lands on the new record."""
from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

import kqi
from kqi.extensions import db
from kqi.models import Role
from tests.browser import CHROMIUM, CHROMIUM_ARGS, LiveServer, require_chromium
from tests.conftest import Factory, make_app
from tests.test_pages_browser import shot


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    require_chromium()
    from playwright.sync_api import sync_playwright

    app = make_app(tmp_path_factory.mktemp("upload"), "")
    username, password = Factory(app).user(role=Role.USER)
    server = LiveServer(app).start()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield SimpleNamespace(app=app, url=server.url, username=username, password=password, browser=browser)
        browser.close()
    server.stop()
    kqi.shutdown(app)
    with app.app_context():
        db.engine.dispose()


def test_upload_shows_progress_and_lands_on_the_record(live, tmp_path):
    big = tmp_path / "weights.bin"
    big.write_bytes(b"\x01" * (24 << 20))
    context = live.browser.new_context(viewport={"width": 1280, "height": 800}, base_url=live.url)
    page = context.new_page()
    page.goto("/login")
    page.fill("input[name=username]", live.username)
    page.fill("input[name=password]", live.password)
    page.click("button:has-text('Log in')")
    page.wait_for_url(re.compile(r"/dashboard$"))

    page.click("nav >> text=Data")
    page.click("text=Upload data")
    page.fill("input[name=name]", "weights")
    page.fill("input[name=tags]", "model, big")
    labels = tmp_path / "labels.csv"
    labels.write_text("a,b\n")
    page.set_input_files("input[name=files]", [str(big), str(labels)])
    # remember every progress text the page shows (it navigates away when the upload is done)
    page.evaluate("""() => {
        const text = document.querySelector('.progress-text');
        new MutationObserver(() => sessionStorage.setItem('progress', text.textContent))
            .observe(text, {childList: true, characterData: true, subtree: true});
    }""")
    page.click("button:has-text('Upload')")
    page.wait_for_url(re.compile(r"/data/\d+$"))
    assert page.evaluate("sessionStorage.getItem('progress')").startswith("100% (24.0 of 24.0 MB)")
    assert page.locator("table.files").inner_text().count("\n") >= 2
    assert "weights.bin" in page.content() and "labels.csv" in page.content()
    shot(page, "data-detail")

    # a refused name shows the server's message inline, no navigation
    page.goto("/data/new")
    page.fill("input[name=name]", "bad")
    page.set_input_files("input[name=files]", [{"name": "bad\u0007name.txt", "mimeType": "text/plain", "buffer": b"x"}])
    page.click("button:has-text('Upload')")
    error = page.locator("form[data-upload] .error")
    error.wait_for(state="visible")
    assert "control characters" in error.inner_text()
    assert page.url.endswith("/data/new")
    page.goto("/data?q=model")
    assert "weights" in page.content()
    shot(page, "data-list")
    context.close()
