"""CutoutTask: postage stamps around a list of objects on each (visit, detector) calexp.

The object list comes either from a no-dimension dataset (default name ``stamp_targets``; columns objectId,
coord_ra, coord_dec, e.g. written by :func:`userbatch.images.sim_repo.put_stamp_targets` or
:func:`userbatch.images.tasks.targets.stamps_request`) or, when ``config.objectIds`` is set, from the config itself
(``objectIds``/``ra``/``dec`` lists). Outputs per (visit, detector): ``stamps`` (NumpyArray cube N x size x size,
NaN outside the parent image) and ``stamp_catalog`` (objectId, coord_ra, coord_dec, x, y: the object's pixel
centre in the parent image, x0, y0: parent pixel of stamp[0, 0], xc, yc: the object's centre in stamp pixels).
A detector with none of the objects on it raises NoWorkFound (no outputs, not a failure).
"""

from __future__ import annotations

import numpy as np
from astropy.table import Table
from lsst.pex.config import Field, ListField
from lsst.pipe.base import NoWorkFound, PipelineTask, PipelineTaskConfig, PipelineTaskConnections, Struct
from lsst.pipe.base import connectionTypes as cT

from userbatch.images.tasks.algorithms import cutouts
from userbatch.images.tasks.exposure import STORAGE_CLASS

__all__ = ["CutoutConnections", "CutoutConfig", "CutoutTask"]

_DIMS = ("instrument", "visit", "detector")


class CutoutConnections(PipelineTaskConnections, dimensions=_DIMS):
    calexp = cT.Input(name="calexp", storageClass=STORAGE_CLASS, dimensions=_DIMS, doc="Calibrated exposure.")
    targets = cT.Input(name="stamp_targets", storageClass="ArrowAstropy", dimensions=(),
                       doc="Object list: objectId, coord_ra, coord_dec (deg).")
    stamps = cT.Output(name="stamps", storageClass="NumpyArray", dimensions=_DIMS, doc="Stamp cube (N, s, s).")
    stampCatalog = cT.Output(name="stamp_catalog", storageClass="ArrowAstropy", dimensions=_DIMS,
                             doc="One row per stamp: objectId, position, stamp origin.")

    def __init__(self, *, config=None):
        super().__init__(config=config)
        if config is not None and len(config.objectIds or []) > 0:
            del self.targets


class CutoutConfig(PipelineTaskConfig, pipelineConnections=CutoutConnections):
    stampSize = Field(dtype=int, default=31, doc="Stamp side in pixels (odd).", check=lambda v: v > 0 and v % 2)
    objectIds = ListField(dtype=int, default=[], doc="Objects given in config (overrides the targets dataset).")
    ra = ListField(dtype=float, default=[], doc="RA (deg) of objectIds.")
    dec = ListField(dtype=float, default=[], doc="Dec (deg) of objectIds.")
    minOverlap = Field(dtype=float, default=0.5,
                       doc="Keep a stamp only if at least this fraction of its pixels lies on the image.")

    def validate(self):
        super().validate()
        if not (len(self.objectIds) == len(self.ra) == len(self.dec)):
            raise ValueError("objectIds, ra and dec must have the same length")


class CutoutTask(PipelineTask):
    """Cut postage stamps around requested objects."""

    ConfigClass = CutoutConfig
    _DefaultName = "cutout"

    def run(self, calexp, targets=None) -> Struct:
        if targets is None:
            ids = np.asarray(self.config.objectIds, dtype=np.int64)
            ra = np.asarray(self.config.ra, dtype=float)
            dec = np.asarray(self.config.dec, dtype=float)
        else:
            ids = np.asarray(targets["objectId"], dtype=np.int64)
            ra = np.asarray(targets["coord_ra"], dtype=float)
            dec = np.asarray(targets["coord_dec"], dtype=float)
        size = self.config.stampSize
        ny, nx = calexp.image.shape
        x, y = calexp.sky_to_pixel(ra, dec) if len(ids) else (np.zeros(0), np.zeros(0))
        h = size // 2
        # Fraction of the stamp on the image, from the integer stamp box.
        xi, yi = np.rint(x).astype(int), np.rint(y).astype(int)
        ox = np.clip(np.minimum(xi + h + 1, nx) - np.maximum(xi - h, 0), 0, size)
        oy = np.clip(np.minimum(yi + h + 1, ny) - np.maximum(yi - h, 0), 0, size)
        keep = (ox * oy) / float(size * size) >= self.config.minOverlap
        if not keep.any():
            raise NoWorkFound(f"none of the {len(ids)} requested objects falls on this detector")
        cube, x0, y0 = cutouts(calexp.image, x[keep], y[keep], size)
        cat = Table({
            "objectId": ids[keep], "coord_ra": ra[keep], "coord_dec": dec[keep], "x": x[keep], "y": y[keep],
            "x0": x0, "y0": y0, "xc": x[keep] - x0, "yc": y[keep] - y0,
        })
        cat.meta["visit"] = int(calexp.metadata.get("VISIT", -1))
        cat.meta["detector"] = int(calexp.metadata.get("DETECTOR", -1))
        self.log.info("cut %d stamps of %d px", len(cat), size)
        return Struct(stamps=cube, stampCatalog=cat)
