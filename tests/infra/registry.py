"""A real image registry (Debian's `docker-registry`, distribution 2.8) with htpasswd basic auth,
started inside one test engine's network namespace on 127.0.0.1:5000, so that engine pulls from
`localhost:5000/...` (Docker trusts plain http only for loopback registries). Stopped by pid."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import bcrypt

BINARY = "/usr/bin/docker-registry"
PORT = 5000


def missing_requirements() -> list[str]:
    missing = [] if os.path.exists(BINARY) else ["docker-registry (apt-get install docker-registry)"]
    if shutil.which("nsenter") is None:
        missing.append("nsenter")
    return missing


@dataclass
class Registry:
    host: str
    username: str
    password: str
    process: subprocess.Popen
    root: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()


def start_registry(root: Path, netns: str, username: str, password: str) -> Registry:
    root.mkdir(parents=True, exist_ok=True)
    (root / "htpasswd").write_text(f"{username}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()}\n")
    (root / "config.yml").write_text(f"""version: 0.1
storage:
  filesystem:
    rootdirectory: {root / 'data'}
http:
  addr: 127.0.0.1:{PORT}
auth:
  htpasswd:
    realm: kqi-test
    path: {root / 'htpasswd'}
""")
    log = open(root / "registry.log", "wb")
    process = subprocess.Popen(["nsenter", f"--net=/var/run/netns/{netns}", BINARY, "serve", str(root / "config.yml")],
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    registry = Registry(f"localhost:{PORT}", username, password, process, root)
    deadline = time.monotonic() + 20
    while True:  # the registry answers 401 on /v2/ once it listens; ask from inside the namespace
        probe = subprocess.run(["nsenter", f"--net=/var/run/netns/{netns}", "bash", "-c",
                                f"exec 3<>/dev/tcp/127.0.0.1/{PORT}"], capture_output=True)
        if probe.returncode == 0:
            return registry
        if process.poll() is not None or time.monotonic() > deadline:
            registry.stop()
            raise RuntimeError(f"registry did not start: {(root / 'registry.log').read_text()[-2000:]}")
        time.sleep(0.2)


