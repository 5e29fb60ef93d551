"""Reaching a node's engine over TCP with TLS (a dedicated dockerd with --tlsverify and a CA made
here) and over SSH (a real sshd on loopback whose root runs `docker system dial-stdio` against a
test engine's socket), with GPUs discovered by nvidia-smi over that SSH connection."""
from __future__ import annotations

import os
import shutil
import stat
import tempfile

import pytest

import kqi
from kqi.extensions import db
from kqi.models import Node
from tests.conftest import make_app, ticked, wait_for
from tests.infra import engines as infra_engines
from tests.infra import sshd as infra_sshd
from tests.infra.plugin import missing_part
from tests.node_helpers import IMAGE, NodeSite, TestCA

pytestmark = pytest.mark.engines

# This machine has no GPU. On the SSH node's PATH, this script stands in for the NVIDIA driver's
# nvidia-smi: it takes the same arguments and prints what a two-A100 machine prints (CSV without
# header or units); the compute processes it lists (others', not kqi's) are read from a file beside
# it, which the test changes. The parsing and the SSH path are real.
FAKE_NVIDIA_SMI = """#!/bin/sh
case "$*" in
  *--query-gpu=index,uuid,name,memory.total*--format=csv,noheader,nounits*)
    echo "0, GPU-6d5a1c36-0d2f-4f3e-9d7b-000000000000, NVIDIA A100-SXM4-80GB, 81920"
    echo "1, GPU-6d5a1c36-0d2f-4f3e-9d7b-111111111111, NVIDIA A100-SXM4-80GB, 81920" ;;
  *--query-compute-apps=gpu_uuid,pid*--format=csv,noheader*)
    cat "$(dirname "$0")/compute-apps.csv" ;;
  *) echo "unexpected arguments: $*" >&2; exit 2 ;;
esac
"""


@pytest.fixture(scope="module")
def ca():
    return TestCA()


