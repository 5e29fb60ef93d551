"""The `kqi` command: KAMONOHASHI's verbs over kqi's JSON API.

    kqi account login --server URL --username NAME [--tenant T]
    kqi training create --name N --image I --command C --cpu 1 --memory-gb 2
    kqi --json training list

The server and token are kept in ~/.config/kqi/config.json (0600); KQI_SERVER and KQI_TOKEN
override them for scripts. Exit codes: see kqi_cli.client (0 ok, 3 unauthorized, 4 forbidden,
5 not found, 6 invalid input, 7 server unreachable or failing, 8 job failed, 9 rate limited).
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path, PurePosixPath
from typing import Any

import click

from kqi_cli import client as api
from kqi_cli import config

FINISHED = {"Completed", "Failed", "Killed", "UserCanceled", "Error"}


class Context:
    def __init__(self, as_json: bool, quiet: bool):
        self.as_json = as_json
        self.quiet = quiet
        self.settings = config.load()

    def client(self, need_token: bool = True) -> api.Client:
        server = os.environ.get("KQI_SERVER") or self.settings.get("server", "")
        token = os.environ.get("KQI_TOKEN") or self.settings.get("token")
        if need_token and not token:
            raise api.ApiError("not logged in: run `kqi account login` first", api.UNAUTHORIZED)
        return api.Client(server, token)

    def show(self, value: Any, human) -> None:
        """JSON for scripts (--json), else the human rendering."""
        if self.as_json:
            click.echo(json.dumps(value, indent=2, ensure_ascii=False))
        else:
            human(value)


pass_ctx = click.make_pass_decorator(Context)


def table(rows: list[dict], columns: list[tuple[str, str]], total: int | None = None) -> None:
    cells = [[str("" if row.get(key) is None else row.get(key)) for key, _ in columns] for row in rows]
    widths = [max([len(title)] + [len(c[i]) for c in cells]) for i, (_, title) in enumerate(columns)]
    click.echo("  ".join(title.ljust(w) for (_, title), w in zip(columns, widths)).rstrip())
    for line in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip())
    if total is not None and total > len(rows):
        click.echo(f"({len(rows)} of {total}; --page and --per-page show more)")


def facts(value: dict) -> None:
    width = max(len(k) for k in value) if value else 0
    for key, item in value.items():
        shown = json.dumps(item, ensure_ascii=False) if isinstance(item, (dict, list)) else ("" if item is None else item)
        click.echo(f"{key.ljust(width)}  {shown}")


def paging_options(f):
    f = click.option("--page", type=click.IntRange(1), default=1, show_default=True)(f)
    return click.option("--per-page", type=click.IntRange(1, 100), default=20, show_default=True)(f)


@click.group()
@click.option("--json", "as_json", is_flag=True, help="print the API's JSON (for scripts)")
@click.option("--quiet", "-q", is_flag=True, help="no progress bars")
@click.version_option(package_name="kqi", message="kqi %(version)s")
@click.pass_context
def cli(ctx, as_json: bool, quiet: bool):
    """kqi: submit and follow training jobs, manage data and datasets."""
    ctx.obj = Context(as_json, quiet)


# -- account

@cli.group()
def account():
    """Log in, switch tenant, who am I."""


def _keep_token(ctx: Context, server: str, answer: dict, username: str | None = None) -> None:
    settings = dict(ctx.settings, server=server, token=answer["token"], tenant=answer["tenant"]["name"],
                    expires_at=answer["expires_at"])
    if username:
        settings["username"] = username
    config.save(settings)


@account.command()
@click.option("--server", "-s", envvar="KQI_SERVER", help="e.g. http://kqi.lan:5000 (default: the last one)")
@click.option("--username", "-u", prompt=True)
@click.option("--password", "-p", envvar="KQI_PASSWORD", prompt=True, hide_input=True)
@click.option("--tenant", "-t", help="default: your first tenant")
@pass_ctx
def login(ctx: Context, server: str | None, username: str, password: str, tenant: str | None):
    """Log in and keep the token in ~/.config/kqi/config.json (0600)."""
    server = server or ctx.settings.get("server")
    if not server:
        raise click.UsageError("--server is required the first time")
    body = {"username": username, "password": password, **({"tenant": tenant} if tenant else {})}
    answer = api.Client(server).json("POST", "/account/login", json=body)
    _keep_token(ctx, server, answer, username)
    ctx.show({"tenant": answer["tenant"], "expires_at": answer["expires_at"]},
             lambda v: click.echo(f"logged in to {server} as {username}, tenant {v['tenant']['name']}"))


@account.command("switch-tenant")
@click.argument("tenant")
@pass_ctx
def switch_tenant(ctx: Context, tenant: str):
    """Use another of your tenants from now on (a new token)."""
    client = ctx.client()
    answer = client.json("POST", "/account/tenant", json={"tenant": tenant})
    _keep_token(ctx, client.server, answer)
    ctx.show({"tenant": answer["tenant"]}, lambda v: click.echo(f"now in tenant {v['tenant']['name']}"))


@account.command("get")
@pass_ctx
def account_get(ctx: Context):
    """Who am I, in which tenant, with which role."""
    me = ctx.client().json("GET", "/account")
    ctx.show(me, lambda v: facts({"username": v["username"], "tenant": v["tenant"]["name"], "role": v["role"],
                                  "admin": v["is_admin"], "tenants": ", ".join(t["name"] for t in v["tenants"])}))


# -- training

@cli.group()
def training():
    """Training jobs: create, list, follow the log, get the outputs, halt, delete."""


def _kind() -> str:
    """The group a verb was called under: `kqi training ...` and `kqi inference ...` share the verbs."""
    return click.get_current_context().parent.info_name


JOB_COLUMNS = [("id", "ID"), ("name", "NAME"), ("status", "STATUS"), ("user", "USER"), ("node", "NODE"),
               ("cpu", "CPU"), ("memory_gb", "MEM GB"), ("gpu", "GPU"), ("created_at", "CREATED")]


@training.command("list")
@click.option("--status", help="only jobs in this state (Queued, Running, Completed ...)")
@click.option("--name", help="part of the name")
@click.option("--tag", help="one whole tag")
@click.option("--user", help="the submitter's username")
@click.option("--from", "created_from", help="created on or after (YYYY-MM-DD or ISO time, UTC)")
@click.option("--to", "created_to", help="created on or before (a date covers that day)")
@click.option("--favorites", is_flag=True, help="only the jobs you starred")
@paging_options
@pass_ctx
def training_list(ctx: Context, page: int, per_page: int, favorites: bool, **filters):
    params = {"page": page, "per_page": per_page, **{k: v for k, v in filters.items() if v}}
    if favorites:
        params["favorites"] = "true"
    columns = JOB_COLUMNS + ([("value", "VALUE")] if _kind() == "inference" else [])
    listing = ctx.client().json("GET", f"/{_kind()}", params=params)
    ctx.show(listing, lambda v: table(v["items"], columns, v["total"]))


@training.command("get")
@click.argument("job_id", type=int)
@pass_ctx
def training_get(ctx: Context, job_id: int):
    ctx.show(ctx.client().json("GET", f"/{_kind()}/{job_id}"), facts)


def _env(pairs: tuple[str, ...]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise click.BadParameter(f"{pair!r}: write NAME=value", param_hint="--env")
        env[name] = value
    return env


def _extra(pairs: tuple[str, ...]) -> dict[str, Any]:
    fields = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise click.BadParameter(f"{pair!r}: write FIELD=JSON-value", param_hint="--set")
        try:
            fields[name] = json.loads(value)
        except ValueError:
            fields[name] = value  # a bare word is a string
    return fields


@training.command("create")
@click.option("--name", "-n", required=True)
@click.option("--image", "-i", required=True)
@click.option("--command", "-c", required=True, help="run by /bin/sh -c in /kqi/git")
@click.option("--cpu", type=float, required=True)
@click.option("--memory-gb", type=float, required=True)
@click.option("--gpu", type=float, default=0, show_default=True, help="whole GPUs, or a share of one (0.25)")
@click.option("--env", "-e", multiple=True, metavar="NAME=value")
@click.option("--memo", default="")
@click.option("--time-limit-s", type=int)
@click.option("--priority", type=click.Choice(["low", "normal", "high"]), default="normal", show_default=True)
@click.option("--partition")
@click.option("--nodes", type=click.IntRange(1), default=1, show_default=True, help="gang size")
@click.option("--parent", "parents", type=int, multiple=True, metavar="JOB_ID",
              help="a parent run whose outputs are mounted at /kqi/parent (an inference needs one)")
@click.option("--set", "extra", multiple=True, metavar="FIELD=JSON",
              help="any other field of POST /training/run, e.g. --set dataset_id=3")
@pass_ctx
def training_create(ctx: Context, extra: tuple[str, ...], env: tuple[str, ...], parents: tuple[int, ...], **fields):
    """Submit a job; prints its id (with --json, the job)."""
    body = {k: v for k, v in fields.items() if v not in (None, "")}
    if env:
        body["env"] = _env(env)
    if parents:
        body["parent_ids"] = list(parents)
    body.update(_extra(extra))
    job = ctx.client().json("POST", f"/{_kind()}/run", json=body)
    ctx.show(job, lambda v: click.echo(v["id"]))


@training.command("log")
@click.argument("job_id", type=int)
@click.option("--follow", "-f", is_flag=True, help="keep printing until the job ends; exit 8 unless it Completed")
@click.option("--interval", type=float, default=2.0, show_default=True, help="seconds between polls with --follow")
@pass_ctx
def training_log(ctx: Context, job_id: int, follow: bool, interval: float):
    """The job's stdout and stderr."""
    client, kind = ctx.client(), _kind()
    out = sys.stdout.buffer
    shown = 0
    while True:
        job = client.json("GET", f"/{kind}/{job_id}")  # before the log: a job seen ended has its whole log stored
        data = client.request("GET", f"/{kind}/{job_id}/log").content
        if len(data) < shown:  # the live log was replaced by the stored one: start over from what is new
            shown = 0
        out.write(data[shown:])
        out.flush()
        shown = len(data)
        if not follow:
            return
        if job["status"] in FINISHED:
            if job["status"] != "Completed":
                click.echo(f"job {job_id} ended: {job['status']} {job.get('reason') or ''}".rstrip(), err=True)
                sys.exit(api.JOB_FAILED)
            return
        time.sleep(interval)


