"""Logs and outputs stream: a job's log and /kqi/output go to disk and back out to a client in
pieces, so the server's memory does not follow their size (the app runs in this process: its peak
resident memory is this process's); the site's per-job limits cut what is kept, and say so."""
from __future__ import annotations

import io
import re
import zipfile

import docker
import pytest

from kqi.extensions import db
from kqi.jobs import runner as job_runner
from kqi.jobs.files import GB, JobFiles
from kqi.models import Job
from tests.conftest import wait_for
from tests.test_pages import login
from tests.test_training_on_engines import cluster  # noqa: F401  (the fixture: both engines as nodes)

pytestmark = pytest.mark.engines

LINES, WIDTH = 100_000, 1000  # the log: "000001 xxx...x\n", 1000 bytes a line, 100 MB in all
LOG_BYTES = LINES * WIDTH
BIG_FILE = 30_000_000
MEMORY_BOUND = 25 * 2**20  # the target is 50 MB of growth for a 5 GB log; this is 100 MB
# Prints the log, writes a 30 MB output file, then waits for the test to let it end.
PRINT_AND_WAIT = (f"x=$(head -c {WIDTH - 8} /dev/zero | tr '\\0' x); seq -w {LINES} | sed \"s/$/ $x/\"; "
                  f"head -c {BIG_FILE} /dev/zero > /kqi/output/big.bin; echo 1.5 > /kqi/output/value.txt; "
                  "touch /tmp/printed; until [ -f /tmp/go ]; do sleep 0.1; done")


def _line(number: int) -> bytes:
    return b"%06d " % number + b"x" * (WIDTH - 8) + b"\n"


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as fh:
        return int(re.search(rf"^{key}:\s+(\d+) kB", fh.read(), re.M).group(1))


class PeakGrowth:
    """How far this process's resident memory rose above where it stood on entry (the kernel's own
    peak, VmHWM, reset on entry through /proc/self/clear_refs)."""

    def __enter__(self):
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        self.start = _status_kib("VmRSS")
        return self

    def __exit__(self, *exc):
        self.bytes = (_status_kib("VmHWM") - self.start) * 1024


def _drain(response) -> tuple[int, bytes, bytes]:
    """Read a streamed response piece by piece: its length, first and last bytes."""
    size, head, tail = 0, b"", b""
    for piece in response.response:
        size += len(piece)
        head = head or piece[:WIDTH]
        tail = (tail + piece)[-WIDTH:]
    response.close()
    return size, head, tail


def _container(cluster, job_id):
    (container,) = cluster.containers(job_id)
    return container


def _in_container(cluster, job_id, command: str) -> int:
    return _container(cluster, job_id).exec_run(["sh", "-c", command]).exit_code


def test_a_100_mb_log_and_a_30_mb_output_pass_through_in_bounded_memory(cluster):  # noqa: F811
    job_id = cluster.submit(name="loud", command=PRINT_AND_WAIT, time_limit_s=600)
    cluster.wait_status(job_id, "Running")
    wait_for(lambda: _in_container(cluster, job_id, "test -f /tmp/printed") == 0, timeout=180, interval=0.5)

    # While it runs: the log and the file come from the engine, piece by piece.
    with PeakGrowth() as live_log:
        response = cluster.api.get(f"/api/v1/training/{job_id}/log")
        assert response.status_code == 200 and response.is_streamed
        size, head, tail = _drain(response)
    assert (size, head, tail) == (LOG_BYTES, _line(1), _line(LINES))
    assert live_log.bytes < MEMORY_BOUND, live_log.bytes
    with PeakGrowth() as live_file:
        response = cluster.api.get(f"/api/v1/training/{job_id}/files/big.bin")
        assert response.status_code == 200 and response.content_length == BIG_FILE
        assert _drain(response)[0] == BIG_FILE
    assert live_file.bytes < MEMORY_BOUND, live_file.bytes
    with cluster.app.app_context():  # the page's tail: the engine's own tail=, read with a bound
        job = db.session.get(Job, job_id)
        ctx = cluster.scheduler.run_context()
        assert job_runner.read_log(ctx, job, tail=3) == _line(LINES - 2) + _line(LINES - 1) + _line(LINES)

    # Collected at the end: written to disk as it comes.
    _in_container(cluster, job_id, "touch /tmp/go")
    wait_for(lambda: _container(cluster, job_id).wait(timeout=60), timeout=60)
    with PeakGrowth() as collection:
        job = cluster.wait_status(job_id, "Completed", "Failed", "Error", "Killed", timeout=300)
    assert job["status"] == "Completed" and job["reason"] is None, job
    assert collection.bytes < MEMORY_BOUND, collection.bytes
    files = JobFiles(cluster.app.instance_path, job_id)
    assert files.log.stat().st_size == LOG_BYTES
    assert (files.output / "big.bin").stat().st_size == BIG_FILE

    # Read back from storage: streamed, and the tail read from the end of the file.
    with PeakGrowth() as stored_log:
        response = cluster.api.get(f"/api/v1/training/{job_id}/log")
        assert response.is_streamed and response.content_length == LOG_BYTES
        assert _drain(response) == (LOG_BYTES, _line(1), _line(LINES))
        response = cluster.api.get(f"/api/v1/training/{job_id}/output.zip")
        assert response.is_streamed
        zipped = b"".join(response.response)
    assert stored_log.bytes < MEMORY_BOUND, stored_log.bytes
    with zipfile.ZipFile(io.BytesIO(zipped)) as archive:
        assert {i.filename: i.file_size for i in archive.infolist()} == {"big.bin": BIG_FILE, "value.txt": 4}
    page, _csrf = login(cluster.app)
    text = page.get(f"/training/{job_id}/log", headers={"HX-Request": "true"}).get_data()
    assert _line(LINES).strip() in text and _line(1).strip() not in text  # the last 200 lines only
    download = page.get(f"/training/{job_id}/log/download")
    assert download.headers["Content-Disposition"].startswith("attachment") and _drain(download)[0] == LOG_BYTES


