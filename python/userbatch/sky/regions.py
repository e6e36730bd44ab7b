"""Search regions: cone, box and convex polygon.

Each region answers three questions, all pure functions:

* ``index_ranges()`` — which order-29 index ranges can hold a matching row (coarse step: lsst-sphgeom's HEALPix
  envelope, so the answer is conservative: never misses a pixel that touches the region);
* ``contains(ra, dec)`` — the exact row test on numpy arrays (fine step);
* ``condition(ra, dec)`` — the same exact test as a Spark SQL expression string, so the fine step runs in the JVM
  without a Python UDF.

The numpy and SQL forms use the same formulas so the light (pyarrow) path and the Spark path agree row for row.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import lsst.sphgeom as sg
import numpy as np

from ..errors import BadCoordinates
from .healpix import SPATIAL_INDEX_ORDER, mean_pixel_size_deg, validate_radec

#: Finest order at which a region is enveloped; finer buys little pruning for a lot of ranges.
MAX_ENVELOPE_ORDER = 18

#: How far a box is widened before its HEALPix envelope is taken (0.2 milliarcsec): enough that a box of zero
#: width or height (a meridian or parallel segment) has an area sphgeom can envelope, far below any pixel.
ENVELOPE_DILATION = sg.Angle(1e-9)


def _unit(ra_deg: float, dec_deg: float) -> sg.UnitVector3d:
    return sg.UnitVector3d(sg.LonLat.fromDegrees(ra_deg, dec_deg))


def _envelope_order(size_deg: float) -> int:
    """Coarsest order whose pixels are about a quarter of the region's size: a few dozen ranges at most."""
    order = 0
    while order < MAX_ENVELOPE_ORDER and mean_pixel_size_deg(order) > size_deg / 4:
        order += 1
    return order


