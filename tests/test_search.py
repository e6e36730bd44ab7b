"""Searches over tables against a brute-force astropy/numpy filter, on both engines, with visible pruning."""

import astropy.units as u
import pytest
from astropy.coordinates import SkyCoord
from helpers import module_facility, sky_points
from hypothesis import HealthCheck, given, settings, strategies as st

from userbatch.errors import BadCoordinates, ColumnNotFound, TableNotFound, UserbatchError
from userbatch.ops import box_search, cone_search, polygon_search
from userbatch.tables.write import write_table

N = 6000


@pytest.fixture(scope="module")
def table(spark, session_home, tmp_path_factory):
    """One table for the module (module-scoped home so hypothesis examples reuse it)."""
    with module_facility(tmp_path_factory, "search"):
        pdf = sky_points(N, seed=21)
        write_table(spark.createDataFrame(pdf), "dp1.object", pixel_threshold=250)
        yield pdf


def _ids(df):
    return set(df["objectId"].tolist())


def _cone_truth(pdf, ra, dec, radius_arcsec):
    points = SkyCoord(pdf.coord_ra.values * u.deg, pdf.coord_dec.values * u.deg)
    sep = points.separation(SkyCoord(ra * u.deg, dec * u.deg))
    return set(pdf.objectId[sep.arcsec <= radius_arcsec])


CONES = [(0.0, 0.0, 3600 * 2), (359.8, 1.0, 1800), (10.0, 90.0, 3600 * 1.5), (200.0, -89.5, 3600), (150.0, 30.0, 120),
         (150.02, 30.01, 20), (90.0, 0.0, 3600 * 60), (0.0, -90.0, 5)]


@pytest.mark.parametrize("ra,dec,radius", CONES)
def test_cone_equals_astropy_both_engines(table, ra, dec, radius):
    truth = _cone_truth(table, ra, dec, radius)
    s = cone_search("dp1.object", ra, dec, radius)
    assert _ids(s.to_pandas(engine="arrow")) == truth
    assert _ids(s.to_pandas(engine="spark")) == truth
    if radius < 3600 * 10:
        assert s.plan.partitions_selected < s.plan.partitions_total, s.explain()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ra=st.floats(0, 360, exclude_max=True), dec=st.floats(-90, 90), radius=st.floats(1, 3 * 3600))
def test_cone_property(table, ra, dec, radius):
    found = _ids(cone_search("dp1.object", ra, dec, radius).to_pandas(engine="arrow"))
    assert found == _cone_truth(table, ra, dec, radius)


BOXES = [(350, 10, -2, 2), (0, 360, 88.8, 90), (0, 360, -90, -89), (149.9, 150.1, 29.9, 30.1), (10, 350, -1, 1)]


@pytest.mark.parametrize("box", BOXES)
def test_box_equals_brute_force(table, box):
    a, b, lo, hi = box
    ra, dec = table.coord_ra, table.coord_dec
    in_ra = ((ra >= a) & (ra <= b)) if a <= b else ((ra >= a) | (ra <= b))
    truth = set(table.objectId[in_ra & (dec >= lo) & (dec <= hi)])
    s = box_search("dp1.object", *box)
    assert _ids(s.to_pandas(engine="arrow")) == truth
    assert _ids(s.to_pandas(engine="spark")) == truth


def test_polygon_equals_sphgeom(table):
    import lsst.sphgeom as sg

    verts = [(358.0, -2.0), (2.0, -2.5), (3.0, 2.0), (-1.0 % 360, 2.5)]
    poly = sg.ConvexPolygon.convexHull([sg.UnitVector3d(sg.LonLat.fromDegrees(a, b)) for a, b in verts])
    truth = {oid for oid, a, b in zip(table.objectId, table.coord_ra, table.coord_dec)
             if poly.contains(sg.UnitVector3d(sg.LonLat.fromDegrees(a, b)))}
    s = polygon_search("dp1.object", verts)
    assert truth and _ids(s.to_pandas(engine="arrow")) == truth
    assert _ids(s.to_pandas(engine="spark")) == truth


def test_spark_result_composes(table, spark):
    df = cone_search("dp1.object", 150.0, 30.0, 300).to_spark(spark)
    assert df.filter("band = 'r'").count() == sum(1 for oid in _cone_truth(table, 150.0, 30.0, 300)
                                                   if table.band[table.objectId == oid].iloc[0] == "r")


def test_columns_and_errors(table):
    got = cone_search("dp1.object", 150.0, 30.0, 60, columns=["objectId", "r_psfFlux"]).to_pandas()
    assert list(got.columns) == ["objectId", "r_psfFlux"]
    with pytest.raises(ColumnNotFound, match="nope"):
        cone_search("dp1.object", 150.0, 30.0, 60, columns=["nope"])
    with pytest.raises(TableNotFound):
        cone_search("dp1.missing", 1, 1, 1)
    with pytest.raises(BadCoordinates):
        cone_search("dp1.object", 1, 100, 1)
    with pytest.raises(BadCoordinates):
        cone_search("dp1.object", 1, 1, -3)
    with pytest.raises(UserbatchError, match="engine"):
        cone_search("dp1.object", 1, 1, 3).to_arrow(engine="dask")


def test_search_old_version(spark, table):
    more = sky_points(500, seed=22, id_start=10**6)
    write_table(spark.createDataFrame(more), "dp1.object", "append")
    both = _cone_truth(table, 150.0, 30.0, 600) | _cone_truth(more, 150.0, 30.0, 600)
    assert _ids(cone_search("dp1.object", 150.0, 30.0, 600).to_pandas()) == both
    at_v0 = _ids(cone_search("dp1.object", 150.0, 30.0, 600, version=0).to_pandas())
    assert at_v0 == _cone_truth(table, 150.0, 30.0, 600)
