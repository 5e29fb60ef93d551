"""`kqi_app.py serve` as it runs on a site: the scheduler in the serving process, HTTP in worker
processes on the same port (kqi/web_workers.py). Real processes, real sockets, SQLite."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "worker-password"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
def site(tmp_path):
    """A migrated instance with an admin, and how to start `serve` on it (the fallback tick a minute
    away, so only a forwarded wake can plan a new job quickly)."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KQI_")}
    env.update({"KQI_INSTANCE": str(tmp_path / "inst"), "KQI_PORT": str(port), "KQI_ADMIN_PASSWORD": PASSWORD,
                "KQI_SCHEDULER_INTERVAL_S": "60", "KQI_WEB_PROCESSES": "2"})
    for command in ("migrate", "create-admin"):
        subprocess.run([sys.executable, "kqi_app.py", command], cwd=ROOT, env=env, check=True, capture_output=True)
    started = []
    log = (tmp_path / "serve.log").open("ab")

    def start() -> subprocess.Popen:
        server = subprocess.Popen([sys.executable, "kqi_app.py", "serve"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                  stderr=log, start_new_session=True)
        started.append(server)
        wait_for(lambda: len(_children(server.pid)) == 2 and _up(f"http://127.0.0.1:{port}"), timeout=60)
        return server

    yield start, f"http://127.0.0.1:{port}", tmp_path / "serve.log"
    for server in started:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    log.close()


def _up(base: str) -> bool:
    try:  # before the workers have loaded, a connection waits in the listening socket's backlog
        return requests.get(f"{base}/healthz", timeout=10).ok
    except (requests.ConnectionError, requests.Timeout):
        return False


def _token(base: str) -> dict:
    token = requests.post(f"{base}/api/v1/account/login", json={"username": "admin", "password": PASSWORD},
                          timeout=10).json()["token"]
    return {"Authorization": f"Bearer {token}"}


def test_workers_serve_and_a_submit_wakes_the_scheduling_process(site):
    start, base, log = site
    server = start()
    workers = _children(server.pid)
    assert len(workers) == 2 and server.pid not in workers
    headers = _token(base)
    ids = []
    for i in range(6):  # a new connection each: the kernel gives them to either worker
        answer = requests.post(f"{base}/api/v1/training/run", headers=headers, timeout=10,
                               json={"name": f"w{i}", "image": "busybox", "command": "true", "cpu": 0.1, "memory_gb": 0.1})
        assert answer.status_code == 201, answer.text
        ids.append(answer.json()["id"])
    # No node: the jobs stay queued, and only a tick gives them a position and a reason. The fallback
    # tick is a minute away, so this is the workers' wake reaching the scheduler's process.
    def planned(job_id):
        return requests.get(f"{base}/api/v1/training/{job_id}", headers=headers, timeout=10).json()["pending_reasons"]

    for job_id in ids:
        wait_for(lambda job_id=job_id: planned(job_id) == ["no nodes"], timeout=30)
    # The ticks ran below the requests' CPU priority; the workers' threads kept the server's.
    base_nice = os.getpriority(os.PRIO_PROCESS, 0)
    assert max(_thread_nices(server.pid)) == max(base_nice, 10)
    assert {nice for worker in workers for nice in _thread_nices(worker)} == {base_nice}
    # Each process put its start-up objects out of the garbage collector's sight before serving.
    frozen = re.findall(r"serving: (\d+) start-up objects frozen", log.read_text())
    assert len(frozen) == 3 and min(int(count) for count in frozen) > 50_000, frozen


def _thread_nices(pid: int) -> list[int]:
    return [int((task / "stat").read_text().rpartition(")")[2].split()[16]) for task in Path(f"/proc/{pid}/task").iterdir()]


def test_a_dead_worker_is_replaced_and_a_killed_server_takes_its_workers_along(site):
    start, base, log = site
    server = start()
    dead = _children(server.pid)[0]
    os.kill(dead, signal.SIGKILL)
    wait_for(lambda: dead not in _children(server.pid) and len(_children(server.pid)) == 2, timeout=30)
    assert "exited with -9; starting another" in log.read_text()
    assert all(_up(base) for _ in range(4))
    workers = _children(server.pid)
    server.kill()  # kill -9: no chance to stop its workers itself
    server.wait()
    wait_for(lambda: not any(_alive(pid) for pid in workers), timeout=10)
    with pytest.raises(requests.ConnectionError):  # nobody is left holding the port
        requests.get(f"{base}/healthz", timeout=2)
    start()  # and a new server can take the port at once


def test_sigterm_stops_the_workers_and_the_server_cleanly(site):
    start, _base, _log = site
    server = start()
    workers = _children(server.pid)
    server.terminate()
    assert server.wait(timeout=60) == 0
    assert not any(_alive(pid) for pid in workers)
