"""InjectionTask (synthetic point sources at known positions/magnitudes) and DetectAndMatchTask (completeness).

InjectionTask: per (visit, detector), ``nInject`` point sources drawn with the exposure's own PSF at positions
and AB magnitudes that are random but reproducible (seeded by ``seed``, visit and detector), uniform in
[``magMin``, ``magMax``] -- or, when ``ra``/``dec``/``mag`` are given in config, exactly those. Poisson noise of
the added flux is added (``doNoise``) and the variance plane updated. Outputs ``injected_calexp`` and
``injection_catalog`` (injectionId, coord_ra, coord_dec, x, y, mag, flux_nJy, counts).

DetectAndMatchTask: re-estimates the background (masked polynomial), detects (threshold + connected components +
peaks), matches detections to the injected positions within ``matchRadius`` pixels and writes
``injection_matches`` (the catalogue plus matched/distance/detected flux) and ``injection_completeness`` (per
magnitude bin: n_injected, n_recovered, completeness). Sum the per-detector tables for a survey-wide curve
(:func:`completeness_from_matches`).
"""

from __future__ import annotations

import numpy as np
from astropy.table import Table
from lsst.pex.config import Field, ListField
from lsst.pipe.base import PipelineTask, PipelineTaskConfig, PipelineTaskConnections, Struct
from lsst.pipe.base import connectionTypes as cT

from userbatch.images.tasks.algorithms import detect_sources, estimate_background, match_positions
from userbatch.images.tasks.exposure import MASK_BITS, STORAGE_CLASS, add_point_source

__all__ = ["InjectionConfig", "InjectionTask", "DetectAndMatchConfig", "DetectAndMatchTask",
           "completeness_from_matches"]

_DIMS = ("instrument", "visit", "detector")
_AB_NJY_ZP = 31.4


class InjectionConnections(PipelineTaskConnections, dimensions=_DIMS):
    calexp = cT.Input(name="calexp", storageClass=STORAGE_CLASS, dimensions=_DIMS, doc="Exposure to inject into.")
    injected = cT.Output(name="injected_calexp", storageClass=STORAGE_CLASS, dimensions=_DIMS,
                         doc="Exposure with injected sources.")
    catalog = cT.Output(name="injection_catalog", storageClass="ArrowAstropy", dimensions=_DIMS,
                        doc="What was injected where.")


class InjectionConfig(PipelineTaskConfig, pipelineConnections=InjectionConnections):
    nInject = Field(dtype=int, default=60, doc="Number of random sources per detector.")
    magMin = Field(dtype=float, default=20.0, doc="Brightest random AB magnitude.")
    magMax = Field(dtype=float, default=27.0, doc="Faintest random AB magnitude.")
    border = Field(dtype=int, default=8, doc="Keep random positions this many pixels from the edges.")
    minSeparation = Field(dtype=float, default=8.0, doc="Minimum separation between random injections (px).")
    seed = Field(dtype=int, default=1, doc="Random seed (combined with visit and detector).")
    doNoise = Field(dtype=bool, default=True, doc="Add Poisson noise of the injected flux.")
    ra = ListField(dtype=float, default=[], doc="Explicit RA (deg); with dec and mag replaces random sources.")
    dec = ListField(dtype=float, default=[], doc="Explicit Dec (deg).")
    mag = ListField(dtype=float, default=[], doc="Explicit AB magnitudes.")


class InjectionTask(PipelineTask):
    """Inject PSF-shaped point sources into an exposure."""

    ConfigClass = InjectionConfig
    _DefaultName = "injection"

    def run(self, calexp) -> Struct:
        c = self.config
        visit = int(calexp.metadata.get("VISIT", 0))
        detector = int(calexp.metadata.get("DETECTOR", 0))
        rng = np.random.default_rng([c.seed, visit, detector])
        ny, nx = calexp.image.shape
        if len(c.ra):
            if not (len(c.ra) == len(c.dec) == len(c.mag)):
                raise ValueError("ra, dec and mag must have the same length")
            ra, dec, mag = (np.asarray(v, dtype=float) for v in (c.ra, c.dec, c.mag))
            x, y = calexp.sky_to_pixel(ra, dec)
            on = (x >= -0.5) & (x < nx - 0.5) & (y >= -0.5) & (y < ny - 0.5)
            ra, dec, mag, x, y = ra[on], dec[on], mag[on], x[on], y[on]
        else:
            xs, ys = [], []
            tries = 0
            while len(xs) < c.nInject and tries < 50 * c.nInject:
                tries += 1
                px, py = rng.uniform(c.border, nx - 1 - c.border), rng.uniform(c.border, ny - 1 - c.border)
                if all((px - a) ** 2 + (py - b) ** 2 >= c.minSeparation ** 2 for a, b in zip(xs, ys)):
                    xs.append(px)
                    ys.append(py)
            x, y = np.array(xs), np.array(ys)
            mag = rng.uniform(c.magMin, c.magMax, len(x))
            ra, dec = calexp.pixel_to_sky(x, y) if len(x) else (np.zeros(0), np.zeros(0))
        flux_njy = 10.0 ** (-0.4 * (mag - _AB_NJY_ZP))
        counts = flux_njy / calexp.calib_njy_per_count
        model = np.zeros(calexp.image.shape)
        for xi, yi, ci in zip(x, y, counts):
            add_point_source(model, calexp.psf, xi, yi, ci)
        out = calexp.copy()
        added = model
        if c.doNoise:
            added = rng.poisson(np.maximum(model, 0.0)).astype(float)
        out.image = (calexp.image + added).astype(np.float32)
        out.variance = (calexp.variance + model).astype(np.float32)
        out.mask = out.mask | ((model > 0.5).astype(np.int32) << MASK_BITS["INJECTED"])
        cat = Table({"injectionId": np.arange(len(x), dtype=np.int64), "coord_ra": ra, "coord_dec": dec,
                     "x": x, "y": y, "mag": mag, "flux_nJy": flux_njy, "counts": counts})
        cat.meta.update({"visit": visit, "detector": detector})
        self.log.info("injected %d sources (mag %.1f..%.1f)", len(x), c.magMin, c.magMax)
        return Struct(injected=out, catalog=cat)