@training.command("list-files")
@click.argument("job_id", type=int)
@pass_ctx
def training_list_files(ctx: Context, job_id: int):
    """Files under the job's /kqi/output."""
    files = ctx.client().json("GET", f"/{_kind()}/{job_id}/files")
    ctx.show(files, lambda v: table(v["items"], [("path", "PATH"), ("size", "SIZE")]))


def _safe_target(dest: Path, relative: str) -> Path:
    """dest/relative, refusing names that would leave dest (the server's names are not trusted)."""
    parts = PurePosixPath(relative).parts
    if not parts or relative.startswith("/") or any(p in ("..", "") for p in parts):
        raise api.ApiError(f"refusing the unsafe file name {relative!r}", api.FAILURE)
    return dest.joinpath(*parts)


@training.command("download-files")
@click.argument("job_id", type=int)
@click.argument("paths", nargs=-1)
@click.option("--dest", "-d", type=click.Path(file_okay=False, path_type=Path), default=".", show_default=True)
@pass_ctx
def training_download_files(ctx: Context, job_id: int, paths: tuple[str, ...], dest: Path):
    """Download the job's output files (all of them, or the PATHS named) into --dest."""
    client, kind = ctx.client(), _kind()
    listed = client.json("GET", f"/{kind}/{job_id}/files")["items"]
    chosen = [f for f in listed if not paths or f["path"] in paths]
    missing = set(paths) - {f["path"] for f in chosen}
    if missing:
        raise api.ApiError(f"no such output file: {sorted(missing)[0]}", api.NOT_FOUND)
    done = []
    for f in chosen:
        target = _safe_target(dest, f["path"])
        size = client.download(f"/{kind}/{job_id}/files/{f['path']}", target, f["path"], ctx.quiet or ctx.as_json)
        done.append({"path": f["path"], "size": size, "saved_to": str(target)})
    ctx.show({"items": done}, lambda v: click.echo(f"{len(v['items'])} file(s) saved under {dest}"))