def _xyz(ra_deg: np.ndarray, dec_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ra = np.radians(ra_deg)
    dec = np.radians(dec_deg)
    cd = np.cos(dec)
    return cd * np.cos(ra), cd * np.sin(ra), np.sin(dec)


def _ra_mod(ra: np.ndarray) -> np.ndarray:
    """RA modulo 360 in [0, 360), as Spark's ``pmod(ra, 360.0D)`` gives it: numpy's mod of a tiny negative RA
    rounds up to 360.0 exactly, where Spark's ``(r + n) % n`` gives 0.0; fold that one value the same way."""
    ra = np.mod(ra, 360.0)
    return np.where(ra >= 360.0, 0.0, ra)


def _sql_xyz(ra: str, dec: str) -> tuple[str, str, str]:
    r, d = f"radians(`{ra}`)", f"radians(`{dec}`)"
    return f"(cos({d}) * cos({r}))", f"(cos({d}) * sin({r}))", f"sin({d})"


class Region(ABC):
    """A sky region a search selects rows from."""

    @abstractmethod
    def sphgeom(self) -> sg.Region: ...

    @abstractmethod
    def size_deg(self) -> float:
        """A typical linear size, used to pick the envelope order."""

    @abstractmethod
    def contains(self, ra_deg: np.ndarray, dec_deg: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def condition(self, ra_col: str, dec_col: str) -> str: ...

    def envelope_parts(self) -> list[sg.Region]:
        """Regions whose HEALPix envelopes together cover this one (see Box for why there can be several)."""
        return [self.sphgeom()]

    def index_ranges(self) -> np.ndarray:
        """Sorted, disjoint half-open order-29 ranges, shape (n, 2), covering every pixel the region touches."""
        order = _envelope_order(self.size_deg())
        pixelization = sg.HealpixPixelization(order)
        ranges = sg.RangeSet()
        for part in self.envelope_parts():
            ranges = ranges.union(pixelization.envelope(part))
        shift = 2 * (SPATIAL_INDEX_ORDER - order)
        out = np.array([(lo, hi) for lo, hi in ranges], dtype=np.int64).reshape(-1, 2)
        return np.left_shift(out, shift)


@dataclass(frozen=True)
class Cone(Region):
    ra_deg: float
    dec_deg: float
    radius_arcsec: float

    def __post_init__(self):
        validate_radec(self.ra_deg, self.dec_deg, "cone centre")
        r = self.radius_arcsec
        if not (isinstance(r, (int, float)) and math.isfinite(r) and 0 < r <= 180 * 3600):
            raise BadCoordinates(f"cone radius must be a finite number of arcsec in (0, 648000]; got {r!r}")

    @property
    def radius_deg(self) -> float:
        return self.radius_arcsec / 3600.0

    def sphgeom(self) -> sg.Region:
        return sg.Circle(_unit(self.ra_deg, self.dec_deg), sg.Angle.fromDegrees(self.radius_deg))

    def size_deg(self) -> float:
        return 2 * self.radius_deg

    # Haversine: accurate for tiny radii, where the dot-product form loses digits.
    def contains(self, ra_deg, dec_deg):
        ra = np.radians(np.asarray(ra_deg, dtype=np.float64))
        dec = np.radians(np.asarray(dec_deg, dtype=np.float64))
        ra0, dec0 = math.radians(self.ra_deg), math.radians(self.dec_deg)
        hav = np.sin((dec - dec0) / 2) ** 2 + np.cos(dec) * math.cos(dec0) * np.sin((ra - ra0) / 2) ** 2
        return hav <= math.sin(math.radians(self.radius_deg) / 2) ** 2

    def condition(self, ra_col, dec_col):
        ra0, dec0 = math.radians(self.ra_deg), math.radians(self.dec_deg)
        limit = math.sin(math.radians(self.radius_deg) / 2) ** 2
        r, d = f"radians(`{ra_col}`)", f"radians(`{dec_col}`)"
        return (
            f"(pow(sin(({d} - {dec0!r}) / 2), 2) + cos({d}) * {math.cos(dec0)!r} * pow(sin(({r} - {ra0!r}) / 2), 2))"
            f" <= {limit!r}"
        )


@dataclass(frozen=True)
class Box(Region):
    """RA/Dec box, corners in degrees with RA in [0, 360].

    RA bounds are read on the circle, as hats' ``wrap_ra_angles`` and lsst-sphgeom's ``NormalizedAngleInterval``
    read them: both are taken modulo 360 (RA 360 is RA 0), and the box runs east from ``ra_min`` to ``ra_max``:

    * ``ra_min < ra_max`` (after the modulo) — the plain range, e.g. Box(10, 350) is 340 degrees wide;
    * ``ra_min > ra_max`` — the box wraps through RA = 0, e.g. Box(350, 10) is 20 degrees wide;
    * ``ra_min == ra_max`` — zero width: the meridian segment RA = ra_min, e.g. Box(0, 0), Box(360, 360) and
      Box(360, 0) are all the line RA = 0;
    * the one exception is Box(0, 360) (``ra_max - ra_min >= 360`` as given), every RA: sphgeom would read it as
      the line RA = 0, but a caller who writes 0..360 means the whole circle.
    """

    ra_min_deg: float
    ra_max_deg: float
    dec_min_deg: float
    dec_max_deg: float

    def __post_init__(self):
        validate_radec([self.ra_min_deg, self.ra_max_deg], [self.dec_min_deg, self.dec_max_deg], "box corners")
        if self.dec_min_deg > self.dec_max_deg:
            raise BadCoordinates(f"box dec_min {self.dec_min_deg} is above dec_max {self.dec_max_deg}")

    @property
    def full_ra(self) -> bool:
        return self.ra_max_deg - self.ra_min_deg >= 360.0

    @property
    def ra_bounds(self) -> tuple[float, float]:
        """(lo, hi), both in [0, 360): RA 360 is RA 0 at either end (Box(360, 360) is the line RA = 0, not the
        sky; only ``full_ra`` means every RA, and then these bounds are not used)."""
        return self.ra_min_deg % 360.0, self.ra_max_deg % 360.0

    @property
    def wraps(self) -> bool:
        lo, hi = self.ra_bounds
        return lo > hi

    def sphgeom(self) -> sg.Region:
        lat = sg.AngleInterval.fromDegrees(self.dec_min_deg, self.dec_max_deg)
        if self.full_ra:
            return sg.Box(sg.NormalizedAngleInterval.full(), lat)
        return sg.Box(sg.NormalizedAngleInterval.fromDegrees(*self.ra_bounds), lat)  # sphgeom tells 0 from 2 pi

    def envelope_parts(self) -> list[sg.Region]:
        """Boxes whose HEALPix envelopes together cover this one, working round two gaps in lsst-sphgeom's
        envelope (seen with 30.2026.4000): a box spanning all 360 degrees of RA comes back empty, so wide boxes
        are enveloped as pieces of at most 120 degrees; and so does a box of zero width or height (Box(10, 10, ...)
        is the meridian RA = 10, Box(..., 5, 5) the parallel Dec = 5), so every piece is dilated by
        ``ENVELOPE_DILATION`` first — a conservative envelope may only grow."""
        # each interval on its own: sphgeom's Box.dilatedBy would open a box touching a pole to all RA
        lat = sg.AngleInterval.fromDegrees(self.dec_min_deg, self.dec_max_deg).dilatedBy(ENVELOPE_DILATION)
        width = 360.0 if self.full_ra else (self.ra_max_deg - self.ra_min_deg) % 360.0
        n = max(1, int(np.ceil(width / 120.0)))
        start = 0.0 if self.full_ra else self.ra_min_deg
        step = width / n
        return [
            sg.Box(sg.NormalizedAngleInterval.fromDegrees((start + i * step) % 360.0, (start + (i + 1) * step) % 360.0)
                   .dilatedBy(sg.NormalizedAngle(ENVELOPE_DILATION)), lat)
            for i in range(n)
        ]

    def size_deg(self) -> float:
        width = 360.0 if self.full_ra else (self.ra_max_deg - self.ra_min_deg) % 360.0
        cos_dec = max(math.cos(math.radians(max(abs(self.dec_min_deg), abs(self.dec_max_deg)))), 1e-3)
        return max(min(width * cos_dec, 360.0), self.dec_max_deg - self.dec_min_deg, 1e-6)

    def contains(self, ra_deg, dec_deg):
        ra = _ra_mod(np.asarray(ra_deg, dtype=np.float64))
        dec = np.asarray(dec_deg, dtype=np.float64)
        in_dec = (dec >= self.dec_min_deg) & (dec <= self.dec_max_deg)
        if self.full_ra:
            return in_dec
        lo, hi = self.ra_bounds
        in_ra = (ra >= lo) | (ra <= hi) if self.wraps else (ra >= lo) & (ra <= hi)
        return in_dec & in_ra

    def condition(self, ra_col, dec_col):
        dec = f"(`{dec_col}` BETWEEN {self.dec_min_deg!r} AND {self.dec_max_deg!r})"
        if self.full_ra:
            return dec
        ra = f"pmod(`{ra_col}`, 360.0D)"
        lo, hi = self.ra_bounds
        op = "OR" if self.wraps else "AND"
        return f"({dec} AND ({ra} >= {lo!r} {op} {ra} <= {hi!r}))"


@dataclass(frozen=True)
class Polygon(Region):
    """Convex spherical polygon; vertices as (ra, dec) degrees in either winding order."""

    vertices_deg: tuple[tuple[float, float], ...]
    _normals: np.ndarray = field(init=False, repr=False, compare=False)
    _hull: sg.ConvexPolygon = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        verts = tuple((float(a), float(b)) for a, b in self.vertices_deg)
        object.__setattr__(self, "vertices_deg", verts)
        if len(verts) < 3:
            raise BadCoordinates(f"a polygon needs at least 3 vertices; got {len(verts)}")
        validate_radec([v[0] for v in verts], [v[1] for v in verts], "polygon vertices")
        try:
            hull = sg.ConvexPolygon.convexHull([_unit(a, b) for a, b in verts])
        except Exception as exc:  # sphgeom raises on degenerate input (collinear, hemisphere-sized)
            raise BadCoordinates(f"polygon vertices do not form a convex polygon: {exc}") from exc
        hv = hull.getVertices()
        if len(hv) != len(verts):
            raise BadCoordinates(
                "polygon must be convex with distinct vertices (the convex hull of the points has "
                f"{len(hv)} vertices, the input {len(verts)}); split a concave region into convex ones"
            )
        pts = np.array([[v.x(), v.y(), v.z()] for v in hv])
        normals = np.cross(pts, np.roll(pts, -1, axis=0))  # sphgeom keeps hull vertices counter-clockwise
        object.__setattr__(self, "_normals", normals)
        object.__setattr__(self, "_hull", hull)

    def sphgeom(self) -> sg.Region:
        return self._hull

    def size_deg(self) -> float:
        return 2 * self._hull.getBoundingCircle().getOpeningAngle().asDegrees()

    def contains(self, ra_deg, dec_deg):
        x, y, z = _xyz(np.asarray(ra_deg, dtype=np.float64), np.asarray(dec_deg, dtype=np.float64))
        inside = np.ones(np.shape(x), dtype=bool)
        for nx, ny, nz in self._normals:
            inside &= x * nx + y * ny + z * nz >= 0
        return inside

    def condition(self, ra_col, dec_col):
        x, y, z = _sql_xyz(ra_col, dec_col)
        terms = [f"({x} * {float(nx)!r} + {y} * {float(ny)!r} + {z} * {float(nz)!r} >= 0)"
                 for nx, ny, nz in self._normals]
        return "(" + " AND ".join(terms) + ")"
