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
from deltalake.transaction import AddAction, CommitProperties, create_table_with_add_actions

from ..errors import CommitConflict, UserbatchError, VersionNotFound

log = logging.getLogger(__name__)

#: Commit metadata key holding userbatch provenance (JSON) in each commitInfo.
PROVENANCE_KEY = "userbatch"
#: How often delta-rs re-tries a commit that lost the race against a non-conflicting one (e.g. two appends).
COMMIT_RETRIES = 25

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
) -> int:
    """Commit data files already in place under ``location``; returns the new table version.

    ``mode`` is ``create`` (table must not exist), ``append`` or ``overwrite``. ``expected_version`` makes an
    overwrite fail instead of silently replacing rows some other writer committed after we read.
    """
    root = Path(location)
    actions = [add_action(root, p) for p in rel_paths]
    props = CommitProperties(
        custom_metadata={PROVENANCE_KEY: json.dumps(metadata or {}, sort_keys=True, default=str)},
        max_commit_retries=COMMIT_RETRIES,
    )
    try:
        if mode == "create":
            create_table_with_add_actions(str(root), Schema.from_arrow(schema), actions, mode="error",
                                          commit_properties=props)
            return 0
        table = DeltaTable(str(root))
        if mode == "append":
            _check_same_schema(table, schema, root)
        if expected_version is not None and table.version() != expected_version:
            raise CommitConflict(
                f"table at {root} moved from version {expected_version} to {table.version()} while this write ran; "
                "re-run it on the new version"
            )
        table.create_write_transaction(actions, mode=mode, schema=schema, commit_properties=props)
    except CommitFailedError as exc:
        raise CommitConflict(f"another writer changed {root} concurrently and the changes conflict: {exc}") from exc
    except DeltaError as exc:
        if "already exists" in str(exc).lower():
            raise CommitConflict(f"table at {root} was created concurrently: {exc}") from exc
        raise
    return DeltaTable(str(root)).version()


def _fields(schema: Schema) -> list[tuple[str, str]]:
    return [(f.name, str(f.type)) for f in schema.fields]


def _check_same_schema(table: DeltaTable, schema: pa.Schema, root: Path) -> None:
    """An append must bring exactly the table's columns and types (delta-rs would otherwise evolve the schema)."""
    have, new = _fields(table.schema()), _fields(Schema.from_arrow(schema))
    if have != new:
        missing = [n for n, _ in have if n not in dict(new)]
        extra = [n for n, _ in new if n not in dict(have)]
        changed = [n for n, t in new if n in dict(have) and dict(have)[n] != t]
        raise UserbatchError(
            f"the rows do not match the schema of the table at {root}: missing {missing or 'none'}, "
            f"unexpected {extra or 'none'}, different types {changed or 'none'}; overwrite to change the schema"
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
        table.load_as_version(int(version))
    elif timestamp is not None:
        when = datetime.fromisoformat(timestamp) if isinstance(timestamp, str) else timestamp
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        first = min(h["timestamp"] for h in table.history())
        if when.timestamp() * 1000 < first:
            raise VersionNotFound(f"table at {location} did not exist yet at {when.isoformat()}")
        table.load_as_version(when)
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
