#!/usr/bin/env python
"""Side-by-side crossmatch: userbatch ``crossmatch`` (local and Spark engines) vs LSDB, plus a kernel floor.

Two simulated catalogs of ``--rows`` rows each (default 5,000,000) on one field of LSST-like density (50,000
rows per deg^2, so 100 deg^2 at the default size), centred on (RA 0, Dec -30) so it straddles RA = 0:

* left:  id, ra, dec, flux (uniform on the sphere inside the field);
* right: for 70 % of its rows, a left position moved by 0.2-arcsec Gaussian noise per axis; the other 30 %
  unrelated random positions in the same field; its own id column, rows shuffled.

Both are written once as Parquet under bench/_data and then held (a) as userbatch Delta tables (``ingest``, 5-arcsec
margin) and (b) as HATS catalogs with 5-arcsec margin caches (hats-import), same pixel threshold and highest
order on both sides. Both are built once and re-used (``--rebuild`` forces a new build).

Matched: every left row to its nearest right row within 1 arcsec (k = 1), loading only id/ra/dec on both sides.

* userbatch: ``crossmatch("bench.xm_left", "bench.xm_right", radius_arcsec=1.0, mode="nearest", left_columns=..,
  right_columns=.., engine="local", catalog=cat).to_arrow()``;
* LSDB: ``lsdb.open_catalog(path, columns=[id, ra, dec], margin_cache=...)`` for both (margin for the right side
  only), ``left.crossmatch(right, radius_arcsec=1.0, n_neighbors=1, ...).compute()`` on dask's default threaded
  scheduler, no distributed Client;
* floor: the per-partition kernel ``userbatch.ops.crossmatch.kernel.match`` alone, on arrays loaded beforehand (no
  I/O, no engine), over all partitions in a thread pool of 2;
* userbatch ``engine="spark"`` (a ``local[2]`` session), reported, not in the RESULT line.

Warm = best of ``--repeats`` calls in one process after a first call. Cold = a fresh Python process per call
(``--cold-worker``), wall time end to end as the parent sees it: interpreter start, imports, the call.
The (left id, right id) pair sets of all engines must be identical and the distances agree to 1e-6 arcsec (the
script exits 1 otherwise).

Match + write (what a batch job does), warm, best of ``--repeats``, every written table read back and its pairs
checked: userbatch ``crossmatch(...).write(...)`` with the default engine (local at this size: pyarrow writes the
Arrow result, no JVM) and with ``engine="spark"`` (the tasks write their own pairs), against LSDB
``crossmatch(...)`` + ``write_catalog(...)`` in its fastest configuration here (see :func:`write_lsdb`).

``--large``: userbatch warm at 20,000,000 x 20,000,000 rows (tables built once like the main ones, read from
disk) over the main size, and the peak RSS of a process running the largest task of that plan alone.

LSDB's write was also timed as ``to_hats(...)``, without ``_metadata``, and on a 2-worker distributed Client
(2026-12-05, 5M rows): 17-25 s each, none faster than the configuration kept here.

Last line: ``RESULT xmatch_speedup_vs_lsdb=<lsdb warm / ub warm> xmatch_cold_speedup_vs_lsdb=<lsdb cold / ub cold>
xmatch_fraction_of_floor=<floor / ub warm> write_speedup_vs_lsdb=<lsdb match+write / ub match+write>
spark_write_speedup_vs_lsdb=<the same, engine="spark"> [large_growth=<ub warm at 20M / ub warm at 5M>] rows=<n>``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as C

log = logging.getLogger("bench.crossmatch")

DEFAULT_ROWS = 5_000_000
#: ``--large``: the growth check's size, built from disk like the main one (userbatch tables only).
LARGE_ROWS = 20_000_000
#: LSST-like: 5M rows per 100 deg^2. The field is scaled with --rows so the density stays the same.
DEFAULT_DENSITY = 50_000.0
FIELD_CENTRE = (0.0, -30.0)  # (ra, dec) deg: the field straddles RA = 0
MATCHED_FRACTION = 0.7
NOISE_ARCSEC = 0.2
RADIUS_ARCSEC = 1.0
COLUMNS = ["id", "ra", "dec"]
LEFT, RIGHT = "bench.xm_left", "bench.xm_right"
DIST_TOL_ARCSEC = 1e-6


def table_names(rows: int, main_rows: int) -> tuple[str, str]:
    """The brief's names for the main size; the growth check's extra size gets its own pair."""
    return (LEFT, RIGHT) if rows == main_rows else (f"{LEFT}_{rows}", f"{RIGHT}_{rows}")


def sig3(x: float) -> str:
    """Three significant digits, never in exponent notation."""
    if not math.isfinite(x) or x == 0:
        return str(x)
    d = 2 - math.floor(math.log10(abs(x)))
    return f"{round(x, d):.{max(d, 0)}f}"


# ------------------------------------------------------------------------------------------------ input data

def input_dir(rows: int, seed: int, density: float) -> Path:
    return C.DATA_DIR / f"xmatch-{rows}-seed{seed}-d{density:g}"


def field_box(rows: int, density: float) -> tuple[float, float, float, float]:
    """(ra_min, ra_max, dec_min, dec_max) of a field of rows/density deg^2 centred on FIELD_CENTRE, ra_min < 0:
    a dec span equal to the square's side and the RA span that makes the area exact."""
    ra0, dec0 = FIELD_CENTRE
    area_deg2 = rows / density
    side = math.sqrt(area_deg2)
    d1, d2 = dec0 - side / 2, dec0 + side / 2
    band = math.sin(math.radians(d2)) - math.sin(math.radians(d1))
    ra_span = math.degrees(area_deg2 * (math.pi / 180) ** 2 / band)
    return ra0 - ra_span / 2, ra0 + ra_span / 2, d1, d2


def _uniform_field(rng, n: int, box):
    import numpy as np

    ra_lo, ra_hi, d1, d2 = box
    ra = rng.uniform(ra_lo, ra_hi, n) % 360.0
    s = rng.uniform(math.sin(math.radians(d1)), math.sin(math.radians(d2)), n)
    return ra, np.degrees(np.arcsin(s))


