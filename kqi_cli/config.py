"""Where the CLI keeps its server and token: $XDG_CONFIG_HOME/kqi/config.json (default
~/.config/kqi/), readable by its owner only, since the token is a credential."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "kqi" / "config.json"


def load() -> dict[str, Any]:
    try:
        return json.loads(path().read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        return {}  # unreadable or damaged: as if logged out


def save(values: dict[str, Any]) -> Path:
    target = path()
    target.parent.mkdir(parents=True, exist_ok=True)
    target.parent.chmod(0o700)
    tmp = target.with_suffix(".tmp")
    # Created 0600 from the start, so the token is never readable by others, not even for a moment.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(values, fh, indent=2)
    os.chmod(tmp, 0o600)
    tmp.replace(target)
    return target
