"""The Docker Engine API driver (docker-py), for unix:// and tcp:// engines."""
from __future__ import annotations

from typing import Iterator

import docker
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from requests.exceptions import RequestException

from kqi.nodes import LABEL_JOB, LABEL_RANK, LABEL_SITE, ContainerSpec, ContainerState, Inventory, NodeError

_NANO = 1_000_000  # nano-CPUs per milli-core


def _gpu_request(spec: ContainerSpec):
    """On a node with the nvidia runtime, exactly the assigned GPUs become a device request."""
    if not (spec.nvidia_runtime and spec.gpu_indices):
        return None
    return [docker.types.DeviceRequest(device_ids=[str(i) for i in spec.gpu_indices], capabilities=[["gpu"]])]


def _engine_message(exc: Exception) -> str:
    explanation = getattr(exc, "explanation", None)
    return str(explanation or exc)


class DockerEngineDriver:
    def __init__(self, url: str, timeout_s: int = 30):
        self.url = url
        try:
            self.client = docker.DockerClient(base_url=url, timeout=timeout_s)
        except DockerException as exc:
            raise NodeError(f"cannot reach {url}: {exc}") from exc

    def _call(self, fn, *args, **kwargs):
        """Run one engine call, turning transport failures into NodeError."""
        try:
            return fn(*args, **kwargs)
        except (ImageNotFound, NotFound) as exc:
            raise NodeError(_engine_message(exc), infrastructure=False) from exc
        except APIError as exc:
            raise NodeError(_engine_message(exc), infrastructure=exc.is_server_error()) from exc
        except (DockerException, RequestException, OSError) as exc:
            raise NodeError(f"node unreachable: {exc}") from exc

    def inventory(self) -> Inventory:
        info = self._call(self.client.info)
        return Inventory(
            cpu_milli=int(info["NCPU"]) * 1000,
            memory_mib=int(info["MemTotal"]) // (1024 * 1024),
            engine_version=str(info.get("ServerVersion", "")),
            nvidia_runtime="nvidia" in (info.get("Runtimes") or {}),
        )

    def _create(self, spec: ContainerSpec):
        kwargs = dict(
            image=spec.image,
            name=spec.name,
            entrypoint=["/bin/sh", "-c"],
            command=[spec.command],
            environment=spec.env,
            labels=spec.labels,
            working_dir=spec.workdir,
            nano_cpus=spec.cpu_milli * _NANO,
            mem_limit=spec.memory_mib * 1024 * 1024,
            memswap_limit=spec.memory_mib * 1024 * 1024,  # no swap: over the limit means OOMKilled
            device_requests=_gpu_request(spec),
            network_mode="host" if spec.host_network else None,
            detach=True,
        )
        try:
            return self.client.containers.create(**kwargs)
        except ImageNotFound:
            pass  # pull once, then create; an image already on the node is never pulled again
        try:
            self.client.images.pull(spec.image)
        except (APIError, ImageNotFound) as exc:
            raise NodeError(f"image {spec.image} is not on the node and could not be pulled: {_engine_message(exc)}",
                            infrastructure=False) from exc
        return self.client.containers.create(**kwargs)

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
            existing = self._call(self.client.containers.get, spec.name)
            if not existing.attrs["State"].get("StartedAt", "").startswith("0001-"):
                return existing.id
            self._call(existing.remove, force=True)
            container = self._call(self._create, spec)
        for archive in spec.archives:
            self._call(container.put_archive, "/", archive)
        self._call(container.start)
        return container.id

    def containers(self, site: str) -> list[ContainerState]:
        found = self._call(self.client.containers.list, all=True, filters={"label": f"{LABEL_SITE}={site}"})
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

    def logs(self, container_id: str, tail: int | None = None) -> bytes:
        return self._call(self.client.api.logs, container_id, stdout=True, stderr=True, tail=tail if tail else "all")

    def archive(self, container_id: str, path: str) -> Iterator[bytes]:
        stream, _stat = self._call(self.client.api.get_archive, container_id, path)
        return stream

    def stop(self, container_id: str, timeout_s: int = 10) -> None:
        self._call(self.client.api.stop, container_id, timeout=timeout_s)

    def remove(self, container_id: str) -> None:
        try:
            self.client.api.remove_container(container_id, force=True)
        except NotFound:
            pass
        except (DockerException, RequestException, OSError) as exc:
            raise NodeError(f"node unreachable: {exc}") from exc

    def close(self) -> None:
        self.client.close()
