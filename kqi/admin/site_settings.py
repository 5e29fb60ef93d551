"""Site settings an administrator changes at run time: proxies for containers, the notebook image,
default resources, how much log and output a job may leave, the SMTP relay for job-end e-mail. Stored one row per key; absent keys keep
their defaults."""
from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from kqi import validation as v
from kqi.errors import ServiceError
from kqi.models.admin import SiteSetting

HOST = re.compile(r"^[A-Za-z0-9.-]{0,253}$")
EMAIL = re.compile(r"^[^@\s<>\"',;]{1,64}@[A-Za-z0-9.-]{1,190}$")
# A proxy value is one line without spaces (it goes into every container's environment).
PROXY = re.compile(r"^[^\s]*$")
PROXY_KEYS = ("http_proxy", "https_proxy", "no_proxy")
MIN_KEPT_GB, MAX_KEPT_GB = 0.001, 100_000  # max_log_gb and max_output_gb: a megabyte to 100 TB

DEFAULTS: dict[str, Any] = {
    "http_proxy": "",
    "https_proxy": "",
    "no_proxy": "",
    "notebook_image": "jupyter/base-notebook:latest",
    # Services' commands: split like a shell would (no shell runs them), {port} and {token} replaced
    "notebook_command": ("jupyter lab --ip=0.0.0.0 --port={port} --no-browser --allow-root "
                         "--IdentityProvider.token={token} --ServerApp.root_dir=/kqi"),
    "notebook_port": 8888,
    "tensorboard_image": "tensorflow/tensorflow:latest",
    "tensorboard_command": "tensorboard --logdir /kqi/parent --bind_all --port {port}",
    "tensorboard_port": 6006,
    "default_cpu": 1,
    "default_memory_gb": 1,
    "default_gpu": 0,
    # What one job may leave on the server's disk: each log (one per rank) and its kept /kqi/output.
    # Past them the job runs on; the excess is dropped, and its log, provenance and reason say so.
    "max_log_gb": 10,
    "max_output_gb": 50,
    "smtp_host": "",  # empty: no e-mail is sent
    "smtp_port": 25,
    "smtp_from": "kqi@localhost",
}


def _validate(body: dict, key: str) -> Any:
    if key in PROXY_KEYS:
        return v.text(body, key, max_len=1024, pattern=PROXY, rule="one value without spaces")
    if key == "notebook_image":
        return v.text(body, key, required=True, max_len=512, pattern=v.IMAGE, rule="not a valid image reference")
    if key in ("notebook_command", "tensorboard_command"):
        command = v.text(body, key, required=True, max_len=2000)
        v.command_template(command, key)
        return command
    if key in ("notebook_port", "tensorboard_port"):
        return v.number(body, key, required=True, minimum=1, maximum=65535, integer=True)
    if key == "tensorboard_image":
        return v.text(body, key, required=True, max_len=512, pattern=v.IMAGE, rule="not a valid image reference")
    if key == "default_cpu":
        return v.number(body, key, required=True, minimum=0, exclusive_min=True, maximum=v.MAX_CPU)
    if key == "default_memory_gb":
        return v.number(body, key, required=True, minimum=0.008, maximum=v.MAX_MEMORY_GB)
    if key == "default_gpu":
        return v.number(body, key, required=True, minimum=0, maximum=v.MAX_GPU)
    if key in ("max_log_gb", "max_output_gb"):
        return v.number(body, key, required=True, minimum=MIN_KEPT_GB, maximum=MAX_KEPT_GB)
    if key == "smtp_host":
        return v.text(body, key, max_len=253, pattern=HOST, rule="a host name or address")
    if key == "smtp_port":
        return v.number(body, key, required=True, minimum=1, maximum=65535, integer=True)
    if key == "smtp_from":
        return v.text(body, key, required=True, max_len=254, pattern=EMAIL, rule="an e-mail address")
    raise AssertionError(key)


def current(session: Session) -> dict[str, Any]:
    values = dict(DEFAULTS)
    values.update({row.key: row.value for row in session.scalars(select(SiteSetting)) if row.key in DEFAULTS})
    return values


def update(session: Session, body: Any) -> dict[str, Any]:
    """Change the keys given (all checked before any is written); return every setting."""
    body = v.require_object(body)
    v.reject_unknown(body, DEFAULTS)
    if not body:
        raise ServiceError("nothing to change: send one or more settings")
    checked = {key: _validate(body, key) for key in body}
    for key, value in checked.items():
        row = session.get(SiteSetting, key)
        if row is None:
            session.add(SiteSetting(key=key, value=value))
        else:
            row.value = value
    session.flush()
    return current(session)


def proxy_env(session: Session) -> dict[str, str]:
    """The proxies every container gets, under both spellings tools look for."""
    values = current(session)
    env = {}
    for key in PROXY_KEYS:
        if values[key]:
            env[key] = env[key.upper()] = values[key]
    return env
