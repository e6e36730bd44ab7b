"""Ingest of Parquet, CSV and FITS files: same rows whatever the format; bad input gives clear errors; the
coordinate columns are found among the common names when none are given."""

import numpy as np
import pytest
from astropy.table import Table
from helpers import sky_points

from userbatch.errors import ColumnNotFound, InputFormatError, TableNotFound, UserbatchError
from userbatch.tables import delta
from userbatch.tables.catalog import Catalog, TableEntry
from userbatch.tables.ingest import (
    COORDINATE_COLUMNS,
    coordinate_candidates,
    coordinate_options,
    detect_coordinate_columns,
    ingest,
)
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


# ---------------------------------------------------------------- coordinate columns

#: The pairs the issue asks ingest to find (an oracle written out here, not read from the code), with case variants.
COMMON_PAIRS = [
    ("coord_ra", "coord_dec"), ("COORD_RA", "COORD_DEC"),
    ("ra", "dec"), ("RA", "DEC"), ("Ra", "Dec"), ("RA", "Dec"),
    ("RAJ2000", "DEJ2000"), ("raj2000", "dej2000"),
    ("ra_deg", "dec_deg"), ("RA_deg", "Dec_deg"),
    ("RA_ICRS", "DE_ICRS"), ("ra_icrs", "de_icrs"),
    ("ALPHA_J2000", "DELTA_J2000"), ("alpha_j2000", "delta_j2000"),
    ("_RAJ2000", "_DEJ2000"), ("RAdeg", "DEdeg"),
]
OTHER_COLUMNS = ["objectId", "l", "b", "parallax", "radius", "decimal", "band", "coord_raErr", "ra_error"]


@pytest.mark.parametrize("ra,dec", COMMON_PAIRS)
def test_detect_coordinate_columns_finds_each_common_pair(ra, dec):
    columns = [*OTHER_COLUMNS[:4], dec, *OTHER_COLUMNS[4:], ra]
    assert detect_coordinate_columns(columns) == (ra, dec)
    assert detect_coordinate_columns(iter(columns)) == (ra, dec)  # any iterable of names


def test_every_listed_pair_is_found_and_the_list_has_the_common_ones():
    for ra, dec in COORDINATE_COLUMNS:
        assert detect_coordinate_columns(["x", ra, dec]) == (ra, dec)
        assert detect_coordinate_columns([ra.upper(), dec.lower()]) == (ra.upper(), dec.lower())
    listed = {(r.lower(), d.lower()) for r, d in COORDINATE_COLUMNS}
    assert {(r.lower(), d.lower()) for r, d in COMMON_PAIRS} <= listed
    assert len(listed) == len(COORDINATE_COLUMNS), "a pair listed twice (case does not count)"


@pytest.mark.parametrize("columns,pairs", [
    (["coord_ra", "coord_dec", "ra", "dec"], "coord_ra/coord_dec, ra/dec"),
    (["RA_ICRS", "DE_ICRS", "_RAJ2000", "_DEJ2000", "Source"], "_RAJ2000/_DEJ2000, RA_ICRS/DE_ICRS"),
    (["ra", "RA", "dec"], "ra/dec, RA/dec"),  # two spellings of one pair are two choices
])
def test_detect_coordinate_columns_refuses_several_pairs(columns, pairs):
    assert len(coordinate_candidates(columns)) == 2
    with pytest.raises(UserbatchError, match="several pairs") as info:
        detect_coordinate_columns(columns)
    assert f"({pairs})" in str(info.value) and "ra_column/dec_column" in str(info.value)
    assert set(info.value.params) == {"ra_column", "dec_column"}


@pytest.mark.parametrize("columns", [
    ["objectId", "x", "y"],
    ["objectId", "ra", "declination"],  # half a pair is no pair
    ["coord_ra", "dec_deg"],  # halves of two different pairs
    [],
])
def test_detect_coordinate_columns_refuses_none(columns):
    with pytest.raises(ColumnNotFound, match="found no coordinate columns") as info:
        detect_coordinate_columns(columns)
    message = str(info.value)
    assert f"columns: {', '.join(columns) or 'none'})" in message
    assert "coord_ra/coord_dec, ra/dec" in message and "ra_column/dec_column" in message
    assert "ra_column=None, dec_column=None" in info.value.params


def test_detect_coordinate_columns_shortens_a_long_column_list():
    columns = [f"flux_{i}" for i in range(300)]
    with pytest.raises(ColumnNotFound, match=r"flux_39 \.\.\. \(260 more\)"):
        detect_coordinate_columns(columns)


def test_coordinate_options(ub_env):
    cat = Catalog()
    cols = ["objectId", "RA", "Dec", "flux"]
    assert coordinate_options(cols, "u.t", "create", cat, {"pixel_threshold": 9}) == {
        "pixel_threshold": 9, "ra_column": "RA", "dec_column": "Dec"}
    # named columns pass through; None, None is a table without positions
    named = {"ra_column": "flux", "dec_column": "objectId"}
    assert coordinate_options(cols, "u.t", "create", cat, named) == named
    assert coordinate_options(cols, "u.t", "create", cat, {"ra_column": None, "dec_column": None}) == {
        "ra_column": None, "dec_column": None}
    # one named: its partner from the list (spelled as in the input), else the one pair in the input
    assert coordinate_options(cols, "u.t", "create", cat, {"ra_column": "ra"})["dec_column"] == "Dec"
    assert coordinate_options(["RAJ2000", "DEJ2000"], "u.t", "create", cat, {"dec_column": "DEJ2000"}) == {
        "ra_column": "RAJ2000", "dec_column": "DEJ2000"}
    assert coordinate_options(cols, "u.t", "create", cat, {"ra_column": "nosuch"})["dec_column"] == "Dec"
    with pytest.raises(UserbatchError, match="name dec_column too"):
        coordinate_options(["a", "b"], "u.t", "create", cat, {"ra_column": "a"})
    with pytest.raises(UserbatchError, match="needs ra_column=None and dec_column=None both"):
        coordinate_options(cols, "u.t", "create", cat, {"ra_column": None})
    # an existing table keeps its declared columns: nothing detected, other names refused
    cat.register(TableEntry(name="u.old", location=str(ub_env / "old")))
    assert coordinate_options(cols, "u.old", "append", cat, {}) == {}
    assert coordinate_options(cols, "u.old", "append", cat, {"ra_column": "coord_ra"}) == {"ra_column": "coord_ra"}
    with pytest.raises(UserbatchError, match="keeps its positions in coord_ra/coord_dec; an append cannot") as info:
        coordinate_options(cols, "u.old", "append", cat, {"ra_column": "RA", "dec_column": "Dec"})
    assert info.value.params == ("ra_column", "dec_column")
    assert coordinate_options(cols, "u.old", "create", cat, {}) == {}  # write_table refuses it, with the reason
