"""Build a small, self-contained butler repository of simulated calibrated images, without obs_base or afw.

Why: the image side-car (PipelineTasks for stamps, background, injection; the BPS bridge) must be exercised end to
end by ``pipetask run`` / ``bps submit`` on machines that only have the pure-Python Rubin middleware. This module
plays the role of an obs package plus the instrument signature removal: it registers the dimension records by hand
(instrument ``UBSim``, physical_filter/band, detectors, day_obs, visits with sky regions, visit_detector_region)
and puts one :class:`~userbatch.images.tasks.exposure.SimExposure` per (visit, detector) together with the truth
of what was drawn.

The scene: point sources (Gaussian or Moffat PSF, known FWHM per visit), small Sérsic galaxies and a few large,
bright, low-surface-brightness galaxies (exponential / Sérsic with wings reaching several effective radii), on a
sky with a smooth gradient across the focal plane (quadratic in focal-plane coordinates, so exactly representable
by a 2nd-order polynomial per detector), Poisson + read noise. Pixel values are electrons; ``CALIB`` in the
metadata converts to nJy.

Datasets (all in RUN collections chained under ``UBSim/defaults``):

* ``calexp`` (instrument, visit, detector; ``UBExposure``) in ``UBSim/calexp``;
* ``ub_truth`` (instrument, visit, detector; ``ArrowAstropy``): every drawn source with pixel position and counts;
* ``ub_sky_truth`` (instrument, visit, detector; ``NumpyArray``): the true sky background image (electrons);
* ``ub_truth_catalog`` (no dimensions; ``ArrowAstropy``): the input catalogue (objectId, ra, dec, flux_nJy, shape).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.table import Table
from astropy.time import Time, TimeDelta
from scipy.signal import fftconvolve
from scipy.special import gamma as gamma_fn

from userbatch.errors import ColumnNotFound, UserbatchError
from userbatch.images.tasks.exposure import REPO_CONFIG, STORAGE_CLASS, SimExposure, add_point_source, psf_stamp

__all__ = ["RepoInfo", "SimImageConfig", "build_repo", "simulate_catalog", "put_stamp_targets", "INSTRUMENT"]

log = logging.getLogger(__name__)

INSTRUMENT = "UBSim"
RUN_CALEXP = f"{INSTRUMENT}/calexp"
RUN_TRUTH = f"{INSTRUMENT}/truth"
CHAIN = f"{INSTRUMENT}/defaults"
_AB_NJY_ZP = 31.4


@dataclass(frozen=True)
class SimImageConfig:
    """Geometry and photometry of the simulated camera and sky."""

    n_visits: int = 2
    n_detectors: int = 4
    nx: int = 256
    ny: int = 256
    pixel_scale_arcsec: float = 0.2
    gap_pix: int = 20
    ra_deg: float = 0.3
    dec_deg: float = 2.0
    dither_arcsec: float = 8.0
    bands: tuple[str, ...] = ("r",)
    seed: int = 7
    zero_point: float = 32.0  # AB mag of 1 count
    sky_level: float = 1000.0  # counts / pixel at boresight
    sky_gradient: float = 0.12  # fractional change across the focal plane
    read_noise: float = 5.0
    fwhm_arcsec_range: tuple[float, float] = (0.6, 0.9)
    psf_model: str = "gaussian"
    moffat_beta: float = 3.5
    mjd_start: float = 60700.1
    exposure_time: float = 30.0


@dataclass
class RepoInfo:
    """What :func:`build_repo` made: where, which data IDs and collections, and the truth catalogue."""

    root: str
    instrument: str
    visits: list[int]
    detectors: list[int]
    bands: dict[int, str]
    fwhm_pix: dict[int, float]
    collections: list[str]
    input_collection: str
    catalog: pd.DataFrame
    config: SimImageConfig
    dataset_types: list[str] = field(default_factory=list)

    def where(self) -> str:
        return f"instrument='{self.instrument}'"


# ---------------------------------------------------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------------------------------------------------


def _detector_layout(cfg: SimImageConfig) -> list[tuple[int, int]]:
    """Lower-left focal-plane pixel of each detector, on a near-square grid centred on the boresight."""
    ncol = int(math.ceil(math.sqrt(cfg.n_detectors)))
    nrow = int(math.ceil(cfg.n_detectors / ncol))
    width = ncol * cfg.nx + (ncol - 1) * cfg.gap_pix
    height = nrow * cfg.ny + (nrow - 1) * cfg.gap_pix
    out = []
    for d in range(cfg.n_detectors):
        r, c = divmod(d, ncol)
        out.append((c * (cfg.nx + cfg.gap_pix) - width // 2, r * (cfg.ny + cfg.gap_pix) - height // 2))
    return out


def _fp_half_extent(cfg: SimImageConfig) -> float:
    lay = _detector_layout(cfg)
    return max(max(abs(x0), abs(x0 + cfg.nx), abs(y0), abs(y0 + cfg.ny)) for x0, y0 in lay)


def _visit_pointing(cfg: SimImageConfig, i: int) -> tuple[float, float, float]:
    """Boresight (ra, dec) and rotation (deg) of the i-th visit: a deterministic dither pattern."""
    rng = np.random.default_rng([cfg.seed, 991, i])
    if i == 0:
        dra, ddec, rot = 0.0, 0.0, 0.0
    else:
        dra, ddec = rng.uniform(-1, 1, 2) * cfg.dither_arcsec / 3600.0
        rot = float(rng.uniform(-3.0, 3.0))
    return (cfg.ra_deg + dra / math.cos(math.radians(cfg.dec_deg))) % 360.0, cfg.dec_deg + ddec, rot


def _wcs_header(cfg: SimImageConfig, ra: float, dec: float, rot_deg: float, x0: int, y0: int) -> dict:
    s = cfg.pixel_scale_arcsec / 3600.0
    c, sn = math.cos(math.radians(rot_deg)), math.sin(math.radians(rot_deg))
    # East to the left (RA decreases with x), north up, rotated by rot_deg.
    return {
        "WCSAXES": 2, "CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CUNIT1": "deg", "CUNIT2": "deg",
        "RADESYS": "ICRS", "CRVAL1": float(ra), "CRVAL2": float(dec),
        "CRPIX1": float(-x0 + 1), "CRPIX2": float(-y0 + 1),  # 1-based pixel of the boresight
        "CD1_1": -s * c, "CD1_2": s * sn, "CD2_1": s * sn, "CD2_2": s * c,
    }


def _sky_model(cfg: SimImageConfig, visit_index: int, x0: int, y0: int) -> np.ndarray:
    """True sky (counts) on one detector: quadratic in focal-plane coordinates, different per visit."""
    rng = np.random.default_rng([cfg.seed, 992, visit_index])
    gx, gy = rng.uniform(-1, 1, 2) * cfg.sky_gradient
    q = rng.uniform(-0.5, 0.5) * cfg.sky_gradient
    level = cfg.sky_level * rng.uniform(0.9, 1.1)
    half = _fp_half_extent(cfg)
    yy, xx = np.mgrid[0:cfg.ny, 0:cfg.nx].astype(float)
    u, v = (xx + x0) / half, (yy + y0) / half
    return level * (1.0 + 0.5 * gx * u + 0.5 * gy * v + 0.5 * q * u * v)


# ---------------------------------------------------------------------------------------------------------------------
# Catalogue
# ---------------------------------------------------------------------------------------------------------------------


def _mag_to_njy(mag):
    return 10.0 ** (-0.4 * (np.asarray(mag, dtype=float) - _AB_NJY_ZP))


def simulate_catalog(cfg: SimImageConfig, n_stars: int | None = None, n_galaxies: int | None = None,
                     n_big: int | None = None) -> pd.DataFrame:
    """Stars, small galaxies and a few large LSB galaxies over the focal plane of all visits.

    Columns: objectId, coord_ra, coord_dec, flux (nJy), type ('star'|'galaxy'), r_eff_arcsec, sersic_n,
    axis_ratio, pa_deg, is_big.
    """
    rng = np.random.default_rng([cfg.seed, 993])
    half_deg = (_fp_half_extent(cfg) * cfg.pixel_scale_arcsec + 2 * cfg.dither_arcsec) / 3600.0
    area_factor = cfg.n_detectors * cfg.nx * cfg.ny / (4 * 256 * 256)
    n_stars = int(round(140 * area_factor)) if n_stars is None else n_stars
    n_galaxies = int(round(100 * area_factor)) if n_galaxies is None else n_galaxies
    n_big = max(1, cfg.n_detectors) if n_big is None else n_big
    cosd = math.cos(math.radians(cfg.dec_deg))

    def positions(n, spread):
        return (cfg.ra_deg + rng.uniform(-spread, spread, n) / cosd) % 360.0, cfg.dec_deg + rng.uniform(-spread,
                                                                                                          spread, n)

    rs, ds = positions(n_stars, half_deg)
    mag_s = 26.0 - rng.exponential(1.8, n_stars)
    mag_s = np.clip(mag_s, 17.0, 26.0)
    rg, dg = positions(n_galaxies, half_deg)
    mag_g = np.clip(25.5 - rng.exponential(1.5, n_galaxies), 19.0, 25.5)
    # Big LSB galaxies: one near the centre of each detector of the first visit, slightly offset.
    lay = _detector_layout(cfg)
    rb, db = [], []
    for k in range(n_big):
        x0, y0 = lay[k % len(lay)]
        fx, fy = x0 + cfg.nx * rng.uniform(0.35, 0.65), y0 + cfg.ny * rng.uniform(0.35, 0.65)
        dx_deg, dy_deg = fx * cfg.pixel_scale_arcsec / 3600.0, fy * cfg.pixel_scale_arcsec / 3600.0
        rb.append((cfg.ra_deg - dx_deg / cosd) % 360.0)
        db.append(cfg.dec_deg + dy_deg)
    mag_b = rng.uniform(15.8, 16.8, n_big)
    n = n_stars + n_galaxies + n_big
    df = pd.DataFrame({
        "objectId": np.arange(1, n + 1, dtype=np.int64),
        "coord_ra": np.concatenate([rs, rg, rb]),
        "coord_dec": np.concatenate([ds, dg, db]),
        "flux": np.concatenate([_mag_to_njy(mag_s), _mag_to_njy(mag_g), _mag_to_njy(mag_b)]),
        "type": ["star"] * n_stars + ["galaxy"] * (n_galaxies + n_big),
        "r_eff_arcsec": np.concatenate([np.zeros(n_stars), rng.uniform(0.3, 1.2, n_galaxies),
                                        rng.uniform(2.5, 4.0, n_big)]),
        "sersic_n": np.concatenate([np.zeros(n_stars), rng.choice([1.0, 1.0, 2.0, 4.0], n_galaxies),
                                    rng.choice([1.0, 1.5], n_big)]),
        "axis_ratio": np.concatenate([np.ones(n_stars), rng.uniform(0.4, 1.0, n_galaxies),
                                      rng.uniform(0.6, 0.9, n_big)]),
        "pa_deg": rng.uniform(0, 180, n),
        "is_big": np.concatenate([np.zeros(n_stars + n_galaxies, bool), np.ones(n_big, bool)]),
    })
    return df


def _normalise_catalog(catalog: pd.DataFrame, bands: tuple[str, ...] = ("r",)) -> pd.DataFrame:
    """Accept ra/dec or coord_ra/coord_dec and ``flux`` (nJy) or an SDM ``<band>_psfFlux`` / ``psfFlux`` column."""
    df = pd.DataFrame(catalog).copy()
    ren = {"ra": "coord_ra", "dec": "coord_dec"}
    df = df.rename(columns={k: v for k, v in ren.items() if k in df.columns and v not in df.columns})
    if "flux" not in df.columns:
        for col in [f"{b}_psfFlux" for b in bands] + ["r_psfFlux", "psfFlux"]:
            if col in df.columns:
                df["flux"] = df[col]
                break
    if "flux" in df.columns:
        df["flux"] = np.clip(np.nan_to_num(df["flux"].to_numpy(float)), 0.0, None)
    for col in ("coord_ra", "coord_dec", "flux"):
        if col not in df.columns:
            raise ColumnNotFound(f"catalog lacks column {col!r}; give objectId, ra/coord_ra, dec/coord_dec and flux "
                                 f"(nJy) or <band>_psfFlux")
    if "objectId" not in df.columns:
        df["objectId"] = np.arange(1, len(df) + 1, dtype=np.int64)
    if "r_eff_arcsec" not in df.columns:
        df["r_eff_arcsec"] = 0.0
    df["r_eff_arcsec"] = df["r_eff_arcsec"].fillna(0.0).astype(float)
    if "type" not in df.columns:
        df["type"] = np.where(df["r_eff_arcsec"] > 0, "galaxy", "star")
    defaults = {"sersic_n": 1.0, "axis_ratio": 1.0, "pa_deg": 0.0, "is_big": False}
    for col, val in defaults.items():
        if col not in df.columns:
            df[col] = val
    return df.reset_index(drop=True)


# ---------------------------------------------------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------------------------------------------------


def _sersic_bn(n: float) -> float:
    return 2.0 * n - 1.0 / 3.0 + 4.0 / (405.0 * n) + 46.0 / (25515.0 * n * n)


def _draw_sersic(layer: np.ndarray, x: float, y: float, counts: float, r_e: float, n: float, q: float,
                 pa_deg: float) -> None:
    """Add an elliptical Sérsic profile (total ``counts`` to infinity) into ``layer`` (pixel-centre sampled)."""
    r_e = max(r_e, 0.3)
    bn = _sersic_bn(n)
    ie = counts / (2.0 * math.pi * n * r_e * r_e * q * math.exp(bn) * bn ** (-2.0 * n) * gamma_fn(2.0 * n))
    rmax = r_e * (8.0 if n <= 1.5 else 12.0) + 3
    ny, nx = layer.shape
    xa, xb = max(int(x - rmax), 0), min(int(x + rmax) + 2, nx)
    ya, yb = max(int(y - rmax), 0), min(int(y + rmax) + 2, ny)
    if xa >= xb or ya >= yb:
        return
    yy, xx = np.mgrid[ya:yb, xa:xb].astype(float)
    dx, dy = xx - x, yy - y
    c, s = math.cos(math.radians(pa_deg)), math.sin(math.radians(pa_deg))
    u, v = dx * c + dy * s, -dx * s + dy * c
    r = np.sqrt(u * u + (v / q) ** 2)
    # Soften the cusp at the centre by sampling r at >= 0.3 px.
    prof = ie * np.exp(-bn * ((np.maximum(r, 0.3) / r_e) ** (1.0 / n) - 1.0))
    prof[r > rmax] = 0.0
    layer[ya:yb, xa:xb] += prof


def _render(cfg: SimImageConfig, cat: pd.DataFrame, exp_wcs: SimExposure, psf: dict, calib: float,
            pad: int = 40) -> tuple[np.ndarray, Table]:
    """Noise-free scene (counts) on one detector, and the truth table of what landed on it."""
    ny, nx = cfg.ny, cfg.nx
    x, y = exp_wcs.sky_to_pixel(cat["coord_ra"].to_numpy(), cat["coord_dec"].to_numpy())
    counts = cat["flux"].to_numpy(float) / calib
    r_e_pix = cat["r_eff_arcsec"].to_numpy(float) / cfg.pixel_scale_arcsec
    is_gal = (cat["type"].to_numpy() == "galaxy") & (r_e_pix > 0)
    reach = np.where(is_gal, r_e_pix * 12.0, 0.0) + pad
    near = (x > -reach) & (x < nx + reach) & (y > -reach) & (y < ny + reach)
    scene = np.zeros((ny, nx))
    gal_layer = np.zeros((ny + 2 * pad, nx + 2 * pad))
    for i in np.flatnonzero(near):
        if is_gal[i]:
            _draw_sersic(gal_layer, x[i] + pad, y[i] + pad, counts[i], r_e_pix[i], float(cat["sersic_n"].iat[i]),
                         float(cat["axis_ratio"].iat[i]), float(cat["pa_deg"].iat[i]))
        else:
            add_point_source(scene, psf, x[i], y[i], counts[i])
    if gal_layer.any():
        kernel = psf_stamp(psf, 2 * int(math.ceil(4 * psf["fwhm_pix"])) + 1)
        conv = fftconvolve(gal_layer, kernel, mode="same")
        scene += conv[pad:pad + ny, pad:pad + nx]
    on = near & (x >= -0.5) & (x < nx - 0.5) & (y >= -0.5) & (y < ny - 0.5)
    truth = Table({
        "objectId": cat["objectId"].to_numpy(np.int64)[on],
        "coord_ra": cat["coord_ra"].to_numpy(float)[on],
        "coord_dec": cat["coord_dec"].to_numpy(float)[on],
        "x": x[on], "y": y[on],
        "flux_nJy": cat["flux"].to_numpy(float)[on],
        "counts": counts[on],
        "mag": _AB_NJY_ZP - 2.5 * np.log10(np.maximum(cat["flux"].to_numpy(float)[on], 1e-30)),
        "type": cat["type"].to_numpy().astype(str)[on],
        "r_eff_pix": r_e_pix[on],
        "sersic_n": cat["sersic_n"].to_numpy(float)[on],
        "axis_ratio": cat["axis_ratio"].to_numpy(float)[on],
        "pa_deg": cat["pa_deg"].to_numpy(float)[on],
        "is_big": cat["is_big"].to_numpy(bool)[on],
    })
    return scene, truth


# ---------------------------------------------------------------------------------------------------------------------
# Repository
# ---------------------------------------------------------------------------------------------------------------------


def _corners(exp: SimExposure, nx: int, ny: int):
    """Unit vectors of the four outer pixel corners (for sphgeom regions)."""
    from lsst.sphgeom import LonLat, UnitVector3d

    xs = np.array([-0.5, nx - 0.5, nx - 0.5, -0.5])
    ys = np.array([-0.5, -0.5, ny - 0.5, ny - 0.5])
    ra, dec = exp.pixel_to_sky(xs, ys)
    return [UnitVector3d(LonLat.fromDegrees(float(r), float(d))) for r, d in zip(ra, dec)]


def _register_dimensions(butler, cfg: SimImageConfig, visits: list[dict], det_regions: dict) -> None:
    from lsst.daf.butler import Timespan
    from lsst.sphgeom import ConvexPolygon

    reg = butler.registry
    reg.syncDimensionData("instrument", {
        "name": INSTRUMENT, "visit_max": 1 << 20, "exposure_max": 1 << 20, "detector_max": 1000,
        "visit_system": 0, "class_name": "userbatch.images.sim_repo.UBSim",
    })
    for band in cfg.bands:
        reg.syncDimensionData("physical_filter", {"instrument": INSTRUMENT, "name": f"{INSTRUMENT}-{band}",
                                                   "band": band})
    for d in range(cfg.n_detectors):
        reg.syncDimensionData("detector", {"instrument": INSTRUMENT, "id": d, "full_name": f"S{d:02d}",
                                           "name_in_raft": f"S{d:02d}", "raft": "R00", "purpose": "SCIENCE"})
    for v in visits:
        t0 = Time(v["mjd"], format="mjd", scale="tai")
        reg.syncDimensionData("day_obs", {"instrument": INSTRUMENT, "id": v["day_obs"]})
        corners = [p for d in range(cfg.n_detectors) for p in det_regions[(v["visit"], d)]]
        reg.syncDimensionData("visit", {
            "instrument": INSTRUMENT, "id": v["visit"], "name": f"UBSim_{v['visit']}",
            "physical_filter": f"{INSTRUMENT}-{v['band']}", "day_obs": v["day_obs"], "seq_num": v["visit"] % 10000,
            "exposure_time": cfg.exposure_time, "target_name": "ubsim", "observation_reason": "science",
            "science_program": "ubsim", "azimuth": 0.0, "zenith_angle": 30.0,
            "region": ConvexPolygon.convexHull(corners),
            "timespan": Timespan(t0, t0 + TimeDelta(cfg.exposure_time, format="sec")),
        })
        for d in range(cfg.n_detectors):
            reg.syncDimensionData("visit_detector_region", {
                "instrument": INSTRUMENT, "visit": v["visit"], "detector": d,
                "region": ConvexPolygon.convexHull(det_regions[(v["visit"], d)]),
            })


def _register_dataset_types(butler) -> list[str]:
    from lsst.daf.butler import DatasetType

    u = butler.dimensions
    vd = u.conform(["instrument", "visit", "detector"])
    types = [
        DatasetType("calexp", vd, STORAGE_CLASS),
        DatasetType("ub_truth", vd, "ArrowAstropy"),
        DatasetType("ub_sky_truth", vd, "NumpyArray"),
        DatasetType("ub_truth_catalog", u.empty, "ArrowAstropy"),
    ]
    for dt in types:
        butler.registry.registerDatasetType(dt)
    return [dt.name for dt in types]


def build_repo(root: str | Path, n_visits: int = 2, n_detectors: int = 4, seed: int = 7,
               catalog: pd.DataFrame | None = None, config: SimImageConfig | None = None,
               overwrite: bool = False) -> RepoInfo:
    """Create a butler repository at ``root`` holding simulated calexps and their truth; return what was made.

    ``catalog``: a pandas frame with objectId, ra/coord_ra, dec/coord_dec (deg), flux (nJy; or an SDM
    ``<band>_psfFlux`` column, so :func:`userbatch.sim.survey.simulate_objects` output works) and optionally
    type ('star'/'galaxy'), r_eff_arcsec, sersic_n, axis_ratio, pa_deg (galaxy shape); ``None`` generates one
    (:func:`simulate_catalog`). Without ``config`` the boresight is the catalogue's centre; with it, the config's
    ``ra_deg``/``dec_deg``. ``n_visits``/``n_detectors``/``seed`` override the corresponding config fields.
    """
    from dataclasses import replace

    from lsst.daf.butler import Butler, CollectionType, Config

    cfg = replace(config or SimImageConfig(), n_visits=n_visits, n_detectors=n_detectors, seed=seed)
    cat = _normalise_catalog(catalog, cfg.bands) if catalog is not None else None
    if cat is not None and config is None and len(cat):
        # No camera configuration given: point at the catalogue's centre (mean unit vector).
        ra_r, dec_r = np.radians(cat["coord_ra"].to_numpy(float)), np.radians(cat["coord_dec"].to_numpy(float))
        v = np.array([np.cos(dec_r) * np.cos(ra_r), np.cos(dec_r) * np.sin(ra_r), np.sin(dec_r)]).mean(axis=1)
        cfg = replace(cfg, ra_deg=float(np.degrees(np.arctan2(v[1], v[0])) % 360.0),
                      dec_deg=float(np.degrees(np.arctan2(v[2], np.hypot(v[0], v[1])))))
    root = Path(root)
    if (root / "butler.yaml").exists():
        if not overwrite:
            raise UserbatchError(f"{root} already holds a butler repository; pass overwrite=True or another root")
        import shutil
        shutil.rmtree(root)
    if cat is None:
        cat = simulate_catalog(cfg)

    Butler.makeRepo(str(root), config=Config(REPO_CONFIG))
    butler = Butler.from_config(str(root), writeable=True)
    dstypes = _register_dataset_types(butler)

    calib = 10.0 ** (-0.4 * (cfg.zero_point - _AB_NJY_ZP))
    lay = _detector_layout(cfg)
    visits, exposures, fwhm = [], {}, {}
    det_regions = {}
    for i in range(cfg.n_visits):
        visit = 1000 + i
        ra, dec, rot = _visit_pointing(cfg, i)
        band = cfg.bands[i % len(cfg.bands)]
        rng = np.random.default_rng([cfg.seed, 994, i])
        fwhm_pix = float(rng.uniform(*cfg.fwhm_arcsec_range)) / cfg.pixel_scale_arcsec
        psf = {"model": cfg.psf_model, "fwhm_pix": fwhm_pix}
        if cfg.psf_model == "moffat":
            psf["beta"] = cfg.moffat_beta
        mjd = cfg.mjd_start + i * 40.0 / 86400.0
        day_obs = int(Time(mjd - 0.5, format="mjd").strftime("%Y%m%d"))
        visits.append({"visit": visit, "band": band, "mjd": mjd, "day_obs": day_obs})
        fwhm[visit] = fwhm_pix
        for d in range(cfg.n_detectors):
            x0, y0 = lay[d]
            hdr = _wcs_header(cfg, ra, dec, rot, x0, y0)
            meta = {"VISIT": visit, "DETECTOR": d, "BAND": band, "CALIB": calib, "MJD": mjd,
                    "EXPTIME": cfg.exposure_time, "READNOISE": cfg.read_noise, "FPX0": x0, "FPY0": y0}
            shell = SimExposure(np.zeros((cfg.ny, cfg.nx), np.float32), np.zeros((cfg.ny, cfg.nx), np.float32),
                                np.zeros((cfg.ny, cfg.nx), np.int32), hdr, psf, meta)
            det_regions[(visit, d)] = _corners(shell, cfg.nx, cfg.ny)
            exposures[(visit, d)] = (shell, i, x0, y0)

    _register_dimensions(butler, cfg, visits, det_regions)
    for run in (RUN_CALEXP, RUN_TRUTH):
        butler.registry.registerCollection(run, CollectionType.RUN)
    butler.registry.registerCollection(CHAIN, CollectionType.CHAINED)
    butler.registry.setCollectionChain(CHAIN, [RUN_CALEXP, RUN_TRUTH])

    butler.put(Table.from_pandas(cat), "ub_truth_catalog", dataId={}, run=RUN_TRUTH)
    for (visit, d), (exp, i, x0, y0) in exposures.items():
        scene, truth = _render(cfg, cat, exp, exp.psf, calib)
        sky = _sky_model(cfg, i, x0, y0)
        rng = np.random.default_rng([cfg.seed, 995, visit, d])
        expected = scene + sky
        img = rng.poisson(np.maximum(expected, 0.0)).astype(float) + rng.normal(0.0, cfg.read_noise, expected.shape)
        exp.image = img.astype(np.float32)
        exp.variance = (expected + cfg.read_noise ** 2).astype(np.float32)
        data_id = {"instrument": INSTRUMENT, "visit": visit, "detector": d}
        butler.put(exp, "calexp", dataId=data_id, run=RUN_CALEXP)
        butler.put(truth, "ub_truth", dataId=data_id, run=RUN_TRUTH)
        butler.put(sky.astype(np.float32), "ub_sky_truth", dataId=data_id, run=RUN_TRUTH)
    log.info("built %s: %d visits x %d detectors", root, cfg.n_visits, cfg.n_detectors)
    return RepoInfo(
        root=str(root), instrument=INSTRUMENT, visits=[v["visit"] for v in visits],
        detectors=list(range(cfg.n_detectors)), bands={v["visit"]: v["band"] for v in visits}, fwhm_pix=fwhm,
        collections=[RUN_CALEXP, RUN_TRUTH], input_collection=CHAIN, catalog=cat, config=cfg,
        dataset_types=dstypes,
    )


def put_stamp_targets(root: str | Path, targets, run: str, name: str = "stamp_targets") -> str:
    """Store an object list (objectId, coord_ra/ra, coord_dec/dec) as the no-dimension dataset the CutoutTask reads.

    Returns the RUN collection to add to ``pipetask run -i``.
    """
    from lsst.daf.butler import Butler, DatasetType

    if isinstance(targets, Table):
        targets = targets.to_pandas()
    df = pd.DataFrame(targets).rename(columns={"ra": "coord_ra", "dec": "coord_dec"})
    missing = {"objectId", "coord_ra", "coord_dec"} - set(df.columns)
    if missing:
        raise ColumnNotFound(f"targets lack columns {sorted(missing)}; give objectId, coord_ra, coord_dec (deg)")
    tab = Table({"objectId": df["objectId"].to_numpy(np.int64), "coord_ra": df["coord_ra"].to_numpy(float),
                 "coord_dec": df["coord_dec"].to_numpy(float)})
    butler = Butler.from_config(str(root), writeable=True)
    butler.registry.registerDatasetType(DatasetType(name, butler.dimensions.empty, "ArrowAstropy"))
    butler.registry.registerRun(run)
    butler.put(tab, name, dataId={}, run=run)
    return run
