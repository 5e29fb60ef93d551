"""The run history in a real browser: filters and stars on the list, a running job's page (live log,
shell, memo and tags, halt, delete), and the inference list with its value column.

Screenshots: runs-list, runs-detail-running, runs-detail-completed, runs-inference-list."""
from __future__ import annotations

import re
import zipfile

import pytest

from tests.conftest import ApiClient, wait_for
from tests.test_pages_browser import (  # noqa: F401
    IMAGE,
    TIMEOUT_MS,
    assert_no_reload,
    browser,
    cluster,
    live,
    mark_no_reload,
    page,
    shot,
)

SMALL = {"image": IMAGE, "cpu": 0.25, "memory_gb": 0.0625}


def as_page_user(server) -> ApiClient:
    """An API client for the user the browser logs in as (their stars are theirs)."""
    client = server.app.test_client()
    token = client.post("/api/v1/account/login", json={"username": server.username, "password": server.password})
    return ApiClient(client, token.get_json()["token"])


def wait_status(api, job_id, *statuses, kind="training"):
    return wait_for(lambda: (job := api.get(f"/api/v1/{kind}/{job_id}").get_json())["status"] in statuses and job,
                    timeout=90)


def test_history_filters_by_name_and_shows_only_favorites(page, live):  # noqa: F811
    from playwright.sync_api import expect

    api = as_page_user(live)
    made = {}
    for name in ("sweep-lr-1", "sweep-lr-2", "resnet-big"):  # queued on no node, then halted: ended at once
        made[name] = api.post("/api/v1/training/run", json={"name": name, "command": "true", **SMALL}).get_json()["id"]
        api.post(f"/api/v1/training/{made[name]}/halt")
    api.open(f"/api/v1/training/{made['resnet-big']}", "PATCH", json={"tags": ["baseline"]})

    page.goto("/training")
    mark_no_reload(page)
    rows = page.locator("#rows table.jobs tbody tr")
    page.fill("input[name=name]", "sweep")
    expect(rows).to_have_count(2)
    expect(rows.locator("td:nth-child(3) a:first-child")).to_have_text(["sweep-lr-2", "sweep-lr-1"])
    expect(page).to_have_url(re.compile(r"name=sweep"))
    star = rows.nth(1).locator("button.star")
    star.click()
    expect(star).to_have_attribute("aria-pressed", "true")
    page.fill("input[name=name]", "")
    expect(rows).to_have_count(3)
    page.check("input[name=favorites]")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("sweep-lr-1")
    page.uncheck("input[name=favorites]")
    page.locator("a.tag", has_text="baseline").click()  # a tag on a row filters by it
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("resnet-big")
    page.goto("/training?name=sweep")
    expect(rows).to_have_count(2)
    shot(page, "runs-list")
    assert api.get("/api/v1/training?favorites=1").get_json()["total"] == 1


@pytest.mark.engines
def test_inference_list_shows_the_value_column(page, cluster):  # noqa: F811
    from playwright.sync_api import expect

    api = as_page_user(cluster)
    training = api.post("/api/v1/training/run", json={"name": "to-score", "command": "echo 3 > /kqi/output/w.txt",
                                                      **SMALL}).get_json()["id"]
    wait_status(api, training, "Completed")
    inference = api.post("/api/v1/inference/run", json={
        "name": "scoring", "parent_ids": [training], **SMALL,
        "command": "echo scoring $(cat /kqi/parent/w.txt); echo 0.9375 > /kqi/output/value.txt"}).get_json()["id"]
    wait_status(api, inference, "Completed", kind="inference")

    page.click("header nav a:has-text('Inference')")
    expect(page.locator("h1")).to_have_text("Inference")
    headers = page.locator("#rows table.jobs thead th")
    expect(headers.nth(4)).to_have_text("Value")
    row = page.locator("#rows table.jobs tbody tr").first
    expect(row.locator("td.value")).to_have_text("0.9375")
    expect(row).to_contain_text("scoring")
    shot(page, "runs-inference-list")

    row.locator("a:has-text('scoring')").click()
    expect(page).to_have_url(re.compile(rf"/inference/{inference}$"))
    expect(page.locator("#job-value")).to_have_text("0.9375")
    expect(page.locator("#log-text")).to_contain_text("scoring 3")
    expect(page.locator("#files")).to_contain_text("value.txt")
    shot(page, "runs-detail-completed")
    with page.expect_download() as download:
        page.click("a:has-text('output.zip')")
    with zipfile.ZipFile(download.value.path()) as archive:
        assert archive.read("value.txt") == b"0.9375\n"
    page.goto(f"/training/{training}")
    expect(page.locator(".actions button:has-text('Delete')")).to_be_visible()
    page.click(".actions button:has-text('Delete')")  # the parent of an inference stays for its lineage
    expect(page.locator("#notice .error")).to_contain_text("parent of job")


@pytest.mark.engines
def test_running_job_page_log_shell_memo_halt_and_delete(page, cluster):  # noqa: F811
    from playwright.sync_api import expect

    api = as_page_user(cluster)
    job_id = api.post("/api/v1/training/run", json={
        "name": "live-one", "command": "echo tick-1; sleep 1; echo tick-2; sleep 300", **SMALL}).get_json()["id"]
    page.goto(f"/training/{job_id}")
    mark_no_reload(page)
    expect(page.locator("#job-status")).to_have_text("Running", timeout=TIMEOUT_MS)
    expect(page.locator("#log-text")).to_contain_text("tick-2", timeout=TIMEOUT_MS)  # the tail follows the log
    expect(page.locator("ol.timeline li")).to_have_count(3)  # submitted, Starting, Running

    page.fill("#shell input[name=command]", "echo in-$TRAINING_ID; ls /kqi")
    page.click("#shell button:has-text('Run')")
    result = page.locator("#exec-out .exec-result").first
    expect(result.locator("pre")).to_contain_text(f"in-{job_id}")
    expect(result.locator("pre")).to_contain_text("output")
    expect(result.locator("#exec-status")).to_have_text("exit code 0")

    page.click("#meta button:has-text('Edit')")
    page.fill("#meta textarea[name=memo]", "learning rate 0.1")
    page.fill("#meta input[name=tags]", "lr, bad\ttag")
    page.click("#meta button:has-text('Save')")
    expect(page.locator("#meta .error")).to_contain_text("is not a tag")
    page.fill("#meta input[name=tags]", "lr, first try")
    page.click("#meta button:has-text('Save')")
    expect(page.locator("#meta .memo")).to_have_text("learning rate 0.1")
    expect(page.locator("#meta a.tag")).to_have_text(["first try", "lr"])
    page.locator("h1 button.star").click()
    expect(page.locator("h1 button.star")).to_have_attribute("aria-pressed", "true")
    shot(page, "runs-detail-running")

    page.click("#status button:has-text('Halt')")
    expect(page.locator("#job-status")).to_have_text("UserCanceled", timeout=TIMEOUT_MS)
    expect(page.locator("ol.timeline li").last).to_contain_text("halted by user")
    assert_no_reload(page)
    page.reload()  # the actions of an ended job
    expect(page.locator("#shell")).to_have_count(0)
    expect(page.locator("a:has-text('Copy and run')")).to_have_count(1)
    page.click(".actions button:has-text('Delete')")
    expect(page).to_have_url(re.compile(r"/training$"))
    expect(page.locator(".flash")).to_have_text(f"Training {job_id} and its files were deleted.")
    assert api.get(f"/api/v1/training/{job_id}").status_code == 404
