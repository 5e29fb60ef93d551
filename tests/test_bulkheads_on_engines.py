"""Bulkheads on real engines: whatever one job does to its own container, and whatever one node
does, is that job's or that node's alone. The scheduler loop runs here as in a server (it ticks on
its own; node operations run on each node's executors), so nothing waits for a test to tick it.
These engines are the module's own (it freezes one of them), started by test_node_faults' fixture."""
from __future__ import annotations

import os
import signal
import time
from datetime import datetime

import pytest

import kqi
from kqi.cluster.monitor import FORCE_ENDED
from kqi.extensions import db
from kqi.models import Role
from tests.conftest import Factory, make_app, wait_for
from tests.node_helpers import NodeSite, site_containers
from tests.test_admin_pages import browser
from tests.test_node_faults import _held, own_engines  # noqa: F401  (a module fixture: its own engines here)

pytestmark = pytest.mark.engines
ENDED = ("Completed", "Failed", "Killed", "UserCanceled", "Error")


class Live(NodeSite):
    """A site whose loop runs on its own: node n0 (partition a) and n1 (partition b), a user, and
    a user of another tenant."""

    def __init__(self, app, engines):
        super().__init__(app)
        self.engines = engines
        self.node_ids = [self.register(name=f"n{i}", url=engine.unix_url, gpus=2, address=engine.address,
                                       partition=partition)["id"]
                         for i, (engine, partition) in enumerate(zip(engines, "ab"))]
        self.other = Factory(app).api(tenant="other-team")
        self.scheduler.start()

    def submit_as(self, client, **fields):
        body = {"name": "job", "image": "kqi-test/busybox:1", "command": "true", "cpu": 0.1, "memory_gb": 0.05,
                "partition": "a", **fields}
        response = client.post("/api/v1/training/run", json=body)
        assert response.status_code == 201, response.get_json()
        return response.get_json()["id"]

    def submit(self, **fields):
        return self.submit_as(self.api, **fields)

    def wait(self, job_id, *statuses, timeout=60, client=None):
        def reached():
            job = (client or self.api).get(f"/api/v1/training/{job_id}").get_json()
            return job if job["status"] in statuses else None

        return wait_for(reached, timeout=timeout, interval=0.1)

    def containers(self, job_id):
        return site_containers(self.engines, kqi.settings_of(self.app).site_id, job_id)


@pytest.fixture
def live(tmp_path, own_engines):  # noqa: F811
    sites = []

    def make(database_url="", **settings):
        app = make_app(tmp_path, database_url, scheduler_interval_s=0.5, **settings)
        sites.append(Live(app, own_engines))
        return sites[-1]

    yield make
    for site in sites:
        kqi.shutdown(site.app)
        with site.app.app_context():
            db.engine.dispose()


def _seconds(job, since="started_at", until="completed_at"):
    return (datetime.fromisoformat(job[until].rstrip("Z")) - datetime.fromisoformat(job[since].rstrip("Z"))).total_seconds()


def test_an_output_that_is_a_file_ends_its_job_and_every_tenant_goes_on(live):
    site = live()
    bad = site.submit(name="bad", gpu=1, command="rm -rf /kqi/output; echo not a folder > /kqi/output")
    ended = site.wait(bad, *ENDED)
    assert ended["status"] == "Failed" and ended["reason"] == "outputs not collected: /kqi/output is not a folder of files and folders", ended
    after = site.submit_as(site.other, name="after", command="echo fine > /kqi/output/r.txt")
    done = site.wait(after, *ENDED, client=site.other)
    assert done["status"] == "Completed", done
    assert site.other.get(f"/api/v1/training/{after}/files/r.txt").get_data() == b"fine\n"

    # Halted, or killed by an administrator, it ends the halt's way with the same note.
    for stop in ("halt", "kill"):
        job_id = site.submit(name=stop, gpu=1, command="rm -rf /kqi/output; echo x > /kqi/output; echo ready; sleep 300")
        site.wait(job_id, "Running")
        wait_for(lambda job_id=job_id: "ready" in site.log(job_id), timeout=20)
        url = f"/api/v1/training/{job_id}/halt" if stop == "halt" else f"/api/v1/admin/jobs/{job_id}/kill"
        assert (site.api if stop == "halt" else site.admin).post(url).status_code == 200
        ended = site.wait(job_id, *ENDED)
        assert ended["status"] == "UserCanceled", ended
        assert ended["reason"] == "halted by user; outputs not collected: /kqi/output is not a folder of files and folders"
        assert "ready" in site.log(job_id)
    assert _held(site.app) == []
    wait_for(lambda: site.containers(None) == [], timeout=30)


