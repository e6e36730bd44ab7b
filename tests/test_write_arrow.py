"""Rows in memory written without the JVM: the Arrow path of ``write_table`` against the Spark path as its oracle.

The Spark writer is the reference (its own tests check layout, margins and stats against brute force); the same
rows written from a pyarrow table must give the same partitions, the same rows in each partition and margin, files
sorted by the index with matching Delta stats, and the same handling of bad coordinates, appends and errors.
"""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import sky_points

from userbatch.errors import BadCoordinates, ColumnNotFound, UserbatchError
from userbatch.sky.healpix import SPATIAL_INDEX_COLUMN, pixel_to_index_range
from userbatch.tables.catalog import Catalog
from userbatch.tables.read import path_pixel, read_table, resolve
from userbatch.tables.write import write_table


def _by_partition(location: str, files: list[str]) -> dict:
    """(order, pixel) -> sorted objectIds of the rows filed there."""
    out: dict = {}
    for path in files:
        ids = pq.read_table(Path(location) / path, columns=["objectId"]).column(0).to_pylist()
        out.setdefault(path_pixel(path), []).extend(ids)
    return {k: sorted(v) for k, v in out.items()}


def _layout(name: str) -> tuple[dict, dict]:
    entry = Catalog().get(name)
    main = _by_partition(entry.location, resolve(entry).files.column("path").to_pylist())
    margin = {}
    if entry.margin_location and Path(entry.margin_location).exists():
        mentry = entry.replace(location=entry.margin_location)
        margin = _by_partition(entry.margin_location, resolve(mentry).files.column("path").to_pylist())
    return main, margin


def test_arrow_write_gives_the_spark_layout(spark, ub_env):
    pdf = sky_points(4000, seed=31)
    opts = dict(pixel_threshold=300, margin_radius_arcsec=40)
    rs = write_table(spark.createDataFrame(pdf), "dp1.by_spark", **opts)
    ra = write_table(pa.Table.from_pandas(pdf, preserve_index=False), "dp1.by_arrow", **opts)
    assert (ra.rows, ra.partitions, ra.margin_rows) == (rs.rows, rs.partitions, rs.margin_rows)
    assert _layout("dp1.by_arrow") == _layout("dp1.by_spark")
    entry = Catalog().get("dp1.by_arrow")
    snap = resolve(entry)
    for path, lo, hi in zip(snap.files.column("path").to_pylist(),
                            snap.files.column(f"min.{SPATIAL_INDEX_COLUMN}").to_pylist(),
                            snap.files.column(f"max.{SPATIAL_INDEX_COLUMN}").to_pylist()):
        a, b = pixel_to_index_range(*path_pixel(path))
        index = pq.read_table(Path(entry.location) / path).column(SPATIAL_INDEX_COLUMN).to_numpy()
        assert a <= lo == index.min() <= index.max() == hi < b
        assert np.all(np.diff(index) >= 0), "rows are not sorted by the index within a file"
    assert not (Path(entry.location) / "_staging").exists()
    got = read_table("dp1.by_arrow").toPandas().sort_values("objectId").reset_index(drop=True)
    want = read_table("dp1.by_spark").toPandas().sort_values("objectId").reset_index(drop=True)
    assert got.equals(want[got.columns])


def test_arrow_append_to_a_spark_table_and_back(spark, ub_env):
    """The two writers' files share one schema: each can append to a table the other created, and an append
    that needs new pixels rebuilds the margin the same way."""
    a, b, c = sky_points(1500, seed=32), sky_points(800, seed=33, id_start=10_000), sky_points(
        600, seed=34, id_start=20_000)
    b = b[b.coord_dec > 60].reset_index(drop=True)  # lands partly outside the first write's pixels
    for first, name in ((spark.createDataFrame, "dp1.s_first"), (None, "dp1.a_first")):
        rows = first(a) if first else pa.Table.from_pandas(a, preserve_index=False)
        write_table(rows, name, pixel_threshold=200, margin_radius_arcsec=30)
        write_table(pa.Table.from_pandas(b, preserve_index=False) if first else spark.createDataFrame(b),
                    name, "append")
        write_table(spark.createDataFrame(c) if first else pa.Table.from_pandas(c, preserve_index=False),
                    name, "append")
    assert _layout("dp1.s_first") == _layout("dp1.a_first")
    assert read_table("dp1.a_first").count() == len(a) + len(b) + len(c)


