"""What every execution backend shares: the driver protocol, the container spec and state, errors.

`kqi.backends.registry.driver_for(url, credentials=...)` returns the driver of the backend owning
the URL's scheme (the Docker Engine's unix://, tcp:// with TLS and ssh://: kqi/backends/docker/).
Every driver offers the same operations (`NodeDriver`), so the scheduler loop never knows which
backend or transport it is using; what a backend cannot do is in its `Capabilities`.
"""
from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from kqi.resources import Resources

LABEL_SITE = "kqi.site"
LABEL_JOB = "kqi.job"
LABEL_KIND = "kqi.kind"
LABEL_RANK = "kqi.rank"
LABEL_CACHE = "kqi.cache"  # a node's cache volume: the full content hash of what it holds
LABEL_BYTES = "kqi.bytes"  # ... and the size of the tar it was filled from
CACHE_VOLUME = re.compile(r"^kqi-cache-[A-Za-z0-9_.-]{1,200}$")
Archive = bytes | Path  # a tar in memory, or a tar file on disk (large inputs stream from it)


class NodeError(Exception):
    """The node could not do what was asked. `infrastructure` is False when the request was bad
    (image missing, invalid command) rather than the node being unreachable."""

    def __init__(self, message: str, *, infrastructure: bool = True):
        super().__init__(message)
        self.infrastructure = infrastructure


class HostKeyMismatch(NodeError):
    """The SSH server presented a host key other than the one pinned: possibly not our node."""

    def __init__(self, seen: str, expected: str):
        super().__init__(f"SSH host key changed: the server presented {seen}, the pinned key is {expected}; "
                         "nothing is scheduled there until an administrator confirms the new key")
        self.seen = seen


@dataclass(frozen=True)
class Credentials:
    """What a node's transport needs besides its URL (PEM texts, unsealed only to connect)."""

    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    ssh_private_key: str = ""
    ssh_host_key_fingerprint: str = ""  # "SHA256:...", as `ssh-keygen -lf` prints it

    @property
    def tls(self) -> bool:
        return bool(self.tls_ca or self.tls_cert or self.tls_key)


@dataclass(frozen=True)
class GpuInfo:
    index: int
    uuid: str
    model: str
    memory_mib: int
    in_use: bool = False  # compute processes run on it (kqi's or anyone's)


@dataclass(frozen=True)
class Inventory:
    cpu_milli: int
    memory_mib: int
    engine_version: str
    nvidia_runtime: bool


@dataclass(frozen=True)
class CachedInput:
    """A read-only input the node keeps by content (kqi/jobs/node_cache.py puts it there first),
    mounted read-only at `path`: the node's cache volume `volume`, or the folder `host_path` on the
    node's shared storage. kqi builds both from content hashes alone; anything else is refused
    here, so no user value can become a mount source."""

    path: str
    volume: str = ""
    host_path: str = ""

    def __post_init__(self):
        if bool(self.volume) == bool(self.host_path):
            raise ValueError("a cached input is a volume or a host folder, not both or neither")
        if self.volume and not CACHE_VOLUME.match(self.volume):
            raise ValueError(f"not a cache volume name: {self.volume!r}")
        if self.host_path and (not self.host_path.startswith("/") or posixpath.normpath(self.host_path) != self.host_path
                               or ".." in self.host_path.split("/")):
            raise ValueError(f"not a plain absolute folder: {self.host_path!r}")


@dataclass(frozen=True)
class ContainerSpec:
    name: str
    image: str
    command: str
    env: dict[str, str]
    labels: dict[str, str]
    # CPU and memory become the container's limits; the GPU amount is for a backend that places
    # containers itself (Capabilities.places_itself), the others get the GPUs kqi chose as gpu_indices.
    resources: Resources
    gpu_indices: tuple[int, ...] = ()
    nvidia_runtime: bool = False
    host_network: bool = False  # gang parts talk to each other through their hosts' addresses
    workdir: str = "/kqi/git"
    # tar archives unpacked at "/" before the command starts (the /kqi folders, /kqi/git, /kqi/attach)
    archives: tuple[Archive, ...] = field(default=())
    # read-only inputs already on the node (/kqi/input, /kqi/parent, /kqi/git), mounted as they are
    cached: tuple[CachedInput, ...] = field(default=())
    registry_auth: dict[str, str] | None = field(default=None, repr=False)  # docker's auth_config for the pull
    pull: bool = False  # pull even when the node has the image
    progress: Callable[[str], None] | None = field(default=None, compare=False, repr=False)  # pull progress
    # Long-running services (notebooks, TensorBoard): container ports published on random host ports,
    # and an argv run as is instead of `/bin/sh -c command` (it may carry a notebook's token: not shown)
    ports: tuple[int, ...] = ()
    argv: tuple[str, ...] = field(default=(), repr=False)


@dataclass(frozen=True)
class ExecResult:
    """What a command run in a container left (NodeDriver.exec)."""

    exit_code: int | None  # None when it was cut off (time limit or output cap) before it ended
    output: bytes  # stdout and stderr interleaved as the engine sent them
    truncated: bool = False
    timed_out: bool = False


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
    def ping(self) -> None: ...

    def inventory(self) -> Inventory: ...

    def gpus(self) -> list[GpuInfo] | None:
        """The GPUs as nvidia-smi on the node sees them; None when the transport cannot run it."""

    def start(self, spec: ContainerSpec) -> str: ...

    def upload(self, container_id: str, path: str, archive: Archive) -> None:
        """Unpack a tar into a container's folder (files attached to a running job)."""

    def image_identity(self, image: str) -> dict[str, object]:
        """{"id", "repo_digests"} of the image as it is on the node."""

    def cache_volume(self, name: str) -> dict[str, str] | None:
        """The labels of the cache volume `name` on the node, or None when it has none."""

    def fill_cache_volume(self, name: str, labels: dict[str, str], archive: Archive) -> None:
        """Make the cache volume `name` afresh (replacing one of that name) holding the tar's contents."""

    def cache_volumes(self, site: str) -> dict[str, dict[str, str]]:
        """The site's cache volumes on the node: name -> labels."""

    def remove_cache_volume(self, name: str) -> bool:
        """Remove a cache volume (gone already counts); False while a container uses it."""

    def containers(self, site: str) -> list[ContainerState]: ...

    def logs(self, container_id: str, tail: int | None = None) -> Iterator[bytes]:
        """stdout and stderr so far (not followed; `tail`: only the last lines), in pieces of bounded
        size, so a log of any length passes through in little memory. Read it to the end or close it."""

    def archive(self, container_id: str, path: str) -> Iterator[bytes]: ...

    def exec(self, container_id: str, argv: list[str], timeout_s: float, limit: int) -> ExecResult:
        """Run argv in a running container: its exit code and output (kqi/backends/docker/exec_stream.py)."""

    def stop(self, container_id: str, timeout_s: int = 10) -> None: ...

    def published_port(self, container_id: str, port: int) -> int | None:
        """The host port the engine chose for a container port of `ContainerSpec.ports`."""

    def rx_bytes(self, container_id: str) -> int:
        """Bytes the container has received over its network (a service's sign of use)."""

    def remove(self, container_id: str) -> None: ...

    def close(self) -> None: ...
