"""`kqi notebook ...`: notebooks (JupyterLab) over the API, KAMONOHASHI's verbs."""
from __future__ import annotations

import sys

import click

from kqi_cli.main import (
    FINISHED,
    Context,
    _env,
    _extra,
    cli,
    facts,
    paging_options,
    pass_ctx,
    table,
)

COLUMNS = [("id", "ID"), ("name", "NAME"), ("status", "STATUS"), ("node", "NODE"), ("cpu", "CPU"),
           ("memory_gb", "MEM GB"), ("gpu", "GPU"), ("remaining_s", "LEFT S"), ("url", "OPEN")]


@cli.group()
def notebook():
    """Notebooks: create, list, open link, log, halt, run again, delete."""


@notebook.command("list")
@click.option("--status", help="only notebooks in this state (Queued, Running, Killed ...)")
@paging_options
@pass_ctx
def notebook_list(ctx: Context, status: str | None, page: int, per_page: int):
    params = {"page": page, "per_page": per_page, **({"status": status} if status else {})}
    listing = ctx.client().json("GET", "/notebooks", params=params)
    ctx.show(listing, lambda v: table(v["items"], COLUMNS, v["total"]))


@notebook.command("get")
@click.argument("notebook_id", type=int)
@pass_ctx
def notebook_get(ctx: Context, notebook_id: int):
    """One notebook; `url` is its "open notebook" link (with its token) while it runs."""
    ctx.show(ctx.client().json("GET", f"/notebooks/{notebook_id}"), facts)


@notebook.command("create")
@click.option("--name", "-n", required=True)
@click.option("--image", "-i", help="default: the site's notebook image")
@click.option("--cpu", type=float)
@click.option("--memory-gb", type=float)
@click.option("--gpu", type=float)
@click.option("--lifetime-hours", type=float, help="default: the tenant's; see --unlimited")
@click.option("--unlimited", is_flag=True, help="no lifetime (only where the tenant allows it)")
@click.option("--env", "-e", multiple=True, metavar="NAME=value")
@click.option("--memo")
@click.option("--partition")
@click.option("--set", "extra", multiple=True, metavar="FIELD=JSON",
              help="any other field of POST /notebooks/run, e.g. --set dataset_id=3")
@pass_ctx
def notebook_create(ctx: Context, extra: tuple[str, ...], env: tuple[str, ...], unlimited: bool, **fields):
    """Start a notebook; prints its id (with --json, the notebook)."""
    if unlimited and fields.get("lifetime_hours") is not None:
        raise click.UsageError("--unlimited and --lifetime-hours exclude each other")
    body = {k: v for k, v in fields.items() if v not in (None, "")}
    if unlimited:
        body["lifetime_hours"] = None
    if env:
        body["env"] = _env(env)
    body.update(_extra(extra))
    created = ctx.client().json("POST", "/notebooks/run", json=body)
    ctx.show(created, lambda v: click.echo(v["id"]))


@notebook.command("log")
@click.argument("notebook_id", type=int)
@pass_ctx
def notebook_log(ctx: Context, notebook_id: int):
    out = sys.stdout.buffer
    out.write(ctx.client().request("GET", f"/notebooks/{notebook_id}/log").content)
    out.flush()


@notebook.command("halt")
@click.argument("notebook_id", type=int)
@pass_ctx
def notebook_halt(ctx: Context, notebook_id: int):
    job = ctx.client().json("POST", f"/notebooks/{notebook_id}/halt")
    stopping = job["halt_requested"] and job["status"] not in FINISHED
    ctx.show(job, lambda v: click.echo(f"{v['id']} {v['status']}{' (stopping)' if stopping else ''}"))


@notebook.command("rerun")
@click.argument("notebook_id", type=int)
@pass_ctx
def notebook_rerun(ctx: Context, notebook_id: int):
    """Run an ended notebook again with its /kqi/output restored; prints the new run's id."""
    ctx.show(ctx.client().json("POST", f"/notebooks/{notebook_id}/rerun"), lambda v: click.echo(v["id"]))


@notebook.command("delete")
@click.argument("notebook_id", type=int)
@pass_ctx
def notebook_delete(ctx: Context, notebook_id: int):
    ctx.client().request("DELETE", f"/notebooks/{notebook_id}")
    ctx.show({"deleted": notebook_id}, lambda v: click.echo(f"deleted {notebook_id}"))