def ensure_xm_input(rows: int, seed: int, density: float) -> dict[str, list[Path]]:
    """Left and right Parquet files under bench/_data (1M rows per file), generated once; ``manifest.json``
    written last marks a complete set."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = input_dir(rows, seed, density)
    manifest = out / "manifest.json"
    if manifest.exists():
        meta = json.loads(manifest.read_text())
        files = {side: [out / f for f in meta["files"][side]] for side in ("left", "right")}
        if meta.get("rows") == rows and all(f.exists() for fs in files.values() for f in fs):
            log.info("re-using input %s", out)
            return files
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    box = field_box(rows, density)
    ra, dec = _uniform_field(rng, rows, box)
    left = pa.table({
        "id": pa.array(np.arange(1, rows + 1, dtype=np.int64)),
        "ra": pa.array(ra), "dec": pa.array(dec),
        "flux": pa.array(rng.lognormal(3.0, 1.0, rows).astype(np.float32)),
    })
    n_matched = int(round(MATCHED_FRACTION * rows))
    src = rng.choice(rows, n_matched, replace=False)
    sigma = NOISE_ARCSEC / 3600.0
    m_dec = dec[src] + rng.normal(0.0, sigma, n_matched)
    m_ra = (ra[src] + rng.normal(0.0, sigma, n_matched) / np.cos(np.radians(dec[src]))) % 360.0
    u_ra, u_dec = _uniform_field(rng, rows - n_matched, box)
    perm = rng.permutation(rows)
    right = pa.table({
        "id": pa.array(10**12 + np.arange(rows, dtype=np.int64)),
        "ra": pa.array(np.concatenate([m_ra, u_ra])[perm]),
        "dec": pa.array(np.concatenate([m_dec, u_dec])[perm]),
    })
    files: dict[str, list[str]] = {}
    for side, table in (("left", left), ("right", right)):
        (out / side).mkdir()
        files[side] = []
        for i, start in enumerate(range(0, rows, C.CHUNK_ROWS)):
            name = f"{side}/part-{i:05d}.parquet"
            pq.write_table(table.slice(start, C.CHUNK_ROWS), out / name)  # pyarrow defaults: snappy
            files[side].append(name)
    manifest.write_text(json.dumps({"rows": rows, "seed": seed, "density_per_deg2": density, "field": box,
                                    "matched_fraction": MATCHED_FRACTION, "noise_arcsec": NOISE_ARCSEC,
                                    "files": files}, indent=1))
    log.info("generated 2 x %d rows under %s in %.1f s (field RA %.2f..%.2f, Dec %.2f..%.2f)", rows, out,
             time.perf_counter() - t0, *box)
    return {side: [out / f for f in fs] for side, fs in files.items()}


# ------------------------------------------------------------------------------------------------ build / re-use

def build_dir(args, rows: int) -> Path:
    return (C.DATA_DIR / f"xmatch-{rows}-seed{args.seed}-d{args.density:g}-t{args.threshold}-o{args.highest_order}"
            f"-m{args.margin_arcsec:g}")


def hats_paths(ddir: Path) -> dict[str, str]:
    h = ddir / "hats"
    return {"left": str(h / "left"), "right": str(h / "right"), "right_margin": str(h / "right_margin")}


def entry_for(name: str, location: Path, args):
    from userbatch.tables.catalog import TableEntry

    return TableEntry(name=name, location=str(location), format="delta", ra_column="ra", dec_column="dec",
                      pixel_threshold=args.threshold, highest_order=args.highest_order,
                      margin_radius_arcsec=args.margin_arcsec, description="bench/crossmatch.py simulated catalog")


def build_worker(args) -> int:
    """Child process: build what ``--build-what`` names (userbatch tables, HATS catalogs) for ``--rows``."""
    files = ensure_xm_input(args.rows, args.seed, args.density)
    ddir = build_dir(args, args.rows)
    ddir.mkdir(parents=True, exist_ok=True)
    what = set(args.build_what.split(","))
    if "userbatch" in what:
        # a catalog of its own: the build's entries (bench.xm_build_*) never reach a user's or the run's catalog
        os.environ["USERBATCH_HOME"] = str(args.work / f"build_home_{args.rows}")
        os.environ.pop("USERBATCH_WAREHOUSE", None)
        os.environ.pop("USERBATCH_DB_URL", None)
        import userbatch
        from userbatch.tables.ingest import ingest

        shutil.rmtree(ddir / "tables", ignore_errors=True)
        (ddir / "userbatch.json").unlink(missing_ok=True)
        spark = userbatch.session()
        t: dict = {}
        meta: dict = {"tables": {}}
        for side in ("left", "right"):
            loc = ddir / "tables" / side
            with C.timed(t, f"ingest {side}"):
                res = ingest([str(p) for p in files[side]], f"bench.xm_build_{side}", ra_column="ra",
                             dec_column="dec", pixel_threshold=args.threshold, highest_order=args.highest_order,
                             margin_radius_arcsec=args.margin_arcsec, location=str(loc), spark=spark)
            meta["tables"][side] = {"location": str(loc), "rows": int(res.rows), "partitions": int(res.partitions),
                                    "margin_rows": int(res.margin_rows or 0)}
        spark.stop()
        meta["build_s"] = t
        (ddir / "userbatch.json").write_text(json.dumps(meta, indent=1))
    if "hats" in what:
        from dask.distributed import Client
        from hats_import.catalog.arguments import ImportArguments
        from hats_import.margin_cache.margin_cache_arguments import MarginCacheArguments
        from hats_import.pipeline import pipeline_with_client

        hdir = ddir / "hats"
        shutil.rmtree(hdir, ignore_errors=True)
        (ddir / "hats.json").unlink(missing_ok=True)
        tmp = args.work / "dask_tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        t = {}
        with Client(n_workers=2, threads_per_worker=1, local_directory=str(tmp), dashboard_address=None) as client:
            for side in ("left", "right"):
                with C.timed(t, f"hats-import {side}"):
                    pipeline_with_client(ImportArguments(
                        output_artifact_name=side, output_path=str(hdir), input_file_list=[str(p) for p in files[side]],
                        file_reader="parquet", ra_column="ra", dec_column="dec", pixel_threshold=args.threshold,
                        highest_healpix_order=args.highest_order, dask_tmp=str(tmp), progress_bar=False,
                        resume=False,
                    ), client)
            # LSDB only needs the right side's margin for a crossmatch
            with C.timed(t, "hats-import right margin"):
                pipeline_with_client(MarginCacheArguments(
                    input_catalog_path=str(hdir / "right"), output_path=str(hdir),
                    output_artifact_name="right_margin", margin_threshold=args.margin_arcsec,
                    dask_tmp=str(tmp), progress_bar=False, resume=False,
                ), client)
        (ddir / "hats.json").write_text(json.dumps({"paths": hats_paths(ddir), "build_s": t}, indent=1))
    return 0


def ensure_built(args, rows: int, need_hats: bool, env: dict) -> dict:
    """Build (in a child process) whatever is missing for ``rows``; return the manifests."""
    ddir = build_dir(args, rows)
    todo = []
    if args.rebuild or not (ddir / "userbatch.json").exists():
        todo.append("userbatch")
    if need_hats and (args.rebuild or not (ddir / "hats.json").exists()):
        todo.append("hats")
    if todo:
        log.info("building %s for %d rows under %s", " + ".join(todo), rows, ddir)
        cmd = [sys.executable, __file__, "--build-worker", "--build-what", ",".join(todo), "--work", str(args.work),
               *common_args(args, rows)]
        subprocess.run(cmd, check=True, env=env)
    else:
        log.info("re-using built tables%s under %s", " and HATS catalogs" if need_hats else "", ddir)
    meta = {"userbatch": json.loads((ddir / "userbatch.json").read_text())}
    if need_hats:
        meta["hats"] = json.loads((ddir / "hats.json").read_text())
    return meta


def common_args(args, rows: int) -> list[str]:
    return ["--rows", str(rows), "--seed", str(args.seed), "--density", str(args.density), "--threshold",
            str(args.threshold), "--highest-order", str(args.highest_order), "--margin-arcsec",
            str(args.margin_arcsec)] + (["-v"] if args.verbose else [])


def register(meta: dict, names: tuple[str, str], args) -> None:
    from userbatch.tables.catalog import Catalog

    cat = Catalog()
    for side, name in zip(("left", "right"), names):
        if not cat.exists(name):
            cat.register(entry_for(name, Path(meta["userbatch"]["tables"][side]["location"]), args))


# ------------------------------------------------------------------------------------------------ the calls

def call_userbatch(names: tuple[str, str], engine: str, catalog=None):
    from userbatch.ops.crossmatch import crossmatch

    res = crossmatch(names[0], names[1], radius_arcsec=RADIUS_ARCSEC, mode="nearest", left_columns=COLUMNS,
                     right_columns=COLUMNS, engine=engine, catalog=catalog)
    return res.to_arrow()


def write_userbatch(names: tuple[str, str], engine: str, out_name: str, location: Path, catalog=None):
    """Match and write the pairs as a table (what a batch job does): ``crossmatch(...).write(...)``."""
    from userbatch.ops.crossmatch import crossmatch

    res = crossmatch(names[0], names[1], radius_arcsec=RADIUS_ARCSEC, mode="nearest", left_columns=COLUMNS,
                     right_columns=COLUMNS, engine=engine, catalog=catalog)
    return res.write(out_name, catalog=catalog, location=str(location))


def read_written_userbatch(out_name: str, catalog):
    """The pairs of a written table, read back with pyarrow (untimed)."""
    from userbatch.tables.read import resolve, to_arrow

    return to_arrow(resolve(catalog.get(out_name), record=False))


def write_lsdb(hats: dict, path: Path):
    """LSDB's match + write in its fastest configuration here: the threaded scheduler (a distributed Client
    only adds transfers on one machine), one catalog without the collection wrapper, no per-partition
    statistics and no skymap (userbatch writes neither); the ``_metadata`` footer summary is kept, as
    userbatch's Delta commit keeps per-file statistics."""
    import lsdb

    left = lsdb.open_catalog(hats["left"], columns=COLUMNS)
    right = lsdb.open_catalog(hats["right"], columns=COLUMNS, margin_cache=hats["right_margin"])
    xm = left.crossmatch(right, radius_arcsec=RADIUS_ARCSEC, n_neighbors=1, suffixes=("_left", "_right"),
                         suffix_method="all_columns")
    xm.write_catalog(str(path), as_collection=False, create_per_partition_statistics=False,
                     should_write_skymap=False, progress_bar=False, overwrite=True)


