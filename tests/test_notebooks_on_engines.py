"""Notebooks and TensorBoard end to end on the two test engines: placement by the node flags, the
"open notebook" link reachable over HTTP on the node's published port, the lifetime ended by the
scheduler loop, a rerun that keeps /kqi/output, and a TensorBoard that stops itself when idle.

A busybox `httpd` stands in for JupyterLab and TensorBoard (the site's command templates are
settings): it serves /kqi/output (a notebook) or /kqi/parent (a TensorBoard) on {port}. The
"notebook" writes a file `lab`, so the link's path /lab?token=... answers 200, and appends a line
to runs.txt each time it starts, so a rerun shows whether the earlier output came back."""
from __future__ import annotations

import urllib.request

import pytest

import kqi
from tests.conftest import make_app, ticked, wait_for
from tests.test_training_on_engines import IMAGE, Cluster

pytestmark = pytest.mark.engines
NOTEBOOK_COMMAND = ("sh -c 'echo lab > /kqi/output/lab; echo run >> /kqi/output/runs.txt; "
                    "exec httpd -f -p \"$0\" -h /kqi/output' {port}")
TENSORBOARD_COMMAND = "httpd -f -p {port} -h /kqi/parent"
LIFETIME_HOURS = 6 / 3600  # six seconds


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200
        return response.read()


def reachable(url: str) -> bytes | None:
    try:
        return fetch(url)
    except OSError:
        return None  # the server in the container is not listening yet


class Services(Cluster):
    def __init__(self, app, engines):
        super().__init__(app, engines)
        settings = {"notebook_image": IMAGE, "notebook_command": NOTEBOOK_COMMAND, "tensorboard_image": IMAGE,
                    "tensorboard_command": TENSORBOARD_COMMAND, "default_cpu": 0.25, "default_memory_gb": 0.125}
        assert self.admin.put("/api/v1/admin/settings", json=settings).status_code == 200
        self.nodes = {n["name"]: n["id"] for n in self.admin.get("/api/v1/admin/nodes").get_json()["items"]}

    def flags(self, name, **flags):
        response = self.admin.put(f"/api/v1/admin/nodes/{self.nodes[name]}", json=flags)
        assert response.status_code == 200, response.get_json()

    def notebook(self, job_id):
        return self.api.get(f"/api/v1/notebooks/{job_id}").get_json()

    def wait_notebook(self, job_id, *statuses, timeout=60):
        return wait_for(lambda: self.notebook(job_id)["status"] in statuses and self.notebook(job_id),
                        timeout=timeout, tick=ticked(self.scheduler))


@pytest.fixture
def services(tmp_path, docker_engines_clean):
    app = make_app(tmp_path, tensorboard_idle_s=4.0)
    yield Services(app, docker_engines_clean)
    kqi.shutdown(app)


def test_notebook_on_a_flagged_node_open_link_lifetime_and_rerun(services):
    services.flags("node1", allow_notebooks=False)
    services.flags("node2", allow_notebooks=False)
    created = services.api.post("/api/v1/notebooks/run", json={"name": "nb", "lifetime_hours": LIFETIME_HOURS})
    assert created.status_code == 201, created.get_json()
    nb_id = created.get_json()["id"]
    services.scheduler.tick()
    waiting = services.notebook(nb_id)
    assert waiting["status"] == "Queued" and waiting["pending_reasons"] == ["no node allows notebooks"]

    services.flags("node2", allow_notebooks=True)
    running = services.wait_notebook(nb_id, "Running")
    assert running["node"] == "node2" and running["url"], running  # node1's flag is still off
    url = running["url"]
    assert url.startswith(f"http://{services.engines[1].address}:") and "/lab?token=" in url
    token = url.rsplit("=", 1)[1]
    assert len(token) == 48 and token not in str(services.api.get("/api/v1/notebooks").get_json()["items"][0]["command"])
    assert wait_for(lambda: reachable(url), timeout=20) == b"lab\n"  # the open link answers over HTTP
    assert token not in services.api.get(f"/api/v1/notebooks/{nb_id}/log").get_data(as_text=True)

    ended = services.wait_notebook(nb_id, "Killed", "UserCanceled", "Completed", "Failed", timeout=60)
    assert (ended["status"], ended["reason"], ended["url"]) == ("Killed", "lifetime ended", None)
    assert reachable(url) is None and services.containers(nb_id) == []

    rerun = services.api.post(f"/api/v1/notebooks/{nb_id}/rerun")
    assert rerun.status_code == 201, rerun.get_json()
    again = rerun.get_json()
    assert again["previous_id"] == nb_id and again["lifetime_hours"] == ended["lifetime_hours"]
    running = services.wait_notebook(again["id"], "Running")
    base = running["url"].split("/lab?", 1)[0]
    assert wait_for(lambda: reachable(f"{base}/runs.txt"), timeout=20) == b"run\nrun\n"  # the first run's output came back
    assert services.api.post(f"/api/v1/notebooks/{again['id']}/halt").status_code == 200
    stopped = services.wait_notebook(again["id"], "UserCanceled", "Killed")
    assert (stopped["status"], stopped["reason"]) in (("UserCanceled", "halted by user"), ("Killed", "lifetime ended"))


def test_tenant_maximum_caps_the_lifetime(services):
    admin = services.admin
    tenant = next(t for t in admin.get("/api/v1/admin/tenants?per_page=100").get_json()["items"] if t["name"] == "default")
    assert admin.put(f"/api/v1/admin/tenants/{tenant['id']}", json={"notebook_max_hours": 2}).status_code == 200
    too_long = services.api.post("/api/v1/notebooks/run", json={"name": "nb", "lifetime_hours": 3})
    assert too_long.status_code == 400 and "at most 2 hours" in too_long.get_json()["error"]["message"]
    unlimited = services.api.post("/api/v1/notebooks/run", json={"name": "nb", "lifetime_hours": None})
    assert unlimited.status_code == 400 and unlimited.get_json()["error"]["field"] == "lifetime_hours"
    capped = services.api.post("/api/v1/notebooks/run", json={"name": "nb"}).get_json()
    assert capped["lifetime_hours"] == 2  # no default: the maximum
    services.api.post(f"/api/v1/notebooks/{capped['id']}/halt")


def test_tensorboard_on_a_flagged_node_reads_the_runs_outputs_and_stops_when_idle(services):
    services.flags("node1", allow_tensorboard=False)
    run_id = services.submit(name="train", command="echo scalars > /kqi/output/events.txt")
    assert services.wait_status(run_id, "Completed", "Failed", "Error")["status"] == "Completed"
    started = services.api.post(f"/api/v1/training/{run_id}/tensorboard")
    assert started.status_code == 201, started.get_json()
    board_id = started.get_json()["tensorboard"]["id"]

    def board():
        return services.api.get(f"/api/v1/training/{run_id}/tensorboard").get_json()["tensorboard"]

    running = wait_for(lambda: board()["url"] and board(), timeout=60, tick=ticked(services.scheduler))
    assert running["id"] == board_id and running["node"] == "node2" and running["run_id"] == run_id
    assert wait_for(lambda: reachable(running["url"] + "events.txt"), timeout=20) == b"scalars\n"
    assert services.api.post(f"/api/v1/training/{run_id}/tensorboard").status_code == 200  # the same one
    ended = wait_for(lambda: board()["status"] != "Running" and board(), timeout=60, tick=ticked(services.scheduler))
    assert ended["status"] == "Killed" and ended["reason"] == "idle: no requests for 4 s", ended
    assert services.containers(board_id) == []
