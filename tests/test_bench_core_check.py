"""bench core's arithmetic and plumbing (bench/core.py, bench/procs.py): ratios and verdicts, the
report's table, which samples a scenario counts, the log its job prints, and the server's process
tree read from /proc (real processes; no timing is asserted)."""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import core, procs


def test_the_ratio_is_of_the_medians_and_needs_both_kinds_of_sample():
    assert core.ratio([1.0, 2.0, 9.0], [0.5, 1.0, 4.0]) == 2.0
    assert core.ratio([], [1.0]) is None
    assert core.ratio([1.0], []) is None


def test_a_figure_at_its_target_is_met_and_one_above_is_missed():
    assert core.verdict(1.3, 1.3) == "met"
    assert core.verdict(1.31, 1.3) == "missed"
    assert core.verdict(None, 1.3) == "no sample"


def test_rows_carry_their_figure_and_verdict():
    timed = core.Row(1, "after a halt", 1.3, kqi_s=[0.6, 0.7, 5.0], bare_s=[0.5, 0.5, 0.6])
    assert timed.figure == pytest.approx(1.4) and timed.verdict == "missed"
    memory = core.Row(6, "log", 50, unit="MB", value=12.5)
    assert memory.figure == 12.5 and memory.verdict == "met"
    broken = core.Row(2, "dataset", 1.5, kqi_s=[1.0], bare_s=[1.0], error="RuntimeError: boom")
    assert broken.verdict == "error"
    assert timed.as_dict()["kqi_p50_s"] == 0.7 and timed.as_dict()["verdict"] == "missed"


def test_the_table_shows_p50_and_count_ratio_target_and_verdict():
    lines = core.table([
        core.Row(1, "after a halt", 1.3, kqi_s=[12.0, 12.5, 13.0], bare_s=[0.8, 0.9], note="stop_grace_s 10"),
        core.Row(5, "burst", 1.5, kqi_s=[3.0], bare_s=[2.5]),
        core.Row(6, "log", 50, unit="MB", value=1025.4),
        core.Row(2, "dataset", 1.5, note="no job on B was submitted in time"),
        core.Row(4, "frozen", 0, error="RuntimeError: boom"),
    ])
    assert lines[0].split()[:2] == ["scenario", "kqi"]
    assert lines[1].endswith("missed") and "12.500 (3)" in lines[1] and " 0.850 " in lines[1] and " 14.71 " in lines[1]
    assert "<= 1.3x" in lines[1] and lines[2] == "    stop_grace_s 10"
    assert "3.000 (1)" in lines[3] and " 1.20 " in lines[3] and lines[3].endswith("met")
    assert "+1025 MB" in lines[4] and "<= 50 MB" in lines[4] and lines[4].endswith("missed")
    assert lines[5].endswith("no sample") and lines[6] == "    no job on B was submitted in time"
    assert lines[7].endswith("error") and lines[8] == "    error: RuntimeError: boom"


def test_start_delays_come_from_the_job_s_own_millisecond_timestamps():
    job = {"created_at": "2026-01-02T10:00:00.250Z", "started_at": "2026-01-02T10:00:01.125Z"}
    assert core.start_delay(job) == pytest.approx(0.875)


def test_only_jobs_submitted_before_node_a_started_count_for_scenario_2():
    jobs = [{"created_at": "2026-01-02T10:00:00.100Z", "started_at": "2026-01-02T10:00:04.100Z"},
            {"created_at": "2026-01-02T10:00:04.500Z", "started_at": "2026-01-02T10:00:05.000Z"},
            {"created_at": "2026-01-02T10:00:05.000Z", "started_at": "2026-01-02T10:00:05.400Z"}]
    assert core.started_before(jobs, "2026-01-02T10:00:05.000Z") == pytest.approx([4.0, 0.5])
    assert core.started_before(jobs, "2026-01-02T10:00:00.000Z") == []


