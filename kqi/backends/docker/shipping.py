"""What reaches a node before a job's container starts, over the Engine API alone (no shared
filesystem needed): the image (pulled with the user's registry credentials, passed as the API's
auth_config and never written on the node), archives unpacked into the container, and the node's
cache volumes of read-only inputs (/kqi/input, /kqi/parent, /kqi/git): one per content hash,
filled once through a created-never-started helper container and mounted read-only by every job
that needs it (which ones exist and which to fill or evict: kqi/jobs/node_cache.py).

Functions take a docker-py client, so every transport (unix, TLS, SSH) shares them.
"""
from __future__ import annotations

import io
import tarfile
import time
from pathlib import Path

import docker
from docker.errors import APIError, ImageNotFound, NotFound

from kqi.backends.base import LABEL_CACHE, LABEL_SITE, Archive, ContainerSpec, NodeError

PROGRESS_EVERY_S = 1.0
FILLER_IMAGE = "kqi-volume-filler:1"  # empty: see _filler_image
FILL_AT = "/fill"  # where a helper container mounts the volume it fills
LABEL_FILLS = "kqi.fills"  # a helper container: the cache volume it fills


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


def mounts(spec: ContainerSpec) -> list[docker.types.Mount]:
    """create()'s `mounts` for the job's cached inputs, all read-only. A bind whose folder the node
    lacks fails the create (the Mount API never makes an empty one up); a volume has been checked."""
    return [docker.types.Mount(c.path, c.volume or c.host_path, type="volume" if c.volume else "bind", read_only=True)
            for c in spec.cached]


def cache_volume(client: docker.DockerClient, name: str) -> dict[str, str] | None:
    try:
        return client.api.inspect_volume(name).get("Labels") or {}
    except NotFound:
        return None


def _filler_image(client: docker.DockerClient) -> str:
    """The image of the helper containers that fill cache volumes: empty, imported on the node
    (never pulled), so a fill needs neither the job's image nor its registry."""
    try:
        client.api.inspect_image(FILLER_IMAGE)
    except ImageNotFound:
        empty = io.BytesIO()
        tarfile.open(fileobj=empty, mode="w").close()
        repository, tag = FILLER_IMAGE.split(":")
        client.api.import_image_from_data(empty.getvalue(), repository=repository, tag=tag)
    return FILLER_IMAGE


def fill_cache_volume(client: docker.DockerClient, name: str, labels: dict[str, str], archive: Archive) -> None:
    """A fresh volume `name` holding the tar's contents, unpacked by the engine through a helper
    container that is created but never started. Whatever an interrupted fill left under that
    name goes first (kqi/jobs/node_cache.py only fills what it has not recorded as complete)."""
    for leftover in client.api.containers(all=True, filters={"label": f"{LABEL_FILLS}={name}"}):
        client.api.remove_container(leftover["Id"], force=True)
    if not remove_cache_volume(client, name):
        raise NodeError(f"cache volume {name} is in use by a container but not known to be complete")
    client.api.create_volume(name, labels=labels)
    # Not labelled with the site: the heartbeat would take it for a leftover job container.
    helper = client.api.create_container(_filler_image(client), entrypoint=["/none"], command=[], network_disabled=True,
                                         labels={LABEL_FILLS: name}, host_config=client.api.create_host_config(
                                             mounts=[docker.types.Mount(FILL_AT, name, type="volume")]))
    try:
        data = archive_data(archive)
        try:
            client.api.put_archive(helper["Id"], FILL_AT, data)
        finally:
            if hasattr(data, "close"):
                data.close()
    finally:
        client.api.remove_container(helper["Id"], force=True)


def cache_volumes(client: docker.DockerClient, site: str) -> dict[str, dict[str, str]]:
    found = client.api.volumes(filters={"label": [f"{LABEL_SITE}={site}", LABEL_CACHE]}).get("Volumes") or []
    return {volume["Name"]: volume.get("Labels") or {} for volume in found}


def remove_cache_volume(client: docker.DockerClient, name: str) -> bool:
    """Remove the volume; False when a container (running or not) still uses it: the engine refuses."""
    try:
        client.api.remove_volume(name)
    except NotFound:
        return True
    except APIError as exc:
        if exc.status_code == 409:
            return False
        raise
    return True


def image_identity(client: docker.DockerClient, image: str) -> dict[str, object]:
    """The image actually on the node: its id and any registry digests."""
    info = client.api.inspect_image(image)
    return {"id": info.get("Id", ""), "repo_digests": list(info.get("RepoDigests") or [])}
