"""The Docker Engine API driver (docker-py), for unix://, tcp:// (plain or TLS) and ssh:// engines."""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import docker
import paramiko
import urllib3
from docker.constants import MINIMUM_DOCKER_API_VERSION
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from requests.exceptions import RequestException

from kqi.backends.base import (
    LABEL_JOB,
    LABEL_RANK,
    LABEL_SITE,
    Archive,
    ContainerSpec,
    ContainerState,
    Credentials,
    ExecResult,
    GpuInfo,
    Inventory,
    NodeError,
)
from kqi.backends.docker import shipping
from kqi.backends.docker.exec_stream import payloads, read_frames
from kqi.backends.docker.gpus import QUERY_APPS, QUERY_GPUS, parse_apps, parse_gpus
from kqi.resources import MILLI

_NANO = 1_000_000  # nano-CPUs per milli-core
_MIB = 1024 * 1024  # bytes
LOG_PIECE = 1 << 16  # bytes a log is read and handed on in
# urllib3's own errors: what reading an engine's answer directly (a log) raises when the node goes away
_TRANSPORT_ERRORS = (DockerException, RequestException, urllib3.exceptions.HTTPError, OSError,
                     paramiko.SSHException, EOFError)


def _gpu_request(spec: ContainerSpec):
    """On a node with the nvidia runtime, exactly the assigned GPUs become a device request."""
    if not (spec.nvidia_runtime and spec.gpu_indices):
        return None
    return [docker.types.DeviceRequest(device_ids=[str(i) for i in spec.gpu_indices], capabilities=[["gpu"]])]


def _engine_message(exc: Exception) -> str:
    explanation = getattr(exc, "explanation", None)
    return str(explanation or exc)


