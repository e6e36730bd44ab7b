"""The Delta transaction log, kept by delta-rs (``deltalake``) while Spark reads and writes the data files.

Why not delta-spark: its JVM jars come from Maven at session start, which these machines cannot reach. The
tables stay standard Delta tables: Spark writes Parquet files, the driver commits them here as ``add`` actions
(with per-file statistics read from the Parquet footers, so readers can skip files), and a snapshot is resolved to
its file list for ``spark.read``. Files written but not committed are invisible; that is the atomicity story.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import DeltaTable, Schema
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError
from deltalake.transaction import (
    AddAction,
    CommitProperties,
    PostCommitHookProperties,
    RemoveAction,
    create_table_with_add_actions,
)

from ..errors import CommitConflict, SchemaMismatch, UserbatchError, VersionNotFound

log = logging.getLogger(__name__)

#: Commit metadata key holding userbatch provenance (JSON) in each commitInfo.
PROVENANCE_KEY = "userbatch"
#: How often delta-rs re-tries a commit that lost the race against a non-conflicting one (e.g. two appends).
COMMIT_RETRIES = 25
#: A checkpoint (the whole file list as Parquet) every this many commits: opening a table then reads one
#: checkpoint and at most this many JSON commits, however long its history (delta-rs and Spark default to 100).
CHECKPOINT_INTERVAL = 10
#: Written into every new table's configuration. Expired-log clean-up is off: Delta engines delete commits older
#: than ``delta.logRetentionDuration`` (30 days) when they checkpoint, which would lose the history that a
#: year-old run's provenance names; only ``userbatch tables vacuum`` trims the log, behind every kept version.
TABLE_CONFIGURATION = {"delta.checkpointInterval": str(CHECKPOINT_INTERVAL), "delta.enableExpiredLogCleanup": "false"}
#: delta-rs's post-commit hook would otherwise checkpoint by the table's own interval and clean expired logs by
#: its own retention on tables made before :data:`TABLE_CONFIGURATION`; :func:`_checkpoint_if_due` decides here.
_HOOKS = PostCommitHookProperties(create_checkpoint=False, cleanup_expired_logs=False)
#: Written by a vacuum into the table's directory: which versions it kept (the others' files are gone).
VACUUM_MARKER = "_userbatch_vacuum.json"

_STAT_TYPES = (pa.types.is_integer, pa.types.is_floating, pa.types.is_string, pa.types.is_large_string)


def is_delta_table(location: str | Path) -> bool:
    return DeltaTable.is_deltatable(str(location))


def _json_value(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def file_stats(path: Path) -> tuple[str, int]:
    """Delta ``stats`` JSON for one Parquet file, from its footer alone; and its row count.

    min/max are aggregated over row groups for integer, float and string columns (what pruning uses).
    """
    meta = pq.read_metadata(path)
    schema = meta.schema.to_arrow_schema()
    mins: dict = {}
    maxs: dict = {}
    nulls: dict = {}
    for ci, fld in enumerate(schema):
        if not any(check(fld.type) for check in _STAT_TYPES):
            continue
        lo = hi = None
        nnull = 0
        complete = True
        for rg in range(meta.num_row_groups):
            st = meta.row_group(rg).column(ci).statistics
            if st is None:
                complete = False
                break
            nnull += st.null_count or 0
            if st.has_min_max:
                lo = st.min if lo is None else min(lo, st.min)
                hi = st.max if hi is None else max(hi, st.max)
        if not complete:
            continue
        nulls[fld.name] = nnull
        if lo is not None and _json_value(lo) is not None and _json_value(hi) is not None:
            mins[fld.name], maxs[fld.name] = lo, hi
    stats = {"numRecords": meta.num_rows, "minValues": mins, "maxValues": maxs, "nullCount": nulls}
    return json.dumps(stats), meta.num_rows


def add_action(root: Path, rel_path: str) -> AddAction:
    full = root / rel_path
    st = full.stat()
    stats, _ = file_stats(full)
    return AddAction(rel_path, st.st_size, {}, int(st.st_mtime * 1000), True, stats)


def commit_files(
    location: str | Path,
    rel_paths: Iterable[str],
    schema: pa.Schema,
    mode: str,
    metadata: dict | None = None,
    expected_version: int | None = None,
    merge_schema: bool = False,
) -> int:
    """Commit data files already in place under ``location``; returns the new table version.

    ``mode`` is ``create`` (table must not exist), ``append`` or ``overwrite``. ``expected_version`` makes an
    overwrite fail instead of silently replacing rows some other writer committed after we read.
    ``merge_schema`` lets an append add new nullable columns (:func:`merged_schema`); the columns it added are
    recorded in the commit's provenance under ``schema_change``.
    """
    root = Path(location)
    actions = [add_action(root, p) for p in rel_paths]
    metadata = dict(metadata or {})
    try:
        if mode == "create":
            create_table_with_add_actions(str(root), Schema.from_arrow(schema), actions, mode="error",
                                          configuration=TABLE_CONFIGURATION,
                                          commit_properties=_props(metadata), post_commithook_properties=_HOOKS)
            return 0
        table = DeltaTable(str(root))
        if mode == "append":
            if merge_schema:
                schema, added = merged_schema(table, schema, root)
                if added:  # delta-rs keeps the table's schema on append: the columns come first, as a commit
                    metadata["schema_change"] = {"added": added}
                    fields = [f for f in Schema.from_arrow(schema).fields if f.name in set(added)]
                    table.alter.add_columns(fields, commit_properties=_props(
                        {**metadata, "operation": "add columns"}), post_commithook_properties=_HOOKS)
                    table = DeltaTable(str(root))
                    _checkpoint_if_due(root, table.version())
            else:
                _check_same_schema(table, schema, root)
        if expected_version is not None and table.version() != expected_version:
            raise CommitConflict(
                f"table at {root} moved from version {expected_version} to {table.version()} while this write ran; "
                "re-run it on the new version"
            )
        table.create_write_transaction(actions, mode=mode, schema=schema, commit_properties=_props(metadata),
                                       post_commithook_properties=_HOOKS)
    except CommitFailedError as exc:
        raise CommitConflict(f"another writer changed {root} concurrently and the changes conflict: {exc}") from exc
    except DeltaError as exc:
        if "already exists" in str(exc).lower():
            raise CommitConflict(f"table at {root} was created concurrently: {exc}") from exc
        raise
    version = DeltaTable(str(root)).version()
    _checkpoint_if_due(root, version)
    return version


def commit_rewrite(
    location: str | Path,
    removed: Iterable[str],
    added: Iterable[str],
    read_version: int,
    metadata: dict,
    data_change: bool = False,
) -> int:
    """Replace files of version ``read_version`` by others in one commit (compaction, restore); the new version.

    ``data_change=False`` marks a commit that moves rows between files without changing them (Delta's OPTIMIZE
    convention: streaming readers skip it). The commit is checked against every commit since ``read_version``:
    one that removed a file this one removes is a conflict (delta-rs raises it), an append is not.
    """
    root = Path(location)
    now = int(datetime.now(timezone.utc).timestamp() * 1000)
    actions: list = [RemoveAction(p, data_change, now) for p in removed]
    for p in added:
        a = add_action(root, p)
        actions.append(AddAction(a.path, a.size, {}, a.modification_time, data_change, a.stats))
    table = DeltaTable(str(root), version=read_version)
    try:
        table.create_write_transaction(actions, mode="append", schema=table.schema(),
                                       commit_properties=_props(metadata), post_commithook_properties=_HOOKS)
    except CommitFailedError as exc:
        raise CommitConflict(f"another writer changed {root} while this ran and the changes conflict: {exc}; "
                             "run it again") from exc
    version = DeltaTable(str(root)).version()
    _checkpoint_if_due(root, version)
    return version


def restore(location: str | Path, version: int, metadata: dict) -> int:
    """Commit a new version of the table whose files and schema are those of ``version``; the new version."""
    root = Path(location)
    check_not_vacuumed(root, version)
    table = open_table(root)
    if not 0 <= version <= table.version():
        raise VersionNotFound(f"table at {root} has versions 0..{table.version()}; version {version} does not exist")
    try:
        table.restore(version, commit_properties=_props(metadata), post_commithook_properties=_HOOKS)
    except DeltaError as exc:
        if "not found" in str(exc).lower() or "no such file" in str(exc).lower():
            raise VersionNotFound(f"version {version} of the table at {root} cannot be restored: its files are "
                                  f"gone ({exc})") from exc
        raise
    new = DeltaTable(str(root)).version()
    _checkpoint_if_due(root, new)
    return new


def _props(metadata: dict) -> CommitProperties:
    return CommitProperties(
        custom_metadata={PROVENANCE_KEY: json.dumps(metadata or {}, sort_keys=True, default=str)},
        max_commit_retries=COMMIT_RETRIES,
    )


def _checkpoint_if_due(root: Path, version: int) -> None:
    """Write a checkpoint at every :data:`CHECKPOINT_INTERVAL`-th version (best effort: a lost race or a failure
    only costs the next opener a few more JSON commits)."""
    if version <= 0 or version % CHECKPOINT_INTERVAL:
        return
    try:
        DeltaTable(str(root), version=version).create_checkpoint()
    except DeltaError as exc:
        log.warning("checkpoint of %s at version %d failed: %s", root, version, exc)


def checkpoint_versions(location: str | Path) -> list[int]:
    """The versions that have a checkpoint in the table's log, ascending."""
    log_dir = Path(location) / "_delta_log"
    found = set()
    for p in log_dir.glob("*.checkpoint*.parquet"):
        head = p.name.split(".", 1)[0]
        if head.isdigit():
            found.add(int(head))
    return sorted(found)


