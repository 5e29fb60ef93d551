"""kqi's entry point: `python kqi_app.py COMMAND`, and the app for `flask --app kqi_app`.

Commands: `run` (migrate, first admin, local node, serve: what `make run` does), `serve`,
`migrate`, `create-admin`.
"""
from __future__ import annotations

import argparse
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
    from kqi import accounts
    from kqi.extensions import db

    with app.app_context():
        user, generated = accounts.ensure_admin(db.session, os.environ.get("KQI_ADMIN_USER", "admin"),
                                                os.environ.get("KQI_ADMIN_PASSWORD"))
        db.session.commit()
        if generated:
            # Shown once: only its hash is kept.
            print(f"Created the first admin: user '{user.username}', password '{generated}'", flush=True)


def register_local_node(app) -> None:
    from kqi import node_registry
    from kqi.extensions import db

    with app.app_context():
        node = node_registry.register_local_if_reachable(db.session)
        db.session.commit()
        if node is not None:
            print(f"Registered the local Docker engine as node 'local' ({node.cpu_milli // 1000} CPUs)", flush=True)


def serve(app) -> None:
    from waitress import create_server

    settings = app.config["KQI"]
    scheduler = app.extensions["kqi_scheduler"]
    # waitress accepts only 100 connections by default: the 101st API client (a `kqi training log -f`
    # keeps its connection) would wait until another disconnects.
    server = create_server(app, host=settings["host"], port=settings["port"], threads=settings["web_threads"], ident="kqi",
                           connection_limit=1000)
    if settings["scheduler_enabled"]:
        scheduler.start()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop cleanly under systemd / kill
    print(f"kqi serving on http://{settings['host']}:{settings['port']}/", flush=True)  # listening already
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        kqi.shutdown(app)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kqi_app.py", description="Run the kqi server.")
    parser.add_argument("command", choices=["run", "serve", "migrate", "create-admin"])
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
        serve(app)
    return 0


if __name__ == "__main__":
    sys.exit(main())