class DockerEngineDriver:
    def __init__(self, url: str, timeout_s: int = 30, credentials: Credentials = Credentials()):
        self.url = url
        self.timeout_s = timeout_s
        self._credentials = credentials
        self._client: docker.DockerClient | None = None
        self._link = None
        self._lock = threading.Lock()

    def _connect(self) -> docker.DockerClient:
        """A client for the engine (asks it for its API version: the first round trip)."""
        parts = urlsplit(self.url)
        if parts.scheme == "ssh":
            from kqi.backends.docker.ssh import DialStdioAdapter, SshLink

            creds = self._credentials
            self._link = self._link or SshLink(parts.hostname, parts.port or 22, parts.username, creds.ssh_private_key,
                                               creds.ssh_host_key_fingerprint, self.timeout_s)
            self._link.transport()  # connect first: docker-py would bury a changed host key in its own error
            client = docker.DockerClient(version=MINIMUM_DOCKER_API_VERSION, timeout=self.timeout_s)
            client.api.mount("http+docker://ssh", DialStdioAdapter(self._link, parts.path, self.timeout_s))
            client.api.base_url = "http+docker://ssh"
            client.api._version = client.api._retrieve_server_version()
            return client
        if self._credentials.tls:
            from kqi.backends.docker.tls import InMemoryTLS

            return docker.DockerClient(base_url=self.url, timeout=self.timeout_s, tls=InMemoryTLS(self._credentials))
        return docker.DockerClient(base_url=self.url, timeout=self.timeout_s)

    @property
    def client(self) -> docker.DockerClient:
        with self._lock:
            if self._client is None:
                self._client = self._connect()
            return self._client

    def _call(self, fn, *args, **kwargs):
        """Run one engine call (`fn` gets the client first), turning failures into NodeError."""
        try:
            return fn(self.client, *args, **kwargs)
        except NodeError:
            raise
        except (ImageNotFound, NotFound) as exc:
            raise NodeError(_engine_message(exc), infrastructure=False) from exc
        except APIError as exc:
            raise NodeError(_engine_message(exc), infrastructure=exc.is_server_error()) from exc
        except _TRANSPORT_ERRORS as exc:
            raise NodeError(f"node unreachable: {exc}") from exc

    def ping(self) -> None:
        self._call(lambda c: c.api.ping())

    def inventory(self) -> Inventory:
        info = self._call(lambda c: c.info())
        return Inventory(
            cpu_milli=int(info["NCPU"]) * MILLI,
            memory_mib=int(info["MemTotal"]) // _MIB,
            engine_version=str(info.get("ServerVersion", "")),
            nvidia_runtime="nvidia" in (info.get("Runtimes") or {}),
        )

    def gpus(self) -> list[GpuInfo] | None:
        """Over SSH, nvidia-smi on the node: its GPUs, and which of them run compute processes."""
        if self._link is None:
            if urlsplit(self.url).scheme != "ssh":
                return None
            self.ping()  # opens the link (and checks the pinned host key)
        installed = parse_gpus(self._link.run(QUERY_GPUS))
        busy = parse_apps(self._link.run(QUERY_APPS))
        return [GpuInfo(g.index, g.uuid, g.model, g.memory_mib, in_use=g.uuid in busy) for g in installed]

    @staticmethod
    def _create(client: docker.DockerClient, spec: ContainerSpec):
        kwargs = dict(
            image=spec.image,
            name=spec.name,
            entrypoint=list(spec.argv) if spec.argv else ["/bin/sh", "-c"],
            command=None if spec.argv else [spec.command],
            environment=spec.env,
            labels=spec.labels,
            working_dir=spec.workdir,
            nano_cpus=spec.resources.cpu_milli * _NANO,
            mem_limit=spec.resources.memory_mib * _MIB,
            memswap_limit=spec.resources.memory_mib * _MIB,  # no swap: over the limit means OOMKilled
            device_requests=_gpu_request(spec),
            network_mode="host" if spec.host_network else None,
            ports={f"{port}/tcp": None for port in spec.ports} or None,  # None: a random free host port
            detach=True,
        )
        shipping.ensure_image(client, spec)
        kwargs["mounts"] = shipping.mounts(spec)
        return client.containers.create(**kwargs)

    def start(self, spec: ContainerSpec) -> str:
        """Create the container, upload the /kqi folders, start it. Safe to call again for the same
        spec: a container left by an interrupted earlier call is reused if it already started, and
        replaced if it never did (so a job never runs twice)."""
        try:
            container = self._call(self._create, spec)
        except NodeError as exc:
            conflict = isinstance(exc.__cause__, APIError) and exc.__cause__.status_code == 409
            if not conflict:
                raise
            existing = self._call(lambda c: c.containers.get(spec.name))
            if not existing.attrs["State"].get("StartedAt", "").startswith("0001-"):
                return existing.id
            self._call(lambda c: existing.remove(force=True))
            container = self._call(self._create, spec)
        for archive in spec.archives:
            self.upload(container.id, "/", archive)
        self._call(lambda c: container.start())
        return container.id

    def upload(self, container_id: str, path: str, archive: Archive) -> None:
        data = shipping.archive_data(archive)
        try:
            self._call(lambda c: c.api.put_archive(container_id, path, data))
        finally:
            if hasattr(data, "close"):
                data.close()

    def image_identity(self, image: str) -> dict[str, object]:
        return self._call(shipping.image_identity, image)

    def cache_volume(self, name: str) -> dict[str, str] | None:
        return self._call(shipping.cache_volume, name)

    def fill_cache_volume(self, name: str, labels: dict[str, str], archive: Archive) -> None:
        self._call(shipping.fill_cache_volume, name, labels, archive)

    def cache_volumes(self, site: str) -> dict[str, dict[str, str]]:
        return self._call(shipping.cache_volumes, site)

    def remove_cache_volume(self, name: str) -> bool:
        return self._call(shipping.remove_cache_volume, name)

    def containers(self, site: str) -> list[ContainerState]:
        found = self._call(lambda c: c.containers.list(all=True, filters={"label": f"{LABEL_SITE}={site}"}))
        states = []
        for container in found:
            state = container.attrs["State"]
            running = state.get("Status") in ("running", "restarting", "paused")
            states.append(ContainerState(
                container_id=container.id,
                job_id=int(container.labels.get(LABEL_JOB, "0")),
                rank=int(container.labels.get(LABEL_RANK, "0")),
                running=running,
                exit_code=None if running else state.get("ExitCode"),
                oom_killed=bool(state.get("OOMKilled")),
                error=state.get("Error") or "",
                started=not state.get("StartedAt", "0001-").startswith("0001-"),
            ))
        return states

    def logs(self, container_id: str, tail: int | None = None) -> Iterator[bytes]:
        """The log as the engine has it now (not followed), in pieces of about 64 KiB. The request is
        made here (a failure raises at once); the engine's answer stays open until the pieces are
        read to the end or the iterator is closed. docker-py's own streaming reader is not used: it
        takes the timeout off the socket, so a node that stops answering mid-log would hang the
        reader for good, and it reads a whole frame at once, however long its header says it is."""
        response, tty = self._call(self._open_logs, container_id, tail)
        return self._log_pieces(response, tty)

    @staticmethod
    def _open_logs(client: docker.DockerClient, container_id: str, tail: int | None):
        api = client.api
        tty = bool(api.inspect_container(container_id)["Config"].get("Tty"))  # a TTY's log is not multiplexed
        params = {"stdout": 1, "stderr": 1, "follow": 0, "timestamps": 0, "tail": tail if tail else "all"}
        response = api._get(api._url("/containers/{0}/logs", container_id), params=params, stream=True)
        try:
            api._raise_for_status(response)
        except APIError:
            response.close()
            raise
        return response, tty

    @staticmethod
    def _log_pieces(response, tty: bool) -> Iterator[bytes]:
        try:
            read = response.raw.read
            if tty:
                while piece := read(LOG_PIECE):
                    yield piece
            else:
                yield from payloads(read, LOG_PIECE)
        except _TRANSPORT_ERRORS as exc:
            raise NodeError(f"node unreachable: {exc}") from exc
        finally:
            response.close()

    def archive(self, container_id: str, path: str) -> Iterator[bytes]:
        stream, _stat = self._call(lambda c: c.api.get_archive(container_id, path))
        return stream

    def exec(self, container_id: str, argv: list[str], timeout_s: float, limit: int) -> ExecResult:
        """Run argv (no shell added) inside the container, as its user, in its working directory."""
        deadline = time.monotonic() + timeout_s
        exec_id = self._call(lambda c: c.api.exec_create(container_id, argv, stdout=True, stderr=True)["Id"])
        sock = self._call(lambda c: c.api.exec_start(exec_id, socket=True))
        try:
            output, ended, truncated = read_frames(sock, deadline, limit)
        except _TRANSPORT_ERRORS as exc:
            raise NodeError(f"node unreachable: {exc}") from exc
        finally:
            sock.close()
        if not ended:  # cut off: it may run on inside the container, which is the user's own
            return ExecResult(None, output, truncated=truncated, timed_out=not truncated)
        while True:  # the stream ends a moment before the engine records the exit code
            state = self._call(lambda c: c.api.exec_inspect(exec_id))
            if not state.get("Running") or time.monotonic() > deadline + 5:
                return ExecResult(state.get("ExitCode"), output)
            time.sleep(0.05)

    def stop(self, container_id: str, timeout_s: int = 10) -> None:
        self._call(lambda c: c.api.stop(container_id, timeout=timeout_s))

    def published_port(self, container_id: str, port: int) -> int | None:
        inspected = self._call(lambda c: c.api.inspect_container(container_id))
        bindings = ((inspected.get("NetworkSettings") or {}).get("Ports") or {}).get(f"{port}/tcp") or []
        return next((int(b["HostPort"]) for b in bindings if b.get("HostPort")), None)

    def rx_bytes(self, container_id: str) -> int:
        def stats(client: docker.DockerClient):
            try:  # one sample at once (API 1.41+); without one_shot the engine waits for a second sample
                return client.api.stats(container_id, stream=False, one_shot=True)
            except docker.errors.InvalidVersion:
                return client.api.stats(container_id, stream=False)
        networks = self._call(stats).get("networks") or {}
        return sum(int(n.get("rx_bytes", 0)) for n in networks.values())

    def remove(self, container_id: str) -> None:
        try:
            self._call(lambda c: c.api.remove_container(container_id, force=True))
        except NodeError as exc:
            if isinstance(exc.__cause__, NotFound):
                return  # already gone
            raise

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
        if self._link is not None:
            self._link.close()
