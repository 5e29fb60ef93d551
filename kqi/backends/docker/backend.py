"""The Docker Engine backend as the registry sees it: its URL schemes and their rules, what it can
do, the credentials a node takes (TLS for tcp://, an SSH key and pinned host key for ssh://), and
its settings. Importing this module registers it; the engine driver (docker-py, paramiko) is
imported only when a driver is made or credentials are checked."""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from kqi.backends.base import Credentials, NodeDriver
from kqi.backends.registry import (
    Backend,
    Capabilities,
    CredentialField,
    CredentialGroup,
    CredentialsSchema,
    register,
)

# The Docker socket named in an ssh:// URL is passed to the far side's `docker -H`: a plain path only.
REMOTE_SOCKET = re.compile(r"^(/[A-Za-z0-9._-]+)+$")
SSH_USER = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
PEM = re.compile(r"-----BEGIN [A-Z0-9 ]+-----")
FINGERPRINT = re.compile(r"^SHA256:[A-Za-z0-9+/]{43}$")
FINGERPRINT_RULE = "SHA256:... as `ssh-keygen -lf` prints it"
_PEM_INVALID = "{name} must be PEM text (-----BEGIN ...-----)"


def _check_tls(creds: Credentials) -> None:
    from kqi.backends.docker.tls import ssl_context  # noqa: PLC0415  (ssl and docker-py: loaded when used)

    ssl_context(creds)


def _check_ssh_key(creds: Credentials) -> None:
    from kqi.backends.docker.ssh import load_private_key  # noqa: PLC0415  (paramiko: loaded when used)

    load_private_key(creds.ssh_private_key)


CREDENTIALS = CredentialsSchema(
    fields=(
        CredentialField("tls_ca", "CA", PEM, _PEM_INVALID),
        CredentialField("tls_cert", "Client certificate", PEM, _PEM_INVALID),
        CredentialField("tls_key", "Client key", PEM, _PEM_INVALID),
        CredentialField("ssh_private_key", "Private key", PEM, _PEM_INVALID),
        CredentialField("ssh_host_key_fingerprint", "Host key fingerprint", FINGERPRINT,
                        "{name}: " + FINGERPRINT_RULE, secret=False, max_len=80,
                        hint="SHA256:…, as ssh-keygen -lf prints it; leave empty to see the server's and confirm it"),
    ),
    groups=(
        CredentialGroup("TLS", ("tls_ca", "tls_cert", "tls_key"), schemes=("tcp",), together=True,
                        check=_check_tls, check_field="tls_cert"),
        CredentialGroup("SSH", ("ssh_private_key", "ssh_host_key_fingerprint"), schemes=("ssh",),
                        required=("ssh_private_key",), check=_check_ssh_key, check_field="ssh_private_key"),
    ),
)


class DockerBackend(Backend):
    name = "docker"
    schemes = ("unix", "tcp", "ssh")
    url_help = "unix:///path.sock, tcp://host:port, or ssh://user@host:port[/remote/docker.sock]"
    reaches = "Docker engine"
    transports = ("unix", "tcp", "tls", "ssh")
    # One engine per node: kqi picks the node and its GPUs; gang parts use the hosts' network.
    capabilities = Capabilities(places_itself=False, multi_node=True, published_ports=True, exec=True, volumes=True)
    credentials = CREDENTIALS
    config = {"docker_timeout_s": 30}  # every Engine API call but the heartbeat's (heartbeat_timeout_s)

    def validate_url(self, url: str) -> str | None:
        parts = urlsplit(url)
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

    def driver(self, url: str, timeout_s: int, credentials: Credentials) -> NodeDriver:
        from kqi.backends.docker.engine import DockerEngineDriver  # noqa: PLC0415  (its imports are heavy)

        return DockerEngineDriver(url, timeout_s=timeout_s, credentials=credentials)

    def transport(self, url: str, has_credentials: bool) -> str:
        scheme = urlsplit(url).scheme
        return "tls" if scheme == "tcp" and has_credentials else scheme

    def timeout_s(self, settings: Mapping[str, Any]) -> int:
        return int(settings["docker_timeout_s"])

    def pins_host_key(self, url: str) -> bool:
        return urlsplit(url).scheme == "ssh"

    def scan_host_key(self, url: str, timeout_s: float) -> str:
        from kqi.backends.docker.ssh import scan_host_key  # noqa: PLC0415  (paramiko: loaded when used)

        parts = urlsplit(url)
        return scan_host_key(parts.hostname, parts.port or 22, timeout_s)


DOCKER = register(DockerBackend())
