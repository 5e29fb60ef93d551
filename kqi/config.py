"""Configuration: built-in defaults, then a TOML file, then environment variables, then overrides.

The defaults are the ones below plus each execution backend's own keys (`Backend.config`, merged
by the app factory: kqi/backends/registry.py `config_defaults`).

The TOML file is `config.toml` in the working directory, or the file named by `KQI_CONFIG`.
Keys in the file are lower-case (`port = 5000`); the environment uses `KQI_` + the upper-case key
(`KQI_PORT=5000`). Values from the environment are converted to the type of the default.
"""
from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

DEFAULTS: dict[str, Any] = {
    "host": "127.0.0.1",
    "port": 5000,
    "web_threads": 6,  # requests served at once (in each web process); the database pool keeps a connection for each
    "web_processes": 2,  # HTTP served by this many worker processes beside the scheduler's; 1: all in one process
    "instance": "instance",  # database, stored files, generated secrets
    "database_url": "",  # empty: SQLite in the instance folder
    "secret_key": "",  # empty: generated once and kept in the instance folder
    "encryption_key": "",  # Fernet key for secrets at rest; empty: generated once into the instance folder
    "token_ttl_hours": 24 * 7,
    "scheduler_enabled": True,
    "scheduler_interval_s": 2.0,  # fallback only: a submit wakes the loop at once
    "site_id": "",  # empty: generated once; labels this site's containers on shared engines
    "stop_grace_s": 10,  # SIGTERM, then SIGKILL after this long, when a job is halted or times out
    "heartbeat_timeout_s": 5.0,  # a node that does not answer its heartbeat (every tick) within this is Unreachable
    "node_offline_grace_s": 15.0,  # unreachable this long: Offline, and its jobs are lost
    "gpu_refresh_s": 60.0,  # how often nvidia-smi is read over SSH to see GPUs busy with others' processes
    "cluster_sample_interval_s": 60.0,  # the scheduler loop records GPU use and queue length this often (dashboard chart)
    "cluster_sample_retention_days": 7.0,  # older samples are deleted
    "requeue_on_node_loss": False,  # site default: a lost job goes back to the queue instead of Killed
    "scheduler_lease_s": 15.0,  # PostgreSQL: the scheduling process renews its lease each tick
    "log_tail_lines": 200,
    "tensorboard_idle_s": 1800.0,  # a TensorBoard whose container received nothing this long is stopped
    "exec_timeout_s": 30,  # a command run in a job's container from its page or POST .../exec
    "exec_output_kb": 64,  # what such a command prints beyond this is cut off
    "max_request_mb": 16,
    "login_max_failures": 5,  # failed logins per username and address within login_window_s, then 429
    "login_window_s": 60,
    "max_upload_gb": 100.0,  # one data upload or attachment (streamed to disk, never held in memory)
    "job_columns": 120,  # COLUMNS in every container, so progress bars (tqdm) draw in the stored log
    "git_allow_local": True,  # jobs may name repositories by a local path or file:// URL on the server
    "node_cache_gb": 100.0,  # each node's cache volumes of read-only inputs, LRU-evicted over this (a node may set its own)
}


class ConfigError(ValueError):
    pass


def _coerce(key: str, raw: str, default: Any) -> Any:
    if isinstance(default, bool):
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"KQI_{key.upper()} must be true or false, not {raw!r}")
    if isinstance(default, (int, float)):
        try:
            return type(default)(raw)
        except ValueError:
            raise ConfigError(f"KQI_{key.upper()} must be a number, not {raw!r}") from None
    return raw


def load(environ: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None,
         defaults: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Return the merged settings, lower-case keys, values typed as in the defaults (DEFAULTS, or
    `defaults`: DEFAULTS with the backends' keys)."""
    environ = os.environ if environ is None else environ
    defaults = DEFAULTS if defaults is None else defaults
    settings = dict(defaults)
    path = Path(environ.get("KQI_CONFIG", "config.toml"))
    if path.is_file():
        with path.open("rb") as fh:
            from_file = tomllib.load(fh)
        unknown = sorted(set(from_file) - set(defaults))
        if unknown:
            raise ConfigError(f"{path}: unknown setting(s): {', '.join(unknown)}")
        settings.update(from_file)
    elif "KQI_CONFIG" in environ:
        raise ConfigError(f"KQI_CONFIG names {path}, which does not exist")
    for key, default in defaults.items():
        raw = environ.get(f"KQI_{key.upper()}")
        if raw is not None:
            settings[key] = _coerce(key, raw, default)
    settings.update(overrides or {})
    return settings
