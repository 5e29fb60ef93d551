"""Responses that send what a job left (its log, an output file, output.zip) as it is read, for
the API and the pages alike: a stored file through send_file (ranges and conditional requests
included), a live read from a node piece by piece; neither is held in memory whole."""
from __future__ import annotations

from pathlib import Path

from flask import Response, send_file

from kqi.jobs.files import LOG_NAME, Streamed


def send(found: Streamed | Path, name: str, mimetype: str, attachment: bool = True) -> Response:
    if isinstance(found, Path):
        return send_file(found, mimetype=mimetype, as_attachment=attachment, download_name=name)
    response = send_file(found.file, mimetype=mimetype, as_attachment=attachment, download_name=name,
                         conditional=False)
    if found.size is not None:
        response.content_length = found.size
    return response


def log(found: Streamed | Path | None, attachment: bool = False) -> Response:
    """A job's log (runner.stream_log); empty when it has none yet."""
    if found is None:
        return Response(b"", mimetype="text/plain")
    return send(found, LOG_NAME, "text/plain", attachment)
