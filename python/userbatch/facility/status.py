"""One mapping of the facility's exceptions to HTTP statuses, for the public API and the run API alike."""

from __future__ import annotations

from ..errors import AccessDenied, TableNotFound, UserbatchError
from .ledger import QuotaExceeded
from .service import AuthError, RunNotFound

#: Exception class -> HTTP status; the first match wins (subclasses before their bases), anything else is 400.
STATUS_OF: tuple[tuple[type[Exception], int], ...] = (
    (AuthError, 401),
    (AccessDenied, 403),
    (RunNotFound, 404),
    (TableNotFound, 404),
    (QuotaExceeded, 409),
)


def status_for(exc: UserbatchError) -> int:
    """The HTTP status of a user error (400 for any not named in :data:`STATUS_OF`)."""
    for cls, code in STATUS_OF:
        if isinstance(exc, cls):
            return code
    return 400


__all__ = ["STATUS_OF", "status_for"]
