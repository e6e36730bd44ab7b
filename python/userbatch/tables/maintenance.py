"""Keeping tables healthy for years: vacuum that keeps provenance, compaction, restore, storage accounting.

Delta's own VACUUM deletes every file no version inside the retention window needs — in userbatch that would
break provenance: a rerun of a year-old run must still find exactly its inputs. So :func:`vacuum` keeps the files
of every version *worth keeping*:

* the latest version, and every version committed inside the retention window (plus the one that was current when
  the window opened, as Delta's time travel needs);
* every version the caller names as pinned — the facility passes each version a kept run read or wrote, or is
  pinned to (:meth:`userbatch.facility.service.Facility.vacuum`); this layer knows nothing of runs;
* for the margin cache (a Delta table of its own), the margin version each kept version names, and any margin
  version newer than all of them (a write in progress commits its margin first).

Everything else under the table's directory goes: data files no kept version reads, margin files of versions no
longer kept, killed writers' ``_staging`` directories, and commits in the log before the checkpoint that precedes
the oldest kept version. Files younger than ``min_age_hours`` are never touched (a write may be about to commit
them). Before it deletes anything a vacuum records which versions it keeps (:data:`.delta.VACUUM_MARKER`), so a
reader asking for a removed version is told so clearly, and a vacuum killed half way leaves every kept version
whole: it only ever deletes files that no kept version reads.

:func:`optimize` compacts each HEALPix partition's files into one (rows in ``_healpix_29`` order), splits a
partition that appends pushed past the table's threshold into finer pixels as hats would, keeps the margin in
step, and commits it all as one new version (``dataChange: false``, provenance ``optimize``). :func:`restore`
commits a new version equal to an old one, margin included.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads

from ..errors import UserbatchError
from ..sky.healpix import SPATIAL_INDEX_COLUMN
from ..sky.margins import margin_order
from . import delta, write_arrow
from .catalog import TableEntry
from .partitioning import DEFAULT_HIGHEST_ORDER, DEFAULT_THRESHOLD, PartitionPlan, plan_from_histogram
from .provenance import Provenance
from .snapshots import margin_snapshot, path_pixel

log = logging.getLogger(__name__)

#: Versions committed within this many days stay readable (Delta's default retention is 7 days too).
DEFAULT_RETAIN_DAYS = 7.0
#: A file no version reads is left alone until it is this old: a writer may be about to commit it.
DEFAULT_MIN_AGE_HOURS = 24.0
#: Directories at the top of a table that are not data (the log, the margin table, staging, hidden state).
_NOT_DATA = ("_delta_log", "_margin", "_staging")


# ---------------------------------------------------------------------------------------------- vacuum

@dataclass
class VacuumReport:
    """What a vacuum kept and removed (or, with ``dry_run``, would remove) in one table or directory."""

    table: str
    location: str
    dry_run: bool
    kept_versions: list[int] = field(default_factory=list)
    removed_versions: int = 0
    files: list[str] = field(default_factory=list)  # relative to ``location``: data, margin and staging files
    bytes: int = 0
    log_files: int = 0
    live_bytes: int = 0  # what the latest version (and its margin) reads
    time_travel_bytes: int = 0  # read only by kept older versions
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


def kept_versions(location: str | Path, pinned=(), retain_days: float = DEFAULT_RETAIN_DAYS,
                  now: datetime | None = None) -> tuple[list[int], list[dict]]:
    """The versions of a table worth keeping, ascending, and the table's history (newest first).

    Parameters
    ----------
    location : str or pathlib.Path
        The table's directory.
    pinned : iterable of int
        Versions something outside the table needs (runs' inputs and outputs, pins); those that no longer exist
        are ignored.
    retain_days : float
        Every version committed within this many days is kept, and the one current when the window opened.
    now : datetime, optional
        The clock (tests).

    Returns
    -------
    (list of int, list of dict)
        The kept versions, and :func:`.delta.history` of the table.
    """
    if retain_days < 0:
        raise UserbatchError(f"--retain must be zero or more days; got {retain_days}")
    hist = delta.history(location)
    now = now or datetime.now(timezone.utc)
    cutoff = now - timedelta(days=retain_days)
    present = {h["version"] for h in hist}
    removed = set((delta.read_vacuum_marker(location) or {}).get("removed", []))
    latest = hist[0]["version"]
    kept = {latest} | {h["version"] for h in hist if h["timestamp"] >= cutoff}
    before = [h["version"] for h in hist if h["timestamp"] < cutoff]
    if before:
        kept.add(max(before))
    kept |= {int(v) for v in pinned if v is not None and int(v) in present}
    return sorted(kept - (removed - {latest})), hist


def _margin_versions(hist: list[dict], kept: list[int]) -> set[int] | None:
    """Margin versions the kept versions name (the newest naming commit at or before each), or None if no commit
    names one."""
    named = sorted(((h["version"], int(h["provenance"]["margin"]["version"])) for h in hist
                    if (h.get("provenance") or {}).get("margin", {}) and
                    h["provenance"]["margin"].get("version") is not None))
    if not named:
        return None
    out = set()
    for v in kept:
        before = [m for mv, m in named if mv <= v]
        if before:
            out.add(before[-1])
    return out


def _referenced(location: Path, versions) -> tuple[dict[str, int], dict[int, dict[str, int]]]:
    """Files read by any of ``versions`` (path -> size), and each version's own file map."""
    every: dict[str, int] = {}
    per: dict[int, dict[str, int]] = {}
    for v in versions:
        try:
            per[v] = delta.files_of_version(location, v)
        except Exception as exc:  # a version whose log is gone cannot pin anything
            log.warning("version %d of %s cannot be read (%s); not kept", v, location, exc)
            continue
        every.update(per[v])
    return every, per


def _candidates(root: Path, referenced: dict[str, int], skip_top: tuple[str, ...], min_age_s: float,
                now_s: float) -> list[tuple[str, int]]:
    """Data files under ``root`` that no kept version reads and that are old enough to be no one's new write.
    (Plain strings, not pathlib: a table holds many thousands of files.)"""
    out = []
    root_s = str(root)
    for dirpath, dirs, files in os.walk(root_s, followlinks=False):
        top = dirpath == root_s
        if top:
            dirs[:] = [d for d in dirs if d not in skip_top and not d.startswith(".")]
        prefix = "" if top else os.path.relpath(dirpath, root_s) + "/"
        for name in files:
            if top and name.startswith((".", "_")):
                continue  # the vacuum marker, temporary files: state, not data
            rel = prefix + name
            if rel in referenced:
                continue
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if now_s - st.st_mtime >= min_age_s:
                out.append((rel, st.st_size))
    return sorted(out)


def _stale_staging(root: Path, min_age_s: float, now_s: float) -> list[tuple[str, int]]:
    """Files in ``_staging/<write>`` directories whose newest file is older than ``min_age_s`` (killed writers)."""
    out = []
    staging = root / "_staging"
    if not staging.is_dir():
        return out
    for d in staging.iterdir():
        files = [p for p in d.rglob("*") if p.is_file() and not p.is_symlink()] if d.is_dir() else [d]
        newest = max((p.lstat().st_mtime for p in files), default=d.lstat().st_mtime)
        if now_s - newest >= min_age_s:
            out += [(str(p.relative_to(root)), p.lstat().st_size) for p in files]
    return out


def _remove(root: Path, rel_paths: list[str]) -> None:
    root_s = str(root)
    for rel in rel_paths:
        try:
            os.remove(os.path.join(root_s, rel))
        except FileNotFoundError:
            pass
    _remove_empty_dirs(root)


def _remove_empty_dirs(root: Path) -> None:
    """Partition and staging directories left empty (bottom up; the log and the table directory stay)."""
    root_s = str(root)
    keep = {root_s, os.path.join(root_s, "_margin")}
    for dirpath, _dirs, files in os.walk(root_s, topdown=False):
        if files or dirpath in keep or os.path.basename(dirpath) == "_delta_log":
            continue
        try:
            os.rmdir(dirpath)
        except OSError:
            pass


def vacuum(entry: TableEntry, *, pinned=(), retain_days: float = DEFAULT_RETAIN_DAYS, dry_run: bool = False,
           min_age_hours: float = DEFAULT_MIN_AGE_HOURS, now: datetime | None = None) -> VacuumReport:
    """Delete the files of a Delta table that no version worth keeping reads (see the module docstring).

    Parameters
    ----------
    entry : TableEntry
        The table (format ``delta``).
    pinned : iterable of int
        Versions that must stay readable whatever their age: what kept runs read, wrote or are pinned to.
    retain_days : float
        Versions committed within this many days stay readable.
    dry_run : bool
        Only report what would go.
    min_age_hours : float
        Files no version reads are kept while younger than this (a write in progress).
    now : datetime, optional
        The clock (tests).

    Returns
    -------
    VacuumReport
        Versions kept, files and bytes removed (or removable), log files trimmed, and the live and time-travel
        bytes that remain.
    """
    if entry.format != "delta":
        raise UserbatchError(f"{entry.name} is a {entry.format} table: it keeps no history, so there is nothing to "
                             "vacuum")
    if min_age_hours < 0:
        raise UserbatchError(f"the minimum age must be zero or more hours; got {min_age_hours}")
    started = time.monotonic()
    root = Path(entry.location)
    now_s = (now or datetime.now(timezone.utc)).timestamp()
    min_age_s = min_age_hours * 3600
    kept, hist = kept_versions(root, pinned, retain_days, now)
    latest = hist[0]["version"]
    referenced, per = _referenced(root, kept)
    report = VacuumReport(entry.name, str(root), dry_run, kept_versions=kept,
                          removed_versions=len({h["version"] for h in hist} - set(kept)))
    live = per.get(latest, {})
    report.live_bytes = sum(live.values())
    report.time_travel_bytes = sum(s for p, s in referenced.items() if p not in live)
    doomed = _candidates(root, referenced, _NOT_DATA, min_age_s, now_s) + _stale_staging(root, min_age_s, now_s)
    margin_root = Path(entry.margin_location)
    margin_doomed: list[tuple[str, int]] = []
    if delta.is_delta_table(margin_root):
        m_hist = delta.history(margin_root)
        m_kept = _margin_versions(hist, kept)
        if m_kept is None:  # no commit names a margin version: keep the margin's latest
            m_kept = {m_hist[0]["version"]}
        else:  # margin versions newer than every named one belong to a write that has not committed yet
            m_kept |= {h["version"] for h in m_hist if h["version"] > max(m_kept, default=-1)}
        m_ref, m_per = _referenced(margin_root, sorted(m_kept))
        named_latest = _margin_versions(hist, [latest]) or set()  # at most one: the margin the latest names
        m_live = m_per.get(next(iter(named_latest)), {}) if named_latest else {}
        report.live_bytes += sum(m_live.values())
        report.time_travel_bytes += sum(s for p, s in m_ref.items() if p not in m_live)
        margin_doomed = (_candidates(margin_root, m_ref, ("_delta_log", "_staging"), min_age_s, now_s)
                         + _stale_staging(margin_root, min_age_s, now_s))
    report.files = [p for p, _ in doomed] + [f"_margin/{p}" for p, _ in margin_doomed]
    report.bytes = sum(s for _, s in doomed) + sum(s for _, s in margin_doomed)
    trim_at = _log_trim_point(root, kept)
    if not dry_run:
        delta.write_vacuum_marker(root, kept, latest, delta.read_vacuum_marker(root))
        _remove(root, [p for p, _ in doomed])
        if margin_doomed:
            _remove(margin_root, [p for p, _ in margin_doomed])
        if trim_at:
            report.log_files = delta.remove_log_before(root, trim_at)
    elif trim_at:
        report.log_files = sum(1 for p in (root / "_delta_log").iterdir()
                               if p.name[:20].isdigit() and int(p.name[:20]) < trim_at)
    report.seconds = time.monotonic() - started
    log.info("vacuum %s: kept versions %s, %s %d file(s), %d bytes", entry.name, kept,
             "would remove" if dry_run else "removed", len(report.files), report.bytes)
    return report


def _log_trim_point(root: Path, kept: list[int]) -> int | None:
    """The newest checkpoint at or before the oldest kept version: the log before it is needed by no one."""
    oldest = min(kept)
    points = [c for c in delta.checkpoint_versions(root) if 0 < c <= oldest]
    return max(points) if points else None


def reclaim_directories(directories, *, dry_run: bool = False, min_age_hours: float = DEFAULT_MIN_AGE_HOURS,
                        now: datetime | None = None) -> list[VacuumReport]:
    """Delete directories of dropped tables (the caller has checked that no catalog entry lives there).

    Parameters
    ----------
    directories : iterable of pathlib.Path
        Table directories no longer in the catalog.
    dry_run : bool
        Only report.
    min_age_hours : float
        A directory with any file younger than this is left (a table being made right now).
    now : datetime, optional
        The clock (tests).

    Returns
    -------
    list of VacuumReport
        One per directory removed (or removable).
    """
    now_s = (now or datetime.now(timezone.utc)).timestamp()
    out = []
    for d in directories:
        d = Path(d)
        if d.is_symlink() or not d.is_dir():
            continue
        files = [p for p in d.rglob("*") if p.is_file() and not p.is_symlink()]
        newest = max((p.lstat().st_mtime for p in files), default=d.lstat().st_mtime)
        if now_s - newest < min_age_hours * 3600:
            continue
        report = VacuumReport(f"(dropped) {d.parent.name}.{d.name}", str(d), dry_run,
                              files=sorted(str(p.relative_to(d)) for p in files),
                              bytes=sum(p.lstat().st_size for p in files))
        if not dry_run:
            shutil.rmtree(d)
        out.append(report)
    return out


# ---------------------------------------------------------------------------------------------- optimize

@dataclass
class OptimizeResult:
    """What a compaction did: the version it committed (None when there was nothing to do) and the counts."""

    table: str
    version: int | None
    files_before: int
    files_after: int
    partitions_before: int
    partitions_after: int
    rows: int
    rows_rewritten: int
    split: list[list[int]] = field(default_factory=list)  # (order, pixel) of partitions split into finer ones
    margin_version: int | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


def _read_rows(root: Path, rel_paths: list[str], schema: pa.Schema) -> pa.Table:
    """The rows of some files under the table's current schema (older files lack columns added since: nulls)."""
    return pads.dataset([str(root / p) for p in rel_paths], schema=schema, format="parquet").to_table()


def _sorted_rows(rows: pa.Table) -> tuple[pa.Table, np.ndarray]:
    index = rows.column(SPATIAL_INDEX_COLUMN).to_numpy()
    return write_arrow.sort_by_index(rows.drop_columns([SPATIAL_INDEX_COLUMN]), index)


def _split(pixel: tuple[int, int], sorted_index: np.ndarray, entry: TableEntry) -> PartitionPlan | None:
    """Finer partitions for a pixel past the threshold (hats' rule, restricted to inside the pixel), or None."""
    order = pixel[0]
    highest = entry.highest_order or DEFAULT_HIGHEST_ORDER
    if entry.partition_order is not None or highest <= order:
        return None
    pixels, counts = write_arrow.histogram(sorted_index, highest)
    plan = plan_from_histogram(pixels, counts, highest, threshold=entry.pixel_threshold or DEFAULT_THRESHOLD,
                               lowest_order=order + 1)
    inside = (plan.partitions[:, 0] > order) & (plan.partitions[:, 1] >> (2 * (plan.partitions[:, 0] - order))
                                                == pixel[1])
    return plan if len(plan) > 1 and inside.all() else None


def optimize(entry: TableEntry, *, provenance: Provenance | None = None) -> OptimizeResult:
    """Compact each partition of the latest version into one file and split partitions past the threshold.

    Parameters
    ----------
    entry : TableEntry
        The table (format ``delta``).
    provenance : Provenance, optional
        Recorded with the commit (job ``optimize`` by default).

    Returns
    -------
    OptimizeResult
        The version committed (None when every partition already was one file within the threshold), files and
        partitions before and after, the rows rewritten, the partitions split and the margin version.
    """
    if entry.format != "delta":
        raise UserbatchError(f"{entry.name} is a {entry.format} table; only Delta tables are optimized")
    started = time.monotonic()
    root = Path(entry.location)
    snap = delta.snapshot(root)
    paths = snap.files.column("path").to_pylist()
    records = snap.files.column("num_records").to_pylist()
    groups: dict = defaultdict(list)
    rows_of: dict = defaultdict(int)
    for p, n in zip(paths, records):
        groups[path_pixel(p)].append(p)
        rows_of[path_pixel(p)] += int(n or 0)
    threshold = entry.pixel_threshold or DEFAULT_THRESHOLD
    jobs, removed, split, rewritten = [], [], [], 0
    for pixel, files in sorted(groups.items(), key=lambda kv: (kv[0] is None, kv[0] or (0, 0))):
        big = pixel is not None and entry.spatial and rows_of[pixel] > threshold
        if len(files) < 2 and not big:
            continue
        rows = _read_rows(root, files, snap.schema)
        if pixel is None:  # a non-spatial table (or stray files): one file under data/
            jobs.append((root, Path("data") if all(p.startswith("data/") for p in files)
                         else Path(files[0]).parent, rows))
        else:
            rows, index = _sorted_rows(rows)
            plan = _split(pixel, index, entry) if big else None
            if plan is None:
                if len(files) < 2:
                    continue
                jobs.append((root, write_arrow.partition_path(*pixel), rows))
            else:
                split.append([int(pixel[0]), int(pixel[1])])
                jobs += [(root, write_arrow.partition_path(*plan.partitions[i]), rows.slice(a, b - a))
                         for i, a, b in write_arrow.partition_slices(plan, index)]
        removed += files
        rewritten += rows.num_rows
    before_parts = len({g for g in groups if g is not None})
    if not jobs:
        return OptimizeResult(entry.name, None, len(paths), len(paths), before_parts, before_parts, snap.num_rows,
                              0, seconds=time.monotonic() - started)
    prov = provenance or Provenance(job="optimize")
    metadata = {**prov.as_dict(), "operation": "optimize", "optimized_version": snap.version,
                "files_before": len(paths), "split": split}
    added = write_arrow.write_layout(jobs).get(root, [])
    try:
        margin_version = _optimize_margin(entry, snap, removed, added, split, metadata, prov)
        version = delta.commit_rewrite(root, removed, added, snap.version, metadata, data_change=False)
    except BaseException:
        delta.remove_uncommitted(root, added)
        raise
    after = [p for p in paths if p not in set(removed)] + added
    parts_after = len({path_pixel(p) for p in after} - {None})
    log.info("optimize %s: v%d, %d file(s) -> %d, split %s", entry.name, version, len(paths), len(after), split)
    return OptimizeResult(entry.name, version, len(paths), len(after), before_parts, parts_after, snap.num_rows,
                          rewritten, split, margin_version, time.monotonic() - started)


def _optimize_margin(entry: TableEntry, snap: delta.Snapshot, removed, added, split, metadata: dict,
                     prov: Provenance) -> int | None:
    """Keep the margin in step with a compaction: compact its files the same way, or — when partitions were split
    — build it again for the new partitions (a margin is per partition). Names the margin version in
    ``metadata`` as every spatial commit does; returns it (None for a table without a margin)."""
    found = margin_snapshot(entry, snap.version) if entry.spatial else None
    if found is None:
        return None
    m_snap, radius = found
    margin_root = Path(entry.margin_location)
    m_meta = {**prov.as_dict(), "operation": "optimize", "margin_of": entry.name, "radius_arcsec": radius}
    if split:
        keep = [p for p in snap.files.column("path").to_pylist() if p not in set(removed)] + list(added)
        parts = np.array(sorted({path_pixel(p) for p in keep} - {None}), dtype=np.int64).reshape(-1, 2)
        plan = PartitionPlan(parts)
        every, index = _sorted_rows(_read_rows(Path(entry.location), keep, snap.schema))
        m_order = margin_order(radius, plan.partitions[:, 0])
        take, slices = write_arrow.margin_slices(plan, index, m_order)
        copies = every.take(pa.array(take)) if len(take) else every.slice(0, 0)
        written = write_arrow.write_layout(
            [(margin_root, write_arrow.partition_path(*plan.partitions[i]), copies.slice(a, b - a))
             for i, a, b in slices]).get(margin_root, [])
        m_meta["margin_order"] = m_order
        try:
            version = delta.commit_files(margin_root, written, m_snap.schema, "overwrite", m_meta)
        except BaseException:
            delta.remove_uncommitted(margin_root, written)
            raise
        rows = len(take)
    else:
        groups: dict = defaultdict(list)
        for p in m_snap.files.column("path").to_pylist():
            groups[path_pixel(p)].append(p)
        jobs, gone = [], []
        for pixel, files in groups.items():
            if pixel is None or len(files) < 2:
                continue
            rows_, _ = _sorted_rows(_read_rows(margin_root, files, m_snap.schema))
            jobs.append((margin_root, write_arrow.partition_path(*pixel), rows_))
            gone += files
        if jobs:
            written = write_arrow.write_layout(jobs).get(margin_root, [])
            try:
                version = delta.commit_rewrite(margin_root, gone, written, m_snap.version, m_meta)
            except BaseException:
                delta.remove_uncommitted(margin_root, written)
                raise
        else:
            version = m_snap.version
        rows = m_snap.num_rows
    metadata["margin"] = {"version": version, "radius_arcsec": radius, "rows": rows}
    return version


# ---------------------------------------------------------------------------------------------- restore

def restore(entry: TableEntry, version: int, *, provenance: Provenance | None = None) -> int:
    """Commit a new version of ``entry`` equal to ``version`` (rows, schema and margin); returns the new version.

    Parameters
    ----------
    entry : TableEntry
        The table (format ``delta``).
    version : int
        The version to bring back; one a vacuum removed is refused.
    provenance : Provenance, optional
        Recorded with the commit (job ``restore`` by default), with ``restored_version``.

    Returns
    -------
    int
        The version committed.
    """
    if entry.format != "delta":
        raise UserbatchError(f"{entry.name} is a {entry.format} table; it keeps no versions to restore")
    root = Path(entry.location)
    latest = delta.latest_version(root)
    if not 0 <= int(version) <= latest:
        raise UserbatchError(f"{entry.name} has versions 0..{latest}; there is no version {version} to restore")
    delta.check_not_vacuumed(root, version)
    prov = provenance or Provenance(job="restore")
    metadata = {**prov.as_dict(), "operation": "restore", "restored_version": int(version)}
    found = margin_snapshot(entry, int(version)) if entry.spatial else None
    if found is not None:
        m_snap, radius = found
        m_meta = {**prov.as_dict(), "operation": "restore", "margin_of": entry.name, "radius_arcsec": radius,
                  "restored_version": m_snap.version}
        m_version = delta.restore(entry.margin_location, m_snap.version, m_meta)
        metadata["margin"] = {"version": m_version, "radius_arcsec": radius, "rows": m_snap.num_rows}
    return delta.restore(root, int(version), metadata)


# ---------------------------------------------------------------------------------------------- accounting

def storage(entry: TableEntry, pinned=(), retain_days: float = DEFAULT_RETAIN_DAYS) -> dict:
    """Bytes of one table: ``live`` (the latest version and its margin), ``time_travel`` (held only for kept
    older versions) and ``reclaimable`` (what a vacuum would free now with the default minimum age).

    Parameters
    ----------
    entry : TableEntry
        The table; a non-Delta table counts its files as live.
    pinned : iterable of int
        Versions kept runs need (as :func:`vacuum` takes them).
    retain_days : float
        The retention window a vacuum would use.

    Returns
    -------
    dict
        ``{"live": int, "time_travel": int, "reclaimable": int}`` in bytes.
    """
    if entry.format != "delta":
        size = sum(p.stat().st_size for p in Path(entry.location).rglob("*") if p.is_file()) \
            if Path(entry.location).is_dir() else 0
        return {"live": size, "time_travel": 0, "reclaimable": 0}
    r = vacuum(entry, pinned=pinned, retain_days=retain_days, dry_run=True)
    return {"live": r.live_bytes, "time_travel": r.time_travel_bytes, "reclaimable": r.bytes}


def summary_of(reports: list[VacuumReport]) -> dict:
    """Totals over several vacuum reports (the CLI's last line, the API's ``total``)."""
    return {"tables": len(reports), "files": sum(len(r.files) for r in reports),
            "bytes": sum(r.bytes for r in reports), "log_files": sum(r.log_files for r in reports)}


__all__ = ["DEFAULT_MIN_AGE_HOURS", "DEFAULT_RETAIN_DAYS", "OptimizeResult", "VacuumReport", "kept_versions",
           "optimize", "reclaim_directories", "restore", "storage", "summary_of", "vacuum"]