@training.command("halt")
@click.argument("job_id", type=int)
@pass_ctx
def training_halt(ctx: Context, job_id: int):
    job = ctx.client().json("POST", f"/{_kind()}/{job_id}/halt")
    ctx.show(job, lambda v: click.echo(f"{v['id']} {v['status']}{' (stopping)' if v['halt_requested'] and v['status'] not in FINISHED else ''}"))


@training.command("delete")
@click.argument("job_id", type=int)
@pass_ctx
def training_delete(ctx: Context, job_id: int):
    """Delete an ended job, its log and its outputs."""
    ctx.client().request("DELETE", f"/{_kind()}/{job_id}")
    ctx.show({"deleted": job_id}, lambda v: click.echo(f"deleted {job_id}"))


@cli.group(commands=dict(training.commands))
def inference():
    """Inference runs (parents: trainings; value.txt in the list): the training verbs, under /inference."""


# -- nodes

@cli.group()
def node():
    """Nodes (administrators)."""


@node.command("list")
@pass_ctx
def node_list(ctx: Context):
    nodes = ctx.client().json("GET", "/admin/nodes")
    ctx.show(nodes, lambda v: table(v["items"], [("id", "ID"), ("name", "NAME"), ("url", "URL"),
                                                 ("partition", "PARTITION"), ("cpu", "CPU"), ("gpus", "GPUS")]))


