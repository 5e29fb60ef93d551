"""The Docker engine a benchmark runs on: the one named, else the local one, else a private one
started for the run (as the test cluster starts them) with the busybox image imported."""
from __future__ import annotations

import contextlib
import tempfile
from types import SimpleNamespace

import docker

LOCAL = "unix:///var/run/docker.sock"


def _answers(url: str) -> bool:
    try:
        client = docker.DockerClient(base_url=url, timeout=5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


@contextlib.contextmanager
def bench_engine(url: str | None = None):
    from tests.infra import engines

    if url or _answers(LOCAL):
        url = url or LOCAL
        engines.build_busybox_image([SimpleNamespace(unix_url=url)])
        yield url
        return
    base = tempfile.mkdtemp(prefix="kb-", dir="/tmp")
    started = engines.start_engines(1, base)
    try:
        engines.build_busybox_image(started)
        yield started[0].unix_url
    finally:
        engines.stop_engines(started)
