"""Delta tables: writes, layout, time travel, bad coordinates, crash safety, concurrent writers, SQL views."""

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from chispa import assert_df_equality
from helpers import sky_points

from userbatch.errors import (BadCoordinates, ColumnNotFound, CommitConflict, TableExists, UserbatchError,
                              VersionNotFound)
from userbatch.sky import radec_to_index
from userbatch.sky.healpix import SPATIAL_INDEX_COLUMN, pixel_to_index_range
from userbatch.tables import delta
from userbatch.tables.catalog import Catalog
from userbatch.tables.provenance import Provenance
from userbatch.tables.read import path_pixel, read_table, resolve
from userbatch.tables.views import register_catalog_views
from userbatch.tables.write import write_table

ROOT = Path(__file__).resolve().parents[1]


def _sorted(df):
    return df.orderBy("objectId")


def test_create_layout_and_stats(spark, ub_env):
    pdf = sky_points(4000, seed=1)
    res = write_table(spark.createDataFrame(pdf), "dp1.object", pixel_threshold=400, margin_radius_arcsec=30)
    assert res.version == 0 and res.rows == 4000 and res.partitions > 8
    entry = Catalog().get("dp1.object")
    snap = resolve(entry)
    assert snap.num_rows == 4000
    for path, lo, hi in zip(snap.files.column("path").to_pylist(),
                            snap.files.column(f"min.{SPATIAL_INDEX_COLUMN}").to_pylist(),
                            snap.files.column(f"max.{SPATIAL_INDEX_COLUMN}").to_pylist()):
        order, pixel = path_pixel(path)
        a, b = pixel_to_index_range(order, pixel)
        assert a <= lo <= hi < b, "a file holds rows outside its pixel"
        data = pq.read_table(Path(entry.location) / path)
        index = data.column(SPATIAL_INDEX_COLUMN).to_numpy()
        assert np.all(np.diff(index) >= 0), "rows are not sorted by the index within a file"
        assert lo == index.min() and hi == index.max(), "Delta stats disagree with the data"
        assert "Norder" not in data.column_names
    got = read_table("dp1.object").toPandas().sort_values("objectId").reset_index(drop=True)
    np.testing.assert_array_equal(got[SPATIAL_INDEX_COLUMN], radec_to_index(pdf.coord_ra, pdf.coord_dec))
    assert got.drop(columns=[SPATIAL_INDEX_COLUMN]).equals(pdf)
    # every margin row sits in a different partition than the one it is filed under
    margin = resolve(entry.replace(location=entry.margin_location))
    assert margin.num_rows == res.margin_rows > 0


def test_margin_holds_every_row_within_radius(spark, ub_env):
    """Brute force, independent of our scheme: for every row, each partition that cdshealpix says a cone of the
    margin radius around it touches (other than its own) must have the row in its margin files."""
    import astropy.units as u
    import cdshealpix
    from astropy.coordinates import Latitude, Longitude

    pdf = sky_points(3000, seed=18)
    radius = 60.0
    res = write_table(spark.createDataFrame(pdf), "dp1.object", pixel_threshold=150, margin_radius_arcsec=radius)
    entry = Catalog().get("dp1.object")
    margin = resolve(entry.replace(location=entry.margin_location))
    got = set()
    for path in margin.files.column("path").to_pylist():
        pix = path_pixel(path)
        for oid in pq.read_table(Path(entry.margin_location) / path, columns=["objectId"]).column(0).to_pylist():
            got.add((oid, pix))
    assert len(got) == res.margin_rows, "a row appears twice in one partition's margin"
    parts = {path_pixel(p) for p in resolve(entry).files.column("path").to_pylist()}
    own = {}
    for path in resolve(entry).files.column("path").to_pylist():
        for oid in pq.read_table(Path(entry.location) / path, columns=["objectId"]).column(0).to_pylist():
            own[oid] = path_pixel(path)
    orders = sorted({o for o, _ in parts})
    for oid, ra, dec in zip(pdf.objectId, pdf.coord_ra, pdf.coord_dec):
        for order in orders:
            touched = cdshealpix.nested.cone_search(Longitude(ra, u.deg), Latitude(dec, u.deg), radius * u.arcsec,
                                                    order, flat=True)[0]
            for pix in {(order, int(p)) for p in touched} & parts - {own[oid]}:
                assert (oid, pix) in got, f"object {oid} at ({ra:.4f}, {dec:.4f}) missing from margin of {pix}"
    assert not any(own[oid] == pix for oid, pix in got), "a row sits in its own partition's margin"


