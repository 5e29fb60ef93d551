"""A real git server over http on loopback: `git http-backend` (git's own smart-HTTP CGI) behind
a small threaded WSGI server that demands basic auth for every repository under `private/`.

It records the Authorization headers it saw, so a test can check the token travelled as a header
(and nowhere else). Plain functions and a class, no pytest.
"""
from __future__ import annotations

import base64
import subprocess
import threading
from pathlib import Path
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

HTTP_BACKEND = "/usr/lib/git-core/git-http-backend"


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass


class GitHttpServer:
    def __init__(self, root: Path, username: str, token: str):
        self.root = Path(root)
        self.username, self.token = username, token
        self.seen_auth: list[str] = []
        self._httpd = make_server("127.0.0.1", 0, self._app, server_class=_Server, handler_class=_QuietHandler)
        self.port = self._httpd.server_port
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def _app(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        auth = environ.get("HTTP_AUTHORIZATION", "")
        if auth:
            self.seen_auth.append(auth)
        expected = "Basic " + base64.b64encode(f"{self.username}:{self.token}".encode()).decode()
        if path.startswith("/private/") and auth != expected:
            start_response("401 Unauthorized", [("WWW-Authenticate", 'Basic realm="git"'), ("Content-Length", "0")])
            return [b""]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        env = {"GIT_PROJECT_ROOT": str(self.root), "GIT_HTTP_EXPORT_ALL": "1", "PATH": "/usr/bin:/bin",
               "REQUEST_METHOD": environ["REQUEST_METHOD"], "PATH_INFO": path,
               "QUERY_STRING": environ.get("QUERY_STRING", ""), "CONTENT_TYPE": environ.get("CONTENT_TYPE", ""),
               "CONTENT_LENGTH": str(len(body)), "REMOTE_ADDR": "127.0.0.1", "REMOTE_USER": self.username,
               "HTTP_CONTENT_ENCODING": environ.get("HTTP_CONTENT_ENCODING", ""),
               "GIT_PROTOCOL": environ.get("HTTP_GIT_PROTOCOL", "")}
        result = subprocess.run([HTTP_BACKEND], input=body, env=env, capture_output=True, check=False)
        head, _, payload = result.stdout.partition(b"\r\n\r\n")
        status, headers = "200 OK", []
        for line in head.decode("latin-1").split("\r\n"):
            key, _, value = line.partition(":")
            if key.lower() == "status":
                status = value.strip()
            elif key:
                headers.append((key, value.strip()))
        start_response(status, headers)
        return [payload]

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