# -- data

@cli.group()
def data():
    """Data: files uploaded once, used by datasets."""


DATA_COLUMNS = [("id", "ID"), ("name", "NAME"), ("size", "SIZE"), ("user", "USER"), ("created_at", "CREATED")]


@data.command("list")
@click.option("--query", "-q", "search", help="search name, memo and tags")
@click.option("--tag")
@paging_options
@pass_ctx
def data_list(ctx: Context, search: str | None, tag: str | None, page: int, per_page: int):
    params = {"page": page, "per_page": per_page, **({"q": search} if search else {}), **({"tag": tag} if tag else {})}
    listing = ctx.client().json("GET", "/data", params=params)
    ctx.show(listing, lambda v: table(v["items"], DATA_COLUMNS, v["total"]))


@data.command("get")
@click.argument("data_id", type=int)
@pass_ctx
def data_get(ctx: Context, data_id: int):
    ctx.show(ctx.client().json("GET", f"/data/{data_id}"), facts)


FILES = click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))


@data.command("create")
@click.option("--name", "-n", required=True)
@click.option("--memo", default="")
@click.option("--tag", "tags", multiple=True)
@FILES
@pass_ctx
def data_create(ctx: Context, name: str, memo: str, tags: tuple[str, ...], files: tuple[Path, ...]):
    """Upload FILES as a new data record; prints its id."""
    fields = {"name": name, "memo": memo, "tags": ",".join(tags)}
    record = ctx.client().upload("/data", fields, list(files), "uploading", ctx.quiet or ctx.as_json)
    ctx.show(record, lambda v: click.echo(v["id"]))


@data.command("upload-files")
@click.argument("data_id", type=int)
@FILES
@pass_ctx
def data_upload_files(ctx: Context, data_id: int, files: tuple[Path, ...]):
    """Add FILES to a data record."""
    record = ctx.client().upload(f"/data/{data_id}/files", {}, list(files), "uploading", ctx.quiet or ctx.as_json)
    ctx.show(record, lambda v: click.echo(f"{len(v['files'])} file(s) in data {v['id']}"))


def _download_data(ctx: Context, client: api.Client, record: dict, dest: Path) -> list[dict]:
    done = []
    for f in record["files"]:
        target = _safe_target(dest, f["name"])
        size = client.download(f"/data/{record['id']}/files/{f['id']}", target, f["name"], ctx.quiet or ctx.as_json)
        done.append({"data_id": record["id"], "name": f["name"], "size": size, "saved_to": str(target)})
    return done


