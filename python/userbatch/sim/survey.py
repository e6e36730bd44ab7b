"""Deterministic simulator of a small LSST-like survey (Object, Visit, ForcedSource) plus a Gaia-like catalogue.

Why it exists: every layer above ``sky/`` (ingest, search, crossmatch, light curves, periodograms, classifiers,
benchmarks) needs realistic-looking input that is identical from run to run, that can be made small enough for a
unit test or large enough (tens of millions of objects) for a benchmark, and that exercises the awkward corners of
spherical geometry. Therefore:

* The default footprint is a patch that straddles RA = 0 plus a cap around the south celestial pole, and the dense
  "cluster" blob itself straddles RA = 0: wrap-around and pole code paths are hit by default, not by luck.
* Positions are uniform *on the sphere* inside each patch (uniform in sin(dec)), so density tests are meaningful.
* Everything is pure, vectorised numpy; randomness comes either from ``numpy.random.Generator`` streams seeded by
  ``(cfg.seed, stream, block)`` or from a counter-based hash of ``(cfg.seed, stream, objectId, visit)``. The same
  configuration therefore gives bit-identical frames, and per-object quantities do not depend on row order.
* Objects are generated in fixed internal blocks of ``_BLOCK_ROWS`` rows, each with its own seed derived from
  ``cfg.seed`` and the block index. :func:`iter_object_chunks` re-slices those blocks into chunks of any size, so its
  output is independent of ``chunk_rows`` and equals :func:`simulate_objects` concatenated, while never holding more
  than about one chunk in memory.

Units are in the names or the docstrings: degrees for positions, nJy for fluxes, mas and mas/yr for astrometry,
MJD (TAI-ish; the simulator does not distinguish time scales) for times, Julian years for epochs.

Modelling shortcuts, stated so nobody mistakes them for features of the real survey:

* ForcedSource membership is not geometric. With a few hundred visits over a few hundred square degrees, a
  1.75-degree field would give each object only a handful of epochs, too few for light curves. Instead each object is
  measured in a deterministic pseudo-random 30-100 % of the visits pointed at *its own patch* (main patch or pole
  cap), so the time sampling still has that patch's seasonal gaps.
* The Object table holds true positions at ``observation_epoch_jyear`` (no astrometric noise); ``psfFlux`` is a
  noisy coadd measurement of the mean flux, and light curves in ForcedSource are built around it.
* Gaia positions are those positions moved back to ``gaia_epoch_jyear`` with the star's proper motion under linear
  space motion with zero radial velocity (the model of ``SkyCoord.apply_space_motion`` without radial velocity), so
  propagating Gaia forwards lands on the Object position to far better than a micro-arcsecond. Gaia rows carry an
  extra ``truth_objectId`` column (0 for Gaia-only stars) so crossmatch code can be scored against the truth.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

__all__ = [
    "SurveyConfig",
    "simulate_objects",
    "simulate_visits",
    "simulate_forced_sources",
    "simulate_gaia",
    "simulate_survey",
    "write_survey",
    "iter_object_chunks",
]

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------------------------------
# Constants. Values are LSST-like (SRD / rubin_sim nominal numbers), rounded: the point is plausibility, not fidelity.
# ---------------------------------------------------------------------------------------------------------------------

#: AB zero point for nJy: m = 31.4 - 2.5 log10(f / nJy).
_AB_NJY_ZP = 31.4
#: Rows per internal object block; fixed so that output never depends on the caller's chunk size.
_BLOCK_ROWS = 1 << 16
#: Rubin Observatory geodetic latitude / longitude (deg), used for airmass and hour angle.
_SITE_LAT_DEG = -30.2444
_SITE_LON_DEG = -70.7494
#: Default footprint: an equatorial patch straddling RA = 0 and a cap around the south celestial pole.
_DEFAULT_PATCHES = ((350.0, 10.0, -10.0, 10.0), (0.0, 360.0, -90.0, -86.0))
#: Default cluster: centre (deg) chosen so that the 0.5-degree blob itself straddles RA = 0.
_DEFAULT_CLUSTER = (0.3, 2.0, 0.5)
#: Cluster kinematics (Gaia): common proper motion (mas/yr) and parallax (mas), with small internal dispersion.
_CLUSTER_PM_MASYR = (3.5, -2.0)
_CLUSTER_PARALLAX_MAS = 0.4

#: Per-band nominal single-visit 5-sigma depth (AB mag at airmass 1, 0.7" seeing), extinction coefficient (mag per
#: airmass), effective wavelength (nm), sinusoidal-pulsation amplitude scale relative to r, and star colour offsets
#: m_band - m_r for a blue (t=0) and a red (t=1) star. Unknown band names fall back to r-like values.
_BAND_M5 = {"u": 23.9, "g": 25.0, "r": 24.7, "i": 24.0, "z": 23.3, "y": 22.1}
_BAND_K = {"u": 0.47, "g": 0.21, "r": 0.13, "i": 0.10, "z": 0.07, "y": 0.18}
_BAND_WAVELENGTH_NM = {"u": 367.0, "g": 482.0, "r": 622.0, "i": 755.0, "z": 869.0, "y": 971.0}
_BAND_PULSE_AMP = {"u": 1.5, "g": 1.25, "r": 1.0, "i": 0.8, "z": 0.7, "y": 0.65}
_BAND_COLOR_BLUE = {"u": 0.9, "g": 0.25, "r": 0.0, "i": -0.1, "z": -0.15, "y": -0.2}
_BAND_COLOR_RED = {"u": 2.8, "g": 1.4, "r": 0.0, "i": -0.6, "z": -0.9, "y": -1.1}

#: Variability classes, in code order (int8 codes 0, 1, 2).
_VAR_CLASSES = ("constant", "periodic", "transient")

#: Independent random streams (any distinct integers; changing one changes that stream's output only).
_S_OBJECT, _S_VISIT, _S_FORCED, _S_GAIA = 11, 12, 13, 14
_H_MEMBER, _H_FRACTION, _H_VARPARAM = 101, 102, 103

_MAS_TO_RAD = math.pi / (180.0 * 3600.0 * 1000.0)
_MASK64 = (1 << 64) - 1


# ---------------------------------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SurveyConfig:
    """Everything that determines a simulated survey; equal configs give identical tables.

    ``footprint`` is ``(ra_min, ra_max, dec_min, dec_max)`` in degrees; ``ra_min > ra_max`` means the patch wraps
    through RA = 0. ``None`` selects the default two-patch footprint (RA 350..10 x Dec -10..10 and Dec < -86).
    ``n_gaia`` ``None`` means about 0.6 times the number of objects handed to :func:`simulate_gaia`.
    """

    n_objects: int = 10_000
    n_visits: int = 200
    n_gaia: int | None = None
    seed: int = 42
    bands: tuple[str, ...] = ("u", "g", "r", "i", "z", "y")
    footprint: tuple[float, float, float, float] | None = None
    cluster_fraction: float = 0.2
    variable_fraction: float = 0.2
    transient_fraction: float = 0.05
    mjd_start: float = 60600.0
    survey_days: float = 730.0
    gaia_epoch_jyear: float = 2016.0
    observation_epoch_jyear: float = 2025.0

    def __post_init__(self) -> None:
        # Validate eagerly: a bad config should fail with a clear message here, not as a numpy error deep inside.
        object.__setattr__(self, "bands", tuple(self.bands))
        if int(self.n_objects) != self.n_objects or self.n_objects < 0:
            raise ValueError(f"n_objects must be a non-negative integer, got {self.n_objects!r}")
        if int(self.n_visits) != self.n_visits or self.n_visits < 0:
            raise ValueError(f"n_visits must be a non-negative integer, got {self.n_visits!r}")
        if self.n_gaia is not None and (int(self.n_gaia) != self.n_gaia or self.n_gaia < 0):
            raise ValueError(f"n_gaia must be None or a non-negative integer, got {self.n_gaia!r}")
        if int(self.seed) != self.seed or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if not self.bands or len(set(self.bands)) != len(self.bands):
            raise ValueError(f"bands must be a non-empty tuple of distinct names, got {self.bands!r}")
        for name in ("cluster_fraction", "variable_fraction", "transient_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value!r}")
        if self.variable_fraction + self.transient_fraction > 1.0:
            raise ValueError("variable_fraction + transient_fraction must not exceed 1; lower one of them")
        if not self.survey_days > 0:
            raise ValueError(f"survey_days must be positive, got {self.survey_days!r}")
        if self.footprint is not None:
            if len(self.footprint) != 4:
                raise ValueError("footprint must be (ra_min, ra_max, dec_min, dec_max) in degrees")
            ra_min, ra_max, dec_min, dec_max = (float(v) for v in self.footprint)
            if not (0.0 <= ra_min <= 360.0 and 0.0 <= ra_max <= 360.0) or ra_min == ra_max:
                raise ValueError(
                    f"footprint RA bounds must lie in [0, 360] and differ (ra_min > ra_max wraps through 0), "
                    f"got {ra_min}, {ra_max}"
                )
            if not -90.0 <= dec_min < dec_max <= 90.0:
                raise ValueError(f"footprint needs -90 <= dec_min < dec_max <= 90, got {dec_min}, {dec_max}")


@dataclass(frozen=True)
class _Patch:
    """An RA/Dec box on the sphere; ``ra_width_deg`` is measured eastwards from ``ra_min`` (so wrap is implicit)."""

    ra_min: float
    ra_width_deg: float
    dec_min: float
    dec_max: float

    @property
    def area_sr(self) -> float:
        return math.radians(self.ra_width_deg) * (math.sin(math.radians(self.dec_max)) -
                                                  math.sin(math.radians(self.dec_min)))

    @property
    def ra_center(self) -> float:
        return (self.ra_min + 0.5 * self.ra_width_deg) % 360.0

    def contains(self, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        dra = np.mod(np.asarray(ra, dtype=np.float64) - self.ra_min, 360.0)
        in_ra = (dra <= self.ra_width_deg) if self.ra_width_deg < 360.0 else np.ones(dra.shape, dtype=bool)
        return in_ra & (dec >= self.dec_min) & (dec <= self.dec_max)

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Uniform on the sphere inside the box: uniform in RA and in sin(dec)."""
        ra = _wrap_ra(self.ra_min + rng.random(n) * self.ra_width_deg)
        s0, s1 = math.sin(math.radians(self.dec_min)), math.sin(math.radians(self.dec_max))
        dec = np.degrees(np.arcsin(np.clip(s0 + rng.random(n) * (s1 - s0), -1.0, 1.0)))
        return ra, dec


