"""Faults on real engines: a node's dockerd killed mid-job and brought back, a node that hangs, the
server killed with kill -9 and restarted, and several server processes on PostgreSQL with one
scheduler among them. These engines are this module's own (it kills and freezes them), not the
session's shared ones."""
from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time

import pytest
import requests

import kqi
from kqi.extensions import db
from kqi.models import GpuAllocation, Job, JobStatus
from tests.conftest import make_app, ticked, wait_for
from tests.infra import engines as infra_engines
from tests.infra.plugin import missing_part
from tests.node_helpers import (
    IMAGE,
    Http,
    NodeSite,
    Server,
    container_starts,
    site_containers,
)

pytestmark = pytest.mark.engines


@pytest.fixture(scope="module")
def own_engines():
    missing = infra_engines.missing_requirements()
    if missing:
        missing_part("missing " + ", ".join(missing) + " (run scripts/test-deps.sh as root)")
    base = tempfile.mkdtemp(prefix="kqi-f-", dir="/tmp")
    os.chmod(base, 0o711)
    engines = infra_engines.start_engines(2, base)
    try:
        infra_engines.build_busybox_image(engines, IMAGE)
        yield engines
    finally:
        infra_engines.stop_engines(engines)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def serve(tmp_path):
    """Starts `kqi_app.py serve` processes; any still running when the test ends is killed."""
    started = []

    def start(site_id, database_url="", **settings):
        started.append(Server(tmp_path, site_id, database_url, **settings))
        return started[-1]

    yield start
    for server in started:
        if server.proc.poll() is None:
            server.kill()


def _register_all(site, engines, gpus=2):
    return [site.register(name=f"n{i}", url=e.unix_url, gpus=gpus, address=e.address)["id"]
            for i, e in enumerate(engines)]


def _held(app):
    with app.app_context():
        return sorted((a.job_id, a.node_id, a.gpu_index) for a in db.session.query(GpuAllocation))


def test_killed_dockerd_loses_the_node_its_jobs_end_or_requeue_and_leftovers_are_reconciled(tmp_path, own_engines):
    app = make_app(tmp_path, heartbeat_timeout_s=2.0, node_offline_grace_s=5.0)
    site = NodeSite(app)
    a, b = own_engines
    node_a, node_b = _register_all(site, own_engines)
    assert site.put_node(node_b, state="Draining").status_code == 200  # both jobs land on node a
    killed = site.submit(name="lost", gpu=1, command="sleep 300")
    requeued = site.submit(name="again", gpu=1, command="sleep 2; echo second life", requeue_on_node_loss=True)
    for job_id in (killed, requeued):
        assert site.wait_status(job_id, "Running")["node"] == "n0"
    assert site.put_node(node_b, state="Ready").status_code == 200

    infra_engines.kill_engine(a)
    lost_at = time.monotonic()
    offline = site.wait_node_state(node_a, "Offline", timeout=30)
    detected_s = time.monotonic() - lost_at
    assert detected_s < 30 and not offline["schedulable"] and offline["last_error"]
    job = site.wait_status(killed, "Killed", timeout=10)
    assert job["reason"] == "node lost" and job["node"] == "n0"
    again = site.wait_status(requeued, "Completed", "Failed", "Error", timeout=60)
    assert again["status"] == "Completed" and again["node"] == "n1", again
    assert "second life" in site.log(requeued)
    assert [e["new_state"] for e in site.events(node_a)][:2] == ["Offline", "Unreachable"]

    # The engine comes back: its stale containers (the lost job's, the requeued job's first run) go.
    infra_engines.restart_engine(a)
    site.wait_node_state(node_a, "Ready", timeout=30)
    wait_for(lambda: site_containers([a], kqi.settings_of(app).site_id) == [], timeout=30, tick=ticked(site.scheduler))
    assert _held(app) == []
    # Nothing double-booked: both GPUs of the returned node are placeable again.
    again_ids = [site.submit(name=f"g{i}", gpu=1, command="sleep 1") for i in range(4)]
    placed = [site.wait_status(i, "Running", "Completed") for i in again_ids]
    assert len({(p["node"], tuple(p["gpu_indices"])) for p in placed}) == 4
    for job_id in again_ids:
        site.wait_status(job_id, "Completed")
    kqi.shutdown(app)