@pytest.fixture(scope="module")
def tls_engine(ca):
    missing = infra_engines.missing_requirements()
    if missing:
        missing_part("missing " + ", ".join(missing) + " (run scripts/test-deps.sh as root)")
    base = tempfile.mkdtemp(prefix="kqi-tls-", dir="/tmp")
    os.chmod(base, 0o711)
    engines = infra_engines.start_engines(1, base, tls=lambda address: ca.server_files(base, address))
    try:
        infra_engines.build_busybox_image(engines, IMAGE)
        yield engines[0]
    finally:
        infra_engines.stop_engines(engines)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def gpu_sshd():
    """A dedicated sshd whose sessions find the stand-in nvidia-smi first on their PATH."""
    missing = infra_sshd.missing_requirements()
    if missing:
        missing_part("missing " + ", ".join(missing) + " (run scripts/test-deps.sh as root)")
    base = tempfile.mkdtemp(prefix="kqi-ssh-", dir="/tmp")
    bin_dir = os.path.join(base, "bin")
    os.makedirs(bin_dir)
    script = os.path.join(bin_dir, "nvidia-smi")
    with open(script, "w") as fh:
        fh.write(FAKE_NVIDIA_SMI)
    os.chmod(script, stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    _other_process_on(bin_dir, "1")
    server = infra_sshd.start_sshd(base, session_path=f"{bin_dir}:{infra_sshd.SESSION_PATH}")
    server.bin_dir = bin_dir  # where the test changes what nvidia-smi reports
    yield server
    infra_sshd.stop_sshd(server)
    shutil.rmtree(base, ignore_errors=True)


def _other_process_on(bin_dir: str, gpu: str) -> None:
    with open(os.path.join(bin_dir, "compute-apps.csv"), "w") as fh:
        fh.write(f"GPU-6d5a1c36-0d2f-4f3e-9d7b-{gpu * 12}, 48213\n")


@pytest.fixture
def site(tmp_path):
    app = make_app(tmp_path, heartbeat_timeout_s=3.0, gpu_refresh_s=0.0)
    yield NodeSite(app)
    kqi.shutdown(app)


def _sealed(app, node_id):
    with app.app_context():
        return db.session.get(Node, node_id).credentials_sealed


def test_tls_node_registers_runs_a_job_and_keeps_its_keys_sealed(site, tls_engine, ca):
    cert, key = ca.client()
    node = site.register(name="tls1", url=tls_engine.tcp_url, tls_ca=ca.pem, tls_cert=cert, tls_key=key, gpus=1)
    assert node["transport"] == "tls" and node["state"] == "Ready" and node["cpu"]["total"] >= 1
    assert node["engine_version"] and node["memory_gb"]["total"] > 0
    body = str(site.node(node["id"])) + str(site.admin.get("/api/v1/admin/nodes").get_json())
    assert "PRIVATE KEY" not in body and "BEGIN CERTIFICATE" not in body  # never shown again
    sealed = _sealed(site.app, node["id"])
    assert sealed and "PRIVATE KEY" not in sealed and key.splitlines()[1] not in sealed

    job_id = site.submit(command="echo over tls; echo ok > /kqi/output/r.txt", gpu=1)
    job = site.wait_status(job_id, "Completed", "Failed", "Error")
    assert job["status"] == "Completed" and job["node"] == "tls1", job
    assert "over tls" in site.log(job_id)
    assert site.api.get(f"/api/v1/training/{job_id}/files/r.txt").get_data() == b"ok\n"
    _runs_with_a_dataset(site, "tls1")


def _runs_with_a_dataset(site, node_name):
    """A job whose dataset is shipped to the node's input cache over this transport, byte for byte."""
    payload = os.urandom(100_000)
    dataset = site.dataset({"d.bin": payload})
    job_id = site.submit(dataset_id=dataset["id"], command="cp /kqi/input/training/*/d.bin /kqi/output/")
    job = site.wait_status(job_id, "Completed", "Failed", "Error")
    assert job["status"] == "Completed" and job["node"] == node_name, (job, site.log(job_id))
    assert site.api.get(f"/api/v1/training/{job_id}/files/d.bin").get_data() == payload


def test_tls_engine_refuses_a_client_without_a_certificate_of_its_ca(site, tls_engine, ca):
    response = site.admin.post("/api/v1/admin/nodes", json={"name": "plain", "url": tls_engine.tcp_url})
    assert response.status_code == 422 and response.get_json()["error"]["code"] == "unreachable"
    stranger = TestCA("someone else")
    cert, key = stranger.client()
    response = site.admin.post("/api/v1/admin/nodes", json={"name": "stranger", "url": tls_engine.tcp_url,
                                                             "tls_ca": ca.pem, "tls_cert": cert, "tls_key": key})
    assert response.status_code == 422, response.get_json()
    cert, key = ca.client()
    response = site.admin.post("/api/v1/admin/nodes", json={"name": "half", "url": tls_engine.tcp_url,
                                                             "tls_ca": ca.pem, "tls_cert": cert})
    assert response.status_code == 400 and response.get_json()["error"]["field"] == "tls_key"
    assert site.admin.get("/api/v1/admin/nodes").get_json()["items"] == []  # nothing half-written


def _ssh_url(server, engine):
    return f"ssh://root@127.0.0.1:{server.port}{engine.socket_path}"


def _key_text(server):
    with open(server.client_key) as fh:
        return fh.read()


def test_ssh_node_waits_for_its_host_key_then_discovers_gpus_and_runs_jobs(site, gpu_sshd, docker_engines_clean):
    engine = docker_engines_clean[0]
    pending = site.register(expect=202, name="ssh1", url=_ssh_url(gpu_sshd, engine), ssh_private_key=_key_text(gpu_sshd))
    assert pending["state"] == "Unconfirmed" and not pending["schedulable"]
    assert pending["ssh_host_key_fingerprint"] == gpu_sshd.host_key_fingerprint
    job_id = site.submit(command="echo $KQI_GPU_INDICES", gpu=1)
    site.scheduler.tick()
    assert site.job(job_id)["status"] == "Queued"  # nothing runs on a node whose host is not confirmed

    wrong = "SHA256:" + "A" * 43
    response = site.admin.post(f"/api/v1/admin/nodes/{pending['id']}/confirm-host-key",
                               json={"ssh_host_key_fingerprint": wrong})
    assert response.status_code == 422 and response.get_json()["error"]["code"] == "host_key_mismatch"
    response = site.admin.post(f"/api/v1/admin/nodes/{pending['id']}/confirm-host-key",
                               json={"ssh_host_key_fingerprint": gpu_sshd.host_key_fingerprint})
    assert response.status_code == 200, response.get_json()
    node = response.get_json()
    assert node["state"] == "Ready" and node["host_key_confirmed"] and node["cpu"]["total"] >= 1
    gpus = node["gpus"]
    assert gpus["source"] == "nvidia-smi" and gpus["total"] == 2
    assert [(g["index"], g["model"], g["memory_mib"], g["busy"]) for g in gpus["devices"]] == [
        (0, "NVIDIA A100-SXM4-80GB", 81920, False), (1, "NVIDIA A100-SXM4-80GB", 81920, True)]
    assert "nvidia-a100-sxm4-80gb" in node["labels"]

    # GPU 1 runs someone else's process: the job gets GPU 0; a second one-GPU job must wait.
    job = site.wait_status(job_id, "Completed", "Failed", "Error")
    assert job["status"] == "Completed" and job["gpu_indices"] == [0], job
    assert site.log(job_id).strip() == "0"
    by_model = site.submit(command="true", partition="nvidia-a100-sxm4-80gb")
    assert site.wait_status(by_model, "Completed", "Failed", "Error")["status"] == "Completed"
    _runs_with_a_dataset(site, "ssh1")

    # Someone's process moves to GPU 0: the heartbeat's nvidia-smi sees it, and kqi uses GPU 1.
    _other_process_on(gpu_sshd.bin_dir, "0")
    # a heartbeat over SSH may come after the tick that asked for it (which waits only briefly)
    wait_for(lambda: [g["busy"] for g in site.node(node["id"])["gpus"]["devices"]] == [True, False], timeout=20,
             tick=ticked(site.scheduler))
    moved = site.submit(command="echo $KQI_GPU_INDICES", gpu=1)
    assert site.wait_status(moved, "Completed", "Failed", "Error")["gpu_indices"] == [1]
    events = site.events(node["id"])
    assert [e["new_state"] for e in events][-1] == "Unconfirmed" and any(
        "confirmed" in (e["message"] or "") for e in events)


def test_changed_ssh_host_key_stops_scheduling_loudly(site, sshd_server, docker_engines_clean):
    engine = docker_engines_clean[1]
    node = site.register(name="ssh2", url=_ssh_url(sshd_server, engine), ssh_private_key=_key_text(sshd_server),
                         ssh_host_key_fingerprint=sshd_server.host_key_fingerprint)
    assert node["state"] == "Ready" and node["gpus"]["source"] == "declared"  # no nvidia-smi on that sshd
    first = site.submit(command="echo via ssh")
    assert site.wait_status(first, "Completed", "Failed", "Error")["status"] == "Completed"
    assert site.log(first).strip() == "via ssh"

    # The server now presents a key other than the pinned one (as after a reinstall, or an impostor).
    with site.app.app_context():
        row = db.session.get(Node, node["id"])
        row.ssh_host_key_fingerprint = "SHA256:" + "B" * 43
        db.session.commit()
    changed = site.wait_node_state(node["id"], "HostKeyChanged", timeout=20)
    assert not changed["schedulable"] and "host key changed" in changed["last_error"].lower()
    assert sshd_server.host_key_fingerprint in changed["last_error"]
    second = site.submit(command="true")
    site.scheduler.tick()
    assert site.job(second)["status"] == "Queued"
    assert any(e["new_state"] == "HostKeyChanged" for e in site.events(node["id"]))

    response = site.admin.post(f"/api/v1/admin/nodes/{node['id']}/confirm-host-key",
                               json={"ssh_host_key_fingerprint": sshd_server.host_key_fingerprint})
    assert response.status_code == 200 and response.get_json()["state"] == "Ready"
    assert site.wait_status(second, "Completed", "Failed", "Error")["status"] == "Completed"
