"""Web UI sessions, kept server-side: signing in with an API token opens one, the browser holds only a random
secret (an ``HttpOnly``, ``SameSite=Strict`` cookie), and every request turns it back into the
:class:`~userbatch.facility.service.Identity` the token stands for — checked exactly as the API checks a bearer
token, every time, so a revoked token, a disabled user or an expired session ends the sign-in at once.

Each session has its own CSRF token; every form carries it and every POST is refused (403) without it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.engine import Engine

from ...tables.db import transaction
from .. import ledger
from ..models import TokenRow, WebSessionRow
from ..service import AuthError, Identity

#: How long a sign-in lasts unless the user signs out first.
DEFAULT_SESSION_HOURS = 12.0


@dataclass(frozen=True)
class WebSession:
    """A live sign-in: who, and the CSRF token its forms must carry."""

    identity: Identity
    csrf: str
    digest: str

    def csrf_ok(self, sent: str | None) -> bool:
        """Whether a form's CSRF field is this session's (compared in constant time)."""
        return isinstance(sent, str) and hmac.compare_digest(sent.encode(), self.csrf.encode())


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def open_session(engine: Engine, token: str, hours: float = DEFAULT_SESSION_HOURS) -> tuple[str, WebSession]:
    """Sign in with an API token: the browser's secret and the session, or
    :class:`~userbatch.facility.service.AuthError` for a token the API
    would refuse. A run's delegated token cannot sign in."""
    identity = Identity.from_token(token, engine)  # the API's own check, message included
    if identity.run_id:
        raise AuthError("a run's token cannot sign in to the web UI; use your own token")
    secret, csrf, now = secrets.token_urlsafe(32), secrets.token_urlsafe(32), ledger.now()
    digest = _digest(secret)
    with transaction(engine, lock=True) as s:
        row = s.scalars(select(TokenRow).where(TokenRow.digest == _digest(token))).first()
        if row is None:  # pragma: no cover - revoked between the two transactions
            raise AuthError("unknown or revoked token")
        s.execute(delete(WebSessionRow).where(WebSessionRow.expires_at <= now))  # sweep the expired ones
        s.add(WebSessionRow(digest=digest, user=identity.user, token_id=row.id, csrf=csrf, created_at=now,
                            expires_at=now + timedelta(hours=hours)))
    return secret, WebSession(identity, csrf, digest)


def resume_session(engine: Engine, secret: str | None) -> WebSession:
    """The session a browser's cookie names, or :class:`~userbatch.facility.service.AuthError` when there is none
    any more."""
    if not secret or not isinstance(secret, str) or len(secret) > 256:
        raise AuthError("not signed in")
    digest, now = _digest(secret), ledger.now()
    with transaction(engine) as s:
        row = s.get(WebSessionRow, digest)
        if row is None or ledger.aware(row.expires_at) <= now:
            raise AuthError("the session ended; sign in again")
        identity = Identity.from_token_row(s, s.get(TokenRow, row.token_id), now)
        return WebSession(identity, row.csrf, digest)


def close_session(engine: Engine, session: WebSession) -> None:
    """Sign out: the session's row goes, so its cookie no longer works anywhere."""
    with transaction(engine, lock=True) as s:
        s.execute(delete(WebSessionRow).where(WebSessionRow.digest == session.digest))


__all__ = ["DEFAULT_SESSION_HOURS", "WebSession", "close_session", "open_session", "resume_session"]