def test_a_hung_node_does_not_stall_scheduling_on_the_other(tmp_path, own_engines):
    app = make_app(tmp_path, heartbeat_timeout_s=2.0, node_offline_grace_s=300.0)
    site = NodeSite(app)
    a, b = own_engines
    node_a, node_b = _register_all(site, own_engines)
    site.scheduler.tick()
    os.kill(b.pid, signal.SIGSTOP)  # dockerd frozen: its socket accepts, nothing answers
    try:
        first = time.monotonic()
        site.scheduler.tick()
        # a short wait for its answer (health.ANSWER_WAIT_S), not its heartbeat timeout (2 s here),
        # nor the 30 s engine timeout; the missing answer makes it Unreachable once the timeout passed
        assert time.monotonic() - first < 1.5
        site.wait_node_state(node_b, "Unreachable", timeout=10)
        submitted = time.monotonic()
        ids = [site.submit(name=f"h{i}", command="echo fine") for i in range(3)]
        for job_id in ids:
            assert site.wait_status(job_id, "Completed", "Failed", "Error", timeout=20)["node"] == "n0"
        assert time.monotonic() - submitted < 20
        for _ in range(3):  # with nothing to start, a tick is quick although node b still hangs
            started = time.monotonic()
            site.scheduler.tick()
            assert time.monotonic() - started < 1.0
        assert site.node(node_b)["state"] == "Unreachable"
    finally:
        os.kill(b.pid, signal.SIGCONT)
    site.wait_node_state(node_b, "Ready", timeout=30)
    kqi.shutdown(app)


def test_server_killed_with_jobs_running_then_restarted_ends_every_job_truly(tmp_path, own_engines, serve):
    site_id = "kill9"
    app = make_app(tmp_path, site_id=site_id)
    site = NodeSite(app)
    _register_all(site, own_engines)
    http = Http(site.api.token)
    since = time.time() - 1
    server = serve(site_id)
    short = [http.submit(server, name=f"s{i}", gpu=1, command=f"sleep 2; echo {i} > /kqi/output/r.txt")
             for i in range(2)]
    long = [http.submit(server, name=f"l{i}", command="sleep 6; echo done > /kqi/output/r.txt") for i in range(2)]
    failing = http.submit(server, name="bad", command="sleep 2; exit 7")
    http.wait(server, short + long + [failing], "Running")
    server.kill()  # kill -9: no shutdown, containers run on and end while no server watches

    time.sleep(3)  # the short ones and the failing one end meanwhile
    server = serve(site_id)
    ended = http.wait(server, short + long + [failing], "Completed", "Failed", "Killed", "Error", timeout=60)
    assert [j["status"] for j in ended] == ["Completed"] * 4 + ["Failed"], ended
    assert ended[-1]["exit_code"] == 7
    for job_id, text in zip(short + long, ["0", "1", "done", "done"]):
        got = requests.get(f"{server.url}/api/v1/training/{job_id}/files/r.txt", headers=http.headers, timeout=10)
        assert got.text.strip() == text
    _stopped_and_clean(server, app, own_engines, site_id, since, short + long + [failing])


def test_two_servers_on_postgresql_one_schedules_and_the_other_takes_over(tmp_path, own_engines, postgres_server, serve):
    database_url = postgres_server.create_database(f"lease_{os.getpid()}_{int(time.time())}")
    site_id = "lease1"
    app = make_app(tmp_path, database_url, site_id=site_id)
    site = NodeSite(app)
    _register_all(site, own_engines)
    http = Http(site.api.token)
    first = serve(site_id, database_url, scheduler_lease_s=5)
    second = serve(site_id, database_url, scheduler_lease_s=5)

    def holder():
        with app.app_context():
            row = db.session.execute(db.text("SELECT holder, expires_at > timezone('utc', now()) FROM leases")).first()
            db.session.remove()
            return row

    wait_for(lambda: holder() and holder()[1], timeout=20)
    pid = int(holder()[0].split(":")[1])
    leader, other = (first, second) if pid == first.proc.pid else (second, first)
    assert pid == leader.proc.pid
    since = time.time() - 1
    ids = [http.submit(other, name=f"p{i}", command="echo ran") for i in range(4)]  # submitted to the non-leader
    assert all(j["status"] == "Completed" for j in http.wait(other, ids, "Completed", "Failed", "Error"))
    assert int(holder()[0].split(":")[1]) == leader.proc.pid  # the lease stayed where it was

    leader.kill()
    killed_at = time.monotonic()
    wait_for(lambda: int(holder()[0].split(":")[1]) == other.proc.pid and holder()[1], timeout=20)
    taken_over_s = time.monotonic() - killed_at
    assert taken_over_s < 12  # the lease lasts 5 s; the survivor ticks every 0.5 s
    late = http.submit(other, name="late", command="echo after")
    assert http.wait(other, [late], "Completed", "Failed", "Error")[0]["status"] == "Completed"
    other.kill(signal.SIGTERM)
    assert container_starts(own_engines, site_id, since) == {i: 1 for i in ids + [late]}
    kqi.shutdown(app)
    with app.app_context():
        db.engine.dispose()


