"""A small client of kqi's JSON API: bearer token, the one error shape, exit codes, streamed
transfers with progress."""
from __future__ import annotations

import sys
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

import click
import requests

# Exit codes scripts can rely on (docs/api.md lists them too).
OK = 0
FAILURE = 1  # anything not below
USAGE = 2  # a wrong command line (click's own code)
UNAUTHORIZED = 3  # not logged in, token expired or revoked, wrong password
FORBIDDEN = 4  # logged in, but not allowed (role, tenant)
NOT_FOUND = 5
INVALID = 6  # the server refused the input (400, 409, 413, 422)
UNAVAILABLE = 7  # the server could not be reached, or failed (5xx)
JOB_FAILED = 8  # `training log --follow`: the job ended other than Completed
RATE_LIMITED = 9  # 429: too many failed logins
STATUS_EXIT = {401: UNAUTHORIZED, 403: FORBIDDEN, 404: NOT_FOUND, 400: INVALID, 409: INVALID, 413: INVALID,
               422: INVALID, 429: RATE_LIMITED}
TIMEOUT_S = 60
CHUNK = 1024 * 1024


class ApiError(click.ClickException):
    def __init__(self, message: str, exit_code: int, status: int | None = None, field: str | None = None):
        super().__init__(message)
        self.exit_code = exit_code
        self.status = status
        self.field = field


def _error_of(response: requests.Response) -> ApiError:
    try:
        error = response.json()["error"]
        message, field = error["message"], error.get("field")
    except (ValueError, KeyError, TypeError):
        message, field = f"HTTP {response.status_code}", None
    code = STATUS_EXIT.get(response.status_code, UNAVAILABLE if response.status_code >= 500 else FAILURE)
    text = f"{message} (field: {field})" if field else message
    return ApiError(text, code, response.status_code, field)


class Client:
    def __init__(self, server: str, token: str | None = None):
        if not server:
            raise ApiError("no server: run `kqi account login --server URL` first", UNAUTHORIZED)
        self.server = server.rstrip("/")
        self.token = token
        self.session = requests.Session()

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def request(self, method: str, path: str, *, ok=(200, 201, 204), stream: bool = False, **kwargs) -> requests.Response:
        url = f"{self.server}/api/v1{path}"
        try:
            response = self.session.request(method, url, headers={**self._headers(), **kwargs.pop("headers", {})},
                                            timeout=kwargs.pop("timeout", TIMEOUT_S), stream=stream, **kwargs)
        except requests.RequestException as exc:
            raise ApiError(f"cannot reach {self.server}: {type(exc).__name__}", UNAVAILABLE) from None
        if response.status_code not in ok:
            raise _error_of(response)
        return response

    def json(self, method: str, path: str, **kwargs) -> Any:
        response = self.request(method, path, **kwargs)
        return response.json() if response.content else None

    def download(self, path: str, target: Path, label: str, quiet: bool = False) -> int:
        """Stream a file to `target` (written whole or not at all); return its size. Progress goes to
        stderr, so stdout stays clean for --json."""
        response = self.request("GET", path, stream=True)
        total = int(response.headers.get("Content-Length") or 0) or None
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".part")
        written = 0
        try:
            with open(partial, "wb") as fh, click.progressbar(length=total, label=label, hidden=quiet,
                                                              file=sys.stderr) as bar:
                for chunk in response.iter_content(CHUNK):
                    fh.write(chunk)
                    written += len(chunk)
                    bar.update(len(chunk))
        except requests.RequestException as exc:
            partial.unlink(missing_ok=True)
            raise ApiError(f"download of {label} broke off: {type(exc).__name__}", UNAVAILABLE) from None
        partial.replace(target)
        return written

    def upload(self, path: str, fields: dict[str, str], files: list[Path], label: str, quiet: bool = False) -> Any:
        """POST a multipart form whose files are streamed from disk, with a progress bar."""
        body = MultipartBody(fields, files)
        with click.progressbar(length=len(body), label=label, hidden=quiet, file=sys.stderr) as bar:
            body.on_read = bar.update
            response = self.request("POST", path, data=body, timeout=None,
                                    headers={"Content-Type": body.content_type, "Content-Length": str(len(body))})
        return response.json()


class MultipartBody:
    """multipart/form-data read piece by piece, with its length known up front (Content-Length), so a
    large file is never held in memory."""

    def __init__(self, fields: dict[str, str], files: Iterable[Path]):
        self.boundary = "kqi-" + uuid.uuid4().hex
        self.content_type = f"multipart/form-data; boundary={self.boundary}"
        self.on_read = lambda n: None
        self._pieces: list[bytes | Path] = []
        for name, value in fields.items():
            self._pieces.append(self._head(f'name="{name}"') + value.encode() + b"\r\n")
        for file in files:
            quoted = file.name.replace('"', "%22").replace("\r", "").replace("\n", "")
            self._pieces += [self._head(f'name="files"; filename="{quoted}"', b"Content-Type: application/octet-stream\r\n"),
                             file, b"\r\n"]
        self._pieces.append(f"--{self.boundary}--\r\n".encode())
        self._length = sum(p.stat().st_size if isinstance(p, Path) else len(p) for p in self._pieces)
        self._index, self._open = 0, None

    def _head(self, disposition: str, extra: bytes = b"") -> bytes:
        return f"--{self.boundary}\r\nContent-Disposition: form-data; {disposition}\r\n".encode() + extra + b"\r\n"

    def __len__(self) -> int:
        return self._length

    def read(self, size: int = -1) -> bytes:
        size = CHUNK if size is None or size < 0 else size
        while self._index < len(self._pieces):
            piece = self._pieces[self._index]
            if isinstance(piece, bytes):
                self._index += 1
                self.on_read(len(piece))
                return piece
            if self._open is None:
                self._open: BinaryIO | None = open(piece, "rb")
            chunk = self._open.read(size)
            if chunk:
                self.on_read(len(chunk))
                return chunk
            self._open.close()
            self._open = None
            self._index += 1
        return b""
