"""Geometry against independent oracles: astropy separations, lsst-sphgeom containment, hats' index, brute force."""

import astropy.units as u
import lsst.sphgeom as sg
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from hats.pixel_math.spatial_index import compute_spatial_index
from hypothesis import example, given, settings, strategies as st

from userbatch.errors import BadCoordinates
from userbatch.sky import Box, Cone, Polygon, radec_to_index
from userbatch.sky.healpix import SPATIAL_INDEX_ORDER, pixel_to_index_range

ras = st.floats(0, 360, allow_nan=False)
decs = st.floats(-90, 90, allow_nan=False)


def _points(seed, n=4000, centre=None, spread_deg=None):
    """Uniform sphere points, plus a dense cloud around ``centre`` (poles and RA=0 included by the callers)."""
    rng = np.random.default_rng(seed)
    ra = rng.uniform(0, 360, n)
    dec = np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    if centre is not None:
        c = SkyCoord(centre[0] * u.deg, centre[1] * u.deg)
        pa = rng.uniform(0, 360, n) * u.deg
        sep = np.sqrt(rng.uniform(0, 1, n)) * spread_deg * 1.5 * u.deg
        near = c.directional_offset_by(pa, sep)
        ra = np.concatenate([ra, near.ra.deg])
        dec = np.concatenate([dec, near.dec.deg])
    return np.mod(ra, 360), dec


def _check_envelope(region, ra, dec, inside):
    """Every matching point's order-29 index must fall in the region's ranges (the coarse step never misses)."""
    idx = radec_to_index(ra[inside], dec[inside])
    ranges = region.index_ranges()
    pos = np.searchsorted(ranges[:, 0], idx, side="right") - 1
    assert np.all(pos >= 0) and np.all(idx < ranges[pos, 1])


def test_index_matches_hats():
    ra, dec = _points(1, 20000)
    ra[:4] = [0.0, 360.0, 180.0, 359.9999999]
    dec[:4] = [90.0, -90.0, 0.0, -45.0]
    np.testing.assert_array_equal(radec_to_index(ra, dec), compute_spatial_index(np.mod(ra, 360), dec))


@settings(max_examples=60, deadline=None)
@given(ra0=ras, dec0=decs, radius=st.floats(0.5, 20 * 3600), seed=st.integers(0, 2**16))
def test_cone_matches_astropy(ra0, dec0, radius, seed):
    cone = Cone(ra0 % 360, dec0, radius)
    ra, dec = _points(seed, centre=(ra0 % 360, dec0), spread_deg=radius / 3600)
    sep = SkyCoord(ra * u.deg, dec * u.deg).separation(SkyCoord(ra0 * u.deg, dec0 * u.deg)).arcsec
    inside = cone.contains(ra, dec)
    clear = np.abs(sep - radius) > 1e-6 * max(radius, 1)  # exclude points on the rim, where rounding decides
    np.testing.assert_array_equal(inside[clear], (sep <= radius)[clear])
    _check_envelope(cone, ra, dec, inside)


def _box_truth_ra(a, b, ra):
    """Box RA membership on the circle: both ends and the points modulo 360 (RA 360 is RA 0), the box runs east
    from ``a`` to ``b`` (wrapping through 0 when a > b; a line when a == b); only 0..360 as given is every RA."""
    r, lo, hi = np.mod(ra, 360.0), a % 360.0, b % 360.0
    if b - a >= 360:
        return np.ones(np.shape(ra), dtype=bool)
    return (r >= lo) & (r <= hi) if lo <= hi else (r >= lo) | (r <= hi)


