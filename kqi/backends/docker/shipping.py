"""What reaches a node before a job's container starts, over the Engine API alone (no shared
filesystem): the image (pulled with the user's registry credentials, passed as the API's
auth_config and never written on the node), archives unpacked into the container, and read-only
inputs (/kqi/input, /kqi/parent): a named volume filled through a created-never-started helper
container, then mounted read-only in the job's container.

Functions take a docker-py client, so every transport (unix, TLS, SSH) shares them.
"""
from __future__ import annotations

import re
import time
from pathlib import Path

import docker
from docker.errors import APIError, ImageNotFound, NotFound

from kqi.backends.base import Archive, ContainerSpec, NodeError

LABEL_VOLUME_OF = "kqi.volume-of"  # the container a read-only input volume belongs to
PROGRESS_EVERY_S = 1.0


def archive_data(archive: Archive):
    """put_archive's body: bytes as they are, a tar file on disk streamed (never read whole)."""
    return archive if isinstance(archive, bytes) else Path(archive).open("rb")


def _split(image: str) -> tuple[str, str]:
    """repository, tag-or-digest (docker-py's pull wants them apart)."""
    if "@" in image:
        repository, digest = image.split("@", 1)
        return repository, digest
    name, _, tag = image.rpartition(":")
    if name and "/" not in tag:
        return name, tag
    return image, "latest"


def ensure_image(client: docker.DockerClient, spec: ContainerSpec) -> None:
    """Pull when the node lacks the image, or always when the job asks (spec.pull); report progress."""
    if not spec.pull:
        try:
            client.api.inspect_image(spec.image)
            return  # already on the node: never pulled again unless asked
        except ImageNotFound:
            pass
    repository, tag = _split(spec.image)
    layers: dict[str, str] = {}
    last = 0.0
    try:
        for event in client.api.pull(repository, tag, stream=True, decode=True, auth_config=spec.registry_auth):
            if event.get("error"):
                raise NodeError(f"image {spec.image} could not be pulled: {event['error']}", infrastructure=False)
            if event.get("id") and event.get("status"):
                layers[event["id"]] = event["status"]
            if spec.progress and time.monotonic() - last >= PROGRESS_EVERY_S:
                last = time.monotonic()
                spec.progress(_summary(spec.image, layers))
    except (APIError, ImageNotFound, NotFound) as exc:
        raise NodeError(f"image {spec.image} is not on the node and could not be pulled: "
                        f"{getattr(exc, 'explanation', None) or exc}", infrastructure=False) from exc
    if spec.progress:
        spec.progress(f"pulled {spec.image}")


def _summary(image: str, layers: dict[str, str]) -> str:
    done = sum(1 for status in layers.values() if status in ("Pull complete", "Already exists"))
    return f"pulling {image}: {done}/{len(layers)} layers done"


def _volume_name(container: str, path: str) -> str:
    return f"{container}.{re.sub(r'[^A-Za-z0-9_.-]', '-', path.strip('/'))}"


def readonly_volumes(client: docker.DockerClient, spec: ContainerSpec) -> dict[str, dict[str, str]]:
    """Fill one volume per read-only input; return create()'s `volumes` mapping for them."""
    mounts = {_volume_name(spec.name, path): {"bind": path, "mode": "ro"} for path, _ in spec.readonly}
    if not spec.readonly:
        return mounts
    try:
        client.api.inspect_container(spec.name)
        return mounts  # the job's container exists (an interrupted start): its volumes are filled
    except NotFound:
        pass
    for path, archive in spec.readonly:
        name = _volume_name(spec.name, path)
        try:
            client.api.remove_volume(name, force=True)  # left half-filled by an interrupted start
        except NotFound:
            pass
        client.api.create_volume(name, labels={**spec.labels, LABEL_VOLUME_OF: spec.name})
        helper = client.api.create_container(spec.image, entrypoint=["/bin/true"], command=[], network_disabled=True,
                                             host_config=client.api.create_host_config(binds={name: {"bind": path, "mode": "rw"}}))
        try:
            data = archive_data(archive)
            try:
                client.api.put_archive(helper["Id"], path, data)
            finally:
                if hasattr(data, "close"):
                    data.close()
        finally:
            client.api.remove_container(helper["Id"], force=True)
    return mounts


def remove_container(client: docker.DockerClient, container_id: str) -> None:
    """Remove a job's container and the read-only input volumes made for it."""
    try:
        name = client.api.inspect_container(container_id)["Name"].lstrip("/")
    except NotFound:
        return
    client.api.remove_container(container_id, force=True)
    for volume in client.api.volumes(filters={"label": f"{LABEL_VOLUME_OF}={name}"}).get("Volumes") or []:
        try:
            client.api.remove_volume(volume["Name"], force=True)
        except NotFound:
            pass


def image_identity(client: docker.DockerClient, image: str) -> dict[str, object]:
    """The image actually on the node: its id and any registry digests."""
    info = client.api.inspect_image(image)
    return {"id": info.get("Id", ""), "repo_digests": list(info.get("RepoDigests") or [])}