def test_log_and_output_past_the_site_limits_are_cut_and_the_job_says_so(cluster):  # noqa: F811
    limit = 0.01  # GB: 10,737,418 bytes
    kept = int(limit * GB)
    answer = cluster.admin.put("/api/v1/admin/settings", json={"max_log_gb": limit, "max_output_gb": limit})
    assert answer.status_code == 200 and answer.get_json()["max_log_gb"] == limit, answer.get_json()
    job_id = cluster.submit(name="over", command=(
        # 20 MB of log, then outputs: a file that does not fit, one that does; then it goes on
        "head -c 20000000 /dev/zero | tr '\\0' y; echo; head -c 12000000 /dev/zero > /kqi/output/big.bin; "
        "echo small > /kqi/output/small.txt; echo ran on to the end; echo 2 > /kqi/output/value.txt"))
    job = cluster.wait_status(job_id, "Completed", "Failed", "Error", timeout=120)
    assert job["status"] == "Completed", job
    assert job["reason"] == f"log cut at {limit:g} GB; output cut at {limit:g} GB: 1 file not kept"
    assert job["value"] == 2.0  # the job ran on past both limits

    stored = JobFiles(cluster.app.instance_path, job_id).log.read_bytes()
    dropped = 20_000_001 + len(b"ran on to the end\n") - kept
    assert stored[:kept] == b"y" * kept
    assert stored[kept:] == f"\n[kqi] log cut at {limit:g} GB: {dropped} bytes dropped\n".encode()

    files = [f["path"] for f in cluster.api.get(f"/api/v1/training/{job_id}/files").get_json()["items"]]
    assert files == ["small.txt", "value.txt"]
    over = job["provenance"]["outputs_over_limit"]
    assert over["names"] == ["big.bin"] and "12000000 bytes" in over["message"] and "max_output_gb" in over["message"]
    assert "refused_outputs" not in job["provenance"]


def test_the_driver_reads_a_log_in_pieces_with_the_engines_tail_and_may_stop_early(cluster):  # noqa: F811
    """The driver's own reader of the engine's multiplexed log (docker-py's is not used): the
    whole log byte for byte, the engine's tail=, an early close, a missing container."""
    from kqi.backends.base import NodeError
    from kqi.backends.docker.engine import DockerEngineDriver

    engine = cluster.engines[0]
    client = docker.DockerClient(base_url=engine.unix_url)
    container = client.containers.run("kqi-test/busybox:1", ["sh", "-c", "seq 200000"], detach=True,
                                      labels={"kqi.test": "streams"})
    container.wait(timeout=60)
    driver = DockerEngineDriver(engine.unix_url)
    try:
        pieces = driver.logs(container.id)
        first = next(pieces)
        assert first.startswith(b"1\n2\n3\n")
        pieces.close()  # closing early ends the engine's answer; the driver stays usable
        whole = b"".join(driver.logs(container.id))
        assert whole == b"".join(b"%d\n" % i for i in range(1, 200001))
        assert b"".join(driver.logs(container.id, tail=2)) == b"199999\n200000\n"
        with pytest.raises(NodeError):
            driver.logs("no-such-container")
    finally:
        driver.close()
        container.remove(force=True)
        client.close()