def read_written_lsdb(path: Path):
    import pyarrow.dataset as pads

    files = [p for p in Path(path).rglob("*.parquet") if "dataset" in p.parts and not p.name.startswith("_")]
    return pads.dataset([str(f) for f in files], format="parquet").to_table(
        columns=["id_left", "id_right", "_dist_arcsec"]).to_pandas()


def call_lsdb(hats: dict):
    import lsdb

    left = lsdb.open_catalog(hats["left"], columns=COLUMNS)  # a crossmatch needs no left margin
    right = lsdb.open_catalog(hats["right"], columns=COLUMNS, margin_cache=hats["right_margin"])
    xm = left.crossmatch(right, radius_arcsec=RADIUS_ARCSEC, n_neighbors=1, suffixes=("_left", "_right"),
                         suffix_method="all_columns")
    # progress_bar=False only hides lsdb's tqdm bar
    return xm.compute(progress_bar=False)


def pairs_userbatch(tbl) -> dict:
    import numpy as np

    names = tbl.column_names
    rid = "id_right" if "id_right" in names else next(n for n in names if n.startswith("id") and n != "id")
    return {"left": tbl.column("id").to_numpy().astype(np.int64), "right": tbl.column(rid).to_numpy().astype(np.int64),
            "dist": tbl.column("_dist_arcsec").to_numpy().astype(np.float64)}