def remove_log_before(location: str | Path, version: int) -> int:
    """Delete the log's commits and checkpoints of versions before ``version``, which must have a checkpoint
    (so every version from it on still opens); returns how many log files went."""
    log_dir = Path(location) / "_delta_log"
    if version not in checkpoint_versions(location):
        raise UserbatchError(f"version {version} of {location} has no checkpoint; the log before it must stay")
    removed = 0
    for p in log_dir.iterdir():
        head = p.name.split(".", 1)[0]
        if head.isdigit() and len(head) == 20 and int(head) < version and p.is_file():
            p.unlink()
            removed += 1
    return removed


def files_of_version(location: str | Path, version: int) -> dict[str, int]:
    """``{relative path: size}`` of every data file version ``version`` reads."""
    table = DeltaTable(str(location), version=int(version))
    actions = pa.table(table.get_add_actions(flatten=True))
    return dict(zip(actions.column("path").to_pylist(), actions.column("size_bytes").to_pylist()))


def read_vacuum_marker(location: str | Path) -> dict | None:
    """What the last vacuum kept (``{"kept": [...], "latest": V, "at": ISO time}``), or None if never vacuumed."""
    try:
        return json.loads((Path(location) / VACUUM_MARKER).read_text())
    except FileNotFoundError:
        return None
    except ValueError:
        log.warning("unreadable %s in %s; ignored", VACUUM_MARKER, location)
        return None


