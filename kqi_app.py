"""kqi's entry point: `python kqi_app.py COMMAND`, and the app for `flask --app kqi_app`.

Commands: `run` (migrate, first admin, local node, serve: what `make run` does), `serve`,
`migrate`, `create-admin` (and `web-worker`, which `serve` starts itself: kqi/web_workers.py).
"""
from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import sys

from flask_migrate import upgrade

import kqi
from kqi import create_app
from kqi.config import ConfigError


def migrate(app) -> None:
    with app.app_context():
        upgrade(directory=app.extensions["migrate"].directory, revision="head")


def create_admin(app) -> None:
    from kqi.accounts import auth as accounts
    from kqi.extensions import db

    with app.app_context():
        user, generated = accounts.ensure_admin(db.session, os.environ.get("KQI_ADMIN_USER", "admin"),
                                                os.environ.get("KQI_ADMIN_PASSWORD"))
        db.session.commit()
        if generated:
            # Shown once: only its hash is kept.
            print(f"Created the first admin: user '{user.username}', password '{generated}'", flush=True)


def register_local_node(app) -> None:
    from kqi.cluster import registry as node_registry
    from kqi.extensions import db

    with app.app_context():
        node = node_registry.register_local_if_reachable(db.session, kqi.box_of(app))
        db.session.commit()
        if node is not None:
            print(f"Registered the local Docker engine as node 'local' ({node.cpu_milli // 1000} CPUs)", flush=True)


def _waitress(app, **where):
    from waitress import create_server

    # waitress accepts only 100 connections by default: the 101st API client (a `kqi training log -f`
    # keeps its connection) would wait until another disconnects.
    return create_server(app, threads=kqi.settings_of(app).web_threads, ident="kqi", connection_limit=1000, **where)


def _settle_heap() -> None:
    """Put what start-up built (modules, the app, its mappers: about 150,000 objects) out of the
    cyclic collector's sight, just before serving. Otherwise every full collection walks them all,
    holding the interpreter lock: under `python -m bench load` that stopped every request thread of
    a web process for about 100 ms, every 90 s or so."""
    gc.collect()
    gc.freeze()
    logging.getLogger("kqi").info("serving: %d start-up objects frozen out of the garbage collector", gc.get_freeze_count())


def _serve_until_stopped(server, app) -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop cleanly under systemd / kill
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        kqi.shutdown(app)


def serve(app) -> None:
    """The scheduler, and the web: in worker processes (kqi.web_workers) or, with web_processes 1, here."""
    from kqi import web_workers

    settings = kqi.settings_of(app)
    scheduler = app.extensions["kqi_scheduler"]
    if settings.web_processes < 1:
        raise ConfigError("web_processes must be at least 1")
    if settings.web_processes == 1:
        server = _waitress(app, host=settings.host, port=settings.port)
    else:
        listener = web_workers.listening_socket(settings.host, settings.port)
        supervisor = web_workers.Supervisor(settings.web_processes, listener, scheduler.wake)
    if settings.scheduler_enabled:
        scheduler.start(below_web=settings.web_processes > 1)
    print(f"kqi serving on http://{settings.host}:{settings.port}/", flush=True)  # listening already
    _settle_heap()
    if settings.web_processes == 1:
        _serve_until_stopped(server, app)
        return
    signal.signal(signal.SIGTERM, lambda *_: supervisor.stop())
    signal.signal(signal.SIGINT, lambda *_: supervisor.stop())
    try:
        supervisor.run()
    finally:
        listener.close()
        kqi.shutdown(app)


def web_worker(app) -> None:
    """One of serve's web processes: HTTP on the socket it was handed; wakes go to the scheduler's process."""
    from kqi import web_workers

    listener, wake = web_workers.worker_sockets()
    app.extensions["kqi_scheduler"].forward_wakes(web_workers.wake_sender(wake))
    server = _waitress(app, sockets=[listener])
    _settle_heap()
    _serve_until_stopped(server, app)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kqi_app.py", description="Run the kqi server.")
    # web-worker: started by serve for itself (kqi.web_workers), not by hand
    parser.add_argument("command", choices=["run", "serve", "migrate", "create-admin", "web-worker"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        app = create_app()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command in ("run", "migrate"):
        migrate(app)
    if args.command in ("run", "create-admin"):
        create_admin(app)
    if args.command == "run":
        register_local_node(app)
    if args.command in ("run", "serve"):
        try:
            serve(app)
        except ConfigError as exc:
            print(f"configuration error: {exc}", file=sys.stderr)
            return 2
    if args.command == "web-worker":
        web_worker(app)
    return 0


if __name__ == "__main__":
    sys.exit(main())
