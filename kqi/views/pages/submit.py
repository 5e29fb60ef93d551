"""The submit form, in KAMONOHASHI's four steps: name, parents and dataset; image, code and
command; CPU, memory and GPU; environment, partition, attachments, memo, time limit, priority.

Every step is checked by the very service call the final submit makes (jobs.submit, the same as
POST /api/v1/training/run), inside a transaction that is rolled back, with stand-ins for the other
steps' required fields: no rule is written twice, and an error shows next to its field on its step.
Beside the form, the availability panel asks the scheduler whether the job would start now.

/training/new?copy=ID and /inference/new?copy=ID prefill every field from a run;
/inference/new?parent=ID prefills from a training and names it as the parent.
"""
from __future__ import annotations

import re
from contextlib import suppress
from functools import partial
from typing import Any

from flask import Response, render_template, request, url_for
from sqlalchemy import select

from kqi.accounts.auth import Principal
from kqi.data import datasets, gitsource
from kqi.data.blobs import BlobStore
from kqi.errors import ServiceError
from kqi.extensions import db
from kqi.jobs import lifecycle as jobs
from kqi.jobs import sources as job_sources
from kqi.models import Job, JobStatus
from kqi.scheduler import availability
from kqi.views import sealer, settings
from kqi.views.pages import blueprint, go_to, member_page, page, scheduler

STEPS = (
    ("Name and inputs", ("name", "parent_ids", "dataset_id")),
    ("Code and command", ("image", "git", "command", "pull")),
    ("Resources", ("cpu", "memory_gb", "gpu", "nodes")),
    ("Options", ("env", "partition", "files", "memo", "time_limit_s", "priority", "requeue_on_node_loss")),
)
STEP_OF = {field: number for number, (_, fields) in enumerate(STEPS, 1) for field in fields}
RESOURCE_FIELDS = ("cpu", "memory_gb", "gpu", "nodes", "partition", "priority", "time_limit_s")
DEFAULTS = {"cpu": "1", "memory_gb": "1", "gpu": "0", "nodes": "1", "priority": "normal"}
REQUIRED = ("name", "image", "command", "cpu", "memory_gb")  # sent even when empty: "... is required"
FLAGS = ("pull", "requeue_on_node_loss")
# A repository path on a registered git server: no "..", no scheme, no credentials.
REPO_PATH = re.compile(r"^[A-Za-z0-9_.~-]+(/[A-Za-z0-9_.~-]+)*$")
CHOICES_SHOWN = 200  # parents and datasets offered in the lists (newest first)
FINISHED = [s for s in JobStatus if s.finished]
TITLES = {"training": "New training", "inference": "New inference"}


# -- the form as typed <-> the API's body

def typed(form) -> dict[str, Any]:
    """The posted form as the template shows it again: text as typed, parents as a list."""
    values = {key: form.get(key, "") for key in form if key not in ("parent_ids", "keep_attachment")}
    parents = [p.strip() for value in form.getlist("parent_ids") for p in value.split(",") if p.strip()]
    values["parent_ids"] = parents
    values["keep_attachment"] = form.getlist("keep_attachment")
    for flag in FLAGS:
        values[flag] = "1" if form.get(flag) else ""
    return values


def _env(text: str) -> dict[str, str]:
    env = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ServiceError(f"env: write one NAME=value per line ({line.strip()[:40]!r} has no '=')", field="env")
        env[key.strip()] = value
    return env


def _git(session, values: dict[str, Any]) -> dict[str, str] | None:
    """{"repository", "branch"?, "commit"?}: a path on a chosen server, or a full URL / local path."""
    repository = values.get("git_repository", "").strip()
    server_id = values.get("git_server", "").strip()
    if server_id:
        server = next((s for s in gitsource.servers(session) if str(s.id) == server_id), None)
        if server is None:
            raise ServiceError("git: choose one of the listed servers", field="git")
        path = repository.strip("/")
        if not REPO_PATH.match(path) or ".." in path.split("/"):
            raise ServiceError("git: write the repository as a path on the server, e.g. team/model", field="git")
        repository = f"{server.url}/{path}"
    git = {"repository": repository, "branch": values.get("git_branch", "").strip(),
           "commit": values.get("git_commit", "").strip()}
    if not any(git.values()):
        return None
    return {key: value for key, value in git.items() if value}


def _ids(values: list[str], field: str, message: str) -> list[int]:
    if not all(value.isdigit() and len(value) < 19 for value in values):
        raise ServiceError(message, field=field)
    return [int(value) for value in values]