def pairs_lsdb(df) -> dict:
    import numpy as np

    return {"left": df["id_left"].to_numpy().astype(np.int64), "right": df["id_right"].to_numpy().astype(np.int64),
            "dist": df["_dist_arcsec"].to_numpy().astype(np.float64)}


def compare_pairs(ref: dict, other: dict, ref_name: str, other_name: str) -> tuple[bool, str]:
    """Same (left id, right id) set and distances within DIST_TOL_ARCSEC? k = 1: a left id appears at most once."""
    import numpy as np

    def norm(p):
        o = np.lexsort((p["right"], p["left"]))
        return p["left"][o], p["right"][o], p["dist"][o]

    la, ra, da = norm(ref)
    lb, rb, db = norm(other)
    notes = []
    dup_a, dup_b = len(la) - len(np.unique(la)), len(lb) - len(np.unique(lb))
    if dup_a or dup_b:
        notes.append(f"left ids matched more than once: {ref_name} {dup_a}, {other_name} {dup_b}")
    if len(la) == len(lb) and np.array_equal(la, lb) and np.array_equal(ra, rb):
        worst = float(np.max(np.abs(da - db))) if len(da) else 0.0
        ok = worst <= DIST_TOL_ARCSEC and not notes
        notes.append(f"{other_name} vs {ref_name}: {len(la):,} pairs, IDENTICAL pair sets; max |distance diff| "
                     f"{worst:.2e} arcsec ({'ok' if worst <= DIST_TOL_ARCSEC else 'TOO LARGE'})")
        return ok, "; ".join(notes)
    sa = set(zip(la.tolist(), ra.tolist()))
    sb = set(zip(lb.tolist(), rb.tolist()))
    only_a, only_b = sorted(sa - sb), sorted(sb - sa)
    notes.append(f"{other_name} vs {ref_name}: pair sets DIFFER: {ref_name} {len(sa):,}, {other_name} {len(sb):,}; "
                 f"only in {ref_name} {len(only_a):,} e.g. {only_a[:5]}; only in {other_name} {len(only_b):,} "
                 f"e.g. {only_b[:5]}")
    return False, "; ".join(notes)


# ------------------------------------------------------------------------------------------------ floor

def floor_inputs(names: tuple[str, str]) -> list[dict]:
    """Per left partition: left xyz, and right xyz of every right partition that overlaps it plus their margin
    rows (deduplicated by right id), with the ids to map matches back. Untimed."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from userbatch.ops.crossmatch.kernel import radec_to_xyz
    from userbatch.tables.catalog import Catalog
    from userbatch.tables.read import margin_snapshot, path_pixel, resolve

    cat = Catalog()

    def by_pixel(snap) -> dict[tuple[int, int], list[str]]:
        out: dict = {}
        root = Path(snap.location)
        for p in snap.files.column("path").to_pylist():
            out.setdefault(path_pixel(p), []).append(str(root / p))
        return out

    def read(paths):
        return pa.concat_tables([pq.read_table(p, columns=COLUMNS) for p in paths]) if paths else None

    le, re_ = cat.get(names[0]), cat.get(names[1])
    lsnap, rsnap = resolve(le), resolve(re_)
    msnap = margin_snapshot(re_, rsnap.version)
    if msnap is None:
        raise RuntimeError(f"{names[1]} has no margin: the floor needs one")
    lpix, rpix, mpix = by_pixel(lsnap), by_pixel(rsnap), by_pixel(msnap[0])

    def overlaps(a, b) -> bool:
        (oa, pa_), (ob, pb) = a, b
        return (pa_ >> 2 * (oa - ob)) == pb if oa >= ob else (pb >> 2 * (ob - oa)) == pa_

    parts = []
    for pix, lfiles in sorted(lpix.items()):
        rp = [q for q in rpix if overlaps(pix, q)]
        lt = read(lfiles)
        rt = read([f for q in rp for f in rpix[q]] + [f for q in rp for f in mpix.get(q, [])])
        if rt is None or rt.num_rows == 0:
            continue
        rid = rt.column("id").to_numpy()
        _, first = np.unique(rid, return_index=True)
        first.sort()
        rt = rt.take(pa.array(first))
        parts.append({
            "pixel": pix,
            "left_xyz": np.ascontiguousarray(radec_to_xyz(lt.column("ra").to_numpy(), lt.column("dec").to_numpy()),
                                             dtype=np.float64),
            "right_xyz": np.ascontiguousarray(radec_to_xyz(rt.column("ra").to_numpy(), rt.column("dec").to_numpy()),
                                              dtype=np.float64),
            "left_id": lt.column("id").to_numpy(), "right_id": rt.column("id").to_numpy(),
        })
    # biggest first, so the two threads finish together
    parts.sort(key=lambda p: -(len(p["left_xyz"]) + len(p["right_xyz"])))
    return parts


def run_floor(parts: list[dict], repeats: int) -> tuple[list[float], dict]:
    import numpy as np
    from concurrent.futures import ThreadPoolExecutor
    from userbatch.ops.crossmatch.kernel import match

    def one(p):
        return match(p["left_xyz"], p["right_xyz"], RADIUS_ARCSEC, min_radius_arcsec=0.0, k=1)

    one(parts[0])  # JIT warm-up (numba compiles on first use), untimed
    times, outs = [], None
    with ThreadPoolExecutor(2) as pool:
        for _ in range(repeats):
            t0 = time.perf_counter()
            outs = list(pool.map(one, parts))
            times.append(time.perf_counter() - t0)
    li, ri, di = [], [], []
    for p, (l_idx, r_idx, dist, _rank) in zip(parts, outs):
        li.append(p["left_id"][np.asarray(l_idx)])
        ri.append(p["right_id"][np.asarray(r_idx)])
        di.append(np.asarray(dist, dtype=np.float64))
    cat = lambda xs, dt: np.concatenate(xs).astype(dt) if xs else np.zeros(0, dt)  # noqa: E731
    return times, {"left": cat(li, np.int64), "right": cat(ri, np.int64), "dist": cat(di, np.float64)}


def crossmatch_engine(names: tuple[str, str], catalog) -> str:
    """The engine ``engine="auto"`` picks for these tables (planning only, nothing read)."""
    from userbatch.ops.crossmatch import crossmatch

    return crossmatch(names[0], names[1], radius_arcsec=RADIUS_ARCSEC, left_columns=COLUMNS, right_columns=COLUMNS,
                      catalog=catalog).engine


def _vm_kb(field: str) -> int:
    """A ``/proc/self/status`` memory field (VmRSS, VmHWM) in kB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def task_rss_worker(args) -> int:
    """Child process: plan the match at ``--rows``, then run its largest task alone and report the peak RSS while
    it ran (``VmHWM`` after resetting it through ``/proc/self/clear_refs``; ``ru_maxrss`` would carry the parent's
    peak across the exec) and the RSS before it."""
    from userbatch.ops.crossmatch import crossmatch
    from userbatch.ops.crossmatch.plan import task_sizes
    from userbatch.ops.crossmatch.tasks import run_task
    from userbatch.tables.catalog import Catalog

    names = table_names(args.rows, args.main_rows)
    xm = crossmatch(names[0], names[1], radius_arcsec=RADIUS_ARCSEC, mode="nearest", left_columns=COLUMNS,
                    right_columns=COLUMNS, engine="local", catalog=Catalog())
    sizes = task_sizes(xm.plan.tasks, xm.left, xm.right)
    i = max(range(len(sizes)), key=lambda j: sizes[j])
    task = xm.plan.tasks[i]
    smallest = min(range(len(sizes)), key=lambda j: sizes[j])
    run_task(xm.plan.tasks[smallest], xm.left, xm.right, xm.options, xm.plan)  # imports and JIT, untimed
    before = _vm_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) restarts from the current RSS
    out = run_task(task, xm.left, xm.right, xm.options, xm.plan)
    peak = _vm_kb("VmHWM")
    lrows, rrows = xm.left.part_rows(), xm.right.part_rows()
    args.out.write_text(json.dumps({
        "tasks": len(sizes), "left_rows": int(sum(lrows[j] for j in task.left_parts)),
        "right_rows": int(sum(rrows[j] for j in task.right_parts)), "pairs": out.num_rows,
        "rss_before_mb": round(before / 1024, 1), "peak_rss_mb": round(peak / 1024, 1)}))
    return 0