def test_time_travel_returns_exactly_the_old_rows(spark, ub_env):
    a = spark.createDataFrame(sky_points(1500, seed=2))
    b = spark.createDataFrame(sky_points(700, seed=3, id_start=10_000))
    c = spark.createDataFrame(sky_points(300, seed=4, id_start=20_000))
    write_table(a, "dp1.object", pixel_threshold=300)
    t_after_v0 = datetime.now(timezone.utc)
    time.sleep(0.05)
    write_table(b, "dp1.object", "append")
    write_table(c, "dp1.object", "overwrite")
    cols = a.columns + [SPATIAL_INDEX_COLUMN]
    assert_df_equality(_sorted(read_table("dp1.object", version=0).select(*a.columns)), _sorted(a))
    assert_df_equality(_sorted(read_table("dp1.object", version=1).select(*a.columns)), _sorted(a.unionByName(b)))
    assert_df_equality(_sorted(read_table("dp1.object").select(*a.columns)), _sorted(c))
    assert_df_equality(_sorted(read_table("dp1.object", timestamp=t_after_v0).select(*cols)),
                       _sorted(read_table("dp1.object", version=0).select(*cols)))
    with pytest.raises(VersionNotFound):
        read_table("dp1.object", version=7)
    with pytest.raises(VersionNotFound):
        read_table("dp1.object", timestamp="2001-01-01T00:00:00")
    hist = delta.history(Catalog().get("dp1.object").location)
    assert [h["version"] for h in hist] == [2, 1, 0]
    assert [h["mode"] for h in hist] == ["overwrite", "append", "create"]


def test_append_keeps_existing_partitions(spark, ub_env):
    write_table(spark.createDataFrame(sky_points(2000, seed=5)), "dp1.object", pixel_threshold=300)
    entry = Catalog().get("dp1.object")
    before = {path_pixel(p) for p in resolve(entry).files.column("path").to_pylist()}
    write_table(spark.createDataFrame(sky_points(2000, seed=6, id_start=50_000)), "dp1.object", "append")
    after = {path_pixel(p) for p in resolve(entry).files.column("path").to_pylist()}
    assert before <= after
    starts = sorted(pixel_to_index_range(*p) for p in after)
    assert all(s[1] <= t[0] for s, t in zip(starts, starts[1:])), "append created overlapping partitions"
    assert read_table("dp1.object").count() == 4000


def test_provenance_in_commit(spark, ub_env):
    prov = Provenance(job="unit-test", run_id="run-42", parameters={"cut": 3})
    prov.add_input("ref.gaia", 7)
    write_table(spark.createDataFrame(sky_points(200, seed=7)), "dp1.object", provenance=prov)
    (h,) = delta.history(Catalog().get("dp1.object").location)
    p = h["provenance"]
    assert p["job"] == "unit-test" and p["run_id"] == "run-42" and p["user"] == "tester"
    assert p["inputs"] == [{"table": "ref.gaia", "version": 7}] and p["parameters"] == {"cut": 3}
    assert p["code_version"].startswith("0.")


