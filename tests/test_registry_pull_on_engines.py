"""Pulling a job's image from a real registry with basic auth: the user's credentials reach the
engine as auth_config (and nowhere on the node's disk); an image already there is not pulled
again unless the job asks."""
from __future__ import annotations

import contextlib
import os
import stat

import docker
import pytest

import kqi
from tests.conftest import make_app
from tests.infra import registry as registry_infra
from tests.infra.plugin import missing_part
from tests.test_training_on_engines import IMAGE, Cluster

pytestmark = pytest.mark.engines
PASSWORD = "reg-" + "Pa55wordNeverOnDisk" * 2


@contextlib.contextmanager
def image_in_registry(root, engine, repository: str = "kqi/busybox:1"):
    """A registry in `engine`'s namespace (user alice, PASSWORD) holding the test image as
    `repository`, which the engine itself no longer has: (registry, image)."""
    missing = registry_infra.missing_requirements()
    if missing:
        missing_part(f"the registry test needs {', '.join(missing)} (run scripts/test-deps.sh as root)")
    server = registry_infra.start_registry(root, engine.netns, "alice", PASSWORD)
    client = engine.client()
    image = f"{server.host}/{repository}"
    try:
        client.images.get(IMAGE).tag(image)
        for event in client.api.push(image, stream=True, decode=True,
                                     auth_config={"username": "alice", "password": PASSWORD}):
            assert "error" not in event, event
        client.images.remove(image)  # now only the registry has it
        yield server, image
    finally:
        try:
            client.images.remove(image, force=True)
        except docker.errors.ImageNotFound:
            pass
        client.close()
        server.stop()


@pytest.fixture
def registry(tmp_path, docker_engines_clean):
    engine = docker_engines_clean[0]
    with image_in_registry(tmp_path / "registry", engine) as (server, image):
        yield engine, server, image


def files_containing(root: str, needle: bytes) -> list[str]:
    """Regular files (no devices or fifos of a mounted container rootfs) under 4 MiB holding `needle`."""
    found = []
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            try:
                info = os.lstat(path)
                if stat.S_ISREG(info.st_mode) and info.st_size < 4 << 20:
                    with open(path, "rb") as fh:
                        if needle in fh.read():
                            found.append(path)
            except OSError:
                pass
    return found


def test_private_image_is_pulled_with_the_users_credentials(tmp_path, registry):
    engine, server, image = registry
    app = make_app(tmp_path)
    cluster = Cluster(app, [engine])
    try:
        created = cluster.admin.post("/api/v1/admin/registries", json={"name": "local", "host": server.host})
        assert created.status_code == 201

        anonymous = cluster.submit(name="anon", image=image, command="echo hi")
        job = cluster.wait_status(anonymous, "Error", "Completed", "Failed")
        assert job["status"] == "Error" and image in job["reason"], job

        response = cluster.api.client.put("/api/v1/account/registry-credentials",
                                          headers={"Authorization": f"Bearer {cluster.api.token}"},
                                          json={"registry_id": created.get_json()["id"], "username": "alice",
                                                "password": PASSWORD})
        assert response.status_code == 200 and PASSWORD not in response.get_data(as_text=True)
        pulled = cluster.submit(name="auth", image=image, command="echo pulled-and-ran")
        job = cluster.wait_status(pulled, "Completed", "Error", "Failed")
        assert job["status"] == "Completed", job
        digests = job["provenance"]["image"]["repo_digests"]
        assert digests and digests[0].startswith(f"{server.host}/kqi/busybox@sha256:")
        assert files_containing(engine.base_dir, PASSWORD.encode()) == []  # auth_config only, never on disk
        assert files_containing(app.instance_path, PASSWORD.encode()) == []  # sealed in the database

        # present on the node now: not pulled again, so even without credentials it runs...
        cluster.api.client.delete(f"/api/v1/account/registry-credentials/{created.get_json()['id']}",
                                  headers={"Authorization": f"Bearer {cluster.api.token}"})
        again = cluster.wait_status(cluster.submit(name="again", image=image), "Completed", "Error", "Failed")
        assert again["status"] == "Completed", again
        # ...unless the job asks for a fresh pull, which then needs the credentials again
        forced = cluster.wait_status(cluster.submit(name="forced", image=image, pull=True), "Completed", "Error", "Failed")
        assert forced["status"] == "Error" and "pull" in forced["reason"], forced
    finally:
        kqi.shutdown(app)


def test_a_pull_reports_its_progress_and_the_job_page_shows_it(tmp_path, registry):
    from kqi.backends.base import ContainerSpec
    from kqi.backends.docker.shipping import ensure_image
    from kqi.jobs.sources import PullProgress
    from kqi.resources import Resources

    engine, _server, image = registry
    progress = PullProgress(tmp_path, 7)
    seen = []

    def report(text):
        seen.append(text)
        progress(text)

    spec = ContainerSpec(name="pull-probe", image=image, command="true", env={}, labels={},
                         resources=Resources(cpu_milli=100, memory_mib=64), registry_auth={"username": "alice", "password": PASSWORD}, pull=True,
                         progress=report)
    client = engine.client()
    try:
        ensure_image(client, spec)
    finally:
        client.close()
    assert seen and seen[-1] == f"pulled {image}"
    assert all(line.startswith(("pulling ", "pulled ")) for line in seen)
    assert progress.read() == f"pulled {image}"  # what the job page shows while the job is Starting
    progress.clear()
    assert progress.read() == ""
