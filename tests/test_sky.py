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


@settings(max_examples=60, deadline=None)
@given(a=ras, b=ras, d1=decs, d2=decs, seed=st.integers(0, 2**16))
@example(a=360.0, b=0.0, d1=0.0, d2=1.0, seed=0)  # RA 360 as the lower bound is RA 0: a line, not the sky
def test_box_brute_force_and_envelope(a, b, d1, d2, seed):
    lo, hi = sorted((d1, d2))
    box = Box(a, b, lo, hi)
    ra, dec = _points(seed, centre=((a + ((b - a) % 360) / 2) % 360, (lo + hi) / 2), spread_deg=max(hi - lo, 1))
    in_ra = (ra >= a) & (ra <= b) if a <= b else (ra >= a) | (ra <= b)
    expected = in_ra & (dec >= lo) & (dec <= hi)
    inside = box.contains(ra, dec)
    np.testing.assert_array_equal(inside, expected)
    _check_envelope(box, ra, dec, inside)


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
