"""Ingest of Parquet, CSV and FITS files: same rows whatever the format; bad input gives clear errors."""

import numpy as np
import pytest
from astropy.table import Table
from helpers import sky_points

from userbatch.errors import ColumnNotFound, InputFormatError, TableNotFound
from userbatch.tables import delta
from userbatch.tables.catalog import Catalog
from userbatch.tables.ingest import ingest
from userbatch.tables.read import read_table


@pytest.fixture
def points(tmp_path):
    pdf = sky_points(1200, seed=31)
    pdf.loc[0, "coord_dec"] = np.nan
    pdf.loc[1, "coord_ra"] = 400.0
    return pdf


def _write(pdf, path, fmt):
    if fmt == "parquet":
        pdf.to_parquet(path)
    elif fmt == "csv":
        pdf.to_csv(path, index=False)
    else:
        Table.from_pandas(pdf).write(path, format="fits")
    return path


@pytest.mark.parametrize("fmt", ["parquet", *(pytest.param(f, marks=pytest.mark.heavy) for f in ("csv", "fits"))])
def test_ingest_formats_give_the_same_rows(spark, ub_env, points, fmt):
    half = len(points) // 2
    paths = [_write(points.iloc[:half], ub_env / f"a.{fmt}", fmt), _write(points.iloc[half:], ub_env / f"b.{fmt}", fmt)]
    res = ingest(paths, "raw.object", spark=spark, pixel_threshold=200, margin_radius_arcsec=10,
                 on_bad_coords="quarantine")
    assert res.rows == len(points) - 2 and res.quarantined == 2 and res.margin_rows > 0
    got = read_table("raw.object").toPandas().sort_values("objectId").reset_index(drop=True)
    want = points.iloc[2:].reset_index(drop=True)
    np.testing.assert_array_equal(got.objectId, want.objectId)
    np.testing.assert_allclose(got.coord_ra, want.coord_ra, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got.r_psfFlux, want.r_psfFlux, rtol=1e-12)
    assert list(got.band) == list(want.band)
    assert sorted(read_table("raw.object_quarantine").toPandas().objectId) == [1, 2]
    prov = delta.history(Catalog().get("raw.object").location)[0]["provenance"]
    assert prov["job"] == "ingest" and len(prov["inputs"]) == 2 and prov["inputs"][0]["path"].endswith(fmt)


def test_ingest_bad_inputs(spark, ub_env, points):
    with pytest.raises(InputFormatError, match="does not exist"):
        ingest([ub_env / "nope.parquet"], "raw.x", spark=spark)
    (ub_env / "data.txt").write_text("hello")
    with pytest.raises(InputFormatError, match="cannot tell the format"):
        ingest([ub_env / "data.txt"], "raw.x", spark=spark)
    (ub_env / "broken.parquet").write_text("not parquet at all")
    with pytest.raises(InputFormatError, match="cannot read parquet"):
        ingest([ub_env / "broken.parquet"], "raw.x", spark=spark)
    p = _write(points, ub_env / "p.parquet", "parquet")
    with pytest.raises(ColumnNotFound, match="ra_deg"):
        ingest([p], "raw.x", spark=spark, ra_column="ra_deg")
    with pytest.raises(TableNotFound):
        Catalog().get("raw.x")
    with pytest.raises(InputFormatError, match="mix formats"):
        ingest([p, _write(points, ub_env / "q.csv", "csv")], "raw.x", spark=spark)


def test_driver_histogram_equals_spark_histogram(spark, ub_env, points):
    """Ingest counts pixels on the driver from the Parquet files; it must equal the Spark pass over the same rows."""
    from userbatch.tables.write import _histogram, _histogram_from_files

    paths = [str(_write(points.iloc[:700], ub_env / "a.parquet", "parquet")),
             str(_write(points.iloc[700:], ub_env / "b.parquet", "parquet"))]
    df = spark.read.parquet(*paths)
    for order in (3, 9):
        p1, c1, bad1 = _histogram_from_files(paths, "coord_ra", "coord_dec", order)
        p2, c2, bad2 = _histogram(df, "coord_ra", "coord_dec", order)
        s2 = np.argsort(p2)
        np.testing.assert_array_equal(p1, p2[s2])
        np.testing.assert_array_equal(c1, c2[s2])
        assert bad1 == bad2 == 2 and c1.sum() == len(points) - 2