@data.command("download-files")
@click.argument("data_id", type=int)
@click.option("--dest", "-d", type=click.Path(file_okay=False, path_type=Path), default=".", show_default=True)
@pass_ctx
def data_download_files(ctx: Context, data_id: int, dest: Path):
    client = ctx.client()
    done = _download_data(ctx, client, client.json("GET", f"/data/{data_id}"), dest)
    ctx.show({"items": done}, lambda v: click.echo(f"{len(v['items'])} file(s) saved under {dest}"))


@data.command("delete")
@click.argument("data_id", type=int)
@pass_ctx
def data_delete(ctx: Context, data_id: int):
    ctx.client().request("DELETE", f"/data/{data_id}")
    ctx.show({"deleted": data_id}, lambda v: click.echo(f"deleted {data_id}"))


# -- datasets

@cli.group()
def dataset():
    """Datasets: data arranged by area (training, validation, testing), or flat."""


@dataset.command("list")
@paging_options
@pass_ctx
def dataset_list(ctx: Context, page: int, per_page: int):
    listing = ctx.client().json("GET", "/datasets", params={"page": page, "per_page": per_page})
    ctx.show(listing, lambda v: table(v["items"], [("id", "ID"), ("name", "NAME"), ("flat", "FLAT"),
                                                   ("locked", "LOCKED"), ("user", "USER"), ("created_at", "CREATED")],
                                      v["total"]))


@dataset.command("get")
@click.argument("dataset_id", type=int)
@pass_ctx
def dataset_get(ctx: Context, dataset_id: int):
    ctx.show(ctx.client().json("GET", f"/datasets/{dataset_id}"), facts)


@dataset.command("create")
@click.option("--name", "-n", required=True)
@click.option("--memo", default="")
@click.option("--training", "training_ids", multiple=True, type=int, help="a data id for the training area")
@click.option("--validation", "validation_ids", multiple=True, type=int)
@click.option("--testing", "testing_ids", multiple=True, type=int)
@click.option("--flat", "flat_ids", multiple=True, type=int, help="a data id of a flat dataset (no areas)")
@pass_ctx
def dataset_create(ctx: Context, name: str, memo: str, training_ids, validation_ids, testing_ids, flat_ids):
    if flat_ids and (training_ids or validation_ids or testing_ids):
        raise click.UsageError("--flat cannot be mixed with --training/--validation/--testing")
    body: dict[str, Any] = {"name": name, "memo": memo}
    if flat_ids:
        body.update(flat=True, data_ids=list(flat_ids))
    else:
        body["entries"] = {"training": list(training_ids), "validation": list(validation_ids),
                           "testing": list(testing_ids)}
    created = ctx.client().json("POST", "/datasets", json=body)
    ctx.show(created, lambda v: click.echo(v["id"]))


@dataset.command("download-files")
@click.argument("dataset_id", type=int)
@click.option("--dest", "-d", type=click.Path(file_okay=False, path_type=Path), default=".", show_default=True)
@pass_ctx
def dataset_download_files(ctx: Context, dataset_id: int, dest: Path):
    """Every file of the dataset: DEST/<area>/<data id>/<file> (DEST/<data id>/<file> when flat)."""
    client = ctx.client()
    found = client.json("GET", f"/datasets/{dataset_id}")
    areas = {"": found["data"]} if found.get("flat") else found["data"]
    done = []
    for area, entries in areas.items():
        for entry in entries:
            record = client.json("GET", f"/data/{entry['id']}")
            done += _download_data(ctx, client, record, dest / area / str(entry["id"]) if area else dest / str(entry["id"]))
    ctx.show({"items": done}, lambda v: click.echo(f"{len(v['items'])} file(s) saved under {dest}"))


@dataset.command("delete")
@click.argument("dataset_id", type=int)
@pass_ctx
def dataset_delete(ctx: Context, dataset_id: int):
    ctx.client().request("DELETE", f"/datasets/{dataset_id}")
    ctx.show({"deleted": dataset_id}, lambda v: click.echo(f"deleted {dataset_id}"))


# The other verbs' modules register their groups on `cli`; they import it from here, so they come last.
from kqi_cli import notebooks, preprocessing  # noqa: E402,F401,I001


def main() -> None:
    cli(prog_name="kqi")


if __name__ == "__main__":
    main()
