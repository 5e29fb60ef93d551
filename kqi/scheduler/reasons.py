"""Why a job waits, in words: the one place the planner's reasons (model.Reason) become text.

The planner only says codes and numbers; the snapshot writes both the codes and these words, and
the API returns both (`pending_reason_codes`, `pending_reasons`). `noun` names what a node feature
allows ("notebooks" for the feature "notebook"): the kinds registry knows it, this module does not.

Also the reasons' JSON form, as stored and answered: {"code": ..., "params": {name: value}}.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import kqi.scheduler.model as model
from kqi.scheduler.model import WHOLE_GPU, Reason

# "<words> on <n> nodes", with " even when idle" when the count is over idle nodes.
PER_NODE_WORDS = {
    model.INSUFFICIENT_CPU: "insufficient cpu",
    model.INSUFFICIENT_MEMORY: "insufficient memory",
    model.INSUFFICIENT_GPUS: "insufficient gpus",
    model.INSUFFICIENT_GPU_SHARE: "no gpu with enough free share",
    model.NODE_UNSCHEDULABLE: "node unschedulable",
    model.TENANT_NOT_ALLOWED: "node closed to tenant",
}
# A quota's resource: (its name in words, units per shown unit, the unit shown after the numbers).
QUOTA_UNITS = {"cpu_milli": ("cpu", 1000, " cores"), "memory_mib": ("memory", 1024, " GiB"),
               "gpu_milli": ("gpu", WHOLE_GPU, "")}


def _nodes(count: int) -> str:
    return f"{count} node{'' if count == 1 else 's'}"


def _number(value: float) -> str:
    return f"{value:g}"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _quota(p: dict[str, Any]) -> str:
    name, unit, label = QUOTA_UNITS[p["resource"]]
    return (f"tenant {name} quota {_number(p['used'] / unit)}/{_number(p['limit'] / unit)}{label}"
            f" (job needs {_number(p['asked'] / unit)})")


def _reserved(p: dict[str, Any]) -> str:
    where = ", ".join(p["node_names"])
    if p["start_in_s"] is None:
        return f"reserved {where} (start unknown: running jobs there have no time limit)"
    return f"reserved {where} to start in {_duration(p['start_in_s'])}"


def _gang(p: dict[str, Any]) -> str:
    if p["when_idle"]:
        return f"gang of {p['parts']} parts, only {_nodes(p['nodes'])} can hold one"
    return f"gang of {p['parts']} parts fits on only {_nodes(p['nodes'])}"


def _feature_missing(p: dict[str, Any], noun: Callable[[str], str]) -> str:
    where = f" of partition {p['partition']}" if p["partition"] else ""
    return f"no node{where} allows {noun(p['feature'])}"


_PER_JOB: dict[str, Callable[[dict[str, Any]], str]] = {
    model.INVALID_GPU_REQUEST: lambda p: (f"invalid gpu request {p['gpu_milli']}: a share is below {WHOLE_GPU}, "
                                          f"whole GPUs are multiples of {WHOLE_GPU}"),
    model.INVALID_GANG_SIZE: lambda p: f"invalid gang size {p['parts']}",
    model.GANG_SHORT: _gang,
    model.NO_NODES: lambda p: "no nodes",
    model.PARTITION_EMPTY: lambda p: f"partition {p['partition']} has no nodes",
    model.QUOTA: _quota,
    model.RESERVED: _reserved,
    model.DELAYS_RESERVATION: lambda p: f"waiting behind reservation for job {p['job']}",
    model.BLOCKED_BEHIND: lambda p: f"waiting behind job {p['job']} (strict order)",
}


def render(reason: Reason, noun: Callable[[str], str] = str) -> str:
    """The reason in words; `noun(feature)` names what a node feature allows."""
    params = dict(reason.params)
    words = PER_NODE_WORDS.get(reason.code)
    if words is not None:
        return f"{words} on {_nodes(params['nodes'])}{' even when idle' if params.get('when_idle') else ''}"
    if reason.code == model.NODE_FEATURE_MISSING:
        return _feature_missing(params, noun)
    return _PER_JOB[reason.code](params)


def render_all(reasons: Iterable[Reason], noun: Callable[[str], str] = str) -> tuple[str, ...]:
    """Each reason in words, in order."""
    return tuple(render(reason, noun) for reason in reasons)


def to_json(reasons: Iterable[Reason]) -> list[dict[str, Any]]:
    return [{"code": r.code, "params": {name: list(value) if isinstance(value, tuple) else value
                                        for name, value in r.params}} for r in reasons]


def from_json(items: Iterable[dict[str, Any]] | None) -> tuple[Reason, ...]:
    """The reasons `to_json` wrote (JSON has lists where the reasons had tuples)."""
    return tuple(Reason.of(item["code"], **{name: tuple(value) if isinstance(value, list) else value
                                            for name, value in item["params"].items()})
                 for item in items or ())
