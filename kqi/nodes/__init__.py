"""Node drivers: how kqi reaches the Docker engine of a node.

`driver_for(url)` returns the driver for a node URL. Every driver offers the same operations
(`NodeDriver`), so the scheduler loop never knows which transport it is using.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Protocol
from urllib.parse import urlsplit

LABEL_SITE = "kqi.site"
LABEL_JOB = "kqi.job"
LABEL_KIND = "kqi.kind"
LABEL_RANK = "kqi.rank"


class NodeError(Exception):
    """The node could not do what was asked. `infrastructure` is False when the request was bad
    (image missing, invalid command) rather than the node being unreachable."""

    def __init__(self, message: str, *, infrastructure: bool = True):
        super().__init__(message)
        self.infrastructure = infrastructure


@dataclass(frozen=True)
class Inventory:
    cpu_milli: int
    memory_mib: int
    engine_version: str
    nvidia_runtime: bool


@dataclass(frozen=True)
class ContainerSpec:
    name: str
    image: str
    command: str
    env: dict[str, str]
    labels: dict[str, str]
    cpu_milli: int
    memory_mib: int
    gpu_indices: tuple[int, ...] = ()
    nvidia_runtime: bool = False
    host_network: bool = False  # gang parts talk to each other through their hosts' addresses
    workdir: str = "/kqi/git"
    # tar archives unpacked at "/" before the command starts (the /kqi folders)
    archives: tuple[bytes, ...] = field(default=())


@dataclass(frozen=True)
class ContainerState:
    container_id: str
    job_id: int
    rank: int
    running: bool
    exit_code: int | None
    oom_killed: bool
    error: str
    started: bool  # False: created but never started


class NodeDriver(Protocol):
    def inventory(self) -> Inventory: ...

    def start(self, spec: ContainerSpec) -> str: ...

    def containers(self, site: str) -> list[ContainerState]: ...

    def logs(self, container_id: str, tail: int | None = None) -> bytes: ...

    def archive(self, container_id: str, path: str) -> Iterator[bytes]: ...

    def stop(self, container_id: str, timeout_s: int = 10) -> None: ...

    def remove(self, container_id: str) -> None: ...

    def close(self) -> None: ...


SUPPORTED_SCHEMES = ("unix", "tcp")


def validate_url(url: str) -> str | None:
    """Return why a node URL is unusable, or None."""
    parts = urlsplit(url or "")
    if parts.scheme not in SUPPORTED_SCHEMES:
        return f"url must start with {' or '.join(s + '://' for s in SUPPORTED_SCHEMES)}"
    if parts.scheme == "unix" and not parts.path.startswith("/"):
        return "unix:// url needs an absolute socket path, e.g. unix:///var/run/docker.sock"
    if parts.scheme == "tcp":
        try:
            port = parts.port
        except ValueError:
            return "tcp:// url has an invalid port"
        if not parts.hostname or port is None:
            return "tcp:// url needs a host and a port, e.g. tcp://10.0.0.5:2375"
    return None


def driver_for(url: str, timeout_s: int = 30) -> NodeDriver:
    from kqi.nodes.docker_engine import DockerEngineDriver

    return DockerEngineDriver(url, timeout_s=timeout_s)
