"""Checks for untrusted request values, shared by every service. Each raises ServiceError with
the field at fault, so the API and the pages show the same message next to the same input."""
from __future__ import annotations

import math
import re
import shlex
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from kqi.errors import ServiceError

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
# A node partition, and what a job may ask for: no spaces (the scheduler's own service labels have them).
PARTITION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
PARTITION_RULE = "letters, digits, '.', '_' and '-', starting with a letter or digit, at most 64"


def require_object(body: Any) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        raise ServiceError("the request body must be a JSON object", field=None)
    return body


def reject_unknown(body: Mapping[str, Any], allowed: Iterable[str]) -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise ServiceError(f"unknown field {unknown[0]}", field=unknown[0])


def text(body: Mapping[str, Any], field: str, *, required: bool = False, max_len: int = 256,
         pattern: re.Pattern | None = None, rule: str = "", default: str = "") -> str:
    value = body.get(field)
    if value is None or value == "":
        if required:
            raise ServiceError(f"{field} is required", field=field)
        return default
    if not isinstance(value, str):
        raise ServiceError(f"{field} must be a string", field=field)
    if len(value) > max_len:
        raise ServiceError(f"{field} is too long (at most {max_len} characters)", field=field)
    if "\x00" in value:
        raise ServiceError(f"{field} must not contain NUL characters", field=field)
    if pattern is not None and not pattern.match(value):
        raise ServiceError(f"{field}: {rule}", field=field)
    return value


def number(body: Mapping[str, Any], field: str, *, required: bool = False, minimum: float,
           maximum: float, exclusive_min: bool = False, integer: bool = False, default=None):
    value = body.get(field)
    if value is None or value == "":
        if required:
            raise ServiceError(f"{field} is required", field=field)
        return default
    if isinstance(value, str):  # form posts send text
        try:
            value = float(value.strip())
        except ValueError:
            raise ServiceError(f"{field} must be a number", field=field) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ServiceError(f"{field} must be a number", field=field)
    if integer and value != int(value):
        raise ServiceError(f"{field} must be a whole number", field=field)
    too_small = value <= minimum if exclusive_min else value < minimum
    if too_small:
        bound = "more than" if exclusive_min else "at least"
        raise ServiceError(f"{field} must be {bound} {minimum:g}", field=field)
    if value > maximum:
        raise ServiceError(f"{field} must be at most {maximum:g}", field=field)
    return int(value) if integer else value


def env_vars(value: Any, *, field: str = "env", reserved: Iterable[str] = (), max_count: int = 200) -> dict[str, str]:
    if value is None or value == "":
        return {}
    if not isinstance(value, Mapping):
        raise ServiceError(f"{field} must be an object of NAME: value", field=field)
    if len(value) > max_count:
        raise ServiceError(f"{field} has more than {max_count} variables", field=field)
    reserved = set(reserved)
    result = {}
    for name, raw in value.items():
        if not isinstance(name, str) or not ENV_NAME.match(name):
            raise ServiceError(f"{field}: {name!r} is not a valid variable name (letters, digits, '_', not starting with a digit)", field=field)
        if name in reserved or name.startswith("KQI_"):
            raise ServiceError(f"{field}: {name} is set by kqi and cannot be overridden", field=field)
        if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
            raise ServiceError(f"{field}: the value of {name} must be a string", field=field)
        raw = str(raw)
        if len(raw) > 4096 or "\x00" in raw:
            raise ServiceError(f"{field}: the value of {name} is too long or contains NUL", field=field)
        result[name] = raw
    return result


def moment(args: Mapping[str, Any], field: str, *, end_of_day: bool = False) -> datetime | None:
    """An ISO 8601 date or time (naive UTC, as stored). A bare date with `end_of_day` means the
    last moment of that day, so an inclusive upper bound covers the whole day."""
    value = args.get(field)
    if value is None or value == "":
        return None
    try:
        parsed = datetime.fromisoformat(str(value).removesuffix("Z"))
    except ValueError:
        raise ServiceError(f"{field} must be a date or time (ISO 8601)", field=field) from None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed + timedelta(days=1, microseconds=-1) if end_of_day and len(str(value)) == 10 else parsed


def paging(args: Mapping[str, Any], *, max_per_page: int = 100) -> tuple[int, int]:
    page = number(args, "page", minimum=1, maximum=1_000_000, integer=True, default=1)
    per_page = number(args, "per_page", minimum=1, maximum=max_per_page, integer=True, default=20)
    return page, per_page


# Shared by every kind's submit and the site's defaults
IMAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$")
MAX_CPU, MAX_MEMORY_GB, MAX_GPU = 1024, 16384, 64
PLACEHOLDERS = ("{port}", "{token}")  # what a site's service command template may name


def command_template(template: str, field: str) -> list[str]:
    """Split a site's command template into argv (shell quoting rules, no shell), checking that the
    only placeholders are {port} and {token}."""
    try:
        argv = shlex.split(template)
    except ValueError as exc:
        raise ServiceError(f"{field}: {exc}", field=field) from None
    if not argv:
        raise ServiceError(f"{field} must name a program", field=field)
    for element in argv:
        rest = element
        for placeholder in PLACEHOLDERS:
            rest = rest.replace(placeholder, "")
        if "{" in rest or "}" in rest:
            raise ServiceError(f"{field}: the only placeholders are {' and '.join(PLACEHOLDERS)}", field=field)
    return argv