def body_of(session, values: dict[str, Any], fields) -> dict[str, Any]:
    """The API body for `fields` of the typed form (a field left empty is left out unless required)."""
    body: dict[str, Any] = {}
    for field in fields:
        if field == "env":
            body["env"] = _env(values.get("env", ""))
        elif field == "git":
            git = _git(session, values)
            if git is not None:
                body["git"] = git
        elif field == "parent_ids":
            if values.get("parent_ids"):
                body["parent_ids"] = _ids(values["parent_ids"], "parent_ids", "parent_ids: write job ids separated by commas")
        elif field == "dataset_id":
            if values.get("dataset_id", "").strip():
                body["dataset_id"] = _ids([values["dataset_id"].strip()], "dataset_id", "dataset_id must be a dataset id")[0]
        elif field in FLAGS:
            body[field] = bool(values.get(field))
        elif field == "command":
            body["command"] = values.get("command", "")
        elif field != "files":
            value = values.get(field, "").strip()
            if value or field in REQUIRED:
                body[field] = value
    return body


def prefill(session, job: Job) -> dict[str, Any]:
    """Every field of the form from a run (copy and run; inference from a training)."""
    run = jobs.as_dict(job)
    values = {key: "" if run[key] is None else str(run[key]) for key in ("name", "image", "memo", "partition", "priority")}
    values.update({
        "command": run["command"], "cpu": f"{run['cpu']:g}", "memory_gb": f"{run['memory_gb']:g}",
        "gpu": f"{run['gpu']:g}", "nodes": str(run["nodes"]),
        "time_limit_s": "" if run["time_limit_s"] is None else str(run["time_limit_s"]),
        "env": "\n".join(f"{k}={v}" for k, v in sorted(run["env"].items())),
        "dataset_id": "" if run["dataset_id"] is None else str(run["dataset_id"]),
        "parent_ids": [str(p) for p in run["parent_ids"]],
        "pull": "1" if run["pull"] else "", "requeue_on_node_loss": "1" if run["requeue_on_node_loss"] else "",
    })
    git = run["git"] or {}
    values.update(git_server="", git_repository=git.get("repository", ""), git_branch=git.get("branch") or "",
                  git_commit=git.get("commit", ""))
    server = _server_of(session, values["git_repository"])
    if server is not None:
        values.update(git_server=str(server.id), git_repository=values["git_repository"][len(server.url) + 1:])
    return values


def _server_of(session, url: str):
    """The registered server a repository URL lies on (the longest matching URL), if any."""
    found = [s for s in gitsource.servers(session) if url.startswith(s.url + "/")]
    return max(found, key=lambda s: len(s.url), default=None)


# -- checking and submitting

def check_steps(who: Principal, values: dict[str, Any], steps, kind: str) -> None:
    """Raise the first error of `steps`, found by jobs.submit itself on those steps' fields (with
    stand-ins for the rest), in a transaction that is always rolled back."""
    # Parents always: an inference's rule (a training parent) is checked on every submit.
    fields = list(dict.fromkeys(["parent_ids", *(field for number in steps for field in STEPS[number - 1][1])]))
    try:
        jobs.submit(db.session, settings(), sealer(), who, {**availability.STAND_INS, **body_of(db.session, values, fields)}, kind=kind)
    finally:
        db.session.rollback()


def _attach(job: Job, who: Principal, values: dict[str, Any], files, stored: list) -> None:
    """New files (stored as blobs, appended to `stored`) and those kept from the run the form
    copies (the same blobs, named again) become the job's attachments."""
    store = BlobStore(settings().instance_path)
    limit = settings().max_upload_bytes
    for upload in files:
        sha, size = store.put_chunks(iter(partial(upload.stream.read, 1 << 20), b""), limit)
        stored.append(sha)
        job_sources.add_attachment(db.session, job, upload.filename, sha, size)
    if values.get("copy_of", "").isdigit() and values["keep_attachment"]:
        source = jobs.get(db.session, who, int(values["copy_of"]))
        for row in job_sources.attachments(db.session, source):
            if str(row.id) in values["keep_attachment"]:
                job_sources.add_attachment(db.session, job, row.name, row.sha256, row.size)


def submit(who: Principal, values: dict[str, Any], files, kind: str) -> Job:
    """The whole form through jobs.submit, then its attachments; committed, or nothing is kept."""
    stored: list[str] = []
    try:
        job = jobs.submit(db.session, settings(), sealer(), who, body_of(db.session, values, [f for _, fs in STEPS for f in fs]), kind=kind)
        try:
            _attach(job, who, values, files, stored)
        except ServiceError as exc:  # too large, a bad or doubled name, a copied run gone: the files' step
            raise ServiceError(exc.message, field="files", status=exc.status) from None
        db.session.commit()
    except BaseException:
        db.session.rollback()
        BlobStore(settings().instance_path).discard_unreferenced(db.session, stored)
        raise
    return job


# -- what the form offers