@pytest.mark.parametrize("policy", ["reject", "quarantine", "error"])
def test_bad_coordinates(spark, ub_env, policy):
    pdf = sky_points(500, seed=8)
    pdf.loc[0:2, "coord_ra"] = np.nan
    pdf.loc[3:4, "coord_dec"] = 91.0
    pdf.loc[5, "coord_ra"] = -1.0
    pdf.loc[6, "coord_dec"] = np.inf
    df = spark.createDataFrame(pdf)
    if policy == "error":
        with pytest.raises(BadCoordinates, match="7 row"):
            write_table(df, "dp1.object", on_bad_coords="error")
        assert not Catalog().exists("dp1.object"), "a failed create left a catalog entry"
        return
    res = write_table(df, "dp1.object", on_bad_coords=policy)
    assert res.rows == 493
    if policy == "reject":
        assert res.rejected == 7 and not Catalog().exists("dp1.object_quarantine")
        assert delta.history(Catalog().get("dp1.object").location)[0]["provenance"]["rejected"] == 7
    else:
        assert res.quarantined == 7
        q = read_table("dp1.object_quarantine").toPandas()
        assert sorted(q.objectId) == sorted(pdf.objectId[:7])
        assert set(q._coord_error) == {"ra is null, NaN or infinite", "dec out of range [-90, 90]",
                                       "ra out of range [0, 360]", "dec is null, NaN or infinite"}


def test_write_errors(spark, ub_env):
    df = spark.createDataFrame(sky_points(100, seed=9))
    with pytest.raises(ColumnNotFound, match="ra_column"):
        write_table(df, "dp1.object", ra_column="ra")
    assert not Catalog().exists("dp1.object")
    write_table(df, "dp1.object")
    with pytest.raises(TableExists):
        write_table(df, "dp1.object")
    with pytest.raises(UserbatchError, match="schema"):
        write_table(df.drop("band"), "dp1.object", "append")
    assert read_table("dp1.object").count() == 100
    other = Catalog(user="mallory")
    with pytest.raises(Exception, match="belongs to"):
        write_table(df, "dp1.object", "append", catalog=other)


def test_non_spatial_table(spark, ub_env):
    df = spark.createDataFrame([(1, 10, "r", 1.5), (2, 11, "g", 2.5)],
                               "objectId long, visit long, band string, psfFlux double")
    res = write_table(df, "dp1.forced_source", ra_column=None, dec_column=None)
    assert res.rows == 2
    assert_df_equality(read_table("dp1.forced_source").orderBy("objectId"), df.orderBy("objectId"))


def test_sql_views_and_pins(spark, ub_env):
    a = spark.createDataFrame(sky_points(300, seed=10))
    write_table(a, "dp1.object")
    write_table(spark.createDataFrame(sky_points(100, seed=11, id_start=9000)), "dp1.object", "append")
    register_catalog_views(spark)
    assert spark.sql("SELECT count(*) AS n FROM dp1.object").collect()[0]["n"] == 400
    register_catalog_views(spark, pins={"dp1.object": 0})
    assert_df_equality(_sorted(spark.sql("SELECT * FROM dp1.object").select(*a.columns)), _sorted(a))
    with pytest.raises(VersionNotFound):
        register_catalog_views(spark, pins={"dp1.object": 5})
    with pytest.raises(UserbatchError, match="not in the catalog"):
        register_catalog_views(spark, pins={"dp1.nothing": 0})
    # a write in a session refreshes the view to the new version
    write_table(spark.createDataFrame(sky_points(50, seed=12, id_start=20_000)), "dp1.object", "append")
    assert spark.sql("SELECT count(*) AS n FROM dp1.object").collect()[0]["n"] == 450


_WRITER = """
import os, sys
sys.path.insert(0, {python!r})
import numpy as np, pandas as pd
import userbatch
import time
from pathlib import Path
from userbatch.tables import write
from userbatch.tables.write import write_table
# the fault: once the data files are in place, say so and wait to be killed before the commit
write.before_commit_hooks.append(lambda location: (Path({marker!r}).write_text(str(location)), time.sleep(3600)))
spark = userbatch.session(master="local[1]", register_views=False)
df = spark.createDataFrame(pd.read_parquet({rows!r}))
write_table(df, "dp1.object", "append")
print("committed")
"""


