"""Kinds' placement constraints as the pure planner sees them, and their words.

A kind that may run only on some nodes (kqi/jobs/kinds.py `node_flag`, or a capability its node's
backend must have, `needs`) is a node feature named after the kind: each node that allows the kind
has it (NodeView.features), and the kind's jobs need it (JobRequest.needs). When no node has it the
planner says `node_feature_missing` with the feature, and the kind's `noun` words it ("no node
allows notebooks").
"""
from __future__ import annotations

from collections.abc import Iterable

from kqi.jobs.kinds import constrained, kind_of
from kqi.models import Node
from kqi.scheduler import reasons
from kqi.scheduler.model import Reason

NO_NEEDS: frozenset[str] = frozenset()


def node_features(node: Node) -> frozenset[str]:
    """The constrained kinds the node allows."""
    return frozenset(kind.name for kind in constrained() if kind.allowed_on(node))


def needs(kind: str) -> frozenset[str]:
    """What a node must allow to run a job of this kind."""
    return frozenset((kind,)) if kind_of(kind).constrained else NO_NEEDS


def noun(feature: str) -> str:
    return kind_of(feature).noun or feature


def words(pending: Iterable[Reason]) -> tuple[str, ...]:
    """The reasons in words, features named by their kinds."""
    return reasons.render_all(pending, noun)
