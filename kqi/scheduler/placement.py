"""Kinds' placement constraints as the pure planner sees them.

The planner matches a job's partition against each node's labels and knows nothing of kinds. A
kind that may run only on some nodes (kqi/jobs/kinds.py `node_flag`, or a capability its node's
backend must have, `needs`) is given a label of its own on each node that allows it, one per
partition of the node, and its jobs ask for that label.
`readable_reasons` words the planner's "partition ... has no nodes" for such a label as a person
would ("no node allows notebooks").
"""
from __future__ import annotations

import re
from collections.abc import Iterable

from kqi.jobs.kinds import constrained, kind_of
from kqi.models import Node

_NO_NODES = re.compile(r"^partition (\S+) for (\S+)s has no nodes$")


def _label(kind: str, partition: str | None) -> str:
    """Real partition names have no spaces (kqi.validation.PARTITION): these never clash with one."""
    return f"{partition or '*'} for {kind}s"


def node_labels(node: Node, labels: list[str]) -> frozenset[str]:
    """The node's partition labels plus, for each constrained kind it allows, that kind's labels."""
    extra = set()
    for kind in constrained():
        if kind.allowed_on(node):
            extra.update(_label(kind.name, label) for label in [None, *labels])
    return frozenset(labels) | extra


def request_partition(kind: str, partition: str | None) -> str | None:
    """The partition label a queued job asks the planner for."""
    return _label(kind, partition) if kind_of(kind).constrained else partition


def readable_reasons(reasons: Iterable[str]) -> tuple[str, ...]:
    def one(reason: str) -> str:
        found = _NO_NODES.match(reason)
        if not found:
            return reason
        partition, kind = found.groups()
        where = "" if partition == "*" else f" of partition {partition}"
        return f"no node{where} allows {kind_of(kind).noun}"

    return tuple(one(r) for r in reasons)