def write_vacuum_marker(location: str | Path, kept: list[int], latest: int, previous: dict | None) -> None:
    """Record the versions a vacuum keeps, before it deletes anything (so a reader asking for a removed version
    gets a clear answer even if the vacuum dies half way). Versions removed by earlier vacuums stay removed."""
    removed = set((previous or {}).get("removed", [])) | (set(range(latest + 1)) - set(kept))
    doc = {"kept": sorted(kept), "latest": latest, "removed": sorted(removed),
           "at": datetime.now(timezone.utc).isoformat()}
    tmp = Path(location) / f".{VACUUM_MARKER}.tmp"
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, Path(location) / VACUUM_MARKER)


def check_not_vacuumed(location: str | Path, version: int) -> None:
    """Refuse, clearly, a version whose files a vacuum removed."""
    marker = read_vacuum_marker(location)
    if marker and int(version) in set(marker.get("removed", [])):
        raise VersionNotFound(
            f"version {version} of the table at {location} was removed by a vacuum on {marker.get('at', '?')[:19]}; "
            f"versions kept then: {', '.join(map(str, marker.get('kept', []))) or 'none'}, and every later one"
        )


def same_delta_type(a: pa.DataType, b: pa.DataType) -> bool:
    """Whether two Arrow types are one Delta type (string and large_string are; int32 and int64 are not)."""
    def delta_type(t):
        return Schema.from_arrow(pa.schema([pa.field("c", t)])).fields[0].type

    return delta_type(a) == delta_type(b)


