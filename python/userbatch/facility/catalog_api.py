"""The catalog over HTTP as the facility enforces it: what a run (or any client) may read, register, change and
drop, answered as the caller's identity.

This is the only way a facility run touches the catalog (it has no database URL), so every rule a run must obey is
checked here, on the server: a table is registered only in a namespace its owner may write and only at the location
the facility chooses; its owner is the caller; group visibility needs membership; and the directory's owner and
mode are set by the facility (:mod:`.storage`) from the entry, not left to the run.
"""

from __future__ import annotations

from typing import Callable

from ..extras import missing

try:
    from fastapi import APIRouter, Body, Depends
except ModuleNotFoundError as exc:
    raise missing("facility", exc) from exc

from ..tables.catalog import Catalog, TableEntry
from .service import Facility

def _catalog(fac: Facility) -> Catalog:
    return Catalog(db_url=fac.db_url, user=fac.user, groups=fac.identity.groups)


def catalog_router(facility: Callable[..., Facility]) -> APIRouter:
    """The ``/catalog`` routes, with ``facility`` the dependency that gives the caller's :class:`Facility`."""
    router = APIRouter(prefix="/catalog", tags=["catalog"])

    @router.get("/tables")
    def tables(namespace: str | None = None, fac: Facility = Depends(facility)) -> list[dict]:
        """Every table the caller can read, as full catalog entries."""
        return [e.to_json() for e in _catalog(fac).list(namespace)]

    @router.get("/exists/{name:path}")
    def exists(name: str, fac: Facility = Depends(facility)) -> dict:
        """Whether the name is taken (by anyone: names are unique)."""
        return {"exists": _catalog(fac).exists(name)}

    @router.get("/tables/{name:path}")
    def table(name: str, fac: Facility = Depends(facility)) -> dict:
        """One table the caller can read (404 for one they cannot, as for one that does not exist)."""
        return _catalog(fac).get(name).to_json()

    @router.post("/tables", status_code=201)
    def register(doc: dict = Body(...), fac: Facility = Depends(facility)) -> dict:
        """Register a table in a namespace the caller may write."""
        return fac.register_table(TableEntry.from_json(doc)).to_json()

    @router.patch("/tables/{name:path}")
    def update(name: str, changes: dict = Body(...), fac: Facility = Depends(facility)) -> dict:
        """Change a table's visibility, group, description or properties (its owner); the directory follows."""
        return fac.update_table(name, changes).to_json()

    @router.delete("/tables/{name:path}")
    def drop(name: str, fac: Facility = Depends(facility)) -> dict:
        """Unregister a table (its owner)."""
        return _catalog(fac).drop(name).to_json()

    return router


__all__ = ["catalog_router"]
