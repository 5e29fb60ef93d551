"""A backend that lacks capabilities, on the real test engines: "docker-lite" reaches the same
dockerd sockets as the Docker backend but declares no exec, no published ports and no multi-node
jobs. Its nodes register through the API, run training jobs, and refuse the rest with the reason:
the shell answers 409, a notebook waits for a node that can publish its port, and a gang job ends
in Error before any of its containers starts."""
from __future__ import annotations

from dataclasses import replace
from urllib.parse import urlsplit

import pytest

import kqi
from kqi.backends import registry as backends
from kqi.backends.docker.engine import DockerEngineDriver
from tests.conftest import make_app
from tests.test_notebooks_on_engines import NOTEBOOK_COMMAND
from tests.test_training_on_engines import IMAGE, Cluster

pytestmark = pytest.mark.engines


class DockerLite(backends.Backend):
    name = "docker-lite"
    schemes = ("dockerlite",)
    transports = ("dockerlite",)
    reaches = "Docker engine"
    capabilities = backends.Capabilities(volumes=True)

    def validate_url(self, url):
        return None if urlsplit(url).path.startswith("/") else "dockerlite:// url needs a socket path"

    def driver(self, url, timeout_s, credentials):
        return DockerEngineDriver("unix://" + urlsplit(url).path, timeout_s=timeout_s, credentials=credentials)

    def timeout_s(self, settings):
        return int(settings["docker_timeout_s"])


class LiteCluster(Cluster):
    """Cluster's helpers, with the engines registered as docker-lite nodes."""

    def __init__(self, app, engines):
        lite = [replace(engine, unix_url="dockerlite://" + engine.socket_path) for engine in engines]
        super().__init__(app, lite)
        self.engines = engines  # its container listing reads the engines themselves


@pytest.fixture
def lite(tmp_path, docker_engines_clean):
    backends.register(DockerLite())
    app = make_app(tmp_path)
    try:
        yield LiteCluster(app, docker_engines_clean)
    finally:
        kqi.shutdown(app)
        backends.unregister("docker-lite")


def test_a_backend_without_exec_ports_or_gangs_runs_jobs_and_refuses_the_rest(lite):
    nodes = lite.admin.get("/api/v1/admin/nodes").get_json()["items"]
    assert {n["transport"] for n in nodes} == {"dockerlite"} and all(n["cpu"]["total"] > 0 for n in nodes)

    job_id = lite.submit(name="plain", command="echo up; sleep 300")
    lite.wait_status(job_id, "Running")
    refused = lite.api.post(f"/api/v1/training/{job_id}/exec", json={"command": "echo hi"})
    assert refused.status_code == 409
    assert refused.get_json()["error"]["message"] == (
        f"job {job_id} runs on a docker-lite node, where commands cannot run in a container")

    settings = {"notebook_image": IMAGE, "notebook_command": NOTEBOOK_COMMAND}
    assert lite.admin.put("/api/v1/admin/settings", json=settings).status_code == 200
    for node in nodes:  # the admin allows notebooks; the backend still cannot publish their ports
        assert lite.admin.put(f"/api/v1/admin/nodes/{node['id']}", json={"allow_notebooks": True}).status_code == 200
    notebook = lite.api.post("/api/v1/notebooks/run", json={"name": "nb", "cpu": 0.25, "memory_gb": 0.125})
    assert notebook.status_code == 201, notebook.get_json()
    lite.scheduler.tick()
    waiting = lite.api.get(f"/api/v1/notebooks/{notebook.get_json()['id']}").get_json()
    assert waiting["status"] == "Queued" and waiting["pending_reasons"] == ["no node allows notebooks"], waiting

    gang_id = lite.submit(name="gang", nodes=2, command="true")
    gang = lite.wait_status(gang_id, "Error", "Completed", "Failed")
    assert gang["status"] == "Error"
    assert gang["reason"] == "this node's backend (docker-lite) cannot run the parts of a multi-node job"
    assert lite.containers(gang_id) == []

    lite.api.post(f"/api/v1/training/{job_id}/halt")
    assert lite.wait_status(job_id, "UserCanceled")["status"] == "UserCanceled"