def run_task_rss(args, rows: int, env: dict) -> dict:
    out = args.work / f"task-rss-{rows}.json"
    cmd = [sys.executable, __file__, "--task-rss-worker", "--work", str(args.work), "--out", str(out),
           "--main-rows", str(args.rows), *common_args(args, rows)]
    subprocess.run(cmd, check=True, env=env)
    return json.loads(out.read_text())


# ------------------------------------------------------------------------------------------------ cold worker

def cold_worker(args) -> int:
    """A fresh process doing one call end to end; the parent times the whole process."""
    t0 = time.perf_counter()
    if args.cold_worker == "lsdb":
        hats = hats_paths(build_dir(args, args.rows))
        n = len(call_lsdb(hats))
    else:
        from userbatch.tables.catalog import Catalog

        n = call_userbatch(table_names(args.rows, args.rows), "local", catalog=Catalog()).num_rows
        C.check_frozen_source()
    args.out.write_text(json.dumps({"matches": n, "in_process_s": time.perf_counter() - t0}))
    return 0


def run_cold(args, which: str, env: dict, warm_files: list[Path]) -> dict:
    out = args.work / f"cold-{which}.json"
    cmd = [sys.executable, __file__, "--cold-worker", which, "--work", str(args.work), "--out", str(out),
           *common_args(args, args.rows)]
    C.warm_page_cache(warm_files)  # a cold *process*, not a cold disk: both sides start from the page cache
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    res = json.loads(out.read_text())
    res.update(wall_s=wall, cpu_s=(r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime))
    log.info("cold %s: %.2f s (%d matches)", which, wall, res["matches"])
    return res


# ------------------------------------------------------------------------------------------------ measurement

def timed_call(fn):
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, time.process_time() - c0, out