@settings(max_examples=60)
@given(a=ras, b=ras, d1=decs, d2=decs, seed=st.integers(0, 2**16))
@example(a=360.0, b=0.0, d1=0.0, d2=1.0, seed=0)  # RA 360 as the lower bound is RA 0: a line, not the sky
@example(a=360.0, b=360.0, d1=0.0, d2=1.0, seed=0)  # found by hypothesis: the line RA = 0 gave 21 % of the points
@example(a=0.0, b=360.0, d1=0.0, d2=1.0, seed=0)  # the one way to say every RA
@example(a=10.0, b=20.0, d1=5.0, d2=5.0, seed=0)  # zero height: the parallel Dec = 5 (sphgeom's envelope is empty)
@example(a=5e-324, b=0.0, d1=-1.0, d2=1.0, seed=0)  # found by hypothesis: all but a sliver, a line in radians
def test_box_brute_force_and_envelope(a, b, d1, d2, seed):
    lo, hi = sorted((d1, d2))
    box = Box(a, b, lo, hi)
    ra, dec = _points(seed, centre=((a + ((b - a) % 360) / 2) % 360, (lo + hi) / 2), spread_deg=max(hi - lo, 1))
    # and points exactly on the edges and the seam, where a line-shaped box has all its matches
    edge_ra, edge_dec = np.meshgrid([a, b, 0.0, 360.0], [lo, hi, (lo + hi) / 2])
    ra, dec = np.concatenate([ra, edge_ra.ravel()]), np.concatenate([dec, edge_dec.ravel()])
    expected = _box_truth_ra(a, b, ra) & (dec >= lo) & (dec <= hi)
    inside = box.contains(ra, dec)
    np.testing.assert_array_equal(inside, expected)
    # the RA rule against sphgeom's interval, fed RA in [0, 360) (it tells 0 from 2 pi apart), wherever its radians
    # keep apart what the degrees do (hypothesis found a=5e-324, b=0: nearly all the sky, a line in radians)
    lo_ra, hi_ra, r = a % 360, b % 360, np.mod(ra, 360)
    apart = ~(((np.radians(r) == np.radians(lo_ra)) & (r != lo_ra))
              | ((np.radians(r) == np.radians(hi_ra)) & (r != hi_ra)))
    if b - a < 360 and (lo_ra == hi_ra or np.radians(lo_ra) != np.radians(hi_ra)):
        interval = sg.NormalizedAngleInterval.fromDegrees(lo_ra, hi_ra)
        sphgeom_ra = [interval.contains(sg.NormalizedAngle.fromDegrees(x)) for x in r[apart]]
        np.testing.assert_array_equal(_box_truth_ra(a, b, ra[apart]), sphgeom_ra)
    _check_envelope(box, ra, dec, inside)


# RA probes, and which of them each box holds: RA 360 is RA 0 at either end, equal ends are a line, 0..360 all
SEAM_PROBES = np.array([0.0, 360.0, 1e-9, 5.0, 10.0, 180.0, 350.0, 355.0, 360.0 - 1e-9])
SEAM_CASES = {
    (360, 360): [0.0, 360.0],
    (0, 0): [0.0, 360.0],
    (360, 0): [0.0, 360.0],
    (0, 360): list(SEAM_PROBES),
    (350, 10): [0.0, 360.0, 1e-9, 5.0, 10.0, 350.0, 355.0, 360.0 - 1e-9],
    (10, 350): [10.0, 180.0, 350.0],
    (5, 360): [0.0, 360.0, 5.0, 10.0, 180.0, 350.0, 355.0, 360.0 - 1e-9],
    (180, 180): [180.0],
}


@pytest.mark.parametrize("ra_min, ra_max", list(SEAM_CASES))
def test_box_seam_cases(ra_min, ra_max):
    box = Box(ra_min, ra_max, -1, 1)
    dec = np.zeros_like(SEAM_PROBES)
    inside = box.contains(SEAM_PROBES, dec)
    assert sorted(SEAM_PROBES[inside]) == sorted(SEAM_CASES[ra_min, ra_max])
    assert not box.contains(SEAM_PROBES, dec + 2).any()
    _check_envelope(box, SEAM_PROBES, dec, inside)


