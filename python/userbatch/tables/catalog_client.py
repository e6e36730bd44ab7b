"""The catalog as a run sees it: the facility's run API over a Unix socket, with the run's delegated token.

A run executes as its owner with no database URL (:mod:`userbatch.facility.isolation`), so it cannot open the
facility database; :class:`~.catalog.Catalog` hands every call to this client instead. The facility answers as the
run's owner: it lists and resolves only tables the owner may read, registers tables only in namespaces the owner
may write (at the location the facility chooses), and sets the table directory's owner and mode itself.
"""

from __future__ import annotations

from ..errors import AccessDenied, TableExists, TableNotFound, UserbatchError
from ..extras import require

#: HTTP status -> the exception the in-process catalog raises for the same refusal.
_ERRORS = {403: AccessDenied, 404: TableNotFound, 409: TableExists}


class CatalogClient:
    """The catalog operations of :class:`~.catalog.Catalog`, answered by the facility: entries travel as JSON
    (:meth:`~.catalog.TableEntry.to_json`); the catalog turns them back into entries."""

    def __init__(self, socket_path: str, token: str, timeout_s: float = 60.0):
        httpx = require("httpx", "facility", what="a run's catalog (the facility's run API)")

        self._client = httpx.Client(transport=httpx.HTTPTransport(uds=socket_path), base_url="http://userbatch",
                                    headers={"Authorization": f"Bearer {token}"}, timeout=timeout_s)

    def _call(self, method: str, path: str, **kwargs):
        import httpx  # present: __init__ required it

        try:
            r = self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise UserbatchError(f"the facility's run API did not answer ({exc}); is the run still alive?") from None
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail", r.text)
            except ValueError:
                detail = r.text
            raise _ERRORS.get(r.status_code, UserbatchError)(str(detail))
        return r.json()

    def list(self, namespace: str | None = None) -> list[dict]:
        params = {"namespace": namespace} if namespace else {}
        return self._call("GET", "/catalog/tables", params=params)

    def get(self, name: str) -> dict:
        return self._call("GET", f"/catalog/tables/{name}")

    def exists(self, name: str) -> bool:
        return bool(self._call("GET", f"/catalog/exists/{name}")["exists"])

    def register(self, doc: dict) -> dict:
        return self._call("POST", "/catalog/tables", json=doc)

    def update(self, name: str, **changes) -> dict:
        return self._call("PATCH", f"/catalog/tables/{name}", json=changes)

    def drop(self, name: str) -> dict:
        return self._call("DELETE", f"/catalog/tables/{name}")
