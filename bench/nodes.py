"""Node faults, measured on real engines with a real `kqi_app.py serve` process:

    python -m bench node-loss [--grace 15]        dockerd killed mid-job -> node Offline, jobs ended
    python -m bench restart-recovery [--jobs 20]  server kill -9 with jobs running -> all collected
    python -m bench soak [--jobs 500]             500 short jobs (sleep 2) on 3 engines, one killed and restarted midway

Each starts private engines (as the test cluster does: tests/infra/engines.py) and a SQLite site.
The soak runs with requeue_on_node_loss on, so every job must end Completed: `lost` counts those
that did not, `double_started` those started more often than their history allows (a second start
only for a job whose first container was on the engine that was killed).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

import docker
import requests

from tests.infra import engines as infra_engines

SETTINGS = {"heartbeat_timeout_s": 2}


@contextlib.contextmanager
def _engines(count: int):
    base = tempfile.mkdtemp(prefix="kb-n-", dir="/tmp")
    os.chmod(base, 0o711)
    started = infra_engines.start_engines(count, base)
    try:
        infra_engines.build_busybox_image(started)
        yield started
    finally:
        infra_engines.stop_engines(started)
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def _site(engines, site_id: str):
    """A migrated site with the engines registered (2 declared GPUs each); yields (folder, admin, user)."""
    from tests.conftest import make_app
    from tests.node_helpers import Http, NodeSite

    with tempfile.TemporaryDirectory(prefix="kb-site-") as folder:
        app = make_app(Path(folder), site_id=site_id)
        site = NodeSite(app)
        for i, engine in enumerate(engines):
            site.register(name=f"n{i}", url=engine.unix_url, gpus=2, address=engine.address)
        try:
            yield Path(folder), Http(site.admin.token), Http(site.api.token)
        finally:
            app.extensions["kqi_scheduler"].shutdown()


@contextlib.contextmanager
def _servers(folder: Path, site_id: str, **settings):
    """Yields start(): a `kqi_app.py serve` process on the site (each stopped at the end, if alive)."""
    from tests.node_helpers import Server

    started = []

    def start():
        started.append(Server(folder, site_id, **{**SETTINGS, **settings}))
        return started[-1]

    try:
        yield start
    finally:
        for server in started:
            server.kill(signal.SIGTERM)


def _count(server, http, status: str) -> int:
    response = requests.get(f"{server.url}/api/v1/training", params={"status": status, "per_page": 1},
                            headers=http.headers, timeout=30)
    return response.json()["total"]


def _node(server, admin, name: str) -> dict:
    nodes = requests.get(f"{server.url}/api/v1/admin/nodes", headers=admin.headers, timeout=30).json()["items"]
    return next(n for n in nodes if n["name"] == name)


def _wait(predicate, timeout: float, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"not done within {timeout:.0f} s")
        time.sleep(interval)


def node_loss(grace_s: float) -> dict:
    with _engines(2) as engines, _site(engines, "bnl") as (folder, admin, user), \
            _servers(folder, "bnl", node_offline_grace_s=grace_s) as start:
        server = start()
        requests.put(f"{server.url}/api/v1/admin/nodes/{_node(server, admin, 'n1')['id']}", json={"state": "Draining"},
                     headers=admin.headers, timeout=10).raise_for_status()
        ids = [user.submit(server, name=f"loss{i}", command="sleep 600") for i in range(4)]
        user.wait(server, ids, "Running")
        infra_engines.kill_engine(engines[0])
        killed = time.monotonic()
        _wait(lambda: _node(server, admin, "n0")["state"] == "Unreachable", 60)
        unreachable = time.monotonic() - killed
        _wait(lambda: _node(server, admin, "n0")["state"] == "Offline", 120)
        offline = time.monotonic() - killed
        _wait(lambda: all(user.job(server, i)["status"] == "Killed" for i in ids), 60)
        ended = time.monotonic() - killed
        reasons = {user.job(server, i)["reason"] for i in ids}
    return {"grace_s": grace_s, "unreachable_after_s": round(unreachable, 1), "offline_after_s": round(offline, 1),
            "jobs_ended_after_s": round(ended, 1), "jobs": len(ids), "reasons": sorted(reasons)}


def restart_recovery(jobs: int) -> dict:
    from tests.node_helpers import container_starts

    with _engines(2) as engines, _site(engines, "brr") as (folder, _admin, user), _servers(folder, "brr") as start:
        since = time.time() - 1
        server = start()
        ids = [user.submit(server, name=f"r{i}", command="sleep 20; echo ok > /kqi/output/r.txt") for i in range(jobs)]
        user.wait(server, ids, "Running", timeout=120)
        server.kill()
        time.sleep(21)  # every job ends while no server watches
        restarted = time.monotonic()
        server = start()
        serving = time.monotonic() - restarted
        _wait(lambda: _count(server, user, "Completed") == jobs, 120, interval=0.1)
        recovered = time.monotonic() - restarted
        outputs = sum(requests.get(f"{server.url}/api/v1/training/{i}/files/r.txt", headers=user.headers,
                                   timeout=10).text == "ok\n" for i in ids)
        server.kill(signal.SIGTERM)
        starts = container_starts(engines, "brr", since)
    return {"jobs": jobs, "serving_after_s": round(serving, 2), "all_collected_after_s": round(recovered, 2),
            "outputs_collected": outputs, "started_twice": sum(1 for n in starts.values() if n > 1)}


class _StartLog:
    """Every container start of the site on every engine, streamed live (a killed engine's stream is
    reopened when it is back), as (job id, engine index, time)."""

    def __init__(self, engines, site: str):
        self.starts: list[tuple[int, int, float]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._follow, args=(i, e, site), daemon=True)
                         for i, e in enumerate(engines)]
        for thread in self._threads:
            thread.start()

    def _follow(self, index, engine, site):
        since = time.time() - 1
        while not self._stop.is_set():
            try:
                client = docker.APIClient(base_url=engine.unix_url, timeout=None)
                stream = client.events(since=since, decode=True, filters={"event": "start", "label": f"kqi.site={site}"})
                for event in stream:
                    self.starts.append((int(event["Actor"]["Attributes"]["kqi.job"]), index, event["time"]))
                    since = event["time"] + 1e-9
                    if self._stop.is_set():
                        break
            except Exception:
                time.sleep(0.5)  # the engine is down: follow it again once it is back

    def stop(self):
        self._stop.set()


def soak(jobs: int) -> dict:
    with _engines(3) as engines, _site(engines, "bsk") as (folder, admin, user), \
            _servers(folder, "bsk", requeue_on_node_loss="true", node_offline_grace_s=5) as start:
        server = start()
        starts = _StartLog(engines, "bsk")
        began = time.monotonic()
        try:
            ids = [user.submit(server, name=f"s{i}", command="sleep 2") for i in range(jobs)]
            _wait(lambda: _count(server, user, "Completed") >= jobs // 2, 1800, interval=0.5)
            infra_engines.kill_engine(engines[2])
            killed_at = time.time()
            _wait(lambda: _node(server, admin, "n2")["state"] == "Offline", 300)  # its jobs are requeued
            offline_after = time.time() - killed_at
            infra_engines.restart_engine(engines[2])
            _wait(lambda: _count(server, user, "Queued") + _count(server, user, "Starting")
                  + _count(server, user, "Running") == 0, 1800, interval=1)
            took = time.monotonic() - began
            completed = _count(server, user, "Completed")
        finally:
            starts.stop()
    per_job: dict[int, list[tuple[int, float]]] = {}
    for job_id, engine, at in starts.starts:
        per_job.setdefault(job_id, []).append((engine, at))
    allowed = {job_id: 1 + any(e == 2 and at <= killed_at for e, at in seen) for job_id, seen in per_job.items()}
    requeued = sum(1 for job_id, seen in per_job.items() if len(seen) > 1)
    return {"jobs": jobs, "engines": 3, "starts_per_engine": [sum(1 for _, e, _ in starts.starts if e == i) for i in range(3)],
            "completed": completed, "lost": jobs - completed,
            "started_again_after_node_loss": requeued,
            "double_started": sum(1 for job_id, seen in per_job.items() if len(seen) > allowed[job_id]),
            "never_started": sum(1 for job_id in ids if job_id not in per_job), "offline_after_s": round(offline_after, 1),
            "wall_s": round(took, 1)}


def _cli(name: str, argv: list[str], run) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m bench {name}", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grace", type=float, default=15.0, help="node_offline_grace_s (node-loss)")
    parser.add_argument("--jobs", type=int, default=0, help="jobs (restart-recovery: 20, soak: 500)")
    figures = run(parser.parse_args(argv))
    for key, value in figures.items():
        print(f"{key}: {value}", flush=True)
    return 0 if figures.get("lost", 0) == 0 and figures.get("double_started", 0) == 0 else 1


def node_loss_main(argv: list[str]) -> int:
    return _cli("node-loss", argv, lambda args: node_loss(args.grace))


def restart_recovery_main(argv: list[str]) -> int:
    return _cli("restart-recovery", argv, lambda args: restart_recovery(args.jobs or 20))


def soak_main(argv: list[str]) -> int:
    return _cli("soak", argv, lambda args: soak(args.jobs or 500))