def test_scenarios_are_chosen_by_number():
    assert core.scenario_numbers("1,3") == {1, 3}
    assert core.scenario_numbers(" 6 ") == {6}
    for wrong in ("7", "0,1", "one", ","):
        with pytest.raises(argparse.ArgumentTypeError):
            core.scenario_numbers(wrong)


def test_the_upload_body_is_as_long_as_it_says_and_random():
    body = core.RandomBody(10_000)
    assert len(body) == 10_000
    chunks = [body.read(4096), body.read(4096), body.read(4096), body.read(4096)]
    assert [len(c) for c in chunks] == [4096, 4096, 1808, 0]
    assert chunks[0] != chunks[1]


@pytest.fixture
def busybox_path(tmp_path):
    """A PATH with only busybox's applets, as in the bench's image."""
    assert os.access("/bin/busybox", os.X_OK), "the test cluster's busybox (/bin/busybox) is missing"
    for applet in ("sh", "head", "tr", "yes", "cat", "seq"):
        (tmp_path / applet).symlink_to("/bin/busybox")
    return str(tmp_path)


def test_the_log_command_prints_exactly_the_mebibytes_asked_in_8_kib_lines(busybox_path, tmp_path):
    for mib in (0, 3, core.LOG_BLOCK_MIB + 2):
        out = tmp_path / f"out-{mib}"
        workdir = tmp_path / f"tmp-{mib}"
        workdir.mkdir()
        command = core.log_command(mib).replace("/tmp/", f"{workdir}/")
        with out.open("wb") as sink:
            subprocess.run(["/bin/busybox", "sh", "-c", command], env={"PATH": busybox_path}, stdout=sink, check=True)
        assert out.stat().st_size == mib * 2**20
        if mib:
            with out.open("rb") as printed:
                head = printed.read(3 * 8192)
            assert head == (b"y" * 8191 + b"\n") * 3


def test_descendants_follow_the_parent_links_from_the_roots():
    parents = {1: 0, 10: 1, 11: 10, 12: 11, 20: 1, 21: 20, 30: 12}
    assert procs.descendants(parents, [10]) == {10, 11, 12, 30}
    assert procs.descendants(parents, [20, 99]) == {20, 21, 99}
    assert procs.descendants(parents, []) == set()


def test_vm_rss_is_read_from_the_status_text():
    status = "Name:\tpython\nVmPeak:\t  20000 kB\nVmRSS:\t   12345 kB\nThreads:\t3\n"
    assert procs.vm_rss_kib(status) == 12345
    assert procs.vm_rss_kib("Name:\tkthreadd\nThreads:\t1\n") == 0


def _wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "not in time"
        time.sleep(0.02)


def test_the_server_is_the_serve_child_of_this_process_and_every_process_below_it(tmp_path):
    """A stand-in with a serve command line (`python -c ... kqi_app.py serve`) and a child of its
    own, as serve starts its web workers; a child without that command line is not the server."""
    code = "import subprocess, sys, time; subprocess.Popen(['sleep', '60']); time.sleep(60)"
    server = subprocess.Popen([sys.executable, "-c", code, str(Path(tmp_path) / "kqi_app.py"), "serve"])
    other = subprocess.Popen(["sleep", "60"])
    try:
        _wait_for(lambda: len(procs.server_pids()) == 2)
        found = procs.server_pids()
        assert server.pid in found and other.pid not in found
        assert procs.descendants(procs.parent_pids(), [server.pid]) == found
        assert procs.server_rss_mib() > 1 and procs.server_cpu_s() >= 0
        worker = (found - {server.pid}).pop()
        procs.kill_server()
        assert server.wait(timeout=10) == -signal.SIGKILL
        _wait_for(lambda: not Path(f"/proc/{worker}").exists()
                  or Path(f"/proc/{worker}/stat").read_text().rpartition(")")[2].split()[0] == "Z")
        assert procs.server_pids() == set()
    finally:
        for process in (server, other):
            if process.poll() is None:
                process.kill()
                process.wait()