@pytest.mark.slow
def test_writer_killed_before_commit_leaves_table_unchanged(spark, ub_env, tmp_path):
    """A real process, killed with SIGKILL after its files are written and before its commit."""
    first = spark.createDataFrame(sky_points(800, seed=13))
    write_table(first, "dp1.object", pixel_threshold=200)
    entry = Catalog().get("dp1.object")
    rows = tmp_path / "more.parquet"
    sky_points(600, seed=14, id_start=100_000).to_parquet(rows)
    marker = tmp_path / "about-to-commit"
    script = _WRITER.format(python=str(ROOT / "python"), rows=str(rows), marker=str(marker))
    proc = subprocess.Popen([sys.executable, "-c", script], env=dict(os.environ), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 240
        while not marker.exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.time() < deadline, "writer never reached its commit"
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    data_files = [p for p in Path(entry.location).rglob("*.parquet") if "_delta_log" not in p.parts]
    assert len(data_files) > len(resolve(entry).paths), "the killed writer should have left uncommitted files"
    assert delta.latest_version(entry.location) == 0
    assert_df_equality(_sorted(read_table("dp1.object").select(*first.columns)), _sorted(first))
    # and the table still takes writes
    write_table(spark.createDataFrame(sky_points(10, seed=15, id_start=900_000)), "dp1.object", "append")
    assert read_table("dp1.object").count() == 810


def _commit_many(location, schema, rel_paths, errors):
    try:
        for p in rel_paths:
            delta.commit_files(location, [p], schema, "append", {"writer": threading.current_thread().name})
    except Exception as exc:  # noqa: BLE001 - collected and asserted on
        errors.append(exc)


def test_concurrent_appends_lose_nothing(spark, ub_env):
    """Four threads commit 40 appends at once; delta-rs retries lost races, so every file lands exactly once."""
    write_table(spark.createDataFrame(sky_points(50, seed=16)), "dp1.object", partition_order=1)
    entry = Catalog().get("dp1.object")
    snap = resolve(entry)
    src = Path(snap.paths[0])
    rel_paths = []
    for i in range(40):
        rel = Path(src).relative_to(entry.location).parent / f"copy-{i}.parquet"
        (Path(entry.location) / rel).write_bytes(src.read_bytes())
        rel_paths.append(str(rel))
    errors: list = []
    threads = [threading.Thread(target=_commit_many, args=(entry.location, snap.schema, rel_paths[i::4], errors))
               for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    final = resolve(entry)
    assert final.version == 40
    assert set(rel_paths) <= set(final.files.column("path").to_pylist())
    assert final.num_rows == 50 + 40 * pq.read_metadata(src).num_rows


def test_overwrite_against_a_moved_table_conflicts(spark, ub_env):
    write_table(spark.createDataFrame(sky_points(50, seed=17)), "dp1.object", partition_order=1)
    entry = Catalog().get("dp1.object")
    snap = resolve(entry)
    rel = snap.files.column("path").to_pylist()[0]
    delta.commit_files(entry.location, [], snap.schema, "append", {})  # someone else commits: v1
    with pytest.raises(CommitConflict, match="re-run"):
        delta.commit_files(entry.location, [rel], snap.schema, "overwrite", {}, expected_version=0)
    assert resolve(entry).version == 1


def test_view_of_an_empty_table_keeps_its_columns(spark, ub_env):
    df = spark.createDataFrame(sky_points(20, seed=19))
    write_table(df.limit(0), "dp1.empty", ra_column=None, dec_column=None)
    register_catalog_views(spark)
    got = spark.sql("SELECT * FROM dp1.empty")
    assert got.count() == 0 and got.columns == df.columns
