"""The one error type services raise for bad requests, and the one JSON shape it becomes."""
from __future__ import annotations


class ServiceError(Exception):
    """A request that cannot be carried out, with what a user needs to correct it."""

    status = 400

    def __init__(self, message: str, field: str | None = None, code: str = "invalid", status: int | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        self.code = code
        if status is not None:
            self.status = status


class NotFound(ServiceError):
    status = 404

    def __init__(self, what: str):
        super().__init__(f"{what} not found", code="not_found")


class Conflict(ServiceError):
    status = 409

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message, field=field, code="conflict")
