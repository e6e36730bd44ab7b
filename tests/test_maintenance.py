"""Tables that live for years: vacuum keeps what provenance needs and deletes the rest, optimize compacts without
changing a row, restore, schema merge on append, checkpoints and log clean-up, storage accounting, and who may do
each. Rows are written by the Arrow writer (no JVM), so these tests stay in the fast tier; the vacuum-then-rerun
test with real facility runs is in test_runs.py."""

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import sky_points

from userbatch.errors import AccessDenied, SchemaMismatch, TableNotFound, UserbatchError, VersionNotFound
from userbatch.tables import delta, maintenance
from userbatch.tables.catalog import Catalog
from userbatch.tables.snapshots import margin_snapshot, path_pixel, resolve, to_arrow
from userbatch.tables.write import write_table

KEY = "objectId"


def _rows(entry, version=None):
    t = to_arrow(resolve(entry, version=version, record=False)).to_pandas()
    return t.drop(columns=["_healpix_29"], errors="ignore").sort_values(KEY).reset_index(drop=True)


def _margin_rows(entry, version=None):
    version = delta.latest_version(entry.location) if version is None else version
    snap, _ = margin_snapshot(entry, version)
    cols = [c for c in to_arrow(snap).column_names if c != "_healpix_29"]
    t = to_arrow(snap).to_pandas()[cols]
    return t.sort_values([KEY, "coord_ra"]).reset_index(drop=True)


def _on_disk(root: Path, skip=("_delta_log", "_margin")) -> set[str]:
    """Every file under a table directory but the log, the margin table and the vacuum's own marker."""
    out = set()
    for p in root.rglob("*"):
        rel = p.relative_to(root)
        if p.is_file() and rel.parts[0] not in skip and rel.name != delta.VACUUM_MARKER:
            out.add(str(rel))
    return out


def _files(root, versions) -> set[str]:
    return set().union(*(delta.files_of_version(root, v) for v in versions))


@pytest.fixture
def grown(ub_env):
    """A spatial table with a margin: created (v0), appended to (v1, v2), overwritten (v3), appended to (v4, v5);
    plus a neighbour table whose name starts with this one's."""
    write_table(sky_points(1500, seed=1), "u_tester.obj", "create", pixel_threshold=600, margin_radius_arcsec=20)
    for i in range(5):
        if i == 2:
            write_table(sky_points(1000, seed=99, id_start=700_000), "u_tester.obj", "overwrite")
        else:
            write_table(sky_points(120, seed=10 + i, id_start=100_000 * (i + 1)), "u_tester.obj", "append")
    write_table(sky_points(300, seed=2), "u_tester.obj_other", "create", pixel_threshold=600,
                margin_radius_arcsec=20)
    write_table(sky_points(50, seed=3, id_start=900_000), "u_tester.obj_other", "append")
    cat = Catalog()
    return cat.get("u_tester.obj"), cat.get("u_tester.obj_other")


def test_vacuum_keeps_latest_and_pinned_versions_and_deletes_exactly_the_rest(grown):
    entry, other = grown
    root = Path(entry.location)
    before = {v: _rows(entry, v) for v in range(6)}
    margin_before = _margin_rows(entry, 1)
    other_files = {p for p in Path(other.location).rglob("*") if p.is_file()}
    on_disk = _on_disk(root)
    assert on_disk == _files(root, range(6))  # appends only add files: every one is live

    dry = maintenance.vacuum(entry, pinned=[1], retain_days=0, min_age_hours=0, dry_run=True)
    assert _on_disk(root) == on_disk  # a dry run touches nothing
    report = maintenance.vacuum(entry, pinned=[1], retain_days=0, min_age_hours=0)
    assert report.kept_versions == dry.kept_versions == [1, 5]
    assert report.files == dry.files and report.bytes == dry.bytes > 0
    # exactly the files no kept version reads are gone, in the table and in its margin
    assert _on_disk(root) == _files(root, [1, 5])
    gone = on_disk - _files(root, [1, 5])
    assert gone and set(report.files) >= gone
    margin_root = Path(entry.margin_location)
    m_kept = {margin_snapshot(entry, v)[0].version for v in (1, 5)}
    assert _on_disk(margin_root, skip=("_delta_log",)) == _files(margin_root, m_kept)
    # kept versions read what they read before; the others are refused with a clear message
    for v in (1, 5):
        pd.testing.assert_frame_equal(_rows(entry, v), before[v])
    pd.testing.assert_frame_equal(_margin_rows(entry, 1), margin_before)
    for v in (0, 2, 3, 4):
        with pytest.raises(VersionNotFound, match=f"version {v} .* removed by a vacuum"):
            resolve(entry, version=v, record=False)
    # another table, even one whose name starts with this one's, is untouched
    assert {p for p in Path(other.location).rglob("*") if p.is_file()} == other_files
    # a second vacuum has nothing left to do
    again = maintenance.vacuum(entry, pinned=[1], retain_days=0, min_age_hours=0)
    assert again.files == [] and again.kept_versions == [1, 5]


