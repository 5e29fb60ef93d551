"""The four-step submit form in a real browser against a live server with the test engines as
nodes: a bad name caught on step 1 and corrected, the availability panel following the resources,
the run reaching its page; then "copy and run" prefilling every step and submitting again."""
from __future__ import annotations

import re

import pytest

from kqi.models import Role
from tests.test_pages_browser import IMAGE, TIMEOUT_MS, browser, cluster, live, page, shot  # noqa: F401  (fixtures)

pytestmark = pytest.mark.engines


def next_step(page, number: int):
    from playwright.sync_api import expect

    page.click("button[name=to]:has-text('Next')")
    expect(page.locator(f"fieldset[data-step='{number}']")).to_be_visible()


def test_four_steps_with_a_corrected_name_then_copy_and_run(page, cluster):
    from playwright.sync_api import expect

    page.click("a:has-text('New training')")
    expect(page.locator("h1")).to_have_text("New training")
    expect(page.locator("ol.stepper li.on")).to_contain_text("Name and inputs")
    panel = page.locator("#availability")
    expect(panel.locator("table.free tbody tr td:first-child")).to_contain_text(["node1", "node2"])

    # step 1: the rule shows while typing, and Next refuses the bad name on the same step
    page.fill("input[name=name]", "Bad Name!")
    expect(page.locator("#name-check #err-name")).to_contain_text("lower-case letters")
    next_step_button = page.locator("button[name=to]:has-text('Next')")
    next_step_button.click()
    expect(page.locator("input[name=name]")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("fieldset[data-step='1']")).to_be_visible()
    expect(page.locator("#err-name")).to_be_visible()
    expect(page.locator("input[name=name]")).to_have_value("Bad Name!")
    shot(page, "submit-1-name-error")
    page.fill("input[name=name]", "steps-1")
    expect(page.locator("#name-check")).to_contain_text("a valid name")
    next_step(page, 2)

    # step 2: image and command (Enter in a field goes to the next step, not back to step 1)
    page.fill("input[name=image]", IMAGE)
    page.fill("textarea[name=command]", "echo steps-ran $GREETING; echo 3 > /kqi/output/value.txt")
    shot(page, "submit-2-code")
    page.press("input[name=image]", "Enter")
    expect(page.locator("fieldset[data-step='3']")).to_be_visible()

    # step 3: the panel follows the resources as they are typed
    page.fill("input[name=cpu]", "0.5")
    page.fill("input[name=memory_gb]", "0.25")
    page.fill("input[name=gpu]", "1")
    expect(panel.locator("#estimate")).to_contain_text(re.compile(r"Starts at once on node[12] \(GPU 0\)"))
    page.fill("input[name=gpu]", "3")
    expect(panel.locator("#estimate")).to_contain_text("insufficient gpus on 2 nodes even when idle")
    shot(page, "submit-3-resources-waits")
    page.fill("input[name=gpu]", "0")
    expect(panel.locator("#estimate")).to_contain_text("Starts at once on node")
    shot(page, "submit-3-resources")
    next_step(page, 4)

    # step 4: options, then the run's page
    page.fill("textarea[name=env]", "GREETING=hello")
    page.fill("textarea[name=memo]", "four steps")
    page.fill("input[name=time_limit_s]", "600")
    shot(page, "submit-4-options")
    page.click("button:has-text('Submit training')")
    page.wait_for_url(re.compile(r"/training/\d+$"))
    job_id = int(page.url.rsplit("/", 1)[1])
    expect(page.locator("h1")).to_contain_text("steps-1")
    expect(page.locator("#job-status")).to_have_text("Completed", timeout=TIMEOUT_MS)

    # copy and run: every step prefilled; only the name changes
    page.click("a:has-text('Copy and run')")
    expect(page.locator("h1")).to_contain_text(f"copy of run #{job_id}")
    for name, value in (("name", "steps-1"), ("image", IMAGE), ("cpu", "0.5"), ("memory_gb", "0.25"), ("gpu", "0"),
                        ("time_limit_s", "600")):
        expect(page.locator(f"input[name={name}]")).to_have_value(value)
    expect(page.locator("textarea[name=env]")).to_have_value("GREETING=hello")
    expect(page.locator("textarea[name=command]")).to_have_value("echo steps-ran $GREETING; echo 3 > /kqi/output/value.txt")
    page.fill("input[name=name]", "steps-1-copy")
    shot(page, "submit-5-copy-prefilled")
    for number in (2, 3, 4):
        next_step(page, number)
    expect(page.locator("textarea[name=memo]")).to_have_value("four steps")
    page.click("button:has-text('Submit training')")
    page.wait_for_url(re.compile(r"/training/\d+$"))
    copy_id = int(page.url.rsplit("/", 1)[1])
    assert copy_id != job_id
    expect(page.locator("#job-status")).to_have_text("Completed", timeout=TIMEOUT_MS)
    expect(page.locator("#log pre.log")).to_contain_text("steps-ran hello", timeout=TIMEOUT_MS)

    api = cluster.factory.api(admin=True, role=Role.ADMIN)
    original, copy = (api.get(f"/api/v1/training/{i}").get_json() for i in (job_id, copy_id))
    same = ("image", "command", "cpu", "memory_gb", "gpu", "env", "memo", "time_limit_s", "priority", "partition")
    assert {k: copy[k] for k in same} == {k: original[k] for k in same} and copy["name"] == "steps-1-copy"
