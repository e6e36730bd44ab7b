"""Table upkeep as the facility does it for a caller: vacuum, optimize, restore and the storage view.

The tables layer (:mod:`userbatch.tables.maintenance`) knows files and versions; this module knows what only the
facility knows — which versions its runs need, who owns what, which directories belong to dropped tables — and
enforces who may do what: owners look after their own tables, admins after any; a run's token does none of it.

A version is *pinned* when any run still on record names it: the versions it read (``result.inputs``), the catalog
versions it was started with (``result.catalog_versions``, what its SQL views read), the versions it is pinned to
(``spec.pins``, a rerun's or a workflow's) and the versions it wrote (``result.outputs``). Runs are never deleted, so
a rerun of a year-old run finds exactly its inputs after any number of vacuums. A scheduled workflow reads the
latest versions when it runs, which every vacuum keeps; the runs it made pin what they read.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from pathlib import Path

from sqlalchemy import select

from ..errors import AccessDenied, UserbatchError
from ..tables import maintenance
from ..tables.catalog import TableEntry, _TableRow, _to_entry
from ..tables.db import transaction
from .models import RunRow
from .storage import hand_back

log = logging.getLogger(__name__)


def pinned_versions(engine) -> dict[str, set[int]]:
    """Every table version some run on record names, by table name."""
    pins: dict[str, set[int]] = defaultdict(set)

    def add(table, version):
        if isinstance(table, str) and isinstance(version, int) and version >= 0:
            pins[table].add(version)

    with transaction(engine) as s:
        for spec_text, result_text in s.execute(select(RunRow.spec, RunRow.result)):
            try:
                spec, result = json.loads(spec_text or "{}"), json.loads(result_text or "{}")
            except ValueError:
                continue
            for t, v in (spec.get("pins") or {}).items():
                add(t, v)
            for t, v in (result.get("catalog_versions") or {}).items():
                add(t, v)
            for item in (result.get("inputs") or []) + (result.get("outputs") or []):
                if isinstance(item, dict):
                    add(item.get("table"), item.get("version"))
    return pins


def all_entries(engine) -> list[TableEntry]:
    """Every registered table, whoever may read it (the facility's own view)."""
    with transaction(engine) as s:
        return [_to_entry(r) for r in s.scalars(select(_TableRow))]


def dropped_directories(warehouse: Path, entries: list[TableEntry], namespaces: list[str] | None) -> list[Path]:
    """Table directories under the warehouse that no catalog entry uses: dropped tables (and failed creations).

    ``namespaces`` limits the search (None: every namespace, for an admin). A directory counts only if it looks
    like a table (it has a Delta log or Parquet files), so nothing else that lives in a namespace is touched."""
    used = {Path(e.location).resolve() for e in entries}
    used_parents = {p for u in used for p in u.parents}
    out = []
    if not Path(warehouse).is_dir():
        return out
    for ns_dir in sorted(Path(warehouse).iterdir()):
        if not ns_dir.is_dir() or ns_dir.is_symlink() or ns_dir.name.startswith((".", "_")):
            continue
        if namespaces is not None and ns_dir.name not in namespaces:
            continue
        for d in sorted(ns_dir.iterdir()):
            if not d.is_dir() or d.is_symlink() or d.name.startswith((".", "_")):
                continue
            r = d.resolve()
            if r in used or r in used_parents:
                continue
            if (d / "_delta_log").is_dir() or next(d.rglob("*.parquet"), None) is not None:
                out.append(d)
    return out


def owned_namespaces(fac) -> list[str]:
    """Namespaces whose dropped tables the caller may reclaim: every one for an admin (None), else their own."""
    if fac.identity.is_admin:
        return None
    spaces = [f"u_{fac.user}"]
    spaces += [ns for ns, spec in fac.config.namespaces.items() if (spec or {}).get("owner") == fac.user]
    return spaces


def _entry_to_change(fac, name: str, action: str) -> TableEntry:
    entry = fac._catalog().get(name)
    if entry.owner != fac.user and not fac.identity.is_admin:
        raise AccessDenied(f"only {entry.owner}, the owner of {name}, or an admin may {action} it")
    if entry.format != "delta":
        raise UserbatchError(f"{name} is a {entry.format} table: it keeps no versions to {action}")
    return entry


def vacuum(fac, table: str | None, all_tables: bool, retain_days: float, dry_run: bool,
           min_age_hours: float) -> dict:
    """Vacuum one table, or every table the caller owns (every table, for an admin) and dropped tables' directories
    in the caller's namespaces. Returns ``{"tables": [report, ...], "total": {...}}``."""
    if bool(table) == bool(all_tables):
        raise UserbatchError("name a table, or give --all (every table you own)")
    pins = pinned_versions(fac.engine)
    entries = all_entries(fac.engine)
    if table:
        targets = [_entry_to_change(fac, table, "vacuum")]
    else:
        targets = [e for e in entries if e.format == "delta" and (fac.identity.is_admin or e.owner == fac.user)]
    reports = []
    for e in sorted(targets, key=lambda e: e.name):
        if not Path(e.location).is_dir():
            continue
        reports.append(maintenance.vacuum(e, pinned=pins.get(e.name, ()), retain_days=retain_days,
                                          dry_run=dry_run, min_age_hours=min_age_hours))
        if not dry_run:
            hand_back(fac.config, e)  # the vacuum marker, a trimmed log's last checkpoint
    if all_tables:
        dropped = dropped_directories(fac._catalog().warehouse, entries, owned_namespaces(fac))
        reports += maintenance.reclaim_directories(dropped, dry_run=dry_run, min_age_hours=min_age_hours)
    return {"tables": [r.as_dict() for r in reports], "total": maintenance.summary_of(reports)}


def optimize(fac, table: str) -> dict:
    from ..tables.provenance import Provenance

    entry = _entry_to_change(fac, table, "optimize")
    try:
        return maintenance.optimize(entry, provenance=Provenance(job="optimize", user=fac.user)).as_dict()
    finally:
        hand_back(fac.config, entry)


def restore(fac, table: str, version: int) -> dict:
    from ..tables.provenance import Provenance

    entry = _entry_to_change(fac, table, "restore")
    try:
        new = maintenance.restore(entry, int(version), provenance=Provenance(job="restore", user=fac.user))
    finally:
        hand_back(fac.config, entry)
    return {"table": table, "version": new, "restored_version": int(version)}


def storage_view(fac, user: str, groups: list[str]) -> list[dict]:
    """Bytes per namespace for ``user``: their tables and their groups' namespaces — live, held only for time
    travel, and reclaimable now by a vacuum (dropped tables included)."""
    pins = pinned_versions(fac.engine)
    entries = all_entries(fac.engine)
    group_spaces = {f"g_{g}" for g in groups}
    mine = [e for e in entries if e.owner == user or e.namespace in group_spaces]
    rows: dict[str, dict] = {}

    def row(ns):
        return rows.setdefault(ns, {"namespace": ns, "tables": 0, "live_bytes": 0, "time_travel_bytes": 0,
                                    "reclaimable_bytes": 0})

    for e in mine:
        if not Path(e.location).is_dir():
            continue
        try:
            b = maintenance.storage(e, pinned=pins.get(e.name, ()))
        except UserbatchError as exc:
            log.warning("storage of %s not counted: %s", e.name, exc)
            continue
        r = row(e.namespace)
        r["tables"] += 1
        r["live_bytes"] += b["live"]
        r["time_travel_bytes"] += b["time_travel"]
        r["reclaimable_bytes"] += b["reclaimable"]
    spaces = [f"u_{user}", *sorted(group_spaces)]
    for d in dropped_directories(fac._catalog().warehouse, entries, spaces):
        row(d.parent.name)["reclaimable_bytes"] += sum(p.stat().st_size for p in d.rglob("*") if p.is_file())
    return sorted(rows.values(), key=lambda r: r["namespace"])
