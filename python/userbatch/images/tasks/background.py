"""BackgroundTask (sky re-estimation) and DetectionTask (threshold detection), the "standard" image steps.

BackgroundTask methods (``config.method``): ``masked_poly`` (default; preserves low-surface-brightness flux:
sources masked by threshold + dilation at PSF and ~12 px scales, then a sigma-clipped order-``polyOrder``
2-D polynomial), ``mesh`` (per-cell median interpolated, the classic approach that eats LSB wings) and ``median``
(one number per detector). Outputs: ``calexp_bkgsub`` (UBExposure, background subtracted; the fit mask is
recorded in the DETECTED mask bit) and ``ub_background`` (NumpyArray, the subtracted model in counts).
"""

from __future__ import annotations

import numpy as np
from astropy.table import Table
from lsst.pex.config import ChoiceField, Field
from lsst.pipe.base import PipelineTask, PipelineTaskConfig, PipelineTaskConnections, Struct
from lsst.pipe.base import connectionTypes as cT

from userbatch.images.tasks.algorithms import detect_sources, estimate_background
from userbatch.images.tasks.exposure import MASK_BITS, STORAGE_CLASS

__all__ = ["BackgroundConfig", "BackgroundTask", "DetectionConfig", "DetectionTask", "source_table"]

_DIMS = ("instrument", "visit", "detector")


class BackgroundConnections(PipelineTaskConnections, dimensions=_DIMS):
    calexp = cT.Input(name="calexp", storageClass=STORAGE_CLASS, dimensions=_DIMS, doc="Exposure with sky.")
    bkgsub = cT.Output(name="calexp_bkgsub", storageClass=STORAGE_CLASS, dimensions=_DIMS,
                       doc="Background-subtracted exposure.")
    background = cT.Output(name="ub_background", storageClass="NumpyArray", dimensions=_DIMS,
                           doc="Background model (counts per pixel).")


class BackgroundConfig(PipelineTaskConfig, pipelineConnections=BackgroundConnections):
    method = ChoiceField(dtype=str, default="masked_poly", doc="Background estimator.", allowed={
        "masked_poly": "masked low-order polynomial (preserves LSB flux)",
        "mesh": "median per mesh cell, bilinearly interpolated",
        "median": "one clipped median per detector",
    })
    polyOrder = Field(dtype=int, default=2, doc="Polynomial order (masked_poly).")
    meshSize = Field(dtype=int, default=64, doc="Cell size in pixels (mesh).")
    threshold = Field(dtype=float, default=4.0, doc="Source-mask threshold (sigma of the PSF-smoothed image).")
    grow = Field(dtype=float, default=6.0, doc="Source-mask dilation (pixels).")
    lsbScale = Field(dtype=float, default=12.0, doc="Smoothing scale (px) of the LSB mask; 0 disables it.")
    iterations = Field(dtype=int, default=3, doc="Mask/fit iterations (masked_poly).")


class BackgroundTask(PipelineTask):
    """Re-estimate and subtract the sky background."""

    ConfigClass = BackgroundConfig
    _DefaultName = "background"

    def run(self, calexp) -> Struct:
        c = self.config
        bad = (calexp.mask & (1 << MASK_BITS["BAD"])) != 0
        bkg, masked = estimate_background(calexp.image, calexp.variance, calexp.psf, method=c.method,
                                          order=c.polyOrder, mesh=c.meshSize, threshold=c.threshold, grow=c.grow,
                                          lsb_scale=c.lsbScale, iterations=c.iterations, bad=bad)
        out = calexp.copy()
        out.image = (calexp.image - bkg).astype(np.float32)
        out.mask = out.mask | (masked.astype(np.int32) << MASK_BITS["DETECTED"])
        out.metadata["BKGMETH"] = c.method
        out.metadata["BKGMEAN"] = float(np.mean(bkg))
        self.log.info("background %s: mean %.2f, %.1f%% of pixels masked", c.method, float(np.mean(bkg)),
                      100.0 * masked.mean())
        return Struct(bkgsub=out, background=bkg.astype(np.float32))


def source_table(exposure, det: dict) -> Table:
    """Detections (from :func:`detect_sources`) as a table with sky coordinates and calibrated fluxes."""
    ra, dec = exposure.pixel_to_sky(det["x"], det["y"]) if len(det["x"]) else (np.zeros(0), np.zeros(0))
    calib = exposure.calib_njy_per_count
    flux = det["flux"] * calib
    return Table({
        "sourceId": np.arange(len(det["x"]), dtype=np.int64),
        "coord_ra": ra, "coord_dec": dec, "x": det["x"], "y": det["y"], "sn": det["sn"],
        "psfFlux": flux, "psfFluxErr": np.where(det["sn"] > 0, flux / np.maximum(det["sn"], 1e-9), np.nan),
        "footprint": det["footprint"], "footprintArea": det["area"],
        "visit": np.full(len(det["x"]), int(exposure.metadata.get("VISIT", -1)), np.int64),
        "detector": np.full(len(det["x"]), int(exposure.metadata.get("DETECTOR", -1)), np.int64),
    })


class DetectionConnections(PipelineTaskConnections, dimensions=_DIMS):
    exposure = cT.Input(name="calexp_bkgsub", storageClass=STORAGE_CLASS, dimensions=_DIMS,
                        doc="Background-subtracted exposure.")
    sources = cT.Output(name="ub_sources", storageClass="ArrowAstropy", dimensions=_DIMS, doc="Detections.")


class DetectionConfig(PipelineTaskConfig, pipelineConnections=DetectionConnections):
    thresholdSigma = Field(dtype=float, default=5.0, doc="Detection threshold in S/N of the PSF-matched image.")
    minSeparation = Field(dtype=int, default=2, doc="Minimum peak separation (pixels).")


class DetectionTask(PipelineTask):
    """Detect sources: PSF-matched filter, threshold, connected footprints, peaks."""

    ConfigClass = DetectionConfig
    _DefaultName = "detection"

    def run(self, exposure) -> Struct:
        det = detect_sources(exposure.image, exposure.variance, exposure.psf, self.config.thresholdSigma,
                             self.config.minSeparation)
        self.log.info("detected %d peaks above %.1f sigma", len(det["x"]), self.config.thresholdSigma)
        return Struct(sources=source_table(exposure, det))