def test_a_job_that_removes_its_output_folder_ends_within_its_time_limit(live):
    site = live()
    job_id = site.submit(name="gone", gpu=2, time_limit_s=3, command="rm -rf /kqi/output; echo bye; sleep 300")
    site.wait(job_id, "Running")
    ended = site.wait(job_id, *ENDED, timeout=60)
    assert ended["status"] == "Killed", ended
    assert ended["reason"] == "time limit; outputs not collected: /kqi/output was removed from the container"
    assert _seconds(ended) < 3 + 1 + 10, ended  # its time limit, the stop grace (1 s here), one collection
    assert "bye" in site.log(job_id)
    assert _held(site.app) == []
    # And one that exits at once without its folder: Failed, not retried forever.
    quick = site.submit(name="quick", command="rm -rf /kqi/output")
    ended = site.wait(quick, *ENDED)
    assert ended["status"] == "Failed" and ended["reason"].endswith("/kqi/output was removed from the container")
    # Its GPUs are free: a job asking for both starts.
    assert site.wait(site.submit(name="both", gpu=2), *ENDED)["status"] == "Completed"


def test_many_output_files_take_their_own_node_slot_only(live):
    site = live()
    many = site.submit(name="many", command="mkdir /kqi/output/m && cd /kqi/output/m && seq 1 100000 | xargs touch")
    site.wait(many, "Running")
    submitted = time.monotonic()
    small = site.submit_as(site.other, name="small", command="echo small")
    site.wait(small, "Running", *ENDED, client=site.other)
    assert time.monotonic() - submitted < 5
    assert site.wait(small, *ENDED, client=site.other)["status"] == "Completed"
    ended = site.wait(many, *ENDED, timeout=300)
    assert ended["status"] == "Completed", ended
    assert len(os.listdir(os.path.join(site.app.instance_path, "jobs", str(many), "output", "m"))) == 100000


def test_names_that_are_not_utf8_are_refused_and_reported(tmp_path, live, db_url):
    site = live(db_url)
    job_id = site.submit(name="names", command=(
        "cd /kqi/output && echo ok > fine.txt && echo x > \"$(printf 'caf\\351.txt')\" && "
        "mkdir \"$(printf 'd\\377')\" && echo y > \"$(printf 'd\\377')/in.txt\""))
    ended = site.wait(job_id, *ENDED)
    assert ended["status"] == "Completed", ended
    refused = ended["provenance"]["refused_outputs"]["names"]
    assert "output/caf\\xe9.txt" in refused and "output/d\\xff/in.txt" in refused, refused
    files = site.api.get(f"/api/v1/training/{job_id}/files").get_json()["items"]
    assert [f["path"] for f in files] == ["fine.txt"]


def test_a_container_removed_behind_kqis_back_ends_its_job_alone(live):
    site = live()
    job_id = site.submit(name="vanish", gpu=2, command="sleep 300")
    neighbour = site.submit_as(site.other, name="neighbour", command="sleep 4; echo still here")
    site.wait(job_id, "Running")
    site.wait(neighbour, "Running", client=site.other)
    [container] = site.containers(job_id)
    container.remove(force=True)
    ended = site.wait(job_id, *ENDED)
    assert ended["status"] == "Error" and ended["reason"] == "container disappeared from the node", ended
    assert site.wait(neighbour, *ENDED, client=site.other)["status"] == "Completed"
    assert _held(site.app) == []


def test_a_frozen_engine_does_not_delay_a_start_on_the_other_node(live, own_engines):  # noqa: F811
    site = live()
    a, b = own_engines
    assert site.wait(site.submit(name="warm", partition="b"), *ENDED)["status"] == "Completed"
    os.kill(a.pid, signal.SIGSTOP)  # dockerd frozen: its socket accepts, nothing answers
    try:
        submitted = time.monotonic()
        job_id = site.submit(name="elsewhere", partition="b", command="sleep 1")
        site.wait(job_id, "Running", *ENDED, timeout=30)
        assert time.monotonic() - submitted < 3
        assert site.wait(job_id, *ENDED)["status"] == "Completed"
        wait_for(lambda: site.node(site.node_ids[0])["state"] == "Unreachable", timeout=30)
    finally:
        os.kill(a.pid, signal.SIGCONT)
    wait_for(lambda: site.node(site.node_ids[0])["state"] == "Ready", timeout=30)


