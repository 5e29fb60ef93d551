"""Docker over SSH with paramiko: kqi's own key, the host key pinned by its fingerprint.

docker-py's ssh:// transport reads ~/.ssh/config and known_hosts; kqi keeps a node's key (sealed in
the database) and its pinned fingerprint instead, so it opens its own connection. Each HTTP
connection to the engine is one SSH channel running `docker [-H unix://SOCKET] system dial-stdio`
on the far side (what the docker CLI itself does for ssh:// hosts). Commands are argv lists joined
with shlex (the socket path is also checked against a strict pattern when the node is registered).
"""
from __future__ import annotations

import base64
import hashlib
import io
import logging
import shlex
import socket
import threading

import paramiko
from docker.transport.basehttpadapter import BaseHTTPAdapter
from docker.transport.sshconn import SSHConnection, SSHConnectionPool

from kqi.backends.base import HostKeyMismatch, NodeError

logging.getLogger("paramiko").setLevel(logging.WARNING)
_KEY_TYPES = (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey)


def fingerprint(key: paramiko.PKey) -> str:
    """As `ssh-keygen -lf` prints it: SHA256 of the key blob, base64 without padding."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


def load_private_key(text: str) -> paramiko.PKey:
    for key_type in _KEY_TYPES:
        try:
            return key_type.from_private_key(io.StringIO(text))
        except (paramiko.SSHException, ValueError):
            continue
    raise NodeError("ssh_private_key is not an unencrypted Ed25519, ECDSA or RSA private key (PEM / OpenSSH)",
                    infrastructure=False)


def scan_host_key(host: str, port: int, timeout_s: float) -> str:
    """The fingerprint of the host key the server presents (no authentication attempted)."""
    try:
        sock = socket.create_connection((host, port), timeout=timeout_s)
    except OSError as exc:
        raise NodeError(f"cannot reach SSH at {host}:{port}: {exc}") from None
    transport = paramiko.Transport(sock)
    transport.banner_timeout = transport.handshake_timeout = timeout_s
    try:
        transport.start_client(timeout=timeout_s)
        return fingerprint(transport.get_remote_server_key())
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise NodeError(f"SSH handshake with {host}:{port} failed: {exc}") from None
    finally:
        transport.close()


class _Pinned(paramiko.MissingHostKeyPolicy):
    """No known_hosts file: every host key is checked against the one fingerprint pinned."""

    def __init__(self, expected: str):
        self.expected = expected

    def missing_host_key(self, client, hostname, key):
        seen = fingerprint(key)
        if seen != self.expected:
            raise HostKeyMismatch(seen, self.expected)


class SshLink:
    """One authenticated SSH connection to a node, reopened when it drops."""

    def __init__(self, host: str, port: int, user: str, private_key: str, host_key_fingerprint: str, timeout_s: float):
        if not host_key_fingerprint:
            raise NodeError("the node's SSH host key is not confirmed yet", infrastructure=False)
        self.host, self.port, self.user = host, port, user
        self._key = load_private_key(private_key)
        self._fingerprint = host_key_fingerprint
        self.timeout_s = timeout_s
        self._client: paramiko.SSHClient | None = None
        self._lock = threading.Lock()

    def transport(self) -> paramiko.Transport:
        with self._lock:
            transport = self._client.get_transport() if self._client else None
            if transport is not None and transport.is_active():
                return transport
            if self._client is not None:
                self._client.close()
            client = paramiko.SSHClient()
            client.set_missing_host_key_policy(_Pinned(self._fingerprint))
            try:
                client.connect(self.host, port=self.port, username=self.user, pkey=self._key, timeout=self.timeout_s,
                               banner_timeout=self.timeout_s, auth_timeout=self.timeout_s,
                               channel_timeout=self.timeout_s, allow_agent=False, look_for_keys=False)
            except NodeError:
                client.close()
                raise
            except (paramiko.SSHException, OSError, EOFError) as exc:
                client.close()
                raise NodeError(f"SSH to {self.user}@{self.host}:{self.port} failed: {exc}") from None
            self._client = client
            return client.get_transport()

    def open_exec(self, argv: list[str]) -> paramiko.Channel:
        try:
            channel = self.transport().open_session(timeout=self.timeout_s)
            channel.settimeout(self.timeout_s)
            channel.exec_command(shlex.join(argv))
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise NodeError(f"SSH channel to {self.host}:{self.port} failed: {exc}") from None
        return channel

    def run(self, argv: list[str]) -> str:
        """Run a fixed command on the node; its stdout, or NodeError with its stderr."""
        channel = self.open_exec(argv)
        try:
            with channel:
                out = channel.makefile("rb").read()
                err = channel.makefile_stderr("rb").read()
                status = channel.recv_exit_status()
        except (TimeoutError, paramiko.SSHException, OSError) as exc:
            raise NodeError(f"{argv[0]} on {self.host} did not answer: {exc}") from None
        if status != 0:
            raise NodeError(f"{argv[0]} on {self.host} exited with {status}: {err.decode(errors='replace')[:500]}")
        return out.decode(errors="replace")

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


class _DialConnection(SSHConnection):
    def __init__(self, link: SshLink, argv: list[str], timeout: float):
        super().__init__(timeout=timeout)
        self._link, self._argv = link, argv

    def connect(self):
        self.sock = self._link.open_exec(self._argv)


class _DialPool(SSHConnectionPool):
    """docker-py's pool for SSH channels (it skips urllib3's fileno() liveness checks)."""

    def __init__(self, link: SshLink, argv: list[str], timeout: float, maxsize: int):
        super().__init__(timeout=timeout, maxsize=maxsize)
        self._link, self._argv = link, argv

    def _new_conn(self):
        return _DialConnection(self._link, self._argv, self.timeout)


class DialStdioAdapter(BaseHTTPAdapter):
    """A requests adapter whose connections are `docker system dial-stdio` channels."""

    def __init__(self, link: SshLink, socket_path: str, timeout: float, maxsize: int = 10):
        argv = ["docker"] + (["-H", f"unix://{socket_path}"] if socket_path else []) + ["system", "dial-stdio"]
        self.pools = {}
        self._pool = _DialPool(link, argv, timeout, maxsize)
        super().__init__()

    def get_connection(self, url, proxies=None):
        return self._pool

    def close(self):
        super().close()
        self._pool.close()