def merged_schema(table: DeltaTable, schema: pa.Schema, root: Path) -> tuple[pa.Schema, list[str]]:
    """The table's schema with the rows' new columns added at the end (nullable); and the names added.

    Rows may lack some of the table's columns (they read as null). A column whose type differs is refused: a
    merge adds columns, it never changes one (older files would no longer read as the new type)."""
    have = pa.schema(table.schema().to_arrow())
    have_types = {f.name: f.type for f in have}
    changed = [f"{f.name} ({have_types[f.name]} in the table, {f.type} in the rows)" for f in schema
               if f.name in have_types and not same_delta_type(f.type, have_types[f.name])]
    if changed:
        raise SchemaMismatch(
            f"the rows change the type of column(s) {', '.join(changed)} of the table at {root}; merging a schema "
            "only adds columns — cast the rows to the table's types, or overwrite the table to change them"
        )
    added = [f for f in schema if f.name not in have_types]
    return pa.schema(list(have) + [f.with_nullable(True) for f in added]), [f.name for f in added]


def _fields(schema: Schema) -> list[tuple[str, str]]:
    return [(f.name, str(f.type)) for f in schema.fields]


def _check_same_schema(table: DeltaTable, schema: pa.Schema, root: Path) -> None:
    """An append must bring exactly the table's columns and types (delta-rs would otherwise evolve the schema)."""
    have, new = _fields(table.schema()), _fields(Schema.from_arrow(schema))
    if have != new:
        missing = [n for n, _ in have if n not in dict(new)]
        extra = [n for n, _ in new if n not in dict(have)]
        changed = [n for n, t in new if n in dict(have) and dict(have)[n] != t]
        raise SchemaMismatch(
            f"the rows do not match the schema of the table at {root}: missing {missing or 'none'}, "
            f"unexpected {extra or 'none'}, different types {changed or 'none'}; append with merge_schema "
            "(--merge-schema) to add new columns, or overwrite to change the schema"
        )


@dataclass(frozen=True)
class Snapshot:
    """One version of a table: its files with their statistics, and the schema."""

    location: str
    version: int
    schema: pa.Schema
    files: pa.Table  # columns: path, size_bytes, num_records, min.<col>, max.<col>, ...

    @property
    def paths(self) -> list[str]:
        root = Path(self.location)
        return [str(root / p) for p in self.files.column("path").to_pylist()]

    @property
    def num_rows(self) -> int:
        return int(pa.compute.sum(self.files.column("num_records")).as_py() or 0)


def open_table(location: str | Path) -> DeltaTable:
    try:
        return DeltaTable(str(location))
    except TableNotFoundError as exc:
        raise UserbatchError(f"no Delta table at {location}") from exc


def snapshot(location: str | Path, version: int | None = None, timestamp: datetime | str | None = None) -> Snapshot:
    """Resolve latest / ``version`` / ``timestamp`` (latest commit at or before it) to a file list."""
    table = open_table(location)
    latest = table.version()
    if version is not None and timestamp is not None:
        raise UserbatchError("give a version or a timestamp, not both")
    if version is not None:
        if not 0 <= int(version) <= latest:
            raise VersionNotFound(f"table at {location} has versions 0..{latest}; version {version} does not exist")
        check_not_vacuumed(location, version)
        table.load_as_version(int(version))
    elif timestamp is not None:
        when = datetime.fromisoformat(timestamp) if isinstance(timestamp, str) else timestamp
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        first = min(h["timestamp"] for h in table.history())
        if when.timestamp() * 1000 < first:
            raise VersionNotFound(f"table at {location} did not exist yet at {when.isoformat()}")
        table.load_as_version(when)
        check_not_vacuumed(location, table.version())
    files = pa.table(table.get_add_actions(flatten=True))
    return Snapshot(str(location), table.version(), pa.schema(table.schema().to_arrow()), files)


def history(location: str | Path) -> list[dict]:
    """Commits newest first: version, timestamp, operation, and the userbatch provenance we stored."""
    out = []
    for h in open_table(location).history():
        prov = h.get(PROVENANCE_KEY)
        out.append(
            {
                "version": h["version"],
                "timestamp": datetime.fromtimestamp(h["timestamp"] / 1000, tz=timezone.utc),
                "operation": h.get("operation"),
                "mode": "create" if h.get("operation") == "CREATE TABLE" else
                (json.loads(prov).get("operation") if prov else None) or
                (h.get("operationParameters") or {}).get("mode", "").lower() or None,
                "provenance": json.loads(prov) if prov else {},
            }
        )
    return out


def latest_version(location: str | Path) -> int:
    return open_table(location).version()


def remove_uncommitted(location: str | Path, rel_paths: Iterable[str]) -> None:
    """Best-effort clean-up of files a failed write left behind (they are invisible either way)."""
    for p in rel_paths:
        try:
            os.remove(Path(location) / p)
        except OSError:
            pass
