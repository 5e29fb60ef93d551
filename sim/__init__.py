"""Trace simulator and workload generator for kqi's scheduler core (a dev tool, not part of the product).

It needs numpy and matplotlib (requirements-dev.txt); the `kqi` package never imports it.

    python -m sim --policy all --json                  # replay sim/traces/openb_first2000.csv
    python -m sim --generate multi-gpu --seed 7 ...    # a generated multi-GPU workload instead
    python -m sim.workload --seed 7 --out multi.csv    # the generated rows as CSV
"""
