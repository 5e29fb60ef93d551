"""The API as a product: its OpenAPI document matches the routes, every list is paged with a total,
and the API fuzzed from its own document (schemathesis, in-process over WSGI) never answers 5xx
nor outside its schema."""
from __future__ import annotations

import re

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

import kqi
from kqi.models import Role
from tests.conftest import Factory, make_app

PREFIX = "/api/v1"


def _documented(spec):
    return {(path, method.upper()) for path, item in spec["paths"].items() for method in item}


def _routed(app):
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith(PREFIX + "/"):
            path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule.rule[len(PREFIX):])
            routes |= {(path, method) for method in rule.methods - {"HEAD", "OPTIONS"}}
    return routes


def test_openapi_document_is_public_and_matches_every_route(sqlite_app):
    response = sqlite_app.test_client().get(f"{PREFIX}/openapi.json")
    assert response.status_code == 200
    spec = response.get_json()
    assert spec["openapi"].startswith("3.") and spec["servers"] == [{"url": PREFIX}]
    routed, documented = _routed(sqlite_app), _documented(spec)
    assert routed - documented == set(), "routes missing from the OpenAPI document"
    assert documented - routed == set(), "documented paths that are not routes"
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            assert operation.get("summary") and operation["responses"]["default"], (method, path)


# Short configuration lists (a site has a handful of nodes, git servers, registries, tokens) that still
# answer every item at once; named so that no other list can join them unnoticed.
NOT_YET_PAGED = {"/account/git-tokens", "/account/registry-credentials", "/admin/git-servers", "/admin/nodes",
                 "/admin/registries", "/git-servers", "/registries"}


def test_every_list_route_is_paged_with_a_total(sqlite_app):
    spec = sqlite_app.test_client().get(f"{PREFIX}/openapi.json").get_json()
    admin = Factory(sqlite_app).api(admin=True, role=Role.ADMIN)
    paged, unpaged = set(), set()
    for path, item in spec["paths"].items():
        if "get" not in item or "{" in path:
            continue
        response = admin.get(f"{PREFIX}{path}?page=1&per_page=1")
        body = response.get_json(silent=True)
        if not (isinstance(body, dict) and "items" in body):
            continue
        if {"total", "page", "per_page"} <= set(body):
            assert body["per_page"] == 1 and len(body["items"]) <= 1 and isinstance(body["total"], int), path
            assert admin.get(f"{PREFIX}{path}?per_page=0").status_code == 400, path
            paged.add(path)
        else:
            unpaged.add(path)
    assert {"/training", "/admin/users", "/admin/tenants", "/admin/audit", "/tenant/members"} <= paged
    assert unpaged == NOT_YET_PAGED, sorted(unpaged)


# Operations that reach out to other machines (a node's engine, a git server) are left out of the fuzz:
# random addresses would make it wait on network timeouts rather than test the API.
REACHES_OUT = re.compile(r"^/admin/(nodes|git-servers|registries)")
MAX_EXAMPLES = 12
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def fuzz_target(tmp_path_factory):
    app = make_app(tmp_path_factory.mktemp("fuzz"), docker_timeout_s=1, login_max_failures=10_000)
    factory = Factory(app)
    admin = factory.api(admin=True, role=Role.ADMIN)
    admin.post(f"{PREFIX}/training/run", json={"name": "fuzzed", "image": "busybox", "command": "true", "cpu": 1,
                                                "memory_gb": 1})
    yield app, admin.token
    kqi.shutdown(app)


def test_fuzz_the_api_from_its_own_document(fuzz_target):
    """Every operation, MAX_EXAMPLES generated requests each (deterministic), as an administrator."""
    app, token = fuzz_target
    schema = schemathesis.openapi.from_wsgi(f"{PREFIX}/openapi.json", app)
    failures = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        if REACHES_OUT.match(operation.path):
            continue

        @given(operation.as_strategy())
        @settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck),
                  derandomize=True, database=None)
        def fuzz(case):
            case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=CHECKS)

        try:
            fuzz()
        except (Exception, BaseExceptionGroup) as exc:  # gather every operation's failure, not only the first
            failures[f"{operation.method.upper()} {operation.path}"] = str(exc)[:1500]
    assert not failures, "\n\n".join(f"{name}: {message}" for name, message in failures.items())