def _patch(ra_min: float, ra_max: float, dec_min: float, dec_max: float) -> _Patch:
    width = (ra_max - ra_min) % 360.0
    if width == 0.0:  # (0, 360): the full ring
        width = 360.0
    return _Patch(float(ra_min) % 360.0, float(width), float(dec_min), float(dec_max))


def _patches(cfg: SurveyConfig) -> tuple[_Patch, ...]:
    """The footprint's patches; the first one hosts the cluster."""
    if cfg.footprint is None:
        return tuple(_patch(*p) for p in _DEFAULT_PATCHES)
    return (_patch(*cfg.footprint),)


def _cluster_region(cfg: SurveyConfig) -> tuple[float, float, float]:
    """(ra_deg, dec_deg, radius_deg) of the dense blob; it always lies inside the first patch."""
    if cfg.footprint is None:
        return _DEFAULT_CLUSTER
    p = _patches(cfg)[0]
    dec_c = 0.5 * (p.dec_min + p.dec_max)
    radius = min(0.5, 0.45 * (p.dec_max - p.dec_min), 0.45 * p.ra_width_deg * math.cos(math.radians(dec_c)))
    return p.ra_center, dec_c, radius


def _patch_index(cfg: SurveyConfig, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """Index of the first patch containing each point, -1 outside the footprint."""
    ra = np.asarray(ra, dtype=np.float64)
    dec = np.asarray(dec, dtype=np.float64)
    out = np.full(ra.shape, -1, dtype=np.int64)
    for k, p in reversed(list(enumerate(_patches(cfg)))):
        out[p.contains(ra, dec)] = k
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Small numerical helpers
# ---------------------------------------------------------------------------------------------------------------------


def _wrap_ra(ra: np.ndarray) -> np.ndarray:
    """RA in [0, 360): np.mod alone can return exactly 360.0 for tiny negative inputs."""
    ra = np.mod(ra, 360.0)
    return np.where(ra >= 360.0, 0.0, ra)


def _radec_to_xyz(ra_deg: np.ndarray, dec_deg: np.ndarray) -> np.ndarray:
    a, d = np.radians(ra_deg), np.radians(dec_deg)
    return np.stack([np.cos(d) * np.cos(a), np.cos(d) * np.sin(a), np.sin(d)], axis=-1)


def _xyz_to_radec(xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y, z = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    ra = _wrap_ra(np.degrees(np.arctan2(y, x)))
    dec = np.degrees(np.arctan2(z, np.hypot(x, y)))
    return ra, dec


def _tangent_basis(ra_deg: np.ndarray, dec_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors towards increasing RA (east) and increasing Dec (north) at each position."""
    a, d = np.radians(ra_deg), np.radians(dec_deg)
    east = np.stack([-np.sin(a), np.cos(a), np.zeros_like(a)], axis=-1)
    north = np.stack([-np.sin(d) * np.cos(a), -np.sin(d) * np.sin(a), np.cos(d)], axis=-1)
    return east, north


def _propagate(ra_deg, dec_deg, pmra_masyr, pmdec_masyr, dt_yr):
    """Move positions by ``dt_yr`` years of linear space motion with zero radial velocity.

    ``pmra_masyr`` includes cos(dec). This is the rigorous (not small-angle) model that
    ``SkyCoord.apply_space_motion`` uses when the radial velocity is zero, so it stays correct near the pole and for
    high proper motions; it is private to the simulator (``sky/`` owns the public epoch propagation).
    """
    p = _radec_to_xyz(ra_deg, dec_deg)
    east, north = _tangent_basis(ra_deg, dec_deg)
    v = (np.asarray(pmra_masyr)[..., None] * east + np.asarray(pmdec_masyr)[..., None] * north) * _MAS_TO_RAD
    r = p + np.asarray(dt_yr)[..., None] * v
    return _xyz_to_radec(r / np.linalg.norm(r, axis=-1, keepdims=True))


def _unpropagate(ra_deg, dec_deg, pmra_masyr, pmdec_masyr, dt_yr, iterations: int = 6):
    """Find the position at the earlier epoch which :func:`_propagate` moves onto (ra, dec) after ``dt_yr``.

    The proper motion is defined in the tangent frame of the *earlier* position (as Gaia's is, at its reference
    epoch), so simply propagating backwards is off at second order; a fixed-point iteration in Cartesian space
    removes that error (it contracts by a factor ~ pm * dt per step, i.e. < 1e-3 for anything stellar).
    """
    target = _radec_to_xyz(ra_deg, dec_deg)
    ra0, dec0 = _propagate(ra_deg, dec_deg, pmra_masyr, pmdec_masyr, -np.asarray(dt_yr))
    for _ in range(iterations):
        fwd = _radec_to_xyz(*_propagate(ra0, dec0, pmra_masyr, pmdec_masyr, dt_yr))
        p0 = _radec_to_xyz(ra0, dec0) + (target - fwd)
        ra0, dec0 = _xyz_to_radec(p0 / np.linalg.norm(p0, axis=-1, keepdims=True))
    return ra0, dec0


def _sample_cap(rng: np.random.Generator, n: int, ra_c: float, dec_c: float, radius_deg: float):
    """Uniform on the sphere within ``radius_deg`` of (ra_c, dec_c)."""
    cos_t = 1.0 - rng.random(n) * (1.0 - math.cos(math.radians(radius_deg)))
    sin_t = np.sqrt(np.clip(1.0 - cos_t * cos_t, 0.0, None))
    phi = 2.0 * math.pi * rng.random(n)
    c = _radec_to_xyz(np.array(ra_c), np.array(dec_c))
    east, north = _tangent_basis(np.array(ra_c), np.array(dec_c))
    xyz = cos_t[:, None] * c + sin_t[:, None] * (np.cos(phi)[:, None] * east + np.sin(phi)[:, None] * north)
    return _xyz_to_radec(xyz)


def _truncated_exp_mag(rng: np.random.Generator, n: int, lo: float, hi: float, slope: float) -> np.ndarray:
    """Magnitudes on [lo, hi] with number counts dN/dm proportional to 10**(slope * m) (inverse-CDF sampling)."""
    k = slope * math.log(10.0)
    return lo + np.log1p(rng.random(n) * math.expm1(k * (hi - lo))) / k


def _mag_to_njy(mag):
    return np.power(10.0, (_AB_NJY_ZP - np.asarray(mag, dtype=np.float64)) / 2.5)


def _njy_to_mag(flux):
    return _AB_NJY_ZP - 2.5 * np.log10(np.asarray(flux, dtype=np.float64))


_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a cheap, well-mixing bijection of uint64 (wrap-around arithmetic is intended)."""
    with np.errstate(over="ignore"):
        x = x ^ (x >> np.uint64(30))
        x = x * _M1
        x = x ^ (x >> np.uint64(27))
        x = x * _M2
        return x ^ (x >> np.uint64(31))


def _hash_u01(seed: int, stream: int, *keys) -> np.ndarray:
    """Uniform [0, 1) floats that are a pure function of (seed, stream, keys...), broadcasting over the keys.

    Used wherever a random quantity must belong to an object or an (object, visit) pair rather than to a row
    position, so that subsets and re-orderings of the inputs see the same values.
    """
    h = np.uint64(((seed * 0x9E3779B1) ^ (stream * 0x85EBCA77)) & _MASK64)
    out = _mix64(np.asarray(h, dtype=np.uint64))
    for key in keys:
        with np.errstate(over="ignore"):
            spread = np.asarray(key).astype(np.uint64) * _GOLDEN
        out = _mix64(out ^ spread)
    return (out >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def _band_value(table: dict[str, float], band: str) -> float:
    return table.get(band, table["r"])


# ---------------------------------------------------------------------------------------------------------------------
# Object
# ---------------------------------------------------------------------------------------------------------------------


def _object_columns(cfg: SurveyConfig) -> list[str]:
    cols = ["objectId", "coord_ra", "coord_dec"]
    for b in cfg.bands:
        cols += [f"{b}_psfFlux", f"{b}_psfFluxErr"]
    return cols + ["refExtendedness", "variability_class", "period_day"]


def _object_schema(cfg: SurveyConfig) -> pa.Schema:
    fields = [pa.field("objectId", pa.int64()), pa.field("coord_ra", pa.float64()), pa.field("coord_dec", pa.float64())]
    for b in cfg.bands:
        fields += [pa.field(f"{b}_psfFlux", pa.float64()), pa.field(f"{b}_psfFluxErr", pa.float64())]
    fields += [pa.field("refExtendedness", pa.float64()), pa.field("variability_class", pa.string()),
               pa.field("period_day", pa.float64())]
    return pa.schema(fields)


def _coadd_m5(cfg: SurveyConfig, band: str) -> float:
    # Coadd depth grows by 1.25 log10(N) with N the expected epochs per band per object (~65 % of visits observe it).
    n_epochs = max(1.0, 0.65 * cfg.n_visits / len(cfg.bands))
    return _band_value(_BAND_M5, band) + 1.25 * math.log10(n_epochs)


def _object_block(cfg: SurveyConfig, block: int, start: int, n: int) -> dict[str, np.ndarray]:
    """Rows ``start .. start+n`` of the Object table, from a generator seeded by (seed, block) only."""
    rng = np.random.default_rng([cfg.seed, _S_OBJECT, block])
    patches = _patches(cfg)

    # Positions: an exact share of cluster members per block keeps the fraction exact even for tiny tables.
    n_cluster = int(round(cfg.cluster_fraction * n))
    areas = np.array([p.area_sr for p in patches])
    per_patch = rng.multinomial(n - n_cluster, areas / areas.sum())
    ras, decs = [], []
    for p, k in zip(patches, per_patch):
        ra_k, dec_k = p.sample(rng, int(k))
        ras.append(ra_k)
        decs.append(dec_k)
    ra_c, dec_c, rad_c = _cluster_region(cfg)
    ra_k, dec_k = _sample_cap(rng, n_cluster, ra_c, dec_c, rad_c)
    ras.append(ra_k)
    decs.append(dec_k)
    in_cluster = np.zeros(n, dtype=bool)
    in_cluster[n - n_cluster:] = True
    perm = rng.permutation(n)  # so cluster members are not contiguous rows
    ra = np.concatenate(ras)[perm]
    dec = np.concatenate(decs)[perm]
    in_cluster = in_cluster[perm]

    # Variability truth: exact counts per block, random placement.
    n_per = int(round(cfg.variable_fraction * n))
    n_tr = min(int(round(cfg.transient_fraction * n)), n - n_per)
    order = rng.permutation(n)
    var_code = np.zeros(n, dtype=np.int8)
    var_code[order[:n_per]] = 1
    var_code[order[n_per:n_per + n_tr]] = 2

    # Stars: all cluster members and all periodic variables (pulsators, eclipsing binaries), 60 % of the rest.
    is_star = in_cluster | (var_code == 1) | (rng.random(n) < 0.6)

    # Magnitudes: stars brighter and with much flatter counts than galaxies (so that the default Gaia subset, ~60 %
    # of all objects, reaches only G ~ 21); colours interpolate blue..red templates.
    r_star = _truncated_exp_mag(rng, n, 16.0, 23.0, 0.05)
    r_gal = _truncated_exp_mag(rng, n, 18.0, 26.0, 0.35)
    r_mag = np.where(is_star, r_star, r_gal)
    tint = rng.random(n)
    tint = np.where(is_star, tint, 0.3 + 0.7 * tint)  # galaxies redder on average

    cols: dict[str, np.ndarray] = {
        "objectId": np.arange(start + 1, start + n + 1, dtype=np.int64),
        "coord_ra": ra,
        "coord_dec": dec,
    }
    for b in cfg.bands:
        blue, red = _band_value(_BAND_COLOR_BLUE, b), _band_value(_BAND_COLOR_RED, b)
        mag = r_mag + blue + tint * (red - blue) + rng.normal(0.0, 0.03, n)
        flux = _mag_to_njy(mag)
        sky_sigma = _mag_to_njy(_coadd_m5(cfg, b)) / 5.0
        err = np.sqrt(sky_sigma ** 2 + 0.5 * flux / max(1.0, 0.65 * cfg.n_visits / len(cfg.bands))
                      + (0.002 * flux) ** 2)
        cols[f"{b}_psfFlux"] = flux + rng.normal(0.0, 1.0, n) * err
        cols[f"{b}_psfFluxErr"] = err
    cols["refExtendedness"] = np.where(is_star, 0.0, 1.0)
    cols["variability_class"] = var_code  # codes here; converted to strings by the callers
    # Periods log-uniform over 0.1..100 d (short pulsators to long-period variables).
    cols["period_day"] = np.where(var_code == 1, np.power(10.0, rng.uniform(-1.0, 2.0, n)), np.nan)
    return cols


def _block_ranges(cfg: SurveyConfig) -> Iterator[tuple[int, int, int]]:
    for block, start in enumerate(range(0, cfg.n_objects, _BLOCK_ROWS)):
        yield block, start, min(_BLOCK_ROWS, cfg.n_objects - start)


def _codes_to_arrow_strings(codes: np.ndarray) -> pa.Array:
    dictionary = pa.DictionaryArray.from_arrays(pa.array(codes, type=pa.int8()), pa.array(_VAR_CLASSES))
    return dictionary.cast(pa.string())


def _block_to_arrow(cfg: SurveyConfig, cols: dict[str, np.ndarray]) -> pa.Table:
    schema = _object_schema(cfg)
    arrays = [
        _codes_to_arrow_strings(cols[name]) if name == "variability_class" else pa.array(cols[name])
        for name in schema.names
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


def simulate_objects(cfg: SurveyConfig) -> pd.DataFrame:
    """The Object table: positions at ``observation_epoch_jyear`` plus coadd PSF fluxes and truth columns.

    Identical to ``pa.concat_tables(iter_object_chunks(cfg)).to_pandas()``; use that iterator for tables too large
    to hold in memory.
    """
    blocks = [_object_block(cfg, block, start, n) for block, start, n in _block_ranges(cfg)]
    names = _object_columns(cfg)
    if blocks:
        data = {name: np.concatenate([blk[name] for blk in blocks]) for name in names}
    else:
        data = {name: np.empty(0, dtype=np.int8 if name == "variability_class" else np.float64) for name in names}
        data["objectId"] = np.empty(0, dtype=np.int64)
    data["variability_class"] = np.array(_VAR_CLASSES, dtype=object)[data["variability_class"].astype(np.intp)]
    df = pd.DataFrame(data, columns=names)
    log.info("simulated %d objects in %d block(s)", len(df), len(blocks))
    return df


def iter_object_chunks(cfg: SurveyConfig, chunk_rows: int = 1_000_000) -> Iterator[pa.Table]:
    """Yield the Object table as Arrow tables of ``chunk_rows`` rows (the last may be shorter).

    Why: tens of millions of objects do not fit comfortably in a pandas frame, but ingest and benchmarks can stream
    them. Each internal block is seeded from ``cfg.seed`` and its block index, so a chunk can be regenerated on its
    own; objectIds are global row numbers (1-based), hence unique across chunks; and the concatenation does not
    depend on ``chunk_rows``.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be a positive integer, got {chunk_rows!r}")
    pending: list[pa.Table] = []
    n_pending = 0
    n_chunks = 0
    for block, start, n in _block_ranges(cfg):
        pending.append(_block_to_arrow(cfg, _object_block(cfg, block, start, n)))
        n_pending += n
        while n_pending >= chunk_rows:
            table = pa.concat_tables(pending)
            yield table.slice(0, chunk_rows).combine_chunks()
            n_chunks += 1
            rest = table.slice(chunk_rows)
            pending = [rest] if rest.num_rows else []
            n_pending = rest.num_rows
    if n_pending:
        yield pa.concat_tables(pending).combine_chunks()
        n_chunks += 1
    log.info("streamed %d objects in %d chunk(s) of up to %d rows", cfg.n_objects, n_chunks, chunk_rows)


# ---------------------------------------------------------------------------------------------------------------------
# Visit
# ---------------------------------------------------------------------------------------------------------------------


def _gmst_deg(mjd: np.ndarray) -> np.ndarray:
    """Greenwich mean sidereal time (deg), low-precision formula; ample for hour angles and airmass."""
    return np.mod(280.46061837 + 360.98564736629 * (mjd - 51544.5), 360.0)


def _in_season(mjd: np.ndarray, ra_deg: np.ndarray, dec_deg: np.ndarray) -> np.ndarray:
    """Whether a field is in its observing season on a night (broadcasts nights x fields).

    The Sun's RA advances ~0.9856 deg/day from 0 at the March equinox (MJD 51623.5 in 2000); a field is at
    opposition when the Sun is 180 deg away, and is observable for roughly +-105 days around that. Fields that are
    circumpolar from Cerro Pachon (dec < latitude - 30 deg, i.e. the pole cap) are observable all year.
    """
    sun_ra = np.mod((mjd - 51623.5) * (360.0 / 365.2422), 360.0)
    offset = np.mod(sun_ra - ra_deg, 360.0) - 180.0  # 0 at opposition, in [-180, 180)
    days_from_opposition = np.abs(offset) * (365.2422 / 360.0)
    return (days_from_opposition <= 105.0) | (dec_deg < _SITE_LAT_DEG - 30.0)


def _airmass(mjd: np.ndarray, ra_deg: np.ndarray, dec_deg: np.ndarray) -> np.ndarray:
    ha = np.radians(_gmst_deg(mjd) + _SITE_LON_DEG - ra_deg)
    lat, dec = math.radians(_SITE_LAT_DEG), np.radians(dec_deg)
    cos_z = math.sin(lat) * np.sin(dec) + math.cos(lat) * np.cos(dec) * np.cos(ha)
    return np.clip(1.0 / np.clip(cos_z, 1.0 / 3.5, None), 1.0, 3.5)


def _choose_nights(rng: np.random.Generator, nights: np.ndarray, clear: np.ndarray, ra: np.ndarray, dec: np.ndarray):
    """Pick, for each field, a clear night inside its season (any clear night if the survey misses the season)."""
    chosen = np.empty(len(ra), dtype=np.float64)
    u = rng.random(len(ra))
    batch = max(1, 2_000_000 // max(1, len(nights)))
    for lo in range(0, len(ra), batch):
        hi = min(len(ra), lo + batch)
        ok = _in_season(nights[None, :] + 0.17, ra[lo:hi, None], dec[lo:hi, None]) & clear[None, :]
        counts = ok.sum(axis=1)
        none = counts == 0
        if none.any():  # survey window entirely outside this field's season: observe it anyway (documented)
            ok[none] = clear[None, :] if clear.any() else True
            counts = ok.sum(axis=1)
        k = np.minimum((u[lo:hi] * counts).astype(np.int64), counts - 1)
        chosen[lo:hi] = nights[np.argmax(np.cumsum(ok, axis=1) > k[:, None], axis=1)]
    return chosen


def _dayobs_yyyymmdd(mjd: np.ndarray) -> np.ndarray:
    """Rubin dayObs: the calendar date at UTC-12h, as YYYYMMDD."""
    days = np.floor(mjd - 0.5).astype(np.int64)
    date = np.datetime64("1858-11-17", "D") + days.astype("timedelta64[D]")
    year = date.astype("datetime64[Y]").astype(np.int64) + 1970
    month = date.astype("datetime64[M]").astype(np.int64) % 12 + 1
    day = (date - date.astype("datetime64[M]")).astype(np.int64) + 1
    return year * 10000 + month * 100 + day


def simulate_visits(cfg: SurveyConfig) -> pd.DataFrame:
    """The Visit table: LSST-like cadence over the footprint, sorted by time.

    Visits come in pairs ~33 min apart on the same pointing (as LSST takes them, to link moving objects), pairs are
    scheduled on clear nights (70 %) inside each pointing's observing season (seasonal gaps; the pole cap is
    circumpolar and observed all year), near the meridian, and bands cycle along the night. Pointings are
    uniform within the patches, weighted by area. ``visit`` is Rubin-style ``dayObs * 100000 + seqNum``.
    """
    rng = np.random.default_rng([cfg.seed, _S_VISIT])
    columns = ["visit", "band", "expMidptMJD", "ra", "dec", "airmass", "seeing_arcsec"]
    n_pairs = (cfg.n_visits + 1) // 2
    if n_pairs == 0:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(
            columns, ["int64", "object", "float64", "float64", "float64", "float64", "float64"])})

    patches = _patches(cfg)
    areas = np.array([p.area_sr for p in patches])
    per_patch = rng.multinomial(n_pairs, areas / areas.sum())
    ra = np.empty(0)
    dec = np.empty(0)
    for p, k in zip(patches, per_patch):
        ra_k, dec_k = p.sample(rng, int(k))
        ra, dec = np.concatenate([ra, ra_k]), np.concatenate([dec, dec_k])
    perm = rng.permutation(n_pairs)
    ra, dec = ra[perm], dec[perm]

    nights = np.floor(cfg.mjd_start) + np.arange(int(math.ceil(cfg.survey_days)), dtype=np.float64)
    clear = rng.random(len(nights)) < 0.7
    night = _choose_nights(rng, nights, clear, ra, dec)

    # Local midnight at Cerro Pachon is ~04:00 UTC (MJD fraction 0.17); aim for transit, within +-2 h of hour angle,
    # clipped to the dark hours (+-0.17 d around midnight) so the pair fits in the night.
    midnight = night + 0.17
    lst_mid = _gmst_deg(midnight) + _SITE_LON_DEG
    to_transit = (np.mod(ra - lst_mid + 180.0, 360.0) - 180.0) / 360.98564736629
    hour_angle_day = rng.uniform(-2.0, 2.0, n_pairs) / 24.0
    t_first = midnight + np.clip(to_transit + hour_angle_day, -0.17, 0.15)
    t = np.stack([t_first, t_first + 33.0 / 1440.0], axis=1).reshape(-1)
    ra_v = np.repeat(ra, 2)
    dec_v = np.repeat(dec, 2)
    night_v = np.repeat(night, 2)
    pair_v = np.repeat(np.arange(n_pairs), 2)
    within_pair = np.tile([0, 1], n_pairs)

    order = np.lexsort((within_pair, t))
    t, ra_v, dec_v, night_v, pair_v, within_pair = (a[order] for a in (t, ra_v, dec_v, night_v, pair_v, within_pair))
    # Exposures cannot overlap: enforce >= 34 s (30 s exposure + readout) between consecutive visits.
    step = 34.0 / 86400.0
    k = np.arange(len(t))
    t = np.maximum.accumulate(t - k * step) + k * step

    # Bands cycle: the n-th pair of the survey uses bands[n % nb] then bands[(n + 1) % nb].
    nb = len(cfg.bands)
    first_time = np.full(n_pairs, np.inf)
    np.minimum.at(first_time, pair_v, t)
    pair_rank = np.empty(n_pairs, dtype=np.int64)
    pair_rank[np.argsort(first_time, kind="stable")] = np.arange(n_pairs)
    band_idx = (pair_rank[pair_v] + within_pair) % nb

    # Truncate to n_visits (an odd count drops the last pair's second visit).
    keep = np.ones(len(t), dtype=bool)
    if 2 * n_pairs > cfg.n_visits:
        last_pair = int(np.argmax(pair_rank))
        keep &= ~((pair_v == last_pair) & (within_pair == 1))
    t, ra_v, dec_v, band_idx = t[keep], ra_v[keep], dec_v[keep], band_idx[keep]

    airmass = _airmass(t, ra_v, dec_v)
    # Seeing: per-night atmosphere (log-normal, median 0.7") x airmass^0.6 x (wavelength/500nm)^-0.2 x jitter.
    night_seeing = np.exp(rng.normal(math.log(0.7), 0.25, len(nights)))
    night_idx = np.searchsorted(nights, night_v[keep])
    wavelength = np.array([_band_value(_BAND_WAVELENGTH_NM, b) for b in cfg.bands])[band_idx]
    seeing = (night_seeing[np.clip(night_idx, 0, len(nights) - 1)] * airmass ** 0.6 * (wavelength / 500.0) ** -0.2
              * np.exp(rng.normal(0.0, 0.05, len(t))))

    dayobs = _dayobs_yyyymmdd(t)
    first_of_day = np.r_[True, dayobs[1:] != dayobs[:-1]]
    start_idx = np.maximum.accumulate(np.where(first_of_day, np.arange(len(t)), 0))
    seq = np.arange(len(t)) - start_idx + 1
    df = pd.DataFrame({
        "visit": (dayobs * 100000 + seq).astype(np.int64),
        "band": np.array(cfg.bands, dtype=object)[band_idx],
        "expMidptMJD": t,
        "ra": ra_v,
        "dec": dec_v,
        "airmass": airmass,
        "seeing_arcsec": seeing,
    }, columns=columns)
    log.info("simulated %d visits over %d nights", len(df), int(np.unique(dayobs).size))
    return df


# ---------------------------------------------------------------------------------------------------------------------
# ForcedSource
# ---------------------------------------------------------------------------------------------------------------------


def _visit_m5(bands: np.ndarray, seeing: np.ndarray, airmass: np.ndarray) -> np.ndarray:
    m5_nom = np.array([_band_value(_BAND_M5, b) for b in bands])
    k = np.array([_band_value(_BAND_K, b) for b in bands])
    return m5_nom + 2.5 * np.log10(0.7 / seeing) - k * (airmass - 1.0)


def simulate_forced_sources(cfg: SurveyConfig, objects: pd.DataFrame, visits: pd.DataFrame) -> pd.DataFrame:
    """The ForcedSource table: one PSF flux per (object, visit) the object was measured in.

    Membership is a deterministic pseudo-random 30-100 % of the visits pointed at the object's own patch (see the
    module docstring for why it is not geometric). The light curve is built around the object's coadd flux:
    ``constant`` objects are noise only; ``periodic`` ones are sinusoidal pulsators (amplitude 0.1-1 mag in r,
    larger in blue bands) or eclipsing binaries (grey primary and secondary dips) with the Object's ``period_day``;
    ``transient`` ones add a Bazin rise/decay at a random time. Noise is Gaussian with the reported ``psfFluxErr``,
    which follows each visit's depth (seeing, airmass, band). There is no time column: join Visit on ``visit``.
    Per-object hidden parameters are hashes of objectId, so a subset of objects gets the same light curves.
    """
    need_obj = {"objectId", "coord_ra", "coord_dec", "variability_class", "period_day"}
    need_obj |= {f"{b}_psfFlux" for b in cfg.bands}
    need_vis = {"visit", "band", "expMidptMJD", "ra", "dec", "airmass", "seeing_arcsec"}
    for name, frame, need in (("objects", objects, need_obj), ("visits", visits, need_vis)):
        missing = sorted(need - set(frame.columns))
        if missing:
            raise ValueError(f"{name} frame lacks columns {missing}; pass the output of simulate_{name}(cfg)")
    unknown = sorted(set(visits["band"]) - set(cfg.bands))
    if unknown:
        raise ValueError(f"visits use bands {unknown} that are not in cfg.bands {cfg.bands}")

    rng = np.random.default_rng([cfg.seed, _S_FORCED])
    band_lookup = {b: i for i, b in enumerate(cfg.bands)}
    v_id = visits["visit"].to_numpy(np.int64)
    v_band = np.array([band_lookup[b] for b in visits["band"]], dtype=np.int64)
    v_mjd = visits["expMidptMJD"].to_numpy(np.float64)
    v_patch = _patch_index(cfg, visits["ra"].to_numpy(np.float64), visits["dec"].to_numpy(np.float64))
    v_sky_sigma = _mag_to_njy(_visit_m5(np.asarray(cfg.bands)[v_band], visits["seeing_arcsec"].to_numpy(np.float64),
                                        visits["airmass"].to_numpy(np.float64))) / 5.0

    o_id = objects["objectId"].to_numpy(np.int64)
    o_patch = _patch_index(cfg, objects["coord_ra"].to_numpy(np.float64), objects["coord_dec"].to_numpy(np.float64))
    o_code = pd.Categorical(objects["variability_class"], categories=_VAR_CLASSES).codes.astype(np.int8)
    o_period = objects["period_day"].to_numpy(np.float64)
    o_mean = np.clip(np.stack([objects[f"{b}_psfFlux"].to_numpy(np.float64) for b in cfg.bands], axis=1), 0.0, None)
    pulse_amp = np.array([_band_value(_BAND_PULSE_AMP, b) for b in cfg.bands])
    wavelength = np.array([_band_value(_BAND_WAVELENGTH_NM, b) for b in cfg.bands])

    out_obj, out_vis, out_band, out_flux, out_err = [], [], [], [], []
    n_v = len(v_id)
    block = max(1, 4_000_000 // max(1, n_v))
    for lo in range(0, len(o_id), block):
        hi = min(len(o_id), lo + block)
        ids = o_id[lo:hi]
        frac = 0.3 + 0.7 * _hash_u01(cfg.seed, _H_FRACTION, ids)
        u = _hash_u01(cfg.seed, _H_MEMBER, ids[:, None], v_id[None, :])
        mask = (u < frac[:, None]) & (o_patch[lo:hi, None] == v_patch[None, :]) & (o_patch[lo:hi, None] >= 0)
        oi, vi = np.nonzero(mask)  # row-major: grouped by object, visits in table order
        oi_g = oi + lo
        t = v_mjd[vi]
        b = v_band[vi]
        mean = o_mean[oi_g, b]
        code = o_code[oi_g]
        flux = mean.copy()

        # Five hidden parameters per object (a hash of objectId, so independent of row order).
        h = [_hash_u01(cfg.seed, _H_VARPARAM + 10 * j, ids)[oi] for j in range(5)]
        per = code == 1
        if per.any():
            phase = np.mod((t[per] - cfg.mjd_start) / o_period[oi_g[per]] + h[0][per], 1.0)
            eclipsing = h[1][per] < 0.3
            amp_mag = (0.1 + 0.9 * h[2][per]) * pulse_amp[b[per]]
            pulse = np.power(10.0, -0.4 * amp_mag * np.sin(2.0 * math.pi * phase))
            depth = 0.1 + 0.5 * h[2][per]
            width = 0.02 + 0.06 * h[3][per]
            secondary = 0.6 * h[4][per]
            dphi1 = np.minimum(phase, 1.0 - phase)
            dphi2 = np.abs(phase - 0.5)
            dips = depth * (np.exp(-0.5 * (dphi1 / width) ** 2) + secondary * np.exp(-0.5 * (dphi2 / width) ** 2))
            flux[per] = mean[per] * np.where(eclipsing, np.clip(1.0 - dips, 0.0, None), pulse)
        tr = code == 2
        if tr.any():
            t0 = cfg.mjd_start - 30.0 + h[0][tr] * (cfg.survey_days + 30.0)
            peak_r = _mag_to_njy(19.0 + 4.5 * h[1][tr])
            tau_rise = 1.0 + 9.0 * h[2][tr]
            tau_fall = 10.0 + 70.0 * h[3][tr]
            beta = 2.0 * h[4][tr]  # bluer transients are brighter in blue bands
            peak_b = peak_r * (wavelength[b[tr]] / 622.0) ** (-beta)
            dt = t[tr] - t0
            bazin = np.exp(-np.clip(dt / tau_fall, -50.0, 50.0)) / (1.0 + np.exp(-np.clip(dt / tau_rise, -50.0, 50.0)))
            flux[tr] = mean[tr] + peak_b * bazin / _bazin_peak(tau_rise, tau_fall)

        sky = v_sky_sigma[vi]
        err = np.sqrt(sky ** 2 + 0.5 * np.clip(flux, 0.0, None) + (0.005 * flux) ** 2)
        out_obj.append(ids[oi])
        out_vis.append(v_id[vi])
        out_band.append(b)
        out_flux.append(flux + rng.normal(0.0, 1.0, len(flux)) * err)
        out_err.append(err)

    def cat(parts, dtype):
        return np.concatenate(parts).astype(dtype, copy=False) if parts else np.empty(0, dtype=dtype)

    df = pd.DataFrame({
        "objectId": cat(out_obj, np.int64),
        "visit": cat(out_vis, np.int64),
        "band": np.array(cfg.bands, dtype=object)[cat(out_band, np.int64)],
        "psfFlux": cat(out_flux, np.float64),
        "psfFluxErr": cat(out_err, np.float64),
    })
    log.info("simulated %d forced sources for %d objects x %d visits", len(df), len(o_id), n_v)
    return df


def _bazin_peak(tau_rise: np.ndarray, tau_fall: np.ndarray) -> np.ndarray:
    """Maximum of exp(-t/tf) / (1 + exp(-t/tr)), so that ``peak_b`` is the actual peak flux above baseline."""
    # The maximum is at t = tr * ln(tf/tr - 1) when tf > tr (always true here: tf >= 10 >= tr).
    t_peak = tau_rise * np.log(np.clip(tau_fall / tau_rise - 1.0, 1e-12, None))
    return np.exp(-t_peak / tau_fall) / (1.0 + np.exp(-t_peak / tau_rise))


# ---------------------------------------------------------------------------------------------------------------------
# Gaia
# ---------------------------------------------------------------------------------------------------------------------


def _gaia_g_mag(cfg: SurveyConfig, objects: pd.DataFrame) -> np.ndarray:
    """A G magnitude from the r and g coadd fluxes (G ~ r - 0.05 - 0.25 (g - r)), or the mean over bands."""
    def mag(band):
        return _njy_to_mag(np.clip(objects[f"{band}_psfFlux"].to_numpy(np.float64), 1e-3, None))
    if "r" in cfg.bands and "g" in cfg.bands:
        r, g = mag("r"), mag("g")
        return r - 0.05 - 0.25 * np.clip(g - r, -0.5, 2.0)
    return np.mean([mag(b) for b in cfg.bands], axis=0)


def _field_kinematics(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Field-star parallax (mas, 0.05..5, log-uniform) and proper motion from a ~35 km/s tangential velocity."""
    parallax = np.power(10.0, rng.uniform(math.log10(0.05), math.log10(5.0), n))
    scale = parallax * 35.0 / 4.74047  # mas/yr per unit normal deviate
    pmra = rng.normal(0.0, 1.0, n) * scale - 1.0
    pmdec = rng.normal(0.0, 1.0, n) * scale - 2.0
    return pmra, pmdec, parallax


def _gaia_source_ids(n: int) -> np.ndarray:
    """Unique, positive, Gaia-looking (large, unordered) int64 ids: an odd multiplier is a bijection mod 2**62."""
    k = np.arange(1, n + 1, dtype=np.uint64)
    return ((k * np.uint64(0x5851F42D4C957F2D)) & np.uint64((1 << 62) - 1)).astype(np.int64)


def simulate_gaia(cfg: SurveyConfig, objects: pd.DataFrame) -> pd.DataFrame:
    """A Gaia-DR3-like catalogue at ``gaia_epoch_jyear`` for a magnitude-limited subset of the Object stars.

    The brightest point sources (``refExtendedness == 0``) are matched; their positions are the Object positions
    moved back from ``observation_epoch_jyear`` with their proper motion, so crossmatching requires epoch
    propagation. Kinematics: field stars ~35 km/s tangential velocity at parallax 0.05-5 mas; stars inside the
    cluster blob share the cluster's motion; a few nearby high-proper-motion stars (0.5-5 arcsec/yr, at least one in
    the pole cap when it has matched stars); ~5 % two-parameter solutions with NaN pmra/pmdec/parallax (their
    position is still at the Gaia epoch, so they sit off the Object position by their unknown motion). ~5 % of the
    rows are Gaia-only stars (G 10-16, saturated in LSST so absent from Object). ``truth_objectId`` links each row
    to its Object (0 for Gaia-only).
    """
    rng = np.random.default_rng([cfg.seed, _S_GAIA])
    n_gaia = cfg.n_gaia if cfg.n_gaia is not None else int(round(0.6 * len(objects)))
    dt_yr = cfg.observation_epoch_jyear - cfg.gaia_epoch_jyear

    is_star = (objects["refExtendedness"].to_numpy(np.float64) == 0.0)
    star_idx = np.flatnonzero(is_star)
    n_only = 0 if n_gaia == 0 else max(1, int(round(0.05 * n_gaia)))
    n_matched = min(n_gaia - n_only, len(star_idx))
    n_only = n_gaia - n_matched

    g_all = _gaia_g_mag(cfg, objects)
    obj_ids = objects["objectId"].to_numpy(np.int64)
    order = np.lexsort((obj_ids[star_idx], g_all[star_idx]))  # brightest first, ties by objectId
    sel = star_idx[order[:n_matched]]
    sel = sel[np.argsort(obj_ids[sel], kind="stable")]  # canonical order: independent of G ties and input order
    ra_obs = objects["coord_ra"].to_numpy(np.float64)[sel]
    dec_obs = objects["coord_dec"].to_numpy(np.float64)[sel]

    pmra, pmdec, parallax = _field_kinematics(rng, n_matched)
    ra_c, dec_c, rad_c = _cluster_region(cfg)
    centre = _radec_to_xyz(np.array(ra_c), np.array(dec_c))
    sep_c = np.degrees(np.arccos(np.clip(_radec_to_xyz(ra_obs, dec_obs) @ centre, -1.0, 1.0)))
    member = sep_c <= rad_c
    n_mem = int(member.sum())
    pmra[member] = _CLUSTER_PM_MASYR[0] + rng.normal(0.0, 0.1, n_mem)
    pmdec[member] = _CLUSTER_PM_MASYR[1] + rng.normal(0.0, 0.1, n_mem)
    parallax[member] = np.clip(_CLUSTER_PARALLAX_MAS + rng.normal(0.0, 0.02, n_mem), 0.05, None)

    # High-proper-motion stars: a few, never cluster members, at least one in the pole cap if it has any.
    candidates = np.flatnonzero(~member)
    n_hpm = min(len(candidates), max(3, n_matched // 500)) if n_matched else 0
    pole = candidates[dec_obs[candidates] < -80.0]
    first = rng.choice(pole, size=min(1, len(pole), n_hpm), replace=False)
    rest = np.setdiff1d(candidates, first)
    hpm = np.concatenate([first, rng.choice(rest, size=n_hpm - len(first), replace=False)]).astype(np.int64)
    total = np.power(10.0, rng.uniform(math.log10(500.0), math.log10(5000.0), len(hpm)))
    angle = rng.uniform(0.0, 2.0 * math.pi, len(hpm))
    pmra[hpm], pmdec[hpm] = total * np.sin(angle), total * np.cos(angle)
    parallax[hpm] = np.power(10.0, rng.uniform(math.log10(30.0), math.log10(300.0), len(hpm)))

    ra_ref, dec_ref = _unpropagate(ra_obs, dec_obs, pmra, pmdec, np.full(n_matched, dt_yr))

    # Two-parameter solutions: ~5 % of the ordinary matched stars lose their astrometry (not the motion itself).
    ordinary = np.setdiff1d(np.arange(n_matched), hpm)
    two_param = rng.choice(ordinary, size=min(len(ordinary), int(round(0.05 * n_matched))), replace=False)
    for arr in (pmra, pmdec, parallax):
        arr[two_param] = np.nan

    # Gaia-only: bright stars spread over the footprint by area.
    patches = _patches(cfg)
    areas = np.array([p.area_sr for p in patches])
    per_patch = rng.multinomial(n_only, areas / areas.sum()) if n_only else np.zeros(len(patches), dtype=np.int64)
    only_ra, only_dec = [], []
    for p, k in zip(patches, per_patch):
        r_k, d_k = p.sample(rng, int(k))
        only_ra.append(r_k)
        only_dec.append(d_k)
    only_pmra, only_pmdec, only_plx = _field_kinematics(rng, n_only)
    only_g = rng.uniform(10.0, 16.0, n_only)

    df = pd.DataFrame({
        "source_id": _gaia_source_ids(n_matched + n_only),
        "ra": np.concatenate([ra_ref, *only_ra]),
        "dec": np.concatenate([dec_ref, *only_dec]),
        "pmra": np.concatenate([pmra, only_pmra]),
        "pmdec": np.concatenate([pmdec, only_pmdec]),
        "parallax": np.concatenate([parallax, only_plx]),
        "phot_g_mean_mag": np.concatenate([g_all[sel], only_g]),
        "ref_epoch": np.full(n_matched + n_only, float(cfg.gaia_epoch_jyear)),
        "truth_objectId": np.concatenate([obj_ids[sel], np.zeros(n_only, dtype=np.int64)]),
    })
    df = df.sort_values("source_id", kind="stable", ignore_index=True)
    log.info("simulated %d Gaia sources (%d matched to objects, %d Gaia-only, %d high-pm, %d two-parameter)",
             len(df), n_matched, n_only, len(hpm), len(two_param))
    return df


# ---------------------------------------------------------------------------------------------------------------------
# Whole survey
# ---------------------------------------------------------------------------------------------------------------------


def simulate_survey(cfg: SurveyConfig) -> dict[str, pd.DataFrame]:
    """All four tables, keyed ``object``, ``visit``, ``forced_source``, ``gaia``."""
    objects = simulate_objects(cfg)
    visits = simulate_visits(cfg)
    return {
        "object": objects,
        "visit": visits,
        "forced_source": simulate_forced_sources(cfg, objects, visits),
        "gaia": simulate_gaia(cfg, objects),
    }


def write_survey(cfg: SurveyConfig, out_dir: str | Path, fmt: str = "parquet") -> dict[str, Path]:
    """Write one ``<table>.parquet`` (or ``.csv``) file per table into ``out_dir`` and return their paths.

    These are plain input files for ingest tests and demos, not catalogue tables: registering them (with provenance)
    is the tables layer's job.
    """
    if fmt not in ("parquet", "csv"):
        raise ValueError(f"fmt must be 'parquet' or 'csv', got {fmt!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for name, df in simulate_survey(cfg).items():
        path = out / f"{name}.{fmt}"
        if fmt == "parquet":
            import pyarrow.parquet as pq

            pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path)
        else:
            df.to_csv(path, index=False)
        paths[name] = path
        log.info("wrote %s (%d rows) to %s", name, len(df), path)
    return paths
