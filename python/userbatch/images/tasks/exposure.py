"""A pure-Python calibrated exposure (image + variance + mask + TAN WCS + PSF model) and its butler formatter.

Why it exists: the Rubin C++ stack (afw) is not installed, so ``ExposureF`` is unavailable. The image PipelineTasks
need the same four things an ``ExposureF`` carries, so :class:`SimExposure` holds them with numpy / astropy types,
and :class:`SimExposureFormatter` stores it as a multi-extension FITS file (IMAGE, MASK, VARIANCE; WCS, PSF and
metadata in the primary header), readable by any FITS tool. The storage class ``UBExposure`` is declared in the
repository's own ``butler.yaml`` by :func:`userbatch.images.sim_repo.build_repo` (see :data:`REPO_CONFIG`).

Units: pixel values are electrons (counts); ``calib_njy_per_count`` converts to nJy, ``zero_point`` to AB mag.
Pixel coordinates are 0-based (astropy ``origin=0``) with (x, y) = (column, row).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS
from lsst.daf.butler import FormatterV2
from lsst.resources import ResourcePath
from scipy.special import erf

__all__ = [
    "SimExposure",
    "SimExposureFormatter",
    "STORAGE_CLASS",
    "REPO_CONFIG",
    "MASK_BITS",
    "psf_stamp",
    "add_point_source",
]

STORAGE_CLASS = "UBExposure"

#: Extra butler configuration a repository needs to read/write :class:`SimExposure` (merged into butler.yaml).
REPO_CONFIG: dict[str, Any] = {
    "storageClasses": {STORAGE_CLASS: {"pytype": "userbatch.images.tasks.exposure.SimExposure"}},
    "datastore": {"formatters": {STORAGE_CLASS: "userbatch.images.tasks.exposure.SimExposureFormatter"}},
}

#: Mask plane bits.
MASK_BITS = {"BAD": 0, "SAT": 1, "DETECTED": 5, "INJECTED": 8}


@dataclass
class SimExposure:
    """Image, variance and mask planes plus WCS header, PSF model and metadata.

    ``psf`` is ``{"model": "gaussian"|"moffat", "fwhm_pix": float, "beta": float (moffat)}``.
    ``wcs_header`` holds the FITS WCS keywords (CTYPE, CRVAL, CRPIX (1-based), CD).
    """

    image: np.ndarray
    variance: np.ndarray
    mask: np.ndarray
    wcs_header: dict
    psf: dict
    metadata: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return self.image.shape

    @property
    def wcs(self) -> WCS:
        return WCS(fits.Header(self.wcs_header))

    @property
    def calib_njy_per_count(self) -> float:
        return float(self.metadata.get("CALIB", 1.0))

    @property
    def zero_point(self) -> float:
        return 31.4 - 2.5 * math.log10(self.calib_njy_per_count)

    def sky_to_pixel(self, ra_deg, dec_deg) -> tuple[np.ndarray, np.ndarray]:
        x, y = self.wcs.all_world2pix(np.atleast_1d(ra_deg), np.atleast_1d(dec_deg), 0)
        return np.asarray(x, dtype=float), np.asarray(y, dtype=float)

    def pixel_to_sky(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        ra, dec = self.wcs.all_pix2world(np.atleast_1d(x), np.atleast_1d(y), 0)
        return np.mod(np.asarray(ra, dtype=float), 360.0), np.asarray(dec, dtype=float)

    def copy(self) -> "SimExposure":
        return SimExposure(self.image.copy(), self.variance.copy(), self.mask.copy(), dict(self.wcs_header),
                           dict(self.psf), dict(self.metadata))

    def psf_image(self, size: int = 0, dx: float = 0.0, dy: float = 0.0) -> np.ndarray:
        return psf_stamp(self.psf, size or _default_psf_size(self.psf), dx, dy)


def _default_psf_size(psf: dict) -> int:
    n = int(math.ceil(4.0 * float(psf["fwhm_pix"])))
    return 2 * n + 1


def psf_stamp(psf: dict, size: int, dx: float = 0.0, dy: float = 0.0, oversample: int = 4) -> np.ndarray:
    """Pixel-integrated, unit-sum PSF image of odd ``size`` centred at (size//2 + dx, size//2 + dy)."""
    c = size // 2
    fwhm = float(psf["fwhm_pix"])
    model = psf.get("model", "gaussian")
    if model == "gaussian":
        sigma = fwhm / (2.0 * math.sqrt(2.0 * math.log(2.0)))
        edges = np.arange(size + 1) - c - 0.5
        px = np.diff(0.5 * erf((edges - dx) / (math.sqrt(2.0) * sigma)))
        py = np.diff(0.5 * erf((edges - dy) / (math.sqrt(2.0) * sigma)))
        img = np.outer(py, px)
    elif model == "moffat":
        beta = float(psf.get("beta", 3.5))
        alpha = fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))
        sub = (np.arange(size * oversample) + 0.5) / oversample - 0.5 - c
        xx, yy = np.meshgrid(sub - dx, sub - dy)
        fine = (1.0 + (xx * xx + yy * yy) / alpha ** 2) ** (-beta)
        img = fine.reshape(size, oversample, size, oversample).sum(axis=(1, 3))
    else:
        raise ValueError(f"unknown PSF model {model!r}; use 'gaussian' or 'moffat'")
    return img / img.sum()