def measure(args) -> int:

    work = args.work
    env = dict(os.environ)
    env["USERBATCH_HOME"] = str(work / "userbatch_home")
    os.environ["USERBATCH_HOME"] = env["USERBATCH_HOME"]
    os.environ.pop("USERBATCH_WAREHOUSE", None)
    os.environ.pop("USERBATCH_DB_URL", None)
    env.pop("USERBATCH_WAREHOUSE", None)
    env.pop("USERBATCH_DB_URL", None)
    log.info("%s", C.env_summary())
    rows = args.rows
    ensure_xm_input(rows, args.seed, args.density)
    meta = ensure_built(args, rows, need_hats=True, env=env)
    names = table_names(rows, rows)
    register(meta, names, args)
    hats = meta["hats"]["paths"]
    ub_files = [p for side in ("left", "right") for p in Path(meta["userbatch"]["tables"][side]["location"])
                .rglob("*.parquet")]
    hats_files = [p for k in ("left", "right", "right_margin") for p in Path(hats[k]).rglob("*.parquet")]
    r: dict = {"rows": rows, "meta": meta, "field": field_box(rows, args.density)}

    # ---- cold: a fresh process per call, alternating the order. One untimed priming process per side first:
    # numba (cache=True) compiles the kernel on first use ever and caches it next to the code (the run's frozen
    # copy), as it would on a user's installation after the first call; cold means a new process, not a new install.
    r["prime_s"] = {w: run_cold(args, w, env, hats_files if w == "lsdb" else ub_files)["wall_s"]
                    for w in ("lsdb", "userbatch")}
    cold: dict = {"lsdb": [], "userbatch": []}
    for i in range(args.cold_repeats):
        for which in (("lsdb", "userbatch") if i % 2 == 0 else ("userbatch", "lsdb")):
            cold[which].append(run_cold(args, which, env, hats_files if which == "lsdb" else ub_files))
    r["cold"] = cold

    # ---- warm: first call, then repeats interleaved
    import dask
    from userbatch.tables.catalog import Catalog

    log.info("dask scheduler: %s (no distributed Client)", dask.config.get("scheduler", "default (threads)"))
    import lsdb  # noqa: F401  (imports are in the cold figures; "first call" is the first call after them)
    import userbatch.ops.crossmatch  # noqa: F401

    cat = Catalog()
    fns = {"lsdb": lambda: call_lsdb(hats), "userbatch": lambda: call_userbatch(names, "local", catalog=cat)}
    first, warm, warm_cpu, results = {}, {"lsdb": [], "userbatch": []}, {"lsdb": [], "userbatch": []}, {}
    for k in ("lsdb", "userbatch"):
        first[k], _, results[k] = timed_call(fns[k])
        log.info("first %s: %.2f s", k, first[k])
    for i in range(args.repeats):
        for k in (("lsdb", "userbatch") if i % 2 == 0 else ("userbatch", "lsdb")):
            w, c, _ = timed_call(fns[k])
            warm[k].append(w)
            warm_cpu[k].append(c)
            log.info("warm %s: %.2f s (process CPU %.1f s)", k, w, c)
    r.update(first_s=first, warm_s=warm, warm_cpu_s=warm_cpu)
    ub_tbl = results["userbatch"]
    r["ub_columns"] = ub_tbl.column_names
    p_ub, p_lsdb = pairs_userbatch(ub_tbl), pairs_lsdb(results["lsdb"])
    del results, ub_tbl
    checks = []
    checks.append(compare_pairs(p_lsdb, p_ub, "lsdb", "userbatch-local"))
    for k, runs in cold.items():
        n_ref = len(p_lsdb["left"])
        for c in runs:
            checks.append((c["matches"] == n_ref, f"cold {k}: {c['matches']:,} matches (warm lsdb {n_ref:,})"))

    # ---- floor
    parts = floor_inputs(names)
    r["floor_partitions"] = len(parts)
    r["floor_rows"] = [int(sum(len(p["left_xyz"]) for p in parts)), int(sum(len(p["right_xyz"]) for p in parts))]
    floor_times, p_floor = run_floor(parts, args.repeats)
    del parts
    r["floor_s"] = floor_times
    checks.append(compare_pairs(p_lsdb, p_floor, "lsdb", "floor"))
    log.info("floor: %s s", [round(x, 3) for x in floor_times])

    # ---- match + write (what a batch job does): the default engine and LSDB, warm, interleaved
    wdir = work / "written"
    counter = iter(range(10_000))

    def ub_write(engine: str, keep: bool = False):
        i = next(counter)
        name = f"bench.xm_written_{engine}_{i}"
        loc = wdir / f"ub_{engine}_{i}"
        t = timed_call(lambda: write_userbatch(names, engine, name, loc, catalog=cat))[0]
        out = read_written_userbatch(name, cat) if keep else None
        cat.drop(name)
        shutil.rmtree(loc, ignore_errors=True)
        return t, out

    def lsdb_write(keep: bool = False):
        loc = wdir / f"lsdb_{next(counter)}"
        t = timed_call(lambda: write_lsdb(hats, loc))[0]
        out = read_written_lsdb(loc) if keep else None
        shutil.rmtree(loc, ignore_errors=True)
        return t, out

    default_engine = crossmatch_engine(names, cat)
    w_first = {"lsdb": lsdb_write(keep=True), "userbatch": ub_write("auto", keep=True)}
    checks.append(compare_pairs(p_lsdb, pairs_lsdb(w_first["lsdb"][1]), "lsdb", "lsdb-written"))
    checks.append(compare_pairs(p_lsdb, pairs_userbatch(w_first["userbatch"][1]), "lsdb",
                                f"userbatch-written ({default_engine})"))
    wr = {"lsdb": [], "userbatch": []}
    for i in range(args.repeats):
        for k in (("lsdb", "userbatch") if i % 2 == 0 else ("userbatch", "lsdb")):
            wr[k].append(lsdb_write()[0] if k == "lsdb" else ub_write("auto")[0])
            log.info("write %s: %.2f s", k, wr[k][-1])
    r["write_first_s"] = {k: v[0] for k, v in w_first.items()}
    r["write_s"] = wr
    r["write_engine"] = default_engine
    del w_first

    # ---- Spark engine: the match (reported) and match + write (in the RESULT line)
    if not args.no_spark:
        import userbatch.spark

        t0 = time.perf_counter()
        spark = userbatch.spark.session(master="local[2]")
        r["spark_start_s"] = time.perf_counter() - t0
        r["spark_first_s"], _, tbl = timed_call(lambda: call_userbatch(names, "spark", catalog=cat))
        r["spark_warm_s"], _, tbl = timed_call(lambda: call_userbatch(names, "spark", catalog=cat))
        checks.append(compare_pairs(p_lsdb, pairs_userbatch(tbl), "lsdb", "userbatch-spark"))
        del tbl
        t, out = ub_write("spark", keep=True)
        checks.append(compare_pairs(p_lsdb, pairs_userbatch(out), "lsdb", "userbatch-spark-written"))
        del out
        r["spark_write_s"] = [t] + [ub_write("spark")[0] for _ in range(args.repeats)]
        spark.stop()
        log.info("spark: start %.1f s, first %.2f s, warm %.2f s, write %s", r["spark_start_s"], r["spark_first_s"],
                 r["spark_warm_s"], [round(x, 2) for x in r["spark_write_s"]])
    r["n_matches"] = {"lsdb": len(p_lsdb["left"]), "userbatch": len(p_ub["left"]), "floor": len(p_floor["left"])}
    r["n_true_pairs_possible"] = int(round(MATCHED_FRACTION * rows))
    del p_lsdb, p_ub, p_floor

    # ---- growth: userbatch warm at rows // 4 too
    if args.growth:
        q = rows // 4
        qmeta = ensure_built(args, q, need_hats=False, env=env)
        qnames = table_names(q, rows)
        register(qmeta, qnames, args)
        fq = lambda: call_userbatch(qnames, "local", catalog=cat)  # noqa: E731
        timed_call(fq)
        r["growth"] = {"rows_small": q, "warm_small_s": [timed_call(fq)[0] for _ in range(args.repeats)]}

    # ---- large: userbatch warm at LARGE_ROWS from disk, and the peak RSS of its largest task
    if args.large:
        big = LARGE_ROWS
        bmeta = ensure_built(args, big, need_hats=False, env=env)
        bnames = table_names(big, rows)
        register(bmeta, bnames, args)
        fb = lambda: call_userbatch(bnames, "local", catalog=cat).num_rows  # noqa: E731
        first_big = timed_call(fb)
        warm_big = [timed_call(fb)[0] for _ in range(args.repeats)]
        r["large"] = {"rows": big, "first_s": first_big[0], "matches": first_big[2], "warm_s": warm_big,
                      "task": run_task_rss(args, big, env)}
        log.info("large: %d rows, warm %s s; largest task %s", big, [round(x, 2) for x in warm_big], r["large"]["task"])

    ok = all(c[0] for c in checks)
    r["checks"] = [c[1] for c in checks]
    report(args, r, ok)
    return 0 if ok else 1


