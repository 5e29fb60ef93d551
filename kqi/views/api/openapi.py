"""The OpenAPI 3 document, GET /api/v1/openapi.json (public), assembled from the `PATHS` dict of
every module of this package that is loaded (or its `paths()`, for a document that depends on what
is registered when it is built: the node backends), and small builders those modules use to write
their path items.

Every operation answers errors in one shape; an operation that lists no `default` response gets
one with that shape, so any status it does not list is still documented as an error."""
from __future__ import annotations

import sys
from typing import Any

from flask import current_app, jsonify

from kqi.scheduler.model import CODES
from kqi.views import api
from kqi.views.api import PUBLIC, blueprint

ERROR = {"$ref": "#/components/schemas/Error"}
REASON_CODES = {"type": "array", "items": {"$ref": "#/components/schemas/Reason"},
                "description": "why the job waits, as data: the same reasons as the words beside them, in order"}
COMPONENTS = {
    "schemas": {
        "Error": {
            "type": "object", "required": ["error"], "additionalProperties": False,
            "properties": {"error": {
                "type": "object", "required": ["code", "message", "field"], "additionalProperties": False,
                "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                               "field": {"type": ["string", "null"]}}}},
        },
        "Reason": {
            "type": "object", "required": ["code", "params"], "additionalProperties": False,
            "description": "One reason a job waits. Params by code: " + "; ".join(
                f"{code}: {', '.join(names) or '(none)'}" for code, names in CODES.items())
            + ". Counts of nodes are over the nodes of the job's partition; when_idle: even with nothing running"
              " there; resources (quota's resource) are cpu_milli, memory_mib or gpu_milli, in those units;"
              " start_in_s: seconds from the scheduler's pass that wrote it, null when unknown.",
            "properties": {"code": {"type": "string", "enum": list(CODES)},
                           "params": {"type": "object",
                                      "additionalProperties": {"type": ["string", "number", "boolean", "null",
                                                                        "array"]}}},
        },
    },
    "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                   "description": "a token from POST /account/login"}},
}
PAGING = [
    {"name": "page", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000000, "default": 1}},
    {"name": "per_page", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}},
]
NULLABLE_STRING = {"type": ["string", "null"]}
NULLABLE_NUMBER = {"type": ["number", "null"]}
NULLABLE_INTEGER = {"type": ["integer", "null"]}


def obj(properties: dict[str, Any], required: list[str] | tuple[str, ...] | None = None, **extra) -> dict[str, Any]:
    """An object schema; every property is required unless `required` says otherwise."""
    return {"type": "object", "properties": properties,
            "required": list(properties if required is None else required), **extra}


def page_of(item: dict[str, Any]) -> dict[str, Any]:
    return obj({"items": {"type": "array", "items": item}, "total": {"type": "integer", "minimum": 0},
                "page": {"type": "integer"}, "per_page": {"type": "integer"}})


def path_id(name: str, description: str = "") -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}}


def query(name: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    return {"name": name, "in": "query", "schema": schema, "description": description}


def body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def ok(schema: dict[str, Any], description: str = "OK", status: int = 200) -> dict[str, Any]:
    return {str(status): {"description": description, "content": {"application/json": {"schema": schema}}}}


def error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ERROR}}}


def op(summary: str, responses: dict[str, Any], *, tags: list[str], parameters: list | None = None,
       request: dict[str, Any] | None = None, public: bool = False, description: str = "") -> dict[str, Any]:
    """One operation. `responses` holds the successes (and any error worth its own words)."""
    operation: dict[str, Any] = {"summary": summary, "tags": tags, "responses": dict(responses)}
    if description:
        operation["description"] = description
    if parameters:
        operation["parameters"] = parameters
    if request is not None:
        operation["requestBody"] = request
    if public:
        operation["security"] = []
    return operation


def _modules():
    """The API's modules that are loaded, so registered (the import line in kqi/views/api/__init__.py)."""
    prefix = api.__name__ + "."
    return [module for name, module in sorted(sys.modules.items()) if name.startswith(prefix)]


def document() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for module in _modules():
        documented = module.paths() if hasattr(module, "paths") else getattr(module, "PATHS", {})
        for path, item in documented.items():
            merged = paths.setdefault(path, {})
            for method, operation in item.items():
                if method in merged:
                    raise RuntimeError(f"{module.__name__} documents {method.upper()} {path} a second time")
                operation = dict(operation)
                operation["responses"] = {"default": error("an error, in the one error shape"),
                                          **operation.get("responses", {})}
                merged[method] = operation
    return {"openapi": "3.1.0",
            "info": {"title": "kqi API", "version": "1",
                     "description": "The JSON API of kqi. Errors: {\"error\": {\"code\", \"message\", \"field\"}}."},
            "servers": [{"url": blueprint.url_prefix}],
            "security": [{"bearer": []}],
            "paths": dict(sorted(paths.items())),
            "components": COMPONENTS}


PUBLIC.add("api.openapi_json")


@blueprint.get("/openapi.json")
def openapi_json():
    spec = current_app.extensions.get("kqi_openapi")
    if spec is None:
        spec = current_app.extensions["kqi_openapi"] = document()
    return jsonify(spec)


PATHS = {
    "/openapi.json": {"get": op("This document", ok({"type": "object"}), tags=["meta"], public=True)},
}