@pytest.mark.parametrize("policy", ["reject", "quarantine", "error"])
def test_arrow_bad_coordinates(ub_env, policy):
    pdf = sky_points(300, seed=35)
    pdf.loc[0:2, "coord_ra"] = np.nan
    pdf.loc[3:4, "coord_dec"] = 91.0
    pdf.loc[5, "coord_ra"] = -1.0
    table = pa.Table.from_pandas(pdf, preserve_index=False)
    table = table.set_column(2, "coord_dec", pa.array(pdf.coord_dec.where(pdf.index != 6, None)))  # a null
    if policy == "error":
        with pytest.raises(BadCoordinates, match="7 row"):
            write_table(table, "dp1.object", on_bad_coords="error")
        assert not Catalog().exists("dp1.object"), "a failed create left a catalog entry"
        return
    res = write_table(table, "dp1.object", on_bad_coords=policy)
    assert res.rows == 293 and resolve(Catalog().get("dp1.object")).num_rows == 293
    if policy == "reject":
        assert res.rejected == 7 and not Catalog().exists("dp1.object_quarantine")
    else:
        q = pq.read_table([Path(Catalog().get("dp1.object_quarantine").location) / p for p in
                           resolve(Catalog().get("dp1.object_quarantine")).files.column("path").to_pylist()][0])
        assert res.quarantined == 7 and sorted(q.column("objectId").to_pylist()) == list(range(1, 8))
        assert set(q.column("_coord_error").to_pylist()) == {
            "ra is null, NaN or infinite", "dec out of range [-90, 90]", "ra out of range [0, 360]",
            "dec is null, NaN or infinite"}


def test_arrow_write_errors_and_plain_tables(ub_env):
    table = pa.Table.from_pandas(sky_points(100, seed=36), preserve_index=False)
    with pytest.raises(ColumnNotFound, match="ra_column"):
        write_table(table, "dp1.object", ra_column="ra")
    assert not Catalog().exists("dp1.object")
    write_table(table, "dp1.object")
    with pytest.raises(UserbatchError, match="schema"):
        write_table(table.drop_columns(["band"]), "dp1.object", "append")
    assert resolve(Catalog().get("dp1.object")).num_rows == 100
    with pytest.raises(UserbatchError, match="pyarrow.Table"):
        write_table([1, 2, 3], "dp1.other")
    res = write_table(table.to_pandas(), "dp1.plain", ra_column=None, dec_column=None)  # pandas, non-spatial
    snap = resolve(Catalog().get("dp1.plain"))
    assert res.rows == snap.num_rows == 100
    empty = write_table(table.slice(0, 0), "dp1.empty")
    assert empty.rows == 0 and resolve(Catalog().get("dp1.empty")).schema.names[:5] == table.schema.names


def test_write_from_tasks_commits_what_spark_tasks_wrote(spark, ub_env, tmp_path):
    """Spark tasks write their own rows into a known layout (some rows outside it); the driver only commits.
    Every row comes back once, inside the pixel it is filed under, and the partitions are disjoint."""
    from userbatch.tables.write import write_from_tasks
    from userbatch.tables.write_arrow import write_rows_into

    pdf = sky_points(3000, seed=37)
    layout = write_table(pa.Table.from_pandas(pdf, preserve_index=False), "dp1.layout", pixel_threshold=250)
    parts = np.array(sorted({path_pixel(p) for p in
                             resolve(Catalog().get("dp1.layout")).files.column("path").to_pylist()}))
    assert len(parts) == layout.partitions
    parts = parts[::2]  # half the pixels: the other rows fall outside the layout
    table = pa.Table.from_pandas(pdf, preserve_index=False)
    chunks = [table.slice(i * 750, 750) for i in range(4)]

    def produce(staging):
        def run(batches):
            for batch in batches:
                for i in batch.column(0).to_pylist():
                    yield from write_rows_into(chunks[i], "coord_ra", "coord_dec", parts, staging).to_batches()
        return pa.Table.from_pandas(spark.range(0, 4, 1, 4).mapInArrow(run, "path string, rows long").toPandas())

    res = write_from_tasks(produce, "dp1.by_tasks", partitions=parts, ra_column="coord_ra", dec_column="coord_dec")
    assert res.rows == 3000 and res.version == 0
    entry = Catalog().get("dp1.by_tasks")
    assert not (Path(entry.location) / "_staging").exists()
    files = resolve(entry).files.column("path").to_pylist()
    pixels = sorted({path_pixel(p) for p in files})
    ranges = sorted(pixel_to_index_range(*p) for p in pixels)
    assert all(r[1] <= s[0] for r, s in zip(ranges, ranges[1:])), "overlapping partitions"
    assert {tuple(p) for p in parts} <= set(pixels)
    seen = []
    for path in files:
        t = pq.read_table(Path(entry.location) / path)
        a, b = pixel_to_index_range(*path_pixel(path))
        index = t.column(SPATIAL_INDEX_COLUMN).to_numpy()
        assert np.all((index >= a) & (index < b)) and np.all(np.diff(index) >= 0)
        seen += t.column("objectId").to_pylist()
    assert sorted(seen) == list(pdf.objectId)
    with pytest.raises(UserbatchError, match="create or overwrite"):
        write_from_tasks(produce, "dp1.by_tasks", "append", partitions=parts, ra_column="coord_ra",
                         dec_column="coord_dec")
