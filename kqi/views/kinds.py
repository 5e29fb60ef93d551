"""One view for every kind of run with its own list and detail (kqi/jobs/history.py KINDS).

`/training/...` and `/inference/...` are served by the same function, which gets `kind`. The
training routes keep their endpoint names (`get_training`); the others' replace "training" with
their kind (`get_inference`), so url_for and the audit log name each kind's route."""
from __future__ import annotations

import functools

from flask import Blueprint

from kqi.jobs import history as runs


def kind_route(blueprint: Blueprint, rule: str, methods: tuple[str, ...] = ("GET",)):
    def register(view):
        for kind in runs.KINDS:
            # Bound here rather than as a rule default, so `kind` is no URL argument of the route.
            bound = functools.update_wrapper(functools.partial(view, kind=kind), view)
            blueprint.add_url_rule(f"/{kind}{rule}", endpoint=view.__name__.replace("training", kind),
                                   view_func=bound, methods=list(methods))
        return view

    return register


def lookup_kind(kind: str) -> str | None:
    """The kind a job must have to be found under /<kind>/<id>. The training routes find any run of
    the tenant: kinds without a page of their own (yet) open there."""
    return None if kind == "training" else kind