def test_a_submit_to_the_server_without_the_lease_wakes_the_holder_at_once(tmp_path, postgres_server, serve):
    """Two servers on PostgreSQL, the fallback tick a minute away: a job submitted to the one that
    does not plan is planned within seconds only because it NOTIFYs the lease holder."""
    database_url = postgres_server.create_database(f"wake_{os.getpid()}_{int(time.time())}")
    app = make_app(tmp_path, database_url, site_id="wake1")
    http = Http(NodeSite(app).api.token)
    servers = [serve("wake1", database_url, scheduler_interval_s=60, scheduler_lease_s=120) for _ in range(2)]
    with app.app_context():
        holder = wait_for(lambda: db.session.execute(db.text("SELECT holder FROM leases")).scalar(), timeout=30)
        db.session.remove()
    other = next(server for server in servers if server.proc.pid != int(holder.split(":")[1]))
    ids = [http.submit(other, name=f"w{i}", command="true") for i in range(3)]  # no node: they stay queued
    for job_id in ids:
        wait_for(lambda job_id=job_id: http.job(other, job_id)["pending_reasons"] == ["no nodes"], timeout=20)
    kqi.shutdown(app)
    with app.app_context():
        db.engine.dispose()


# -- kill -9 in the middle of a node operation, then a restart: every job ends in its true state,
# none is started twice, nothing is left on the nodes. The operations run on the nodes' executors,
# beside the loop: the kill lands in the middle of one, never between two ticks.

def _restart_site(tmp_path, engines, site_id, drain_second_node=False):
    app = make_app(tmp_path, site_id=site_id)
    site = NodeSite(app)
    node_a, node_b = _register_all(site, engines)
    if drain_second_node:  # everything runs on node a (where the test's registry is)
        assert site.put_node(node_b, state="Draining").status_code == 200
    return app, site, Http(site.api.token)


ENDED = ("Completed", "Failed", "Killed", "UserCanceled", "Error")


def _restarted(serve, http, site_id, job_id, timeout=120, **settings):
    """The server started again after a kill -9: the server, and the job's end as it sees it."""
    server = serve(site_id, **settings)
    [ended] = http.wait(server, [job_id], *ENDED, timeout=timeout)
    return server, ended


def _stopped_and_clean(server, app, engines, site_id, since, job_ids):
    """Stop the server; each job was started once, and nothing of them is left on the nodes."""
    server.kill(signal.SIGTERM)
    assert container_starts(engines, site_id, since) == {i: 1 for i in job_ids}  # none started twice
    wait_for(lambda: site_containers(engines, site_id) == [], timeout=30)
    assert _held(app) == []
    with app.app_context():
        assert db.session.query(Job).filter(Job.status.in_([JobStatus.STARTING, JobStatus.RUNNING])).count() == 0
        db.session.remove()
    kqi.shutdown(app)


def _get(server, http, path):
    return requests.get(f"{server.url}/api/v1/training/{path}", headers=http.headers, timeout=10)


