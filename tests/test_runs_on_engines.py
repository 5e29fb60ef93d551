"""Runs on real engines: a command run in a job's container (exec) over the Docker API and over SSH,
and the inference kind (parents mounted, container name, /kqi/output/value.txt)."""
from __future__ import annotations

import time

import docker
import pytest

import kqi
from kqi.backends.base import Credentials
from kqi.backends.docker.engine import DockerEngineDriver
from kqi.extensions import db
from kqi.models.admin import AuditEvent
from tests.conftest import make_app, ticked, wait_for
from tests.test_training_on_engines import IMAGE, Cluster

pytestmark = pytest.mark.engines


@pytest.fixture
def cluster(tmp_path, docker_engines_clean):
    app = make_app(tmp_path, exec_timeout_s=3, exec_output_kb=1)
    yield Cluster(app, docker_engines_clean)
    kqi.shutdown(app)


def _ssh_driver(sshd_server, engine) -> DockerEngineDriver:
    with open(sshd_server.client_key) as fh:
        key = fh.read()
    return DockerEngineDriver(f"ssh://root@127.0.0.1:{sshd_server.port}{engine.socket_path}", timeout_s=20,
                              credentials=Credentials(ssh_private_key=key,
                                                      ssh_host_key_fingerprint=sshd_server.host_key_fingerprint))


@pytest.mark.parametrize("transport", ["unix", "ssh"])
def test_driver_exec_returns_output_and_exit_code_with_a_deadline_and_a_cap(request, transport, docker_engines_clean):
    engine = docker_engines_clean[0]
    client = docker.DockerClient(base_url=engine.unix_url)
    container = client.containers.run(IMAGE, ["sleep", "120"], detach=True, labels={"kqi.test": "exec"})
    driver = (DockerEngineDriver(engine.unix_url) if transport == "unix"
              else _ssh_driver(request.getfixturevalue("sshd_server"), engine))
    try:
        result = driver.exec(container.id, ["sh", "-c", "echo out; echo err >&2; exit 3"], 10, 4096)
        assert result.exit_code == 3 and not result.truncated and not result.timed_out
        assert sorted(result.output.decode().split()) == ["err", "out"]  # two pipes: either may come first
        # argv is run as is: no shell sees the ';' or the '$'
        assert driver.exec(container.id, ["echo", "a; $HOME"], 10, 4096).output == b"a; $HOME\n"

        started = time.monotonic()
        slow = driver.exec(container.id, ["sh", "-c", "echo begun; sleep 30"], 1.5, 4096)
        assert slow.timed_out and slow.exit_code is None and slow.output == b"begun\n"
        assert time.monotonic() - started < 10

        big = driver.exec(container.id, ["sh", "-c", "head -c 100000 /dev/zero | tr '\\0' x"], 10, 1000)
        assert big.truncated and big.output == b"x" * 1000
    finally:
        driver.close()
        container.remove(force=True)
        client.close()


