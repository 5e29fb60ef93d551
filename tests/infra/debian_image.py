"""A realistic job image for end-to-end tests: Debian minbase with python3 and git.

debootstrap takes over a minute, so the root filesystem is built once per machine and kept as a
tarball under /var/cache/kqi-test/, named by a hash of the recipe: a changed recipe builds a new
one, an unchanged one is reused by every later session (and by CI on the same machine). Importing
the tarball into an engine (`docker import`) takes a few seconds.

``tarball()`` and ``import_into(engines, tag)`` are plain functions; the session fixture
``debian_image`` (import it into a test module) imports the image into the test engines.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import docker
import pytest

from tests.infra.plugin import missing_part

CACHE = Path(os.environ.get("KQI_TEST_CACHE", "/var/cache/kqi-test"))
RECIPE = {"suite": "bookworm", "variant": "minbase", "include": ["python3", "git"]}
DEFAULT_MIRROR = "http://deb.debian.org/debian"


def recipe_key() -> str:
    return hashlib.sha256(json.dumps(RECIPE, sort_keys=True).encode()).hexdigest()[:16]


def apt_mirror() -> str:
    """The Debian mirror apt already uses here (the only one reachable on a closed network)."""
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    if sources.is_file():
        found = re.search(r"^URIs:\s*(\S+)", sources.read_text(), re.MULTILINE)
        if found:
            return found.group(1)
    listing = Path("/etc/apt/sources.list")
    if listing.is_file():
        found = re.search(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+bookworm\s", listing.read_text(), re.MULTILINE)
        if found:
            return found.group(1)
    return DEFAULT_MIRROR


def missing_requirements() -> list[str]:
    missing = [exe for exe in ("debootstrap", "tar") if shutil.which(exe, path="/usr/sbin:/usr/bin:/sbin:/bin") is None]
    if os.geteuid() != 0:
        missing.append("root")
    return missing


def tarball() -> Path:
    """The cached root filesystem tarball, built (under a lock, once) when it is missing."""
    CACHE.mkdir(parents=True, exist_ok=True)
    target = CACHE / f"debian-{RECIPE['suite']}-{recipe_key()}.tar"
    with open(CACHE / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a concurrent session waits for the first build
        if target.is_file():
            return target
        work = Path(tempfile.mkdtemp(prefix="kqi-debian-", dir=CACHE))
        try:
            rootfs = work / "rootfs"
            subprocess.run(
                ["debootstrap", f"--variant={RECIPE['variant']}", f"--include={','.join(RECIPE['include'])}",
                 RECIPE["suite"], str(rootfs), apt_mirror()],
                check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                env={**os.environ, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
            )
            partial = work / "rootfs.tar"
            subprocess.run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(partial), "."], check=True)
            partial.replace(target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return target


def import_into(engines, tag: str) -> str:
    """Import the tarball as `tag` into every engine that does not have it yet."""
    path = None
    for engine in engines:
        client = docker.APIClient(base_url=engine.unix_url, timeout=300)
        try:
            if not client.images(name=tag):
                path = path or tarball()
                repository, _, version = tag.partition(":")
                client.import_image_from_file(str(path), repository=repository, tag=version or "latest",
                                              changes=["CMD [\"/bin/sh\"]"])
        finally:
            client.close()
    return tag


DEBIAN_IMAGE = "kqi-test/debian-python:1"


@pytest.fixture(scope="session")
def debian_image(docker_engines) -> str:
    """Debian minbase with python3 and git on every test engine (built once per machine)."""
    missing = missing_requirements()
    if missing:
        missing_part(f"Debian test image: missing {', '.join(missing)} (run scripts/test-deps.sh as root)")
    return import_into(docker_engines, DEBIAN_IMAGE)
