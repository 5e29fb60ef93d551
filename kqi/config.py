"""Configuration: built-in defaults, then a TOML file, then environment variables, then overrides.

The defaults are the fields of `Settings` below plus each execution backend's own keys
(`Backend.config`, which the app factory passes in: kqi/backends/registry.py `config_defaults`);
those land in `Settings.backend`, a read-only mapping typed as their defaults.

The TOML file is `config.toml` in the working directory, or the file named by `KQI_CONFIG`.
Keys in the file are lower-case (`port = 5000`); the environment uses `KQI_` + the upper-case key
(`KQI_PORT=5000`). Values from the environment are converted to the type of the default; values
from the file or the overrides must already have it.

`load()` gives a `Settings`, one typed field per key. The app factory (kqi/__init__.py) completes
it once (the instance folder resolved, generated secrets and site id filled in) and hands it to
the domain, which reads nothing else: no module here reads a global or the Flask app.
"""
from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any

EXTENSION = "kqi_settings"  # where the app factory keeps the app's Settings (app.extensions)


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 5000
    web_threads: int = 6  # requests served at once (in each web process); the database pool keeps a connection for each
    web_processes: int = 2  # HTTP served by this many worker processes beside the scheduler's; 1: all in one process
    instance: str = "instance"  # database, stored files, generated secrets (the app factory makes it absolute)
    database_url: str = field(default="", repr=False)  # empty: SQLite in the instance folder; may hold a password
    secret_key: str = field(default="", repr=False)  # empty: generated once and kept in the instance folder
    encryption_key: str = field(default="", repr=False)  # Fernet key for secrets at rest; empty: generated once
    token_ttl_hours: int = 24 * 7
    scheduler_enabled: bool = True
    scheduler_interval_s: float = 2.0  # fallback only: a submit wakes the loop at once
    site_id: str = ""  # empty: generated once; labels this site's containers on shared engines
    stop_grace_s: int = 10  # SIGTERM, then SIGKILL after this long, when a job is halted or times out
    node_parallel_ops: int = 4  # container operations (start, stop, collect, remove) at once on each node
    heartbeat_timeout_s: float = 5.0  # a node that does not answer its heartbeat (every tick) within this is Unreachable
    node_offline_grace_s: float = 15.0  # unreachable this long: Offline, and its jobs are lost
    gpu_refresh_s: float = 60.0  # how often nvidia-smi is read over SSH to see GPUs busy with others' processes
    cluster_sample_interval_s: float = 60.0  # the scheduler loop records GPU use and queue length this often (dashboard chart)
    cluster_sample_retention_days: float = 7.0  # older samples are deleted
    requeue_on_node_loss: bool = False  # site default: a lost job goes back to the queue instead of Killed
    scheduler_lease_s: float = 15.0  # PostgreSQL: the scheduling process renews its lease each tick
    log_tail_lines: int = 200
    tensorboard_idle_s: float = 1800.0  # a TensorBoard whose container received nothing this long is stopped
    exec_timeout_s: int = 30  # a command run in a job's container from its page or POST .../exec
    exec_output_kb: int = 64  # what such a command prints beyond this is cut off
    max_request_mb: int = 16
    login_max_failures: int = 5  # failed logins per username and address within login_window_s, then 429
    login_window_s: int = 60
    max_upload_gb: float = 100.0  # one data upload or attachment (streamed to disk, never held in memory)
    job_columns: int = 120  # COLUMNS in every container, so progress bars (tqdm) draw in the stored log
    git_allow_local: bool = True  # jobs may name repositories by a local path or file:// URL on the server
    node_cache_gb: float = 100.0  # each node's cache volumes of read-only inputs, LRU-evicted over this (a node may set its own)
    # The execution backends' own keys (Backend.config), e.g. docker_timeout_s; read by the backends.
    backend: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def instance_path(self) -> Path:
        return Path(self.instance)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_gb * 2**30)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(Settings) if f.name != "backend"}


class ConfigError(ValueError):
    pass


def _coerce(key: str, raw: str, default: Any) -> Any:
    """An environment variable's text, as the type of the key's default."""
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


def _typed(key: str, value: Any, default: Any, where: str) -> Any:
    """A value from the file or the overrides, checked against the key's default (an int where a
    float is expected is taken as that float)."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(default, bool):
        ok, expected = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok, expected = number and isinstance(value, int), "a whole number"
    elif isinstance(default, float):
        ok, expected = number, "a number"
    else:
        ok, expected = isinstance(value, str), "text"
    if ok:
        return type(default)(value)
    raise ConfigError(f"{where}{key} must be {expected}, not {value!r}")


def _refuse_unknown(keys, defaults: Mapping[str, Any], where: str) -> None:
    unknown = sorted(set(keys) - set(defaults))
    if unknown:
        raise ConfigError(f"{where}unknown setting(s): {', '.join(unknown)}")


def load(environ: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None,
         backend_defaults: Mapping[str, Any] | None = None) -> Settings:
    """The merged settings: defaults, then the file, then the environment, then `overrides`.
    `backend_defaults`: the backends' own keys and their defaults (kqi.backends.config_defaults())."""
    environ = os.environ if environ is None else environ
    defaults = {**DEFAULTS, **(backend_defaults or {})}
    values = dict(defaults)
    path = Path(environ.get("KQI_CONFIG", "config.toml"))
    if path.is_file():
        with path.open("rb") as fh:
            from_file = tomllib.load(fh)
        _refuse_unknown(from_file, defaults, f"{path}: ")
        values.update({key: _typed(key, value, defaults[key], f"{path}: ") for key, value in from_file.items()})
    elif "KQI_CONFIG" in environ:
        raise ConfigError(f"KQI_CONFIG names {path}, which does not exist")
    for key, default in defaults.items():
        raw = environ.get(f"KQI_{key.upper()}")
        if raw is not None:
            values[key] = _coerce(key, raw, default)
    overrides = overrides or {}
    _refuse_unknown(overrides, defaults, "overrides: ")
    values.update({key: _typed(key, value, defaults[key], "overrides: ") for key, value in overrides.items()})
    backend = {key: values.pop(key) for key in list(values) if key not in DEFAULTS}
    return Settings(**values, backend=MappingProxyType(backend))
