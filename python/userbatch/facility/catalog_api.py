"""The catalog over HTTP as the facility enforces it: what a run (or any client) may read, register, change and
drop, answered as the caller's identity.

This is the only way a facility run touches the catalog (it has no database URL), so every rule a run must obey is
checked here, on the server: a table is registered only in a namespace its owner may write and only at the location
the facility chooses; its owner is the caller; group visibility needs membership; and the directory's owner and
mode are set by the facility (:mod:`.storage`) from the entry, not left to the run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from fastapi import APIRouter, Body, Depends

from ..errors import AccessDenied, UserbatchError
from ..tables.catalog import Catalog, TableEntry
from ..tables.catalog_client import entry_from_json, entry_to_json
from . import storage
from .service import Facility

#: Fields a caller may change with PATCH (the location, owner and format are the facility's).
UPDATABLE = {"visibility", "group", "description", "properties", "margin_radius_arcsec"}


def _catalog(fac: Facility) -> Catalog:
    return Catalog(db_url=fac.db_url, user=fac.user, groups=fac.identity.groups)


def register_table(fac: Facility, doc: dict[str, Any]) -> TableEntry:
    """Register ``doc`` (a TableEntry as JSON) for the caller, after the facility's checks."""
    entry = entry_from_json(doc)
    fac.check_writable(entry.name)
    cat = _catalog(fac)
    expected = cat.default_location(entry.name)
    if Path(entry.location).resolve() != Path(expected).resolve():
        raise AccessDenied(f"{entry.name} must live at {expected} (the facility places tables); got {entry.location}")
    if entry.group and entry.group not in fac.identity.groups and not fac.identity.is_admin:
        raise AccessDenied(f"{fac.user} is not a member of group {entry.group}")
    entry = entry.replace(owner=fac.user, location=expected)
    storage.ensure_namespace(fac.config, cat.warehouse, entry.namespace)
    entry = cat.register(entry)
    storage.apply_table(fac.config, entry)
    return entry


def update_table(fac: Facility, name: str, changes: dict[str, Any]) -> TableEntry:
    bad = sorted(set(changes) - UPDATABLE)
    if bad:
        raise UserbatchError(f"cannot change {', '.join(bad)} of a table; changeable: {', '.join(sorted(UPDATABLE))}")
    group = changes.get("group")
    if group and group not in fac.identity.groups and not fac.identity.is_admin:
        raise AccessDenied(f"{fac.user} is not a member of group {group}")
    entry = _catalog(fac).update(name, **changes)
    storage.apply_table(fac.config, entry)
    return entry


def catalog_router(facility: Callable[..., Facility]) -> APIRouter:
    """The ``/catalog`` routes, with ``facility`` the dependency that gives the caller's :class:`Facility`."""
    router = APIRouter(prefix="/catalog", tags=["catalog"])

    @router.get("/tables")
    def tables(namespace: str | None = None, fac: Facility = Depends(facility)) -> list[dict]:
        """Every table the caller can read, as full catalog entries."""
        return [entry_to_json(e) for e in _catalog(fac).list(namespace)]

    @router.get("/exists/{name:path}")
    def exists(name: str, fac: Facility = Depends(facility)) -> dict:
        """Whether the name is taken (by anyone: names are unique)."""
        return {"exists": _catalog(fac).exists(name)}

    @router.get("/tables/{name:path}")
    def table(name: str, fac: Facility = Depends(facility)) -> dict:
        """One table the caller can read (404 for one they cannot, as for one that does not exist)."""
        return entry_to_json(_catalog(fac).get(name))

    @router.post("/tables", status_code=201)
    def register(doc: dict = Body(...), fac: Facility = Depends(facility)) -> dict:
        """Register a table in a namespace the caller may write."""
        return entry_to_json(register_table(fac, doc))

    @router.patch("/tables/{name:path}")
    def update(name: str, changes: dict = Body(...), fac: Facility = Depends(facility)) -> dict:
        """Change a table's visibility, group, description or properties (its owner); the directory follows."""
        return entry_to_json(update_table(fac, name, changes))

    @router.delete("/tables/{name:path}")
    def drop(name: str, fac: Facility = Depends(facility)) -> dict:
        """Unregister a table (its owner)."""
        return entry_to_json(_catalog(fac).drop(name))

    return router


__all__ = ["UPDATABLE", "catalog_router", "register_table", "update_table"]
