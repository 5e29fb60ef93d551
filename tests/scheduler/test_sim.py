"""Smoke test: a 30-job synthetic trace runs through every policy, in JSON and with a PNG."""
from __future__ import annotations

import csv
import json
from pathlib import Path

from kqi.scheduler.plan import POLICIES
from sim import replay, workload

HEADER = ",".join(workload.COLUMNS)


def write_trace(path):
    rows = [HEADER]
    for i in range(30):
        # a share, whole GPUs, a 4-GPU job, CPU-only, and one row that never ran (skipped)
        num_gpu, gpu_milli = [(1, 500), (1, 1000), (2, 1000), (4, 1000), (0, 0)][i % 5]
        duration = "" if i == 29 else str(100 + 37 * (i % 7))
        rows.append(f"job-{i},{i * 20},,,{duration},{num_gpu},{gpu_milli},{4000 + 1000 * (i % 3)},8192,BE,Succeeded")
    path.write_text("\n".join(rows) + "\n")


def test_all_policies_on_a_small_trace(tmp_path, capsys):
    trace = tmp_path / "trace.csv"
    write_trace(trace)
    png = tmp_path / "out.png"
    results = replay.main(["--trace", str(trace), "--nodes", "2", "--gpus-per-node", "4", "--cpu-per-node", "16",
                           "--memory-gb-per-node", "64", "--policy", "all", "--json", "--png", str(png)])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["policy"] for line in lines] == list(POLICIES)
    for line, result in zip(lines, results):
        assert line["jobs"] == 29 and line["completed"] == 29 and line["unplaceable"] == 0
        assert 0 < line["gpu_utilization"] <= 1
        assert line["max_wait_s"] >= line["p99_wait_s"] - 1e-9 and line["makespan_s"] > 0
        assert {"avg_jct_s", "p50_jct_s", "p99_jct_s", "avg_wait_s", "decisions_per_s"} <= set(line)
        assert result.timeline
    assert png.stat().st_size > 1000


def test_generated_workload_is_seeded():
    first = workload.generate(seed=3, jobs=50)
    assert first == workload.generate(seed=3, jobs=50)
    assert {row["num_gpu"] for row in first} <= {"1", "2", "4", "8"}
    assert first != workload.generate(seed=4, jobs=50)


def test_the_default_trace_is_in_the_repository():
    assert replay.DEFAULT_TRACE.is_file()
    assert replay.DEFAULT_TRACE.parent == Path(replay.__file__).resolve().parent / "traces"
    with open(replay.DEFAULT_TRACE, newline="") as f:
        assert tuple(csv.DictReader(f).fieldnames) == workload.COLUMNS