class DetectAndMatchConnections(PipelineTaskConnections, dimensions=_DIMS):
    exposure = cT.Input(name="injected_calexp", storageClass=STORAGE_CLASS, dimensions=_DIMS,
                        doc="Exposure with injected sources.")
    injected = cT.Input(name="injection_catalog", storageClass="ArrowAstropy", dimensions=_DIMS,
                        doc="Injected sources.")
    matches = cT.Output(name="injection_matches", storageClass="ArrowAstropy", dimensions=_DIMS,
                        doc="Injected sources with their matched detection.")
    completeness = cT.Output(name="injection_completeness", storageClass="ArrowAstropy", dimensions=_DIMS,
                             doc="Completeness per magnitude bin.")


class DetectAndMatchConfig(PipelineTaskConfig, pipelineConnections=DetectAndMatchConnections):
    doBackground = Field(dtype=bool, default=True, doc="Subtract a masked-polynomial background first.")
    thresholdSigma = Field(dtype=float, default=5.0, doc="Detection threshold (S/N of PSF-matched image).")
    matchRadius = Field(dtype=float, default=2.0, doc="Match radius (pixels).")
    magBinWidth = Field(dtype=float, default=0.5, doc="Magnitude bin width of the completeness table.")
    magMin = Field(dtype=float, default=20.0, doc="Lower edge of the first magnitude bin.")
    magMax = Field(dtype=float, default=27.0, doc="Upper edge of the last magnitude bin.")


def completeness_from_matches(matches: Table, mag_min: float = 20.0, mag_max: float = 27.0,
                              width: float = 0.5) -> Table:
    """Completeness per magnitude bin from one or more (vstacked) ``injection_matches`` tables."""
    edges = np.arange(mag_min, mag_max + 1e-9, width)
    mag = np.asarray(matches["mag"], dtype=float)
    ok = np.asarray(matches["matched"], dtype=bool)
    n_inj = np.histogram(mag, edges)[0]
    n_rec = np.histogram(mag[ok], edges)[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        comp = np.where(n_inj > 0, n_rec / np.maximum(n_inj, 1), np.nan)
    return Table({"mag_lo": edges[:-1], "mag_hi": edges[1:], "n_injected": n_inj.astype(np.int64),
                  "n_recovered": n_rec.astype(np.int64), "completeness": comp})


class DetectAndMatchTask(PipelineTask):
    """Detect on the injected exposure and match detections to the injected sources."""

    ConfigClass = DetectAndMatchConfig
    _DefaultName = "detectAndMatch"

    def run(self, exposure, injected) -> Struct:
        c = self.config
        image = exposure.image
        if c.doBackground:
            bkg, _ = estimate_background(image, exposure.variance, exposure.psf, method="masked_poly")
            image = image - bkg
        det = detect_sources(image, exposure.variance, exposure.psf, c.thresholdSigma)
        idx, dist = match_positions(injected["x"], injected["y"], det["x"], det["y"], c.matchRadius)
        matches = injected.copy()
        ok = idx >= 0
        matches["matched"] = ok
        matches["match_distance"] = dist
        matches["det_x"] = np.where(ok, det["x"][np.maximum(idx, 0)] if len(det["x"]) else np.nan, np.nan)
        matches["det_y"] = np.where(ok, det["y"][np.maximum(idx, 0)] if len(det["y"]) else np.nan, np.nan)
        flux = det["flux"][np.maximum(idx, 0)] * exposure.calib_njy_per_count if len(det["x"]) else 0.0
        matches["det_flux_nJy"] = np.where(ok, flux, np.nan)
        comp = completeness_from_matches(matches, c.magMin, c.magMax, c.magBinWidth)
        self.log.info("recovered %d of %d injected sources (%d detections)", int(ok.sum()), len(ok),
                      len(det["x"]))
        return Struct(matches=matches, completeness=comp)
