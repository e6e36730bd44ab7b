#!/usr/bin/env python
"""Tables that live for years, measured: opening after 1,000 commits, compaction, vacuum — next to delta-rs.

Three measurements, each on tables built in this run:

* **open**: a table appended to 1,000 times (one small append a "night", through ``write_table`` with the Arrow
  writer, as a scheduled job would) against a table holding the very same files committed in 10 commits (hard
  links: the same files and statistics, so the ratio measures the log, not the file count). Opening = resolving
  the latest snapshot to its file list (``delta.snapshot``: what every read, search and cross-match does first),
  median of repeated opens. With userbatch's checkpoint every 10 commits the 1,000-commit table reads one
  checkpoint and at most 9 JSON commits. For context: the same log with its checkpoints hidden (every JSON commit
  replayed), and the nightly table after ``optimize`` (one file, a long log).
* **optimize**: a table created with ``--rows`` rows then appended to ``--appends`` times (many small files per
  partition) is compacted by ``maintenance.optimize`` (one file per HEALPix partition, ``_healpix_29`` order, margin
  compacted in step, one commit). Peer: delta-rs ``optimize.compact()`` on a copy of the same table (bin-packing
  with no regard for partitions or margin, so it does less).
* **vacuum**: the compacted table is vacuumed with no retention (every superseded file goes). Peer: delta-rs
  ``vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)`` on its compacted copy.

Last line: ``RESULT open_1000_commits_vs_10_ratio=... optimize_rows_per_s=... vacuum_files_per_s=...`` with the
peer ratios; the goal of issue 19 is ``open_1000_commits_vs_10_ratio`` <= 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import benchlib as C

log = logging.getLogger("bench.maintenance")


def _env(work: Path) -> None:
    os.environ["USERBATCH_HOME"] = str(work / "home")
    os.environ["USERBATCH_WAREHOUSE"] = str(work / "warehouse")
    os.environ["USERBATCH_DB_URL"] = f"sqlite:///{work / 'facility.db'}"
    os.environ["USERBATCH_USER"] = "bench"


def _open_s(location: str, repeats: int) -> float:
    from userbatch.tables import delta

    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        delta.snapshot(location)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _grow(name: str, commits: int, rows_per_append: int) -> str:
    """A spatial table made by ``commits`` small appends in one corner of the sky (one partition), as nightly
    jobs would leave it."""
    from helpers import sky_points

    from userbatch.tables.catalog import Catalog
    from userbatch.tables.write import write_table

    for i in range(commits):
        pts = sky_points(rows_per_append, seed=i, id_start=1 + i * rows_per_append)
        pts["coord_ra"] = 150 + (pts["coord_ra"] - 180) * 1e-3
        pts["coord_dec"] = 30 + pts["coord_dec"] * 1e-3
        write_table(pts, name, "create" if i == 0 else "append", pixel_threshold=10**9)
    return Catalog().get(name).location


def _same_files_in(location: str, dest: Path, commits: int) -> str:
    """The files of ``location``'s latest version committed again, hard-linked, in ``commits`` commits: the same
    files and statistics, a shorter log — so an open-time ratio measures the log, not the file count."""
    import pyarrow.parquet as pq

    from userbatch.tables import delta

    rel = sorted(delta.snapshot(location).files.column("path").to_pylist())
    for r in rel:
        (dest / r).parent.mkdir(parents=True, exist_ok=True)
        os.link(Path(location) / r, dest / r)
    schema = pq.read_schema(dest / rel[0])
    step = -(-len(rel) // commits)
    for i in range(commits):
        delta.commit_files(dest, rel[i * step:(i + 1) * step], schema, "create" if i == 0 else "append", {})
    return str(dest)


def bench_open(commits: int, repeats: int) -> dict:
    from userbatch.tables import delta, maintenance
    from userbatch.tables.catalog import Catalog

    t0 = time.perf_counter()
    big = _grow("bench.nightly", commits, 20)
    grow_s = time.perf_counter() - t0
    assert delta.latest_version(big) == commits - 1
    scratch = Path(tempfile.mkdtemp(prefix="open-"))
    small = _same_files_in(big, scratch / "ten", 10)
    assert delta.latest_version(small) == 9 and delta.snapshot(small).num_rows == delta.snapshot(big).num_rows
    open_big, open_small = _open_s(big, repeats), _open_s(small, repeats)
    # the same 1,000-commit log with its checkpoints hidden: every JSON commit replayed
    shutil.copytree(big, scratch / "t")
    for p in (scratch / "t" / "_delta_log").iterdir():
        if "checkpoint" in p.name:
            p.unlink()
    open_bare = _open_s(str(scratch / "t"), max(3, repeats // 4))
    # what a nightly table looks like after an optimize: one file, a long log
    maintenance.optimize(Catalog().get("bench.nightly"))
    open_optimized = _open_s(big, repeats)
    shutil.rmtree(scratch)
    n_files = delta.snapshot(small).files.num_rows if Path(small).exists() else commits
    log.info("%d appends in %.1f s (%.1f ms each); open with the same %d files: %d commits %.2f ms, 10 commits "
             "%.2f ms, %d commits without checkpoints %.1f ms; after optimize (1 file) %.2f ms", commits, grow_s,
             1000 * grow_s / commits, n_files, commits, 1000 * open_big, 1000 * open_small, commits,
             1000 * open_bare, 1000 * open_optimized)
    return {"open_big_ms": 1000 * open_big, "open_small_ms": 1000 * open_small, "open_bare_ms": 1000 * open_bare,
            "open_optimized_ms": 1000 * open_optimized, "append_ms": 1000 * grow_s / commits}


def bench_compaction(rows: int, appends: int, append_rows: int) -> dict:
    from deltalake import DeltaTable
    from helpers import sky_points

    from userbatch.tables import delta, maintenance
    from userbatch.tables.catalog import Catalog
    from userbatch.tables.write import write_table

    name = "bench.compact"
    write_table(sky_points(rows, seed=1), name, "create", pixel_threshold=max(rows // 20, 1000),
                margin_radius_arcsec=5)
    for i in range(appends):
        write_table(sky_points(append_rows, seed=100 + i, id_start=10**8 * (i + 1)), name, "append")
    entry = Catalog().get(name)
    files_before = delta.snapshot(entry.location).files.num_rows
    peer = Path(tempfile.mkdtemp(prefix="deltars-"))
    shutil.copytree(entry.location, peer / "t", ignore=shutil.ignore_patterns("_margin"))
    total_rows = delta.snapshot(entry.location).num_rows

    t0 = time.perf_counter()
    res = maintenance.optimize(entry)
    ub_opt = time.perf_counter() - t0
    t0 = time.perf_counter()
    metrics = DeltaTable(str(peer / "t")).optimize.compact()
    peer_opt = time.perf_counter() - t0
    log.info("optimize: %d rows, %d -> %d files in %.2f s (margin compacted too); delta-rs compact %d -> %d files "
             "in %.2f s", total_rows, files_before, res.files_after, ub_opt, metrics.get("numFilesRemoved", -1),
             metrics.get("numFilesAdded", -1), peer_opt)

    t0 = time.perf_counter()
    rep = maintenance.vacuum(entry, retain_days=0, min_age_hours=0)
    ub_vac = time.perf_counter() - t0
    t0 = time.perf_counter()
    removed = DeltaTable(str(peer / "t")).vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)
    peer_vac = time.perf_counter() - t0
    shutil.rmtree(peer)
    log.info("vacuum: %d files (%d bytes) in %.3f s, keeping versions %s; delta-rs vacuum %d files in %.3f s",
             len(rep.files), rep.bytes, ub_vac, rep.kept_versions, len(removed), peer_vac)
    return {"rows": total_rows, "optimize_rows_per_s": total_rows / ub_opt,
            "peer_optimize_rows_per_s": total_rows / peer_opt,
            "vacuum_files_per_s": len(rep.files) / ub_vac, "peer_vacuum_files_per_s": len(removed) / peer_vac,
            "files_before": files_before, "files_after": res.files_after}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--commits", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=40)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--appends", type=int, default=30)
    ap.add_argument("--append-rows", type=int, default=20_000)
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    C.setup_logging(args.verbose)
    with tempfile.TemporaryDirectory(prefix="bench-maint-") as tmp:
        _env(Path(tmp))
        log.info("%s", C.env_summary())
        o = bench_open(args.commits, args.repeats)
        c = bench_compaction(args.rows, args.appends, args.append_rows)
    print(C.fmt_table([
        ["open (latest snapshot)", f"{o['open_big_ms']:.2f} ms @ {args.commits} commits",
         f"{o['open_small_ms']:.2f} ms @ 10 commits, same files", f"{o['open_bare_ms']:.1f} ms without checkpoints; "
         f"{o['open_optimized_ms']:.2f} ms after optimize"],
        ["optimize", f"{c['optimize_rows_per_s']:,.0f} rows/s", f"delta-rs compact {c['peer_optimize_rows_per_s']:,.0f}"
         " rows/s", f"{c['files_before']} -> {c['files_after']} files"],
        ["vacuum", f"{c['vacuum_files_per_s']:,.0f} files/s", f"delta-rs {c['peer_vacuum_files_per_s']:,.0f} files/s",
         ""],
    ], ["", "userbatch", "peer / reference", ""]))
    print(f"RESULT open_1000_commits_vs_10_ratio={o['open_big_ms'] / o['open_small_ms']:.2f} "
          f"open_without_checkpoints_vs_10_ratio={o['open_bare_ms'] / o['open_small_ms']:.1f} "
          f"open_after_optimize_ms={o['open_optimized_ms']:.2f} "
          f"optimize_rows_per_s={c['optimize_rows_per_s']:.0f} "
          f"optimize_vs_deltars={c['optimize_rows_per_s'] / c['peer_optimize_rows_per_s']:.2f} "
          f"vacuum_files_per_s={c['vacuum_files_per_s']:.0f} "
          f"vacuum_vs_deltars={c['vacuum_files_per_s'] / c['peer_vacuum_files_per_s']:.2f} "
          f"append_ms={o['append_ms']:.1f} rows={c['rows']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