def report(args, r: dict, ok: bool) -> None:
    rows = r["rows"]
    lsdb_warm, ub_warm, floor = min(r["warm_s"]["lsdb"]), min(r["warm_s"]["userbatch"]), min(r["floor_s"])
    lsdb_cold = min(c["wall_s"] for c in r["cold"]["lsdb"])
    ub_cold = min(c["wall_s"] for c in r["cold"]["userbatch"])
    box = r["field"]
    ub_meta = r["meta"]["userbatch"]["tables"]
    print()
    print(f"== crossmatch benchmark: {rows:,} x {rows:,} rows, radius {RADIUS_ARCSEC:g} arcsec, nearest (k=1) ==")
    print(C.env_summary() + "  (shared machine: timings are noisy)")
    print(f"userbatch code measured: {os.environ.get('BENCH_CODE', 'live python/userbatch')}")
    print(f"field RA {box[0] % 360:.2f}..{box[1]:.2f} (across 0), Dec {box[2]:.2f}..{box[3]:.2f}, "
          f"{args.density:,.0f} rows/deg^2; right = {MATCHED_FRACTION:.0%} left positions + {NOISE_ARCSEC}\" noise, "
          f"{1 - MATCHED_FRACTION:.0%} unrelated")
    print(f"partitions: pixel threshold {args.threshold:,}, highest order {args.highest_order}, margin "
          f"{args.margin_arcsec:g} arcsec; userbatch tables {ub_meta['left']['partitions']} + "
          f"{ub_meta['right']['partitions']} partitions (right margin rows {ub_meta['right']['margin_rows']:,}); "
          f"floor over {r['floor_partitions']} left partitions ({r['floor_rows'][0]:,} left, "
          f"{r['floor_rows'][1]:,} right+margin rows)")
    print()
    table = [
        ["LSDB: first call in process", f"{r['first_s']['lsdb']:.2f}", ""],
        ["LSDB: warm (best of %d)" % len(r["warm_s"]["lsdb"]), f"{lsdb_warm:.2f}",
         f"{min(r['warm_cpu_s']['lsdb']):.1f}"],
        ["LSDB: cold process (best of %d)" % len(r["cold"]["lsdb"]), f"{lsdb_cold:.2f}",
         f"{min(c['cpu_s'] for c in r['cold']['lsdb']):.1f}"],
        ["userbatch local: first call in process", f"{r['first_s']['userbatch']:.2f}", ""],
        ["userbatch local: warm (best of %d)" % len(r["warm_s"]["userbatch"]), f"{ub_warm:.2f}",
         f"{min(r['warm_cpu_s']['userbatch']):.1f}"],
        ["userbatch local: cold process (best of %d)" % len(r["cold"]["userbatch"]), f"{ub_cold:.2f}",
         f"{min(c['cpu_s'] for c in r['cold']['userbatch']):.1f}"],
        ["floor: kernel only, 2 threads (best of %d)" % len(r["floor_s"]), f"{floor:.2f}", ""],
    ]
    if "spark_warm_s" in r:
        table += [["userbatch spark: session start local[2] (not counted)", f"{r['spark_start_s']:.1f}", ""],
                  ["userbatch spark: first call", f"{r['spark_first_s']:.2f}", ""],
                  ["userbatch spark: warm (one call)", f"{r['spark_warm_s']:.2f}", ""]]
    table += [["match + write, LSDB (crossmatch + write_catalog, best of %d)" % len(r["write_s"]["lsdb"]),
               f"{min(r['write_s']['lsdb']):.2f}", ""],
              ["match + write, userbatch default engine (%s; crossmatch(...).write, best of %d)"
               % (r["write_engine"], len(r["write_s"]["userbatch"])), f"{min(r['write_s']['userbatch']):.2f}", ""]]
    if "spark_write_s" in r:
        table.append(["match + write, userbatch engine='spark' (best of %d)" % len(r["spark_write_s"]),
                      f"{min(r['spark_write_s']):.2f}", ""])
    table.append(["priming processes (untimed; numba compiles into its cache): lsdb / userbatch",
                  f"{r['prime_s']['lsdb']:.1f} / {r['prime_s']['userbatch']:.1f}", ""])
    print(C.fmt_table(table, ["what", "seconds", "CPU s"]))
    print("(warm: in one process after a first call; cold: a fresh Python process per call, wall time from the "
          "parent; CPU s: process CPU of the call, or of the whole cold process; Spark's JVM CPU not included)")
    print()
    nm = r["n_matches"]
    print(f"matches: lsdb {nm['lsdb']:,}, userbatch {nm['userbatch']:,}, floor {nm['floor']:,} "
          f"({r['n_true_pairs_possible']:,} right rows are noisy copies of left rows)")
    for c in r["checks"]:
        print("  " + c)
    print(f"pair sets identical, distances within {DIST_TOL_ARCSEC:g} arcsec: {'YES' if ok else 'NO'}")
    print(f"userbatch warm {ub_warm:.2f} s vs LSDB warm {lsdb_warm:.2f} s -> {lsdb_warm / ub_warm:.2f}x; "
          f"cold {ub_cold:.2f} s vs {lsdb_cold:.2f} s -> {lsdb_cold / ub_cold:.2f}x; "
          f"floor {floor:.2f} s = {floor / ub_warm:.0%} of userbatch warm")
    if "spark_warm_s" in r:
        print(f"userbatch spark warm {r['spark_warm_s']:.2f} s -> {lsdb_warm / r['spark_warm_s']:.2f}x LSDB warm")
    if "growth" in r:
        g = r["growth"]
        small = min(g["warm_small_s"])
        print(f"growth: userbatch warm {ub_warm:.2f} s at {rows:,} rows, {small:.2f} s at {g['rows_small']:,} rows; "
              f"ratio {ub_warm / small:.2f} for 4x the rows (4.00 = linear)")
    lsdb_write = min(r["write_s"]["lsdb"])
    write_ratio = lsdb_write / min(r["write_s"]["userbatch"])
    print(f"match + write: userbatch ({r['write_engine']}) {min(r['write_s']['userbatch']):.2f} s vs LSDB "
          f"{lsdb_write:.2f} s -> {write_ratio:.2f}x")
    spark_write_ratio = None
    if "spark_write_s" in r:
        spark_write_ratio = lsdb_write / min(r["spark_write_s"])
        print(f"match + write: userbatch engine='spark' {min(r['spark_write_s']):.2f} s -> {spark_write_ratio:.2f}x")
    large_growth = None
    if "large" in r:
        lg = r["large"]
        large_growth = min(lg["warm_s"]) / ub_warm
        tk = lg["task"]
        print(f"large: userbatch warm {min(lg['warm_s']):.2f} s at {lg['rows']:,} rows ({lg['matches']:,} matches) vs "
              f"{ub_warm:.2f} s at {rows:,}: ratio {large_growth:.2f} for {lg['rows'] / rows:g}x the rows; largest of "
              f"{tk['tasks']} tasks ({tk['left_rows']:,} left + {tk['right_rows']:,} right rows, "
              f"{tk['pairs']:,} pairs) run alone: peak RSS {tk['peak_rss_mb']:.0f} MB, "
              f"{tk['peak_rss_mb'] - tk['rss_before_mb']:.0f} MB above the process before it")
    if args.json:
        args.json.write_text(json.dumps({k: v for k, v in r.items()}, indent=1, default=str))
    print(f"RESULT xmatch_speedup_vs_lsdb={sig3(lsdb_warm / ub_warm)} "
          f"xmatch_cold_speedup_vs_lsdb={sig3(lsdb_cold / ub_cold)} "
          f"xmatch_fraction_of_floor={sig3(floor / ub_warm)} write_speedup_vs_lsdb={sig3(write_ratio)} "
          + (f"spark_write_speedup_vs_lsdb={sig3(spark_write_ratio)} " if spark_write_ratio else "")
          + (f"large_growth={sig3(large_growth)} " if large_growth else "")
          + f"rows={rows}")


