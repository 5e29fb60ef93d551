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

    def start(self) -> "LiveServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.close()
        self._thread.join(timeout=10)
