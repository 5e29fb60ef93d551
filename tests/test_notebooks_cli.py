"""`kqi notebook ...` against a live server with the test engines: create, list, get (the open
link answers), log, halt, rerun, delete, and the exit codes for refused input."""
from __future__ import annotations

import json

import pytest

from kqi.models import Role
from kqi_cli import client as exits
from tests.conftest import wait_for
from tests.test_cli import kqi, live, logged_in  # noqa: F401  (fixtures)
from tests.test_notebooks_on_engines import NOTEBOOK_COMMAND, reachable
from tests.test_training_on_engines import IMAGE

pytestmark = pytest.mark.engines


def test_notebook_verbs(kqi, live, docker_engines):  # noqa: F811
    admin = live.factory.api(admin=True, role=Role.ADMIN)
    for i, engine in enumerate(docker_engines):
        assert admin.post("/api/v1/admin/nodes", json={"name": f"cli-node{i + 1}", "url": engine.unix_url,
                                                       "address": engine.address}).status_code == 201
    assert admin.put("/api/v1/admin/settings", json={"notebook_image": IMAGE, "notebook_command": NOTEBOOK_COMMAND,
                                                     "default_cpu": 0.25, "default_memory_gb": 0.125}).status_code == 200
    logged_in(kqi, live)

    code, out, err = kqi("notebook", "create", "--name", "cli-nb", "--lifetime-hours", "1", "-e", "A=1")
    assert code == 0, err
    nb_id = int(out.strip())

    def shown():
        code, out, err = kqi("--json", "notebook", "get", str(nb_id))
        assert code == 0, err
        return json.loads(out)

    running = wait_for(lambda: shown()["url"] and shown(), timeout=60)
    assert running["status"] == "Running" and running["env"] == {"A": "1"} and running["lifetime_hours"] == 1
    assert wait_for(lambda: reachable(running["url"]), timeout=20) == b"lab\n"
    code, out, _ = kqi("notebook", "list")
    assert code == 0 and "cli-nb" in out and "Running" in out and running["url"] in out
    assert kqi("notebook", "log", str(nb_id))[0] == 0

    code, _, err = kqi("notebook", "rerun", str(nb_id))
    assert code == exits.INVALID and "stop it" in err  # 409: still running
    code, out, _ = kqi("notebook", "halt", str(nb_id))
    assert code == 0 and str(nb_id) in out
    wait_for(lambda: shown()["status"] == "UserCanceled", timeout=60)
    code, out, err = kqi("notebook", "rerun", str(nb_id))
    assert code == 0, err
    again = int(out.strip())
    assert again != nb_id
    assert kqi("notebook", "halt", str(again))[0] == 0
    wait_for(lambda: kqi("--json", "notebook", "get", str(again))[1].count('"UserCanceled"'), timeout=60)
    code, _, _ = kqi("notebook", "delete", str(nb_id))
    assert code == 0 and kqi("notebook", "get", str(nb_id))[0] == exits.NOT_FOUND
    code, _, err = kqi("notebook", "create", "--name", "Bad Name")
    assert code == exits.INVALID and "name" in err
    assert kqi("notebook", "create", "--name", "x", "--unlimited", "--lifetime-hours", "2")[0] == exits.USAGE
