"""Helpers for the browser tests: a live kqi server (waitress in a thread, scheduler running) and
a headless Chromium from the system (Playwright never downloads one)."""
from __future__ import annotations

import os
import threading

from tests.infra.plugin import missing_part

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]


def require_chromium() -> str:
    """The Chromium binary, or skip (fail when CI=true) where it is missing."""
    if not os.path.isfile(CHROMIUM) or not os.access(CHROMIUM, os.X_OK):
        missing_part(f"browser tests need Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing_part("browser tests need the playwright package (pip install -r requirements-dev.txt)")
    return CHROMIUM


class LiveServer:
    """Serve `app` with waitress on 127.0.0.1 and a free port, in a background thread."""

    def __init__(self, app, threads: int = 8):
        from waitress import create_server

        self.app = app
        self._server = create_server(app, host="127.0.0.1", port=0, threads=threads, ident="kqi-test")
        self.port = self._server.effective_port
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._run, name="kqi-live-server", daemon=True)

    def _run(self) -> None:
        try:
            self._server.run()
        except OSError:  # closed under it at the end
            pass

    def start(self) -> LiveServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.close()
        self._thread.join(timeout=10)


SUBMIT_STEPS = (("name",), ("image", "command"), ("cpu", "memory_gb", "gpu"), ("env", "memo", "time_limit_s"))


def submit_training(page, **fields: str) -> int:
    """Go through the four steps of /training/new filling `fields` (name -> text) and submit;
    return the new run's id, with the browser on its page."""
    import re

    from playwright.sync_api import expect

    page.goto("/training/new")
    for number, names in enumerate(SUBMIT_STEPS, 1):
        for name in names:
            if name in fields:
                page.locator(f"[name={name}]").fill(fields[name])
        if number < len(SUBMIT_STEPS):
            page.click("button[name=to]:has-text('Next')")
            expect(page.locator(f"fieldset[data-step='{number + 1}']")).to_be_visible()
    page.click("button[name=to][value=submit]")
    page.wait_for_url(re.compile(r"/training/\d+$"))
    return int(page.url.rsplit("/", 1)[1])