def test_vacuum_keeps_the_retention_window_and_the_version_current_when_it_opened(grown):
    entry, _ = grown
    hist = delta.history(entry.location)
    ts = {h["version"]: h["timestamp"] for h in hist}
    # a clock 10 days after version 3: a 10-day window (plus the margin of a second) holds 3, 4, 5 exactly
    now = ts[3] + timedelta(days=10, seconds=0.001)
    kept, _ = maintenance.kept_versions(entry.location, retain_days=10, now=now)
    want = {v for v, t in ts.items() if t >= now - timedelta(days=10)}
    want.add(max(v for v, t in ts.items() if t < now - timedelta(days=10)))  # current when the window opened
    assert kept == sorted(want | {5})
    # everything within a long window, only the latest with none
    assert maintenance.kept_versions(entry.location, retain_days=7)[0] == list(range(6))
    assert maintenance.kept_versions(entry.location, retain_days=0)[0] == [5]
    with pytest.raises(UserbatchError, match="--retain"):
        maintenance.kept_versions(entry.location, retain_days=-1)


def test_vacuum_spares_young_files_and_removes_a_killed_writers_staging(grown):
    entry, _ = grown
    root = Path(entry.location)
    stale = root / "_staging" / "deadbeef" / "Norder=0" / "Dir=0" / "Npix=1"
    stale.mkdir(parents=True)
    pq.write_table(pa.table({"x": [1, 2]}), stale / "part-0.parquet")
    fresh = root / "_staging" / "cafe" / "part-1.parquet"
    fresh.parent.mkdir(parents=True)
    pq.write_table(pa.table({"x": [3]}), fresh)
    orphan = root / "Norder=0" / "Dir=0" / "Npix=1" / "part-orphan.parquet"  # written, never committed
    orphan.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"x": [4]}), orphan)
    old = time.time() - 3 * 86400
    for p in stale.rglob("*"):
        os.utime(p, (old, old))
    report = maintenance.vacuum(entry, retain_days=30, min_age_hours=24)
    assert not (root / "_staging" / "deadbeef").exists()  # killed writer: old, gone
    assert fresh.exists() and orphan.exists()  # young: a write may be about to commit them
    assert "_staging/deadbeef/Norder=0/Dir=0/Npix=1/part-0.parquet" in report.files
    os.utime(orphan, (old, old))
    maintenance.vacuum(entry, retain_days=30, min_age_hours=24)
    assert not orphan.exists()
    assert _on_disk(root) - {str(fresh.relative_to(root))} == _files(root, range(6))


KILLER = """
import os, signal, sys
from userbatch.tables import maintenance
from userbatch.tables.catalog import Catalog

real, seen = os.remove, []
def remove(path, *a, **k):
    real(path, *a, **k)
    seen.append(path)
    if len(seen) == 3:
        os.kill(os.getpid(), signal.SIGKILL)
maintenance.os.remove = remove
maintenance.vacuum(Catalog().get("u_tester.obj"), retain_days=0, min_age_hours=0)
"""


