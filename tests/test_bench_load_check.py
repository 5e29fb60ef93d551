"""The load bench's check over the whole run (bench/load.py): hold intervals from a job's events, and
the sweep that finds any moment a node held more than it has."""
from __future__ import annotations

from bench.load import Hold, hold_span, holds_of_run, sweep
from kqi.extensions import db
from kqi.jobs import lifecycle as jobs
from kqi.models import JobPart, JobStatus, Node

CAPACITY = {"n0": (1000, 640, 2), "n1": (1000, 640, 2)}


def hold(start, end, cpu=500, memory=64, gpus=None, node="n0"):
    return Hold(node, start, end, cpu, memory, gpus or {})


def test_overlapping_holds_over_a_node_are_reported_at_the_moment_they_exceed():
    uses = sweep([hold(0, 10, cpu=600), hold(5, 15, cpu=600), hold(20, 30, cpu=600, node="n1")], CAPACITY)
    assert uses["n0"].over == ["5: cpu 1200 milli of 1000"]
    assert uses["n0"].peak_cpu_milli == 1200 and uses["n0"].parts == 2
    assert uses["n1"].over == [] and uses["n1"].peak_cpu_milli == 600


def test_a_job_placed_when_another_ends_does_not_overlap_it():
    uses = sweep([hold(5, 10, cpu=600, memory=400), hold(10, 20, cpu=600, memory=400), hold(0, 5, cpu=600)], CAPACITY)
    assert uses["n0"].over == []
    assert (uses["n0"].peak_cpu_milli, uses["n0"].peak_memory_mib, uses["n0"].parts) == (600, 400, 3)


def test_memory_over_capacity_is_reported():
    uses = sweep([hold(0, 10, memory=400), hold(9, 12, memory=300)], CAPACITY)
    assert uses["n0"].over == ["9: memory 700 MiB of 640"]


def test_a_hold_still_open_at_the_end_overlaps_everything_after_it():
    uses = sweep([hold(0, None, cpu=600), hold(100, 101, cpu=600)], CAPACITY)
    assert uses["n0"].over == ["100: cpu 1200 milli of 1000"]


def test_gpu_shares_add_up_to_one_gpu_and_no_more():
    shares = [hold(0, 10, cpu=100, gpus={0: 500}), hold(1, 10, cpu=100, gpus={0: 500}),
              hold(2, 10, cpu=100, gpus={1: 1000})]
    uses = sweep(shares, CAPACITY)
    assert uses["n0"].over == [] and uses["n0"].peak_gpu_milli == 1000
    # A whole GPU on an index still half held, and an index the node does not have.
    uses = sweep(shares + [hold(5, 6, cpu=100, gpus={1: 500}), hold(7, 8, cpu=100, gpus={2: 1000})], CAPACITY)
    assert uses["n0"].over == ["5: GPU 1 holds 1500 milli (2 GPUs)", "7: GPU 2 holds 1000 milli (2 GPUs)"]
    # Released first, the same index is free again.
    assert sweep([hold(0, 4, gpus={1: 1000}), hold(4, 8, gpus={1: 1000})], CAPACITY)["n0"].over == []


def test_a_node_never_used_has_no_parts():
    assert sweep([], CAPACITY)["n1"].parts == 0


def test_the_hold_runs_from_the_last_placement_to_its_end():
    assert hold_span([("Queued", 1), ("Starting", 2), ("Running", 3), ("Completed", 9)]) == (2, 9)
    # Placed, never started (its container failed to start): held from the placement.
    assert hold_span([("Queued", 1), ("Starting", 2), ("Error", 4)]) == (2, 4)
    assert hold_span([("Queued", 1), ("Starting", 2)]) == (2, None)
    # Requeued after a node loss: only the placement its parts now describe counts.
    assert hold_span([("Queued", 1), ("Starting", 2), ("Running", 3), ("Queued", 5), ("Starting", 7),
                      ("Running", 8)]) == (7, None)
    assert hold_span([("Queued", 1)]) == (None, None)


def test_the_holds_are_read_back_from_a_run_s_parts_and_events(app, factory):
    with app.app_context():
        db.session.add(Node(name="n0", url="unix:///nowhere.sock", cpu_milli=1000, memory_mib=640, gpu_count=2))
        db.session.commit()
        node_id = db.session.query(Node.id).scalar()
    api = factory.api()
    body = {"image": "busybox", "command": "true", "cpu": 0.6, "memory_gb": 0.0625, "gpu": 1}
    ids = [api.post("/api/v1/training/run", json={**body, "name": f"j{i}"}).get_json()["id"] for i in range(3)]

    def step(job_id, expected, new, gpu_index=None):  # one transaction each, as the scheduler and runner write
        with app.app_context():
            assert jobs.transition(db.session, job_id, expected, new)
            if gpu_index is not None:
                db.session.add(JobPart(job_id=job_id, rank=0, node_id=node_id, gpu_indices=[gpu_index]))
            db.session.commit()

    step(ids[0], JobStatus.QUEUED, JobStatus.STARTING, gpu_index=0)
    step(ids[0], JobStatus.STARTING, JobStatus.RUNNING)
    step(ids[0], JobStatus.RUNNING, JobStatus.COMPLETED)
    step(ids[1], JobStatus.QUEUED, JobStatus.STARTING, gpu_index=0)  # after the first ended: fine
    with app.app_context():
        holds, capacity = holds_of_run(db.session)
    assert capacity == {"n0": (1000, 640, 2)}
    assert sorted((h.end is None, h.gpu_milli, h.cpu_milli) for h in holds) == [(False, {0: 1000}, 600),
                                                                                  (True, {0: 1000}, 600)]
    assert sweep(holds, capacity)["n0"].over == []

    step(ids[2], JobStatus.QUEUED, JobStatus.STARTING, gpu_index=0)  # placed, not started, beside the second
    with app.app_context():
        holds, capacity = holds_of_run(db.session)
    over = sweep(holds, capacity)["n0"].over
    assert len(over) == 2 and "cpu 1200 milli of 1000" in over[0] and "GPU 0 holds 2000 milli" in over[1]
