"""`kqi preprocessing ...` against a live server: every verb, --json, and the exit codes of refusals."""
from __future__ import annotations

import json

from kqi_cli import client as exits
from tests.test_cli import kqi, live, logged_in  # noqa: F401  (fixtures)
from tests.test_training_on_engines import IMAGE


def test_preprocessing_verbs(kqi, live, tmp_path):  # noqa: F811
    logged_in(kqi, live, "cli-pre")
    raw = tmp_path / "raw.txt"
    raw.write_text("raw\n")
    code, out, err = kqi("data", "create", "-n", "raw", str(raw))
    assert code == 0, err
    data_id = out.strip()

    code, _, err = kqi("preprocessing", "create", "-n", "Bad Name")
    assert code == exits.INVALID and "(field: name)" in err
    code, out, err = kqi("preprocessing", "create", "-n", "crop")
    assert code == 0, err
    pre_id = out.strip()
    code, _, err = kqi("preprocessing", "run", pre_id, data_id)
    assert code == exits.INVALID and "without an image and a command" in err
    code, out, err = kqi("--json", "preprocessing", "update", pre_id, "-i", IMAGE, "-c", "mkdir -p /kqi/output/x",
                         "--cpu", "0.5", "--memory-gb", "0.25", "--memo", "crops")
    assert code == 0, err
    assert json.loads(out)["runnable"] is True and json.loads(out)["cpu"] == 0.5
    code, out, _ = kqi("preprocessing", "list")
    assert code == 0 and "crop" in out and IMAGE in out
    code, out, _ = kqi("preprocessing", "get", pre_id)
    assert code == 0 and "crops" in out

    code, out, err = kqi("preprocessing", "run", pre_id, data_id, "--gpu", "0", "-e", "SIZE=64")
    assert code == 0, err
    run_id = out.strip()
    code, _, err = kqi("preprocessing", "run", pre_id, data_id)
    assert code == exits.INVALID and f"run {run_id}" in err and "already preprocessed" in err
    code, out, _ = kqi("--json", "preprocessing", "history", pre_id)
    [entry] = json.loads(out)["items"]
    assert entry["id"] == int(run_id) and entry["data"]["id"] == int(data_id)
    code, out, _ = kqi("preprocessing", "history", pre_id)
    assert code == 0 and f"{data_id} raw" in out
    assert kqi("preprocessing", "log", pre_id, run_id)[0] == 0
    assert kqi("preprocessing", "update", pre_id, "-c", "true")[0] == exits.INVALID  # fixed by its history
    assert kqi("preprocessing", "delete", pre_id)[0] == exits.INVALID
    assert kqi("preprocessing", "delete-history", pre_id, run_id)[0] == exits.INVALID  # still queued
    code, out, _ = kqi("preprocessing", "halt", pre_id, run_id)
    assert code == 0 and "UserCanceled" in out
    assert kqi("preprocessing", "delete-history", pre_id, run_id)[0] == 0
    assert kqi("preprocessing", "log", pre_id, run_id)[0] == exits.NOT_FOUND
    assert kqi("preprocessing", "delete", pre_id)[0] == 0
    assert kqi("preprocessing", "get", pre_id)[0] == exits.NOT_FOUND