def test_halting_a_job_that_ignores_sigterm_does_not_delay_a_start_on_its_node(live):
    site = live(stop_grace_s=8)
    stubborn = site.submit(name="stubborn", command="sleep 300")  # PID 1 without a handler: SIGTERM is ignored
    site.wait(stubborn, "Running")
    assert site.api.post(f"/api/v1/training/{stubborn}/halt").status_code == 200
    time.sleep(1)  # the stop has begun: its grace runs on one of the node's slots
    submitted = time.monotonic()
    following = site.submit_as(site.other, name="following", command="echo next")
    site.wait(following, "Running", *ENDED, client=site.other)
    assert time.monotonic() - submitted < 3
    assert site.job(stubborn)["status"] == "Running"  # still in its grace
    ended = site.wait(stubborn, *ENDED, timeout=60)
    assert ended["status"] == "UserCanceled" and ended["reason"] == "halted by user"
    assert site.wait(following, *ENDED, client=site.other)["status"] == "Completed"


def test_an_administrator_force_ends_a_job_and_its_resources_are_free_at_once(live):
    site = live(stop_grace_s=30)
    job_id = site.submit(name="stuck", gpu=2, command="echo up; sleep 300")
    site.wait(job_id, "Running")
    assert site.api.post(f"/api/v1/training/{job_id}/halt").status_code == 200  # a 30 s grace: it ends late
    assert site.api.post(f"/api/v1/admin/jobs/{job_id}/force-end").status_code == 403
    assert site.admin.post("/api/v1/admin/jobs/999999/force-end").status_code == 404
    response = site.admin.post(f"/api/v1/admin/jobs/{job_id}/force-end")
    assert response.status_code == 200, response.get_json()
    ended = response.get_json()
    assert ended["status"] == "Killed" and ended["reason"] == FORCE_ENDED and ended["completed_at"]
    assert [held for held in _held(site.app) if held[0] == job_id] == []  # released in the same transaction
    again = site.admin.post(f"/api/v1/admin/jobs/{job_id}/force-end")
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "conflict"
    both_gpus = site.submit(name="next", gpu=2, command="true")
    assert site.wait(both_gpus, *ENDED)["status"] == "Completed"
    wait_for(lambda: site.containers(job_id) == [], timeout=60)  # the watch removes an ended job's container
    assert site.job(job_id)["status"] == "Killed" and site.job(job_id)["reason"] == FORCE_ENDED

    # From the monitor page.
    pages = browser(site.app, role=Role.ADMIN, admin=True)
    from_page = site.submit(name="page", gpu=1, command="sleep 300")
    site.wait(from_page, "Running")
    monitor = pages.get("/admin/monitor").get_data(as_text=True)
    assert f"/admin/monitor/force-end/{from_page}" in monitor
    answer = pages.post(f"/admin/monitor/force-end/{from_page}", headers={"HX-Request": "true", "X-CSRFToken": pages.csrf})
    assert answer.status_code == 200 and f"#{from_page} page" not in answer.get_data(as_text=True)
    assert site.job(from_page)["reason"] == FORCE_ENDED
    wait_for(lambda: site.containers(from_page) == [], timeout=60)
    assert _held(site.app) == []


def test_a_node_that_keeps_failing_a_start_ends_the_job_as_error_after_bounded_tries(live):
    """Node n0's engine answers every listing but refuses every start with a server error (it is
    told to request GPUs through a runtime it lacks): the start is tried again with a growing
    backoff, then the job ends as Error saying what happened, and its resources are free."""
    site = live()
    with site.app.app_context():
        from kqi.models import Node

        db.session.query(Node).filter_by(name="n0").update({"nvidia_runtime": True})
        db.session.commit()
    job_id = site.submit(name="refused", gpu=1, command="echo never")
    retrying = wait_for(lambda: "try 2 of 5" in (site.job(job_id)["reason"] or "") and site.job(job_id), timeout=30)
    assert retrying["status"] == "Starting"
    ended = site.wait(job_id, *ENDED, timeout=120)
    assert ended["status"] == "Error" and ended["reason"].startswith("gave up after 5 tries: starting failed: "), ended
    assert _seconds(ended, since="created_at") >= 2 + 4 + 8 + 16  # the backoff between the five tries
    assert _held(site.app) == []
    wait_for(lambda: site.containers(job_id) == [], timeout=30)  # created, never started: a leftover