def _choices(who: Principal, values: dict[str, Any]) -> dict[str, Any]:
    session = db.session
    parents = list(session.scalars(
        select(Job).where(Job.tenant_id == who.tenant.id, Job.kind == "training", Job.status.in_(FINISHED))
        .order_by(Job.id.desc()).limit(CHOICES_SHOWN)))
    shown = {job.id for job in parents}
    missing = [int(p) for p in values.get("parent_ids", []) if p.isdigit() and int(p) not in shown]
    if missing:  # a prefilled parent older than the list still shows, chosen
        parents += list(session.scalars(select(Job).where(Job.tenant_id == who.tenant.id, Job.id.in_(missing))))
    sets, _ = datasets.page(session, who, 1, CHOICES_SHOWN)
    chosen = values.get("dataset_id", "")
    copied = []
    # Not the tenant's, or gone since: nothing is offered, and the submit says why.
    with suppress(ServiceError):
        if chosen.isdigit() and int(chosen) not in {d.id for d in sets}:
            sets.append(datasets.get(session, who, int(chosen)))
    with suppress(ServiceError):
        if values.get("copy_of", "").isdigit():
            copied = job_sources.attachments(session, jobs.get(session, who, int(values["copy_of"])))
    return {"parents": parents, "datasets": sets, "servers": gitsource.servers(session), "copied": copied}


def panel(who: Principal, values: dict[str, Any]) -> dict[str, Any]:
    """The availability panel: the tenant's partitions, free capacity and quota, and the estimate
    for the resources typed so far (or why they cannot be estimated)."""
    state = availability.read_state(db.session)
    result: dict[str, Any] = availability.overview(state, who.tenant.name)
    try:
        body = body_of(db.session, values, RESOURCE_FIELDS)
        result["estimate"] = availability.estimate_in(state, availability.request_for(who, body, state.now))
    except ServiceError as exc:
        result["problem"] = exc
    db.session.rollback()  # read only
    return result


def _render(who: Principal, kind: str, values: dict[str, Any], step: int, error: ServiceError | None = None,
            status: int = 200) -> Response:
    response = page("training/new.html", "training/_form.html", kind=kind, title=TITLES[kind], form=values,
                    step=step, steps=STEPS, step_of=STEP_OF, error=error, avail=panel(who, values), **_choices(who, values))
    response.status_code = status
    return response


def _step_of(error: ServiceError, current: int) -> int:
    return STEP_OF.get(error.field or "", current)


# -- routes

def _new(who: Principal, kind: str):
    if request.method == "GET":
        values = {**DEFAULTS, "parent_ids": [], "keep_attachment": []}
        copy = request.args.get("copy")
        source_id = copy or (request.args.get("parent") if kind == "inference" else None)
        if source_id is not None:
            if not source_id.isdigit():
                return _render(who, kind, values, 1, ServiceError("copy and parent take a run's id", field=None), 400)
            # a copy is of this form's kind, a parent is a training; another tenant's run: 404
            source = jobs.get(db.session, who, int(source_id), kind if copy else "training")
            values = prefill(db.session, source)
            if copy:
                attached = job_sources.attachments(db.session, source)
                values.update(copy_of=str(source.id), keep_attachment=[str(a.id) for a in attached])
            else:
                values.update(parent_ids=[str(source.id)], memo="")
        return _render(who, kind, values, 1)

    values = typed(request.form)
    current = _clamp(request.form.get("step"), 1)
    target = request.form.get("to", "submit")
    try:
        if target != "submit":
            wanted = _clamp(target, current)
            if wanted > current:  # forward: the steps passed must hold; back: nothing is checked
                check_steps(who, values, range(current, wanted), kind)
            return _render(who, kind, values, wanted)
        files = [f for f in request.files.getlist("files") if f.filename]
        job = submit(who, values, files, kind)
    except ServiceError as exc:
        return _render(who, kind, values, _step_of(exc, current), exc, 422)
    scheduler().wake()
    target_url = _detail_url(job)
    return go_to(target_url)


def _clamp(value: Any, default: int) -> int:
    return min(max(int(value), 1), len(STEPS)) if str(value or "").isdigit() else default


def _detail_url(job: Job) -> str:
    return url_for("pages.inference_detail" if job.kind == "inference" else "pages.training_detail", job_id=job.id)


@blueprint.route("/training/new", methods=["GET", "POST"])
@member_page
def training_new(who):
    return _new(who, "training")


@blueprint.route("/inference/new", methods=["GET", "POST"])
@member_page
def inference_new(who):
    return _new(who, "inference")


@blueprint.post("/training/new/name")
@member_page
def check_name(who):
    """The name rule as the user types (the same check as the submit's)."""
    error = None
    try:
        jobs.parse_submission({**availability.STAND_INS, "name": request.form.get("name", "").strip()})
    except ServiceError as exc:
        error = exc
    return render_template("training/_name_check.html", error=error, name=request.form.get("name", ""))


@blueprint.post("/training/new/availability")
@member_page
def submit_availability(who):
    return render_template("training/_availability.html", avail=panel(who, typed(request.form)))
