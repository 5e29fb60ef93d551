"""Serving the web from worker processes beside the one scheduler (`web_processes` >= 2).

Why: a process has one interpreter lock. A scheduler tick that plans a queue of 10,000 jobs is a few
hundred milliseconds of Python; while it runs, each request thread of the same process gives the lock
up at every database call and waits up to the switch interval to get it back, so a list page that
costs 6 ms took hundreds. Here the `serve` process keeps the scheduler (APScheduler, as before) and
serves no HTTP itself: it opens the listening socket and starts `web_processes` copies of
`kqi_app.py web-worker` on it, and the kernel hands each new connection to one of them.

A worker's wake() (a submit, a node change) is one datagram on a socket pair to the scheduling
process, which wakes its loop at once. Workers die with the scheduling process (PR_SET_PDEATHSIG: a
kill -9 of `serve` leaves no worker holding the port), and one that dies alone is started again.
Per-process state stays per process: the login limiter counts in each worker, the audit log has a
writer in each.
"""
from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

LISTEN_FD_ENV, WAKE_FD_ENV, PARENT_ENV = "KQI_WORKER_LISTEN_FD", "KQI_WORKER_WAKE_FD", "KQI_WORKER_PARENT"
RESTART_DELAY_S = 1.0  # a worker that keeps crashing is not restarted in a tight loop
STOP_WAIT_S = 30.0  # SIGTERM, then SIGKILL after this long
_PR_SET_PDEATHSIG = 1


def listening_socket(host: str, port: int) -> socket.socket:
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    # backlog: connections wait here while every worker thread is busy, instead of being refused
    return socket.create_server((host, port), family=family, backlog=1024)


class Supervisor:
    """The scheduling process's side: start the workers, keep them running, forward their wakes."""

    def __init__(self, count: int, listener: socket.socket, wake):
        self.count = count
        self.listener = listener
        self._wake = wake
        self._wake_in, self._wake_out = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._wake_out.setblocking(False)
        self.workers: list[subprocess.Popen] = []
        self._stopping = threading.Event()

    def _spawn(self) -> subprocess.Popen:
        fds = (self.listener.fileno(), self._wake_out.fileno())
        env = {**os.environ, LISTEN_FD_ENV: str(fds[0]), WAKE_FD_ENV: str(fds[1]), PARENT_ENV: str(os.getpid())}
        script = Path(__file__).resolve().parent.parent / "kqi_app.py"
        return subprocess.Popen([sys.executable, str(script), "web-worker"], env=env, pass_fds=fds)

    def _forward_wakes(self) -> None:
        while not self._stopping.is_set():
            try:
                self._wake_in.recv(64)
            except OSError:
                return  # closed: stopping
            self._wake()

    def run(self) -> None:
        """Start the workers and watch them until stop(); then stop them. Call from the main thread:
        a worker's death signal follows the thread that started it."""
        threading.Thread(target=self._forward_wakes, name="kqi-wake-forwarder", daemon=True).start()
        self.workers = [self._spawn() for _ in range(self.count)]
        try:
            while not self._stopping.wait(RESTART_DELAY_S):
                for i, worker in enumerate(self.workers):
                    if worker.poll() is not None:
                        log.error("web worker %d exited with %s; starting another", worker.pid, worker.returncode)
                        self.workers[i] = self._spawn()
        finally:
            self._stop_workers()

    def stop(self) -> None:
        self._stopping.set()

    def _stop_workers(self) -> None:
        for worker in self.workers:
            if worker.poll() is None:
                worker.terminate()
        deadline = time.monotonic() + STOP_WAIT_S
        for worker in self.workers:
            try:
                worker.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        self._wake_in.close()
        self._wake_out.close()


def worker_sockets() -> tuple[socket.socket, socket.socket]:
    """In a worker: the listening socket and the wake socket its supervisor passed down. Exits at
    once if the supervisor is already gone, and arranges to be killed when it goes."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the worker outlives a killed supervisor
        log.warning("cannot ask to die with the supervisor (prctl)")
    if str(os.getppid()) != os.environ[PARENT_ENV]:
        sys.exit("kqi web worker: the serving process is gone")
    listener = socket.socket(fileno=int(os.environ[LISTEN_FD_ENV]))
    wake = socket.socket(fileno=int(os.environ[WAKE_FD_ENV]))
    wake.setblocking(False)
    return listener, wake


def wake_sender(wake: socket.socket):
    def send() -> None:
        try:
            wake.send(b"w")
        except OSError:  # full (the scheduler has wakes waiting already) or closed (it is stopping)
            pass
    return send