def test_region_sql_matches_numpy(spark):
    """``condition`` (run by Spark) and ``contains`` (numpy) agree row for row, at the seam and the poles too;
    RA here may be negative or 360, as a column of someone else's table can be."""
    ra = np.r_[SEAM_PROBES, -0.0, -1e-20, -5.0, 365.0, np.random.default_rng(4).uniform(0, 360, 200)]
    dec = np.r_[np.zeros(len(SEAM_PROBES) + 4), np.random.default_rng(5).uniform(-90, 90, 200)]
    dec[-4:] = [90.0, -90.0, 89.9999, -89.9999]
    regions = [Box(a, b, -1, 1) for a, b in SEAM_CASES] + [
        Box(0, 360, 85, 90), Box(350, 10, -90, -80), Box(10, 20, 0, 0), Cone(0.0, 0.0, 3600), Cone(359.5, 89.9, 7200),
        Polygon([(358, -2), (2, -2.5), (3, 2), (359, 2.5)])]
    df = spark.createDataFrame([(float(r), float(d)) for r, d in zip(ra, dec)], "ra double, dec double")
    rows = df.selectExpr(*(f"{region.condition('ra', 'dec')} AS r{i}" for i, region in enumerate(regions))).collect()
    for i, region in enumerate(regions):
        np.testing.assert_array_equal([row[i] for row in rows], region.contains(ra, dec), err_msg=repr(region))


def test_full_ra_polar_box_envelope():
    """A box over all RA touching a pole: lsst-sphgeom's own envelope of it is empty, ours must not be."""
    ra, dec = _points(3, 50000)
    for box in (Box(0, 360, -90, -88), Box(0, 360, 85, 90), Box(0, 360, -5, 5)):
        inside = box.contains(ra, dec)
        assert inside.any()
        _check_envelope(box, ra, dec, inside)


@settings(max_examples=40, deadline=None)
@given(ra0=ras, dec0=st.floats(-89, 89), size=st.floats(0.01, 20), seed=st.integers(0, 2**16),
       n=st.integers(3, 7))
def test_polygon_matches_sphgeom(ra0, dec0, size, seed, n):
    rng = np.random.default_rng(seed)
    angles = np.sort(rng.uniform(0, 360, n))
    centre = SkyCoord(ra0 * u.deg, dec0 * u.deg)
    verts = centre.directional_offset_by(angles * u.deg, size * u.deg)
    vertices = list(zip(verts.ra.deg, verts.dec.deg))
    try:
        poly = Polygon(vertices)
    except BadCoordinates:
        return  # random angles can give a degenerate (nearly collinear) polygon; the error is the right answer
    ra, dec = _points(seed, centre=(ra0, dec0), spread_deg=size)
    hull = sg.ConvexPolygon.convexHull([sg.UnitVector3d(sg.LonLat.fromDegrees(a, b)) for a, b in vertices])
    expected = np.array([hull.contains(sg.UnitVector3d(sg.LonLat.fromDegrees(a, b))) for a, b in zip(ra, dec)])
    inside = poly.contains(ra, dec)
    assert (inside != expected).sum() <= 1  # only a point within rounding of an edge may differ
    _check_envelope(poly, ra, dec, inside)


@pytest.mark.parametrize("bad", [
    lambda: Cone(10, 95, 10), lambda: Cone(float("nan"), 0, 10), lambda: Cone(10, 0, -1), lambda: Cone(10, 0, 0),
    lambda: Cone(400, 0, 1), lambda: Box(0, 10, 5, -5), lambda: Box(0, 10, -95, 0),
    lambda: Polygon([(0, 0), (1, 1)]), lambda: Polygon([(0, 0), (10, 0), (5, 2), (10, 10), (0, 10)]),
])
def test_bad_regions_raise(bad):
    with pytest.raises(BadCoordinates):
        bad()


def test_pixel_ranges_nest():
    lo, hi = pixel_to_index_range(3, 100)
    assert (hi - lo) == 4 ** (SPATIAL_INDEX_ORDER - 3)
    assert radec_to_index(np.array([10.0]), np.array([20.0]))[0] >> (2 * (SPATIAL_INDEX_ORDER - 3)) == \
        radec_to_index(np.array([10.0]), np.array([20.0]), order=3)[0]