# ------------------------------------------------------------------------------------------------ main

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=DEFAULT_ROWS, help="rows in each catalog (default %(default)s)")
    ap.add_argument("--seed", type=int, default=C.DEFAULT_SEED)
    ap.add_argument("--density", type=float, default=DEFAULT_DENSITY,
                    help="rows per deg^2; the field's area is rows / density (default %(default)s)")
    ap.add_argument("--threshold", type=int, default=C.HATS_DEFAULT_THRESHOLD,
                    help="pixel threshold, both sides (default: hats-import's, %(default)s)")
    ap.add_argument("--highest-order", type=int, default=C.HATS_DEFAULT_HIGHEST_ORDER)
    ap.add_argument("--margin-arcsec", type=float, default=5.0, help="margin radius, both sides")
    ap.add_argument("--repeats", type=int, default=3, help="warm calls per side (best reported; default 3)")
    ap.add_argument("--cold-repeats", type=int, default=2, help="cold processes per side (best reported)")
    ap.add_argument("--no-spark", action="store_true", help="skip the engine='spark' measurement")
    ap.add_argument("--growth", action="store_true",
                    help="also time userbatch warm at rows // 4 and print the ratio")
    ap.add_argument("--large", action="store_true",
                    help=f"also time userbatch warm at {LARGE_ROWS:,} rows (large_growth) and the largest task's RSS")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the tables and HATS catalogs in bench/_data")
    ap.add_argument("--keep", action="store_true", help="keep this run's work dir under bench/_work/")
    ap.add_argument("--json", type=Path, help="also write all measurements to this JSON file")
    ap.add_argument("--live-source", action="store_true",
                    help="import python/userbatch as it is during the run instead of a copy taken at the start")
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("--cold-worker", choices=("lsdb", "userbatch"), help=argparse.SUPPRESS)
    ap.add_argument("--build-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--task-rss-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--main-rows", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--build-what", default="userbatch,hats", help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.cold_worker:  # nothing before the call but argument parsing
        logging.basicConfig(level=logging.WARNING)
        return cold_worker(args)
    C.setup_logging(args.verbose)
    if args.task_rss_worker:
        return task_rss_worker(args)
    if args.build_worker:
        os.environ.setdefault("DASK_DISTRIBUTED__LOGGING__DISTRIBUTED", "warning")
        return build_worker(args)
    if args.repeats < 2:
        ap.error("--repeats must be at least 2")
    if args.cold_repeats < 1:
        ap.error("--cold-repeats must be at least 1")
    if args.margin_arcsec < RADIUS_ARCSEC:
        ap.error("--margin-arcsec must be at least the match radius")

    if args.work is None:  # parent: pin the code, then measure in a child process
        return C.run_measuring_child(__file__, "crossmatch", args, argv)
    C.check_frozen_source()
    return measure(args)


if __name__ == "__main__":
    sys.exit(main())