def test_server_killed_during_an_image_pull_then_restarted_starts_the_job_once(tmp_path, own_engines, serve):
    from tests.test_registry_pull_on_engines import PASSWORD, image_in_registry

    with image_in_registry(tmp_path / "registry", own_engines[0], "kqi/kill9:1") as (registry, image):
        app, site, http = _restart_site(tmp_path, own_engines, "kill9pull", drain_second_node=True)
        created = site.admin.post("/api/v1/admin/registries", json={"name": "local", "host": registry.host})
        assert created.status_code == 201, created.get_json()
        assert site.api.put("/api/v1/account/registry-credentials", json={
            "registry_id": created.get_json()["id"], "username": "alice", "password": PASSWORD}).status_code == 200
        since = time.time() - 1
        server = serve("kill9pull")
        os.kill(registry.process.pid, signal.SIGSTOP)  # the pull hangs in the middle
        try:
            job_id = http.submit(server, name="pulled", image=image, command="echo pulled and ran")
            http.wait(server, [job_id], "Starting")
            time.sleep(2)
            assert http.job(server, job_id)["status"] == "Starting"
            server.kill()
        finally:
            os.kill(registry.process.pid, signal.SIGCONT)
        server, ended = _restarted(serve, http, "kill9pull", job_id)
        assert ended["status"] == "Completed", ended
        assert _get(server, http, f"{job_id}/log").text.count("pulled and ran") == 1
        _stopped_and_clean(server, app, own_engines, "kill9pull", since, [job_id])


def test_server_killed_while_shipping_a_jobs_inputs_then_restarted_starts_it_once(tmp_path, own_engines, serve):
    app, site, http = _restart_site(tmp_path, own_engines, "kill9ship")
    parent = site.submit(name="parent", memory_gb=0.25, command="head -c 150000000 /dev/zero > /kqi/output/big.bin")
    assert site.wait_status(parent, "Completed", "Failed", "Error", timeout=120)["status"] == "Completed"
    since = time.time() - 1
    server = serve("kill9ship")
    child = http.submit(server, name="child", parent_ids=[parent], command="wc -c < /kqi/parent/big.bin > /kqi/output/size.txt")
    wait_for(lambda: http.job(server, child)["status"] == "Starting", timeout=30, interval=0.05)
    time.sleep(0.3)  # 150 MB of parent outputs on their way to the node
    assert http.job(server, child)["status"] == "Starting" and container_starts(own_engines, "kill9ship", since) == {}
    server.kill()
    server, ended = _restarted(serve, http, "kill9ship", child)
    assert ended["status"] == "Completed", ended
    assert _get(server, http, f"{child}/files/size.txt").text.strip() == "150000000"
    _stopped_and_clean(server, app, own_engines, "kill9ship", since, [child])


def test_server_killed_during_a_stop_then_restarted_ends_the_job_halted(tmp_path, own_engines, serve):
    app, site, http = _restart_site(tmp_path, own_engines, "kill9stop")
    since = time.time() - 1
    server = serve("kill9stop", stop_grace_s=10)
    job_id = http.submit(server, name="stubborn", gpu=1, command="echo up; sleep 300")  # PID 1 ignores SIGTERM
    http.wait(server, [job_id], "Running")
    assert requests.post(f"{server.url}/api/v1/training/{job_id}/halt", headers=http.headers, timeout=10).status_code == 200
    time.sleep(3)  # the stop is in its 10 s grace
    [container] = site_containers(own_engines, "kill9stop", job_id)
    assert container.status == "running" and http.job(server, job_id)["status"] == "Running"
    server.kill()
    server, ended = _restarted(serve, http, "kill9stop", job_id, stop_grace_s=10)
    assert ended["status"] == "UserCanceled" and ended["reason"] == "halted by user", ended
    assert "up" in _get(server, http, f"{job_id}/log").text
    _stopped_and_clean(server, app, own_engines, "kill9stop", since, [job_id])


def test_server_killed_during_a_collection_then_restarted_collects_everything_once(tmp_path, own_engines, serve):
    app, site, http = _restart_site(tmp_path, own_engines, "kill9collect")
    since = time.time() - 1
    server = serve("kill9collect")
    job_id = http.submit(server, name="many", command="mkdir /kqi/output/m && cd /kqi/output/m && seq 1 50000 | xargs touch")
    http.wait(server, [job_id], "Running")

    def exited():
        found = site_containers(own_engines, "kill9collect", job_id)
        return found and found[0].status == "exited"

    wait_for(exited, timeout=60, interval=0.1)
    time.sleep(1)  # its 50,000 files on their way to the server
    assert http.job(server, job_id)["status"] == "Running"
    server.kill()
    server, ended = _restarted(serve, http, "kill9collect", job_id, timeout=180)
    assert ended["status"] == "Completed", ended
    assert len(os.listdir(tmp_path / "instance" / "jobs" / str(job_id) / "output" / "m")) == 50000
    _stopped_and_clean(server, app, own_engines, "kill9collect", since, [job_id])

