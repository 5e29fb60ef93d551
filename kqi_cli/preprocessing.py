"""`kqi preprocessing ...`: KAMONOHASHI's preprocessing verbs over /api/v1/preprocessings."""
from __future__ import annotations

import sys
from typing import Any

import click

from kqi_cli.main import Context, _env, cli, facts, paging_options, pass_ctx, table


@cli.group()
def preprocessing():
    """Preprocessing: definitions run on data items, each /kqi/output/{name}/ becoming new data."""


COLUMNS = [("id", "ID"), ("name", "NAME"), ("image", "IMAGE"), ("cpu", "CPU"), ("memory_gb", "MEM GB"), ("gpu", "GPU"),
           ("runs", "RUNS"), ("user", "USER"), ("created_at", "CREATED")]
HISTORY_COLUMNS = [("id", "RUN"), ("data", "DATA"), ("status", "STATUS"), ("outputs", "MADE"), ("node", "NODE"),
                   ("reason", "REASON"), ("created_at", "CREATED")]


def _fields(options: dict[str, Any], git: dict[str, str]) -> dict[str, Any]:
    body = {k: v for k, v in options.items() if v is not None}
    if git.get("repository"):
        body["git"] = {k: v for k, v in git.items() if v}
    return body


def definition_options(f):
    for option in reversed([
        click.option("--image", "-i"), click.option("--command", "-c", help="run by /bin/sh -c in /kqi/git"),
        click.option("--git-repository", help="pinned to a commit when saved"), click.option("--git-branch"),
        click.option("--git-commit"), click.option("--cpu", type=float), click.option("--memory-gb", type=float),
        click.option("--gpu", type=float), click.option("--partition"), click.option("--memo"),
    ]):
        f = option(f)
    return f


@preprocessing.command("list")
@paging_options
@pass_ctx
def preprocessing_list(ctx: Context, page: int, per_page: int):
    """The tenant's definitions, newest first."""
    listing = ctx.client().json("GET", "/preprocessings", params={"page": page, "per_page": per_page})
    ctx.show(listing, lambda v: table(v["items"], COLUMNS, v["total"]))


@preprocessing.command("get")
@click.argument("preprocessing_id", type=int)
@pass_ctx
def preprocessing_get(ctx: Context, preprocessing_id: int):
    """One definition."""
    ctx.show(ctx.client().json("GET", f"/preprocessings/{preprocessing_id}"), facts)


@preprocessing.command("create")
@click.option("--name", "-n", required=True)
@definition_options
@pass_ctx
def preprocessing_create(ctx: Context, git_repository, git_branch, git_commit, **options):
    """Define a preprocessing (only the name is required); prints its id."""
    body = _fields(options, {"repository": git_repository, "branch": git_branch, "commit": git_commit})
    created = ctx.client().json("POST", "/preprocessings", json=body)
    ctx.show(created, lambda v: click.echo(v["id"]))


@preprocessing.command("update")
@click.argument("preprocessing_id", type=int)
@click.option("--name", "-n")
@definition_options
@pass_ctx
def preprocessing_update(ctx: Context, preprocessing_id: int, git_repository, git_branch, git_commit, **options):
    """Change the options given (with history, not the image, code or command)."""
    body = _fields(options, {"repository": git_repository, "branch": git_branch, "commit": git_commit})
    if not body:
        raise click.UsageError("give at least one option to change")
    changed = ctx.client().json("PUT", f"/preprocessings/{preprocessing_id}", json=body)
    ctx.show(changed, facts)


@preprocessing.command("delete")
@click.argument("preprocessing_id", type=int)
@pass_ctx
def preprocessing_delete(ctx: Context, preprocessing_id: int):
    """Delete a definition without history."""
    ctx.client().request("DELETE", f"/preprocessings/{preprocessing_id}")
    ctx.show({"deleted": preprocessing_id}, lambda v: click.echo(f"deleted {preprocessing_id}"))


@preprocessing.command("run")
@click.argument("preprocessing_id", type=int)
@click.argument("data_ids", type=int, nargs=-1, required=True)
@click.option("--cpu", type=float, help="default: the definition's")
@click.option("--memory-gb", type=float)
@click.option("--gpu", type=float)
@click.option("--partition")
@click.option("--env", "-e", multiple=True, metavar="NAME=value")
@pass_ctx
def preprocessing_run(ctx: Context, preprocessing_id: int, data_ids: tuple[int, ...], env: tuple[str, ...], **options):
    """Run on DATA_IDS (one run each); prints the run ids."""
    body = {"data_ids": list(data_ids), **{k: v for k, v in options.items() if v is not None}}
    if env:
        body["env"] = _env(env)
    runs = ctx.client().json("POST", f"/preprocessings/{preprocessing_id}/run", json=body)
    ctx.show(runs, lambda v: click.echo("\n".join(str(r["id"]) for r in v["items"])))


def _history_rows(items: list[dict]) -> list[dict]:
    return [{**r, "data": f"{r['data']['id']} {r['data']['name']}",
             "outputs": ", ".join(f"{o['id']} {o['name']}" for o in r["outputs"])} for r in items]


@preprocessing.command("history")
@click.argument("preprocessing_id", type=int)
@paging_options
@pass_ctx
def preprocessing_history(ctx: Context, preprocessing_id: int, page: int, per_page: int):
    """The definition's runs: input data, status, the data they made."""
    listing = ctx.client().json("GET", f"/preprocessings/{preprocessing_id}/histories",
                                params={"page": page, "per_page": per_page})
    ctx.show(listing, lambda v: table(_history_rows(v["items"]), HISTORY_COLUMNS, v["total"]))


@preprocessing.command("log")
@click.argument("preprocessing_id", type=int)
@click.argument("run_id", type=int)
@pass_ctx
def preprocessing_log(ctx: Context, preprocessing_id: int, run_id: int):
    """A run's stdout and stderr."""
    data = ctx.client().request("GET", f"/preprocessings/{preprocessing_id}/histories/{run_id}/log").content
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


@preprocessing.command("halt")
@click.argument("preprocessing_id", type=int)
@click.argument("run_id", type=int)
@pass_ctx
def preprocessing_halt(ctx: Context, preprocessing_id: int, run_id: int):
    """Stop a queued or running run."""
    entry = ctx.client().json("POST", f"/preprocessings/{preprocessing_id}/histories/{run_id}/halt")
    ctx.show(entry, lambda v: click.echo(f"{v['id']} {v['status']}"))


@preprocessing.command("delete-history")
@click.argument("preprocessing_id", type=int)
@click.argument("run_id", type=int)
@pass_ctx
def preprocessing_delete_history(ctx: Context, preprocessing_id: int, run_id: int):
    """Delete an ended run and the data it made, so its data item can be preprocessed again."""
    ctx.client().request("DELETE", f"/preprocessings/{preprocessing_id}/histories/{run_id}")
    ctx.show({"deleted": run_id}, lambda v: click.echo(f"deleted run {run_id} and the data it made"))
