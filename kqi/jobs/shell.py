"""Run a command inside a running job's container (the page's shell button, POST .../exec).

The command runs in the job's own container only, never on the node: an argv list is executed as
is, a string as ["/bin/sh", "-c", string] inside that container (the user's own sandbox). It has
a time limit and an output cap (exec_timeout_s, exec_output_kb), and is audited with its text,
secrets masked."""
from __future__ import annotations

import re
import shlex
from typing import Any

from sqlalchemy.orm import Session

from kqi import validation as v
from kqi.accounts.auth import Principal
from kqi.admin import audit
from kqi.backends import registry as backends
from kqi.backends.base import NodeError
from kqi.errors import Conflict, ServiceError
from kqi.jobs import lifecycle as jobs
from kqi.jobs.runner import RunContext
from kqi.jobs.sources import SECRET_NAME
from kqi.models import JobStatus

COMMAND_MAX_CHARS = 16384
MAX_ARGS = 1000
MASK = "****"
# NAME=value and --name value / --name=value where the name looks like a secret's; credentials in headers.
_ASSIGN = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)=(?P<value>'[^']*'|\"[^\"]*\"|\S+)")
_FLAG = re.compile(r"(?P<name>--?[A-Za-z][A-Za-z0-9_-]*)(?P<sep>[= ]+)(?P<value>'[^']*'|\"[^\"]*\"|\S+)")
_HEADER = re.compile(r"(?i)\b(bearer|basic|token)\s+[^\s'\"]+")


def parse_command(body: Any) -> list[str]:
    body = v.require_object(body)
    v.reject_unknown(body, ("command",))
    command = body.get("command")
    if isinstance(command, str) and command.strip():
        argv = ["/bin/sh", "-c", command]
    elif isinstance(command, list) and command and all(isinstance(a, str) for a in command) and command[0]:
        argv = list(command)
    else:
        raise ServiceError("command must be a non-empty string (run by /bin/sh -c in the container) or a list of "
                           "strings (argv, run as is)", field="command")
    if len(argv) > MAX_ARGS or sum(len(a) for a in argv) > COMMAND_MAX_CHARS:
        raise ServiceError(f"command is too long (at most {COMMAND_MAX_CHARS} characters)", field="command")
    if any("\x00" in a for a in argv):
        raise ServiceError("command must not contain NUL characters", field="command")
    return argv


def masked(text: str, secrets: list[str]) -> str:
    """The command as the audit log keeps it: values of secret-looking names and of the job's own
    secret variables replaced by ****."""
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= 4:
            text = text.replace(secret, MASK)
    text = _ASSIGN.sub(lambda m: f"{m['name']}={MASK}" if SECRET_NAME.search(m["name"]) else m[0], text)
    text = _FLAG.sub(lambda m: f"{m['name']}{m['sep']}{MASK}" if SECRET_NAME.search(m["name"]) else m[0], text)
    return _HEADER.sub(lambda m: f"{m[1]} {MASK}", text)


def run(session: Session, ctx: RunContext, principal: Principal, job_id: int, body: Any, *, kind: str | None,
        timeout_s: float, limit_bytes: int, ip: str, audit_log: audit.AuditBuffer) -> dict[str, Any]:
    job = jobs.get(session, principal, job_id, kind)  # first: another tenant's job is not found, whatever the body
    argv = parse_command(body)
    master = job.parts[0] if job.parts else None
    if job.status != JobStatus.RUNNING or master is None or not master.container_id:
        raise Conflict(f"job {job.id} is {job.status.value}: commands run only in a running container")
    backend = backends.backend_for(master.node.url)
    if not backend.capabilities.exec:
        raise Conflict(f"job {job.id} runs on a {backend.name} node, where commands cannot run in a container")
    shown = argv[2] if argv[:2] == ["/bin/sh", "-c"] else shlex.join(argv)
    secrets = [value for name, value in (job.env or {}).items() if SECRET_NAME.search(name)]
    status = 409
    try:
        result = ctx.driver(master.node).exec(master.container_id, argv, timeout_s, limit_bytes)
        status = 200
    except NodeError as exc:
        raise Conflict(f"the command could not run in the container: {exc}") from None
    finally:  # the command itself, which the request's own audit row (route and path) lacks
        audit.record(audit_log, username=principal.user.username, tenant=principal.tenant.name, action="exec",
                     target=f"job {job.id}: {masked(shown, secrets)}", status=status, ip=ip)
    return {"exit_code": result.exit_code, "output": result.output.decode("utf-8", "replace"),
            "truncated": result.truncated, "timed_out": result.timed_out, "timeout_s": timeout_s}
