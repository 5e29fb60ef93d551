"""Which backend serves a node: by the scheme of its URL.

Today every scheme is the Docker Engine's (kqi/backends/docker/): unix://, tcp:// (plain or TLS),
ssh://. `driver_for` returns a driver that connects on first use.
"""
from __future__ import annotations

import re
from urllib.parse import urlsplit

from kqi.backends.base import Credentials, NodeDriver

SUPPORTED_SCHEMES = ("unix", "tcp", "ssh")
# The Docker socket named in an ssh:// URL is passed to the far side's `docker -H`: a plain path only.
REMOTE_SOCKET = re.compile(r"^(/[A-Za-z0-9._-]+)+$")
SSH_USER = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")


def validate_url(url: str) -> str | None:
    """Return why a node URL is unusable, or None."""
    parts = urlsplit(url or "")
    if parts.scheme not in SUPPORTED_SCHEMES:
        return f"url must start with {' or '.join(s + '://' for s in SUPPORTED_SCHEMES)}"
    if parts.query or parts.fragment or parts.password:
        return "url may not carry a query, a fragment or a password"
    if parts.scheme == "unix" and not parts.path.startswith("/"):
        return "unix:// url needs an absolute socket path, e.g. unix:///var/run/docker.sock"
    try:
        port = parts.port
    except ValueError:
        return f"{parts.scheme}:// url has an invalid port"
    if parts.scheme == "tcp" and (not parts.hostname or port is None):
        return "tcp:// url needs a host and a port, e.g. tcp://10.0.0.5:2376"
    if parts.scheme == "ssh":
        if not parts.hostname or not parts.username or not SSH_USER.match(parts.username):
            return "ssh:// url needs a user and a host, e.g. ssh://kqi@10.0.0.5:22 (optionally /path/to/docker.sock)"
        if parts.path and (not REMOTE_SOCKET.match(parts.path) or {".", ".."} & set(parts.path.split("/"))):
            return "ssh:// url path must be the remote Docker socket, e.g. ssh://kqi@10.0.0.5/var/run/docker.sock"
    return None


def driver_for(url: str, timeout_s: int = 30, credentials: Credentials | None = None) -> NodeDriver:
    """A driver for the node; it connects on first use, so creating one never blocks."""
    from kqi.backends.docker.engine import DockerEngineDriver  # noqa: PLC0415  (its imports are heavy)

    return DockerEngineDriver(url, timeout_s=timeout_s, credentials=credentials or Credentials())
