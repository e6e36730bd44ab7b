"""The facility's web UI: server-rendered pages (Jinja2, with htmx to refresh the live parts) served by
``userbatch serve`` beside the API, acting through the signed-in user's :class:`~userbatch.facility.service.Facility`
so that a page
shows nothing the API would refuse. Only :mod:`userbatch.facility.api` imports it."""

from .routes import web_router

__all__ = ["web_router"]
