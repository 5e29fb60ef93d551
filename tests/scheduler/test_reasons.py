"""Reasons in words (reasons.render) for every code, and their JSON form, stored and answered."""
from __future__ import annotations

import json

import pytest

from kqi.scheduler import model
from kqi.scheduler.model import Reason
from kqi.scheduler.reasons import PER_NODE_WORDS, from_json, render, to_json

R = Reason.of
NOUNS = {"notebook": "notebooks", "tensorboard": "TensorBoards"}.__getitem__

CASES = [
    (R(model.INSUFFICIENT_CPU, nodes=1, when_idle=False), "insufficient cpu on 1 node"),
    (R(model.INSUFFICIENT_CPU, nodes=3, when_idle=True), "insufficient cpu on 3 nodes even when idle"),
    (R(model.INSUFFICIENT_MEMORY, nodes=2, when_idle=False), "insufficient memory on 2 nodes"),
    (R(model.INSUFFICIENT_GPUS, nodes=2, when_idle=True), "insufficient gpus on 2 nodes even when idle"),
    (R(model.INSUFFICIENT_GPU_SHARE, nodes=1, when_idle=False), "no gpu with enough free share on 1 node"),
    (R(model.NODE_UNSCHEDULABLE, nodes=4), "node unschedulable on 4 nodes"),
    (R(model.TENANT_NOT_ALLOWED, nodes=1), "node closed to tenant on 1 node"),
    (R(model.INVALID_GPU_REQUEST, gpu_milli=1500),
     "invalid gpu request 1500: a share is below 1000, whole GPUs are multiples of 1000"),
    (R(model.INVALID_GANG_SIZE, parts=0), "invalid gang size 0"),
    (R(model.GANG_SHORT, parts=3, nodes=2, when_idle=False), "gang of 3 parts fits on only 2 nodes"),
    (R(model.GANG_SHORT, parts=2, nodes=1, when_idle=True), "gang of 2 parts, only 1 node can hold one"),
    (Reason(model.NO_NODES), "no nodes"),
    (R(model.PARTITION_EMPTY, partition="h100"), "partition h100 has no nodes"),
    (R(model.NODE_FEATURE_MISSING, feature="notebook", partition=None), "no node allows notebooks"),
    (R(model.NODE_FEATURE_MISSING, feature="tensorboard", partition="gpu"),
     "no node of partition gpu allows TensorBoards"),
    # Quotas in cores, GiB and GPUs, numbers as short as they go (%g).
    (R(model.QUOTA, resource="gpu_milli", used=3000, limit=4000, asked=2000), "tenant gpu quota 3/4 (job needs 2)"),
    (R(model.QUOTA, resource="gpu_milli", used=500, limit=1000, asked=750),
     "tenant gpu quota 0.5/1 (job needs 0.75)"),
    (R(model.QUOTA, resource="cpu_milli", used=0, limit=8000, asked=12000),
     "tenant cpu quota 0/8 cores (job needs 12)"),
    (R(model.QUOTA, resource="memory_mib", used=1536, limit=65536, asked=102400),
     "tenant memory quota 1.5/64 GiB (job needs 100)"),
    # Seconds below 2 minutes, minutes below 2 hours, then hours with one decimal.
    (R(model.RESERVED, node_names=("a",), start_in_s=90.0), "reserved a to start in 90 s"),
    (R(model.RESERVED, node_names=("a", "b"), start_in_s=190.0), "reserved a, b to start in 3 min"),
    (R(model.RESERVED, node_names=("a",), start_in_s=9000.0), "reserved a to start in 2.5 h"),
    (R(model.RESERVED, node_names=("b",), start_in_s=None),
     "reserved b (start unknown: running jobs there have no time limit)"),
    (R(model.DELAYS_RESERVATION, job=812, nodes=2), "waiting behind reservation for job 812"),
    (R(model.BLOCKED_BEHIND, job=812), "waiting behind job 812 (strict order)"),
]


@pytest.mark.parametrize("reason, words", CASES, ids=[c[1] for c in CASES])
def test_each_reason_in_words(reason, words):
    assert render(reason, NOUNS) == words


def test_every_code_has_words_and_its_cases_their_params():
    assert {reason.code for reason, _ in CASES} == set(model.CODES)
    for reason, _ in CASES:
        assert tuple(name for name, _ in reason.params) == model.CODES[reason.code]


def test_features_without_a_noun_are_named_as_they_are():
    assert render(R(model.NODE_FEATURE_MISSING, feature="ssh", partition=None)) == "no node allows ssh"


def test_equal_counts_are_ordered_by_their_words():
    assert list(model.PER_NODE_ORDER) == sorted(PER_NODE_WORDS, key=PER_NODE_WORDS.get)


def test_json_form_round_trips_every_case():
    reasons = tuple(reason for reason, _ in CASES)
    stored = json.loads(json.dumps(to_json(reasons)))
    assert stored[0] == {"code": "insufficient_cpu", "params": {"nodes": 1, "when_idle": False}}
    assert stored[19] == {"code": "reserved", "params": {"node_names": ["a"], "start_in_s": 90.0}}
    assert from_json(stored) == reasons
    assert from_json(None) == () and to_json(()) == []


def test_params_are_sorted_by_name_however_given():
    assert R(model.QUOTA, used=1, resource="gpu_milli", asked=2, limit=3) == \
        Reason(model.QUOTA, (("asked", 2), ("limit", 3), ("resource", "gpu_milli"), ("used", 1)))