def test_exec_in_a_running_job_from_the_api_refused_elsewhere_and_audited(cluster):
    job_id = cluster.submit(name="shell", command="echo up; sleep 300", env={"API_TOKEN": "tok-4711"})
    cluster.wait_status(job_id, "Running")
    url = f"/api/v1/training/{job_id}/exec"

    answer = cluster.api.post(url, json={"command": "echo $TRAINING_ID; pwd; echo API_TOKEN=tok-4711 >/dev/null"})
    assert answer.status_code == 200, answer.get_json()
    result = answer.get_json()
    assert result["exit_code"] == 0 and result["output"].split() == [str(job_id), "/kqi/git"]
    failed = cluster.api.post(url, json={"command": ["ls", "/nope"]}).get_json()
    assert failed["exit_code"] != 0 and "/nope" in failed["output"]
    slow = cluster.api.post(url, json={"command": "sleep 20"}).get_json()  # exec_timeout_s=3 here
    assert slow["timed_out"] and slow["exit_code"] is None
    big = cluster.api.post(url, json={"command": "head -c 5000 /dev/zero"}).get_json()  # exec_output_kb=1
    assert big["truncated"] and len(big["output"]) == 1024

    assert cluster.api.post(url, json={"command": ""}).status_code == 400
    assert cluster.api.post(url, json={"command": ["sh", 3]}).get_json()["error"]["field"] == "command"
    other = cluster.factory.api(tenant="other-team")
    assert other.post(url, json={"command": "id"}).status_code == 404
    assert cluster.api.post(f"/api/v1/inference/{job_id}/exec", json={"command": "id"}).status_code == 404

    with cluster.app.app_context():
        from kqi.admin import audit
        cluster.app.extensions[audit.EXTENSION].write(db.session)
        targets = [e.target for e in db.session.query(AuditEvent).filter_by(action="exec").order_by(AuditEvent.id)]
    assert targets[0].startswith(f"job {job_id}: echo $TRAINING_ID; pwd;") and "API_TOKEN=****" in targets[0]
    assert not any("tok-4711" in t for t in targets)

    cluster.api.post(f"/api/v1/training/{job_id}/halt")
    cluster.wait_status(job_id, "UserCanceled")
    refused = cluster.api.post(url, json={"command": "id"})
    assert refused.status_code == 409 and "running" in refused.get_json()["error"]["message"]


def test_inference_mounts_its_parent_keeps_its_value_and_is_named_for_its_kind(cluster):
    training = cluster.submit(name="base", command="echo 41 > /kqi/output/model.txt")
    assert cluster.wait_status(training, "Completed", "Failed", "Error")["status"] == "Completed"
    answer = cluster.api.post("/api/v1/inference/run", json={
        "name": "score", "image": IMAGE, "cpu": 0.5, "memory_gb": 0.25, "parent_ids": [training],
        "command": "cat /kqi/parent/model.txt; echo ' 0.875 ' > /kqi/output/value.txt; sleep 2"})
    assert answer.status_code == 201, answer.get_json()
    assert answer.headers["Location"].endswith(f"/api/v1/inference/{answer.get_json()['id']}")
    job_id = answer.get_json()["id"]
    _wait_inference(cluster, job_id, "Running")
    names = [c.name for c in cluster.containers(job_id)]
    assert names == [f"inference-score-{job_id}-{kqi.settings_of(cluster.app).site_id}"]

    job = _wait_inference(cluster, job_id, "Completed", "Failed", "Error")
    assert job["status"] == "Completed" and job["value"] == 0.875 and job["parent_ids"] == [training]
    assert cluster.api.get(f"/api/v1/inference/{job_id}/log").get_data(as_text=True).strip() == "41"
    listed = cluster.api.get("/api/v1/inference").get_json()
    assert [(j["id"], j["value"]) for j in listed["items"]] == [(job_id, 0.875)]
    assert [j["id"] for j in cluster.api.get("/api/v1/training").get_json()["items"]] == [training]
    statuses = [e["status"] for e in cluster.api.get(f"/api/v1/inference/{job_id}/timeline").get_json()["items"]]
    assert statuses == ["Queued", "Starting", "Running", "Completed"]

    broken = cluster.api.post("/api/v1/inference/run", json={
        "name": "nan", "image": IMAGE, "cpu": 0.5, "memory_gb": 0.25, "parent_ids": [training],
        "command": "echo not-a-number > /kqi/output/value.txt"}).get_json()["id"]
    done = _wait_inference(cluster, broken, "Completed", "Failed", "Error")
    assert done["status"] == "Completed" and done["value"] is None


def _wait_inference(cluster, job_id, *statuses):
    def seen():
        job = cluster.api.get(f"/api/v1/inference/{job_id}").get_json()
        return job if job["status"] in statuses else None

    return wait_for(seen, timeout=60, tick=ticked(cluster.scheduler))
