"""`kqi inference ...` (the training verbs under /inference) and the history filters of `kqi training
list`, against a live server with its scheduler running on a real engine."""
from __future__ import annotations

import json

from kqi.models import Role
from kqi_cli import client as exits
from tests.test_cli import kqi, live, logged_in  # noqa: F401  (fixtures)

IMAGE = "kqi-test/busybox:1"
SMALL = ("--cpu", "0.2", "--memory-gb", "0.0625")


def test_inference_verbs_and_history_filters(kqi, live, tmp_path, docker_engines_clean):  # noqa: F811
    admin = live.factory.api(admin=True, role=Role.ADMIN)
    engine = docker_engines_clean[0]
    assert admin.post("/api/v1/admin/nodes", json={"name": "runs-node", "url": engine.unix_url}).status_code == 201
    logged_in(kqi, live, tenant="runs-cli")
    code, out, err = kqi("training", "create", "-n", "base-model", "-i", IMAGE, "-c", "echo 7 > /kqi/output/m.txt", *SMALL)
    assert code == 0, err
    training = int(out)
    assert kqi("training", "log", str(training), "-f", "--interval", "0.3")[0] == 0

    code, _, err = kqi("inference", "create", "-n", "orphan", "-i", IMAGE, "-c", "true", *SMALL)
    assert code == exits.INVALID and "parent" in err
    code, out, err = kqi("inference", "create", "-n", "scored", "-i", IMAGE, "--parent", str(training), *SMALL,
                         "-c", "cat /kqi/parent/m.txt; echo 0.5 > /kqi/output/value.txt")
    assert code == 0, err
    inference = int(out)
    code, out, err = kqi("inference", "log", str(inference), "--follow", "--interval", "0.3")
    assert code == 0 and out.strip() == "7", err

    code, out, _ = kqi("inference", "list")
    header, row = out.splitlines()[:2]
    assert header.split()[-1] == "VALUE" and row.split()[0] == str(inference) and row.split()[-1] == "0.5"
    code, out, _ = kqi("--json", "inference", "get", str(inference))
    assert json.loads(out)["value"] == 0.5 and json.loads(out)["parent_ids"] == [training]
    assert "value.txt" in kqi("inference", "list-files", str(inference))[1]
    assert kqi("inference", "download-files", str(inference), "-d", str(tmp_path / "out"))[0] == 0
    assert (tmp_path / "out" / "value.txt").read_text() == "0.5\n"
    assert kqi("inference", "get", str(training))[0] == exits.NOT_FOUND  # a training is no inference

    code, out, _ = kqi("--json", "training", "list", "--name", "base")
    assert [j["id"] for j in json.loads(out)["items"]] == [training]
    assert json.loads(kqi("--json", "training", "list", "--favorites")[1])["total"] == 0
    assert kqi("training", "list", "--from", "not-a-date")[0] == exits.INVALID

    assert kqi("inference", "halt", str(inference))[0] == exits.INVALID  # already ended
    assert kqi("inference", "delete", str(inference))[0] == 0
    assert kqi("inference", "get", str(inference))[0] == exits.NOT_FOUND