def add_point_source(image: np.ndarray, psf: dict, x: float, y: float, flux: float, size: int = 0) -> None:
    """Add ``flux`` (counts) of PSF centred at 0-based pixel (x, y) into ``image`` in place (clipped at edges)."""
    size = size or _default_psf_size(psf)
    ix, iy = int(round(x)), int(round(y))
    stamp = psf_stamp(psf, size, x - ix, y - iy) * flux
    h = size // 2
    ny, nx = image.shape
    x0, y0 = ix - h, iy - h
    xa, ya = max(x0, 0), max(y0, 0)
    xb, yb = min(x0 + size, nx), min(y0 + size, ny)
    if xa >= xb or ya >= yb:
        return
    image[ya:yb, xa:xb] += stamp[ya - y0:yb - y0, xa - x0:xb - x0]


class SimExposureFormatter(FormatterV2):
    """Multi-extension FITS: primary header (WCS, PSF*, metadata), IMAGE, MASK, VARIANCE."""

    default_extension = ".fits"
    supported_extensions = frozenset({".fits"})
    can_read_from_local_file = True

    def read_from_local_file(self, path: str, component: str | None = None, expected_size: int = -1) -> Any:
        with fits.open(path, memmap=False) as hdul:
            hdr = hdul[0].header
            wcs_header = {k: hdr[k] for k in hdr if k.startswith(("CTYPE", "CRVAL", "CRPIX", "CD", "CUNIT",
                                                                   "RADESYS", "EQUINOX", "WCSAXES"))}
            psf = {"model": hdr.get("PSFMODEL", "gaussian"), "fwhm_pix": float(hdr["PSFFWHM"])}
            if "PSFBETA" in hdr:
                psf["beta"] = float(hdr["PSFBETA"])
            meta = {}
            for k in hdr:
                if k.startswith("UB_"):
                    meta[k[3:]] = hdr[k]
            return SimExposure(
                image=np.asarray(hdul["IMAGE"].data, dtype=np.float32),
                variance=np.asarray(hdul["VARIANCE"].data, dtype=np.float32),
                mask=np.asarray(hdul["MASK"].data, dtype=np.int32),
                wcs_header=wcs_header, psf=psf, metadata=meta,
            )

    def write_local_file(self, in_memory_dataset: Any, uri: ResourcePath) -> None:
        exp: SimExposure = in_memory_dataset
        hdr = fits.Header()
        for k, v in exp.wcs_header.items():
            hdr[k] = v
        hdr["PSFMODEL"] = exp.psf.get("model", "gaussian")
        hdr["PSFFWHM"] = float(exp.psf["fwhm_pix"])
        if "beta" in exp.psf:
            hdr["PSFBETA"] = float(exp.psf["beta"])
        for k, v in exp.metadata.items():
            if isinstance(v, np.generic):
                v = v.item()
            hdr[f"HIERARCH UB_{k}"] = v
        hdul = fits.HDUList([
            fits.PrimaryHDU(header=hdr),
            fits.ImageHDU(np.asarray(exp.image, dtype=np.float32), name="IMAGE"),
            fits.ImageHDU(np.asarray(exp.mask, dtype=np.int32), name="MASK"),
            fits.ImageHDU(np.asarray(exp.variance, dtype=np.float32), name="VARIANCE"),
        ])
        hdul.writeto(uri.ospath, overwrite=True)
