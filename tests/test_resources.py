"""The Resources value: the API's units in and out with today's numbers, integer arithmetic."""
from __future__ import annotations

import math

import pytest

from kqi.resources import ZERO, Resources, gb, limits_as_api, limits_from_api


@pytest.mark.parametrize("cpu, memory_gb, gpu, expected", [
    (0.1, 1.5, 0, Resources(100, 1536, 0)),  # 0.1 * 1000 is 100.00000000000001 in floating point
    (0.3, 0.3, 0.3, Resources(300, 308, 300)),  # 307.2 MiB rounds up: a job gets at least what it asked
    (1, 16, 1, Resources(1000, 16384, 1000)),
    (0.0001, 0.008, 0.25, Resources(1, 9, 250)),  # any CPU at all is at least one milli-core
    (2.675, 0.0009765625, 2, Resources(2675, 1, 2000)),
    (0, 0, 0, ZERO),
])
def test_from_api_keeps_the_numbers_the_submit_always_stored(cpu, memory_gb, gpu, expected):
    assert Resources.from_api(cpu, memory_gb, gpu) == expected
    # the rules it replaces (kqi/jobs/lifecycle.py before Resources), for any positive CPU
    if cpu > 0:
        assert expected.cpu_milli == max(1, round(cpu * 1000))
    assert expected.memory_mib == math.ceil(memory_gb * 1024) and expected.gpu_milli == round(gpu * 1000)


def test_every_whole_mib_and_milli_round_trips_through_the_api_units():
    for mib in range(1, 70_000, 7):
        assert Resources.from_api(1, mib / 1024).memory_mib == mib
    for milli in range(1, 20_000, 3):
        shown = Resources(milli, 8, milli).as_api()
        assert Resources.from_api(shown["cpu"], 1, shown["gpu"]) == Resources(milli, 1024, milli)


def test_as_api_shows_cores_gb_to_three_decimals_and_gpus():
    assert Resources(500, 256, 250).as_api() == {"cpu": 0.5, "memory_gb": 0.25, "gpu": 0.25}
    assert Resources(1, 307, 0).as_api() == {"cpu": 0.001, "memory_gb": 0.3, "gpu": 0.0}
    assert Resources(1, 307, 0).as_api(gb_digits=2)["memory_gb"] == 0.3 and gb(1500, 2) == 1.46
    assert Resources(1500, 1000, 2000).memory_gb == 1000 / 1024  # unrounded, for hours and sums


def test_a_rerun_asks_for_exactly_what_the_first_run_held():
    for held in (Resources(1, 307, 0), Resources(2675, 1, 250), Resources(999, 70_001, 3000)):
        assert Resources.from_api(**held.as_api(gb_digits=None)) == held
    assert Resources.from_api(**Resources(1, 307, 0).as_api()) != Resources(1, 307, 0)  # shown rounded: 308


def test_arithmetic_is_exact_and_fits_in_compares_every_amount():
    a, b = Resources(100, 512, 250), Resources(900, 512, 750)
    assert a + b == Resources(1000, 1024, 1000) and (a + b) - b == a
    assert a * 3 == 3 * a == Resources(300, 1536, 750)
    assert sum([a] * 10, ZERO) == Resources(1000, 5120, 2500)
    assert a.fits_in(b) and not b.fits_in(a) and ZERO.fits_in(a)
    assert not Resources(100, 513, 250).fits_in(Resources(100, 512, 250))
    assert not ZERO and a
    assert Resources.of(b) == b and b.as_fields() == {"cpu_milli": 900, "memory_mib": 512, "gpu_milli": 750}


def test_limits_keep_none_for_unlimited_and_round_each_amount():
    stored = limits_from_api({"cpu": 0.3, "memory_gb": 0.3, "gpu": None})
    assert stored == {"cpu_milli": 300, "memory_mib": 307, "gpu_milli": None}  # a limit rounds to the nearest
    assert limits_as_api(stored) == {"cpu": 0.3, "memory_gb": 0.3, "gpu": None}
    assert limits_as_api(stored, gb_digits=None)["memory_gb"] == 307 / 1024
    assert limits_from_api({}) == {"cpu_milli": None, "memory_mib": None, "gpu_milli": None}