def test_a_vacuum_killed_half_way_leaves_every_kept_version_readable(grown):
    entry, _ = grown
    root = Path(entry.location)
    latest = _rows(entry)
    on_disk = _on_disk(root)
    proc = subprocess.run([sys.executable, "-c", KILLER], env=os.environ.copy(), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    left = _on_disk(root)
    assert len(on_disk) - len(left) == 3  # it died after three deletions
    pd.testing.assert_frame_equal(_rows(entry), latest)
    with pytest.raises(VersionNotFound, match="removed by a vacuum"):  # the marker was written first
        resolve(entry, version=1, record=False)
    report = maintenance.vacuum(entry, retain_days=0, min_age_hours=0)  # run again: it finishes the job
    assert report.kept_versions == [5] and _on_disk(root) == _files(root, [5])
    pd.testing.assert_frame_equal(_rows(entry), latest)


def test_optimize_compacts_each_partition_with_identical_rows_and_margin(grown):
    entry, _ = grown
    snap = resolve(entry, record=False)
    before, margin_before = _rows(entry), _margin_rows(entry)
    parts_before = {path_pixel(p) for p in snap.files.column("path").to_pylist()}
    result = maintenance.optimize(entry)
    assert result.version == 6 and result.files_before == snap.files.num_rows
    after = resolve(entry, record=False)
    paths = after.files.column("path").to_pylist()
    assert len(paths) == len(parts_before) < snap.files.num_rows  # one file per partition
    assert {path_pixel(p) for p in paths} == parts_before and not result.split
    pd.testing.assert_frame_equal(_rows(entry), before)
    pd.testing.assert_frame_equal(_margin_rows(entry), margin_before)
    for p in paths:  # rows in _healpix_29 order inside each file
        idx = pq.read_table(Path(entry.location) / p, columns=["_healpix_29"]).column(0).to_numpy()
        assert (np.diff(idx) >= 0).all()
    m_paths = margin_snapshot(entry, 6)[0].files.column("path").to_pylist()
    assert len(m_paths) == len({path_pixel(p) for p in m_paths})
    h = delta.history(entry.location)[0]
    assert h["mode"] == "optimize" and h["provenance"]["optimized_version"] == 5
    commit = (Path(entry.location) / "_delta_log" / f"{6:020d}.json").read_text()
    assert '"dataChange":false' in commit.replace(" ", "") and '"dataChange":true' not in commit.replace(" ", "")
    assert maintenance.optimize(entry).version is None  # nothing left to do


def test_optimize_splits_a_partition_appends_pushed_past_the_threshold(ub_env):
    write_table(sky_points(900, seed=4), "u_tester.dense", "create", pixel_threshold=700, margin_radius_arcsec=20)
    clump = sky_points(1600, seed=5, id_start=50_000)
    clump["coord_ra"] = 150 + (clump["coord_ra"] - 180) * 1e-3  # all in the dense clump's pixel
    clump["coord_dec"] = 30 + (clump["coord_dec"] / 90) * 0.1
    write_table(clump, "u_tester.dense", "append")
    entry = Catalog().get("u_tester.dense")
    counts = resolve(entry, record=False).files
    before, parts_before = _rows(entry), {path_pixel(p) for p in counts.column("path").to_pylist()}
    result = maintenance.optimize(entry)
    assert result.split, "the clump's partition should be split"
    parts_after = {path_pixel(p) for p in resolve(entry, record=False).files.column("path").to_pylist()}
    for order, pixel in result.split:
        assert (order, pixel) not in parts_after
        children = [(o, p) for o, p in parts_after if o > order and p >> (2 * (o - order)) == pixel]
        assert len(children) > 1
    assert parts_before - {tuple(s) for s in result.split} <= parts_after
    pd.testing.assert_frame_equal(_rows(entry), before)
    # oracle for the margin: the same rows written afresh into the optimized layout
    layout = np.array(sorted(parts_after), dtype=np.int64)
    write_table(pa.Table.from_pandas(before, preserve_index=False), "u_tester.dense_fresh", "create",
                margin_radius_arcsec=20, partitions=layout)
    fresh = Catalog().get("u_tester.dense_fresh")
    pd.testing.assert_frame_equal(_margin_rows(entry), _margin_rows(fresh))
    per_partition = pd.Series([path_pixel(p) for p in resolve(entry, record=False).files.column("path").to_pylist()])
    assert per_partition.is_unique


def test_restore_brings_back_rows_schema_and_margin_as_a_new_version(grown):
    entry, _ = grown
    v2_rows, v2_margin = _rows(entry, 2), _margin_rows(entry, 2)
    version = maintenance.restore(entry, 2)
    assert version == 6
    pd.testing.assert_frame_equal(_rows(entry), v2_rows)
    pd.testing.assert_frame_equal(_margin_rows(entry), v2_margin)
    h = delta.history(entry.location)[0]
    assert h["mode"] == "restore" and h["provenance"]["restored_version"] == 2
    assert len(_rows(entry, 5)) == 1000 + 2 * 120 != len(v2_rows)  # history is kept: v5 still reads
    with pytest.raises(UserbatchError, match="no version 99"):
        maintenance.restore(entry, 99)
    maintenance.vacuum(entry, retain_days=0, min_age_hours=0)
    with pytest.raises(VersionNotFound, match="removed by a vacuum"):
        maintenance.restore(entry, 3)


def test_append_with_merge_schema_adds_columns_and_refuses_type_changes(ub_env, spark):
    write_table(sky_points(400, seed=1), "u_tester.evolve", "create", pixel_threshold=600, margin_radius_arcsec=20)
    entry = Catalog().get("u_tester.evolve")
    extra = sky_points(100, seed=2, id_start=10_000).assign(g_mag=lambda d: 20 + d.r_psfFlux * 0)
    with pytest.raises(SchemaMismatch, match="new g_mag.*--merge-schema"):
        write_table(extra, "u_tester.evolve", "append")
    assert delta.latest_version(entry.location) == 0  # refused before anything was written or committed
    write_table(extra, "u_tester.evolve", "append", merge_schema=True)
    rows = _rows(entry)
    assert len(rows) == 500 and rows["g_mag"].isna().sum() == 400
    assert (rows.set_index(KEY).loc[extra[KEY], "g_mag"] == 20).all()
    assert "g_mag" in _margin_rows(entry).columns
    from userbatch.tables.snapshots import to_spark

    assert to_spark(spark, resolve(entry, record=False)).where("g_mag IS NULL").count() == 400
    changes = [h["provenance"].get("schema_change") for h in delta.history(entry.location)]
    assert {"added": ["g_mag"]} in changes
    # a missing column reads as null; a changed type is refused with the column named
    fewer = sky_points(20, seed=3, id_start=20_000).drop(columns=["band"]).assign(g_mag=1.0)
    write_table(fewer, "u_tester.evolve", "append", merge_schema=True)
    assert _rows(entry).set_index(KEY).loc[fewer[KEY], "band"].isna().all()
    bad = sky_points(20, seed=4, id_start=30_000).assign(g_mag="bright")
    with pytest.raises(SchemaMismatch, match=r"g_mag \(double in the table, string in the rows\)"):
        write_table(bad, "u_tester.evolve", "append", merge_schema=True)
    assert len(_rows(entry)) == 520  # nothing lost


def test_checkpoints_every_ten_commits_and_vacuum_trims_the_log_behind_kept_versions(ub_env):
    write_table(sky_points(50, seed=1), "u_tester.log", "create", ra_column=None, dec_column=None)
    for i in range(24):
        write_table(sky_points(5, seed=i + 2, id_start=1000 * (i + 1)), "u_tester.log", "append",
                    ra_column=None, dec_column=None)
    entry = Catalog().get("u_tester.log")
    assert delta.checkpoint_versions(entry.location) == [10, 20]
    config = delta.open_table(entry.location).metadata().configuration
    assert config["delta.enableExpiredLogCleanup"] == "false"  # no engine may drop history by age
    latest_rows = _rows(entry)
    report = maintenance.vacuum(entry, pinned=[21], retain_days=0, min_age_hours=0)
    assert report.kept_versions == [21, 24] and report.log_files > 0
    log_versions = {int(p.name[:20]) for p in (Path(entry.location) / "_delta_log").iterdir() if p.name[:20].isdigit()}
    assert min(log_versions) == 20  # trimmed up to the checkpoint before the oldest kept version
    pd.testing.assert_frame_equal(_rows(entry), latest_rows)
    assert len(_rows(entry, 21)) == 50 + 21 * 5
    assert [h["version"] for h in delta.history(entry.location)][-1] == 20
    # optimize of a non-spatial table: one file, same rows
    maintenance.optimize(entry)
    assert resolve(entry, record=False).files.num_rows == 1
    pd.testing.assert_frame_equal(_rows(entry), latest_rows)


def test_storage_counts_live_time_travel_and_reclaimable_bytes(grown):
    entry, _ = grown
    root, margin_root = Path(entry.location), Path(entry.margin_location)
    maintenance.optimize(entry)  # every earlier file is now read only by older versions
    s = maintenance.storage(entry, retain_days=30)
    live = sum(delta.files_of_version(root, 6).values()) + sum(
        delta.files_of_version(margin_root, margin_snapshot(entry, 6)[0].version).values())
    assert s["live"] == live
    assert s["time_travel"] > 0 and s["reclaimable"] == 0  # all versions in the window; files too young anyway
    old = time.time() - 3 * 86400
    for p in root.rglob("*.parquet"):
        os.utime(p, (old, old))
    s0 = maintenance.vacuum(entry, retain_days=0, dry_run=True)
    assert s0.bytes > 0 and maintenance.storage(entry, retain_days=0)["reclaimable"] == s0.bytes


CONFIG = """
capacity: {cores: 100, user_fraction: 0.10}
admins: [boss]
"""


def test_owners_and_admins_may_vacuum_optimize_restore_and_others_may_not(facility):
    fx = facility(CONFIG)
    alice, bob, boss = fx.fac("alice"), fx.fac("bob"), fx.fac("boss")
    cat = Catalog(user="alice", groups=())
    write_table(sky_points(300, seed=1), "u_alice.stars", "create", catalog=cat)
    write_table(sky_points(30, seed=2, id_start=5000), "u_alice.stars", "append", catalog=cat)
    write_table(sky_points(200, seed=3), "u_alice.hidden", "create", catalog=cat, visibility="private")
    for call in (lambda f: f.vacuum("u_alice.stars", retain_days=0, min_age_hours=0),
                 lambda f: f.optimize("u_alice.stars"), lambda f: f.restore("u_alice.stars", 0)):
        with pytest.raises(AccessDenied, match="owner of u_alice.stars"):
            call(bob)
    with pytest.raises(TableNotFound):  # a private table is not even there for bob
        bob.vacuum("u_alice.hidden", retain_days=0, min_age_hours=0)
    assert bob.vacuum(all_tables=True, retain_days=0, min_age_hours=0)["tables"] == []  # bob owns nothing
    assert alice.optimize("u_alice.stars")["version"] == 2
    assert alice.restore("u_alice.stars", 0)["version"] == 3
    out = boss.vacuum("u_alice.stars", retain_days=0, min_age_hours=0)  # an admin may
    assert out["tables"][0]["kept_versions"] == [3]
    with pytest.raises(UserbatchError, match="--all"):
        alice.vacuum()


def test_vacuum_all_reclaims_dropped_tables_in_your_own_namespaces_only(facility):
    fx = facility(CONFIG)
    alice, bob, boss = fx.fac("alice"), fx.fac("bob"), fx.fac("boss")
    write_table(sky_points(100, seed=1), "u_alice.gone", "create", catalog=Catalog(user="alice", groups=()))
    write_table(sky_points(100, seed=2), "u_bob.gone", "create", catalog=Catalog(user="bob", groups=()))
    write_table(sky_points(100, seed=3), "u_alice.kept", "create", catalog=Catalog(user="alice", groups=()))
    Catalog(user="alice", groups=()).drop("u_alice.gone")
    Catalog(user="bob", groups=()).drop("u_bob.gone")
    wh = Catalog().warehouse
    old = time.time() - 3 * 86400
    for p in list(wh.rglob("*")):
        os.utime(p, (old, old))
    q = alice.quota_show()
    (ns,) = [n for n in q["storage"] if n["namespace"] == "u_alice"]
    assert ns["tables"] == 1 and ns["live_bytes"] > 0 and ns["reclaimable_bytes"] > 0  # the dropped table
    out = alice.vacuum(all_tables=True, retain_days=0)
    names = [r["table"] for r in out["tables"]]
    assert "(dropped) u_alice.gone" in names and not any("u_bob" in n for n in names)
    assert not (wh / "u_alice" / "gone").exists() and (wh / "u_bob" / "gone").exists()
    assert (wh / "u_alice" / "kept" / "_delta_log").is_dir()
    assert len(_rows(Catalog(user="alice", groups=()).get("u_alice.kept"))) == 100
    assert "(dropped) u_bob.gone" in [r["table"] for r in boss.vacuum(all_tables=True, dry_run=True,
                                                                      retain_days=0)["tables"]]
    assert (wh / "u_bob" / "gone").exists()  # a dry run removes nothing
    bob.vacuum(all_tables=True, retain_days=0)
    assert not (wh / "u_bob" / "gone").exists()
    # a new table may now take the dropped one's name
    write_table(sky_points(10, seed=4), "u_alice.gone", "create", catalog=Catalog(user="alice", groups=()))


def test_cli_vacuum_optimize_restore_and_quota_storage(ub_env, spark):
    from click.testing import CliRunner

    from userbatch.cli import main

    write_table(sky_points(300, seed=1), "u_tester.cli", "create", pixel_threshold=600)
    write_table(sky_points(30, seed=2, id_start=5000), "u_tester.cli", "append")

    def run(*args, code=0):
        r = CliRunner().invoke(main, list(args))
        assert r.exit_code == code, (r.output, r.exception)
        return r.output

    assert "version 2" in run("tables", "optimize", "u_tester.cli")
    assert "restores version 0" in run("tables", "restore", "u_tester.cli@0")
    assert "TABLE@VERSION" in run("tables", "restore", "u_tester.cli", code=2)
    out = run("tables", "vacuum", "u_tester.cli", "--retain", "0", "--min-age-hours", "0", "--dry-run")
    assert "would remove" in out and "kept [v3]" in out
    out = run("tables", "vacuum", "u_tester.cli", "--retain", "0", "--min-age-hours", "0")
    assert "freed" in out
    assert "removed by a vacuum" in run("search", "cone", "u_tester.cli", "150", "30", "60", "--version", "1",
                                        code=2)
    assert "name a table, or give --all" in run("tables", "vacuum", code=2)
    out = run("quota", "show")
    assert "u_tester" in out and "time travel" in out
    hist = run("tables", "history", "u_tester.cli")
    assert "restore" in hist and "optimize" in hist
    # ingest --merge-schema: a new column is refused without it, added with it
    new = ub_env / "tonight.parquet"
    sky_points(25, seed=7, id_start=70_000).assign(g_mag=21.5).to_parquet(new)
    assert "--merge-schema" in run("ingest", str(new), "--table", "u_tester.cli", "--mode", "append", code=2)
    assert "--mode append" in run("ingest", str(new), "--table", "u_tester.cli", "--merge-schema", code=2)
    run("ingest", str(new), "--table", "u_tester.cli", "--mode", "append", "--merge-schema")
    rows = _rows(Catalog().get("u_tester.cli"))
    assert len(rows) == 325 and rows["g_mag"].notna().sum() == 25


@pytest.mark.parametrize("writer", ["arrow", "spark"])
def test_merge_schema_append_into_new_pixels_keeps_every_column_in_the_rebuilt_margin(ub_env, spark, writer):
    """New pixels make the append rebuild the margin from all rows: the table's columns the new rows lack stay in
    it (null for the new rows), and the column they add is there (null for the old ones)."""
    north = sky_points(600, seed=1)
    north = north[north.coord_dec > 5]
    write_table(north, "u_tester.halves", "create", pixel_threshold=200, margin_radius_arcsec=60)
    south = sky_points(600, seed=2, id_start=50_000)
    south = south[south.coord_dec < -5].drop(columns=["band"]).assign(g_mag=19.0)
    rows = spark.createDataFrame(south) if writer == "spark" else south
    write_table(rows, "u_tester.halves", "append", merge_schema=True)
    entry = Catalog().get("u_tester.halves")
    assert delta.history(entry.location)[0]["mode"] == "append"
    margin = _margin_rows(entry)
    assert {"band", "g_mag"} <= set(margin.columns)
    old = margin[margin[KEY] < 50_000].merge(north[[KEY, "band"]], on=KEY, suffixes=("", "_want"))
    new = margin[margin[KEY] >= 50_000]
    assert len(old) and len(new)  # the rebuilt margin holds rows of both writes
    assert (old["band"] == old["band_want"]).all() and old["g_mag"].isna().all()
    assert new["band"].isna().all() and (new["g_mag"] == 19.0).all()
