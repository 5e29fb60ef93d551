"""A new job kind is one class registered in the kind registry: the runner, the snapshot and the
loop pick up its placement constraint and hooks without knowing it, on the real engines."""
from __future__ import annotations

from dataclasses import replace

import pytest

import kqi
from kqi.accounts.auth import principal_for_token
from kqi.extensions import db
from kqi.jobs import kinds
from kqi.jobs import lifecycle as jobs
from kqi.jobs.files import JobFiles
from kqi.models import Job, JobStatus
from tests.conftest import ticked, wait_for
from tests.test_training_on_engines import IMAGE, cluster  # noqa: F401  (fixture)

pytestmark = pytest.mark.engines


class ProbeKind(kinds.JobKind):
    """Runs only where TensorBoard is allowed, sets an env var, and says so when collected."""

    name, noun, node_flag = "probe", "probes", "allow_tensorboard"

    def __init__(self):
        self.started: list[int] = []
        self.enforced = 0

    def adapt(self, session, box, job, spec):
        return replace(spec, env={**spec.env, "KQI_PROBE": "adapted"})

    def on_started(self, session, driver, job):
        self.started.append(job.id)

    def on_collected(self, session, settings, job, status, reason):
        return status, f"probe collected with status {status.value}"

    def enforce(self, session, driver, settings, now):
        self.enforced += 1
        return []


@pytest.fixture
def probe_kind():
    kind = kinds.register(ProbeKind())
    yield kind
    kinds._REGISTRY.pop(kind.name)  # the registry is process-wide: leave it as other tests expect it


def test_a_registered_kind_is_placed_adapted_started_and_collected_through_its_hooks(cluster, probe_kind):
    with pytest.raises(ValueError):
        kinds.register(ProbeKind())  # a name is registered once
    for node_id in (1, 2):
        response = cluster.admin.put(f"/api/v1/admin/nodes/{node_id}", json={"allow_tensorboard": False})
        assert response.status_code == 200, response.get_json()
    with cluster.app.app_context():
        who = principal_for_token(db.session, cluster.api.token)
        job_id = jobs.submit(db.session, kqi.settings_of(cluster.app), kqi.box_of(cluster.app), who,
                             {"name": "probe-1", "image": IMAGE, "command": "echo probe=$KQI_PROBE", "cpu": 0.5,
                              "memory_gb": 0.25}, kind="probe").id
        db.session.commit()

    def job():
        with cluster.app.app_context():
            found = db.session.get(Job, job_id)
            return found.status, list(found.pending_reasons or []), found.reason

    ticked(cluster.scheduler)()  # and the kinds' checks it handed out
    status, reasons, _ = job()
    assert status == JobStatus.QUEUED and reasons == ["no node allows probes"], reasons
    with cluster.app.app_context():  # the kind's name is the node feature its jobs need
        assert db.session.get(Job, job_id).pending_reason_codes == [
            {"code": "node_feature_missing", "params": {"feature": "probe", "partition": None}}]
    assert probe_kind.enforced >= 1 and probe_kind.started == []

    response = cluster.admin.put("/api/v1/admin/nodes/1", json={"allow_tensorboard": True})
    assert response.status_code == 200, response.get_json()
    status, _, reason = wait_for(lambda: job()[0].finished and job(), timeout=60, tick=ticked(cluster.scheduler))
    assert status == JobStatus.COMPLETED and reason == "probe collected with status Completed"
    assert probe_kind.started == [job_id]
    assert b"probe=adapted" in JobFiles(cluster.app.instance_path, job_id).log.read_bytes()
