"""HEALPix indexing, the one place the order-29 spatial index is defined.

The index column is HATS' ``_healpix_29``: the nested HEALPix pixel of each row at order 29. Every coarser pixel
is a contiguous range of it (``pixel << 2*(29-order)``), so a partition, a search region or a margin is a set of
integer ranges, and a sorted column of it makes Parquet row-group statistics prune by position.
"""

from __future__ import annotations

import cdshealpix
import numpy as np
from astropy.coordinates import Latitude, Longitude
import astropy.units as u

from ..errors import BadCoordinates

SPATIAL_INDEX_ORDER = 29
SPATIAL_INDEX_COLUMN = "_healpix_29"
#: HATS groups pixel directories in ``Dir=`` folders of this many pixels.
HATS_DIR_STEP = 10_000


def valid_radec_mask(ra_deg: np.ndarray, dec_deg: np.ndarray) -> np.ndarray:
    """True where a row has a finite RA in [0, 360] and a finite Dec in [-90, 90]."""
    ra = np.asarray(ra_deg, dtype=np.float64)
    dec = np.asarray(dec_deg, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.isfinite(ra) & np.isfinite(dec) & (ra >= 0) & (ra <= 360) & (dec >= -90) & (dec <= 90)


def validate_radec(ra_deg, dec_deg, what: str = "coordinates") -> None:
    """Raise BadCoordinates unless every RA/Dec is finite and in range (for user-supplied region centres)."""
    if not np.all(valid_radec_mask(np.atleast_1d(ra_deg), np.atleast_1d(dec_deg))):
        raise BadCoordinates(
            f"{what} must be finite with RA in [0, 360] deg and Dec in [-90, 90] deg; "
            f"got ra={ra_deg!r}, dec={dec_deg!r}"
        )


def radec_to_index(ra_deg: np.ndarray, dec_deg: np.ndarray, order: int = SPATIAL_INDEX_ORDER) -> np.ndarray:
    """Nested HEALPix pixel of each (ra, dec) at ``order`` (int64). Rows must already be valid.

    RA = 360 is folded to 0 (same meridian), which cdshealpix would otherwise reject.
    """
    ra = np.mod(np.asarray(ra_deg, dtype=np.float64), 360.0)
    dec = np.asarray(dec_deg, dtype=np.float64)
    if ra.size == 0:
        return np.zeros(0, dtype=np.int64)
    pix = cdshealpix.nested.lonlat_to_healpix(Longitude(ra, unit=u.deg), Latitude(dec, unit=u.deg), order)
    return pix.astype(np.int64, copy=False)


def count_pixels(ra_deg: np.ndarray, dec_deg: np.ndarray, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-empty pixels at ``order`` with their row counts; rows with unusable coordinates count under pixel -1."""
    ra = np.asarray(ra_deg, dtype=np.float64)
    dec = np.asarray(dec_deg, dtype=np.float64)
    valid = valid_radec_mask(ra, dec)
    pix = np.full(len(ra), -1, dtype=np.int64)
    if valid.any():
        pix[valid] = radec_to_index(ra[valid], dec[valid], order=order)
    return np.unique(pix, return_counts=True)


def pixel_to_index_range(order: int, pixel: int, index_order: int = SPATIAL_INDEX_ORDER) -> tuple[int, int]:
    """Half-open range [lo, hi) of order-29 indices covered by ``pixel`` at ``order``.

    Parameters
    ----------
    order, pixel : int
        A nested HEALPix pixel.
    index_order : int
        The order of the index the range is in (29: ``_healpix_29``).

    Returns
    -------
    tuple of int
        ``(lo, hi)``: the pixel holds exactly the indices ``lo <= i < hi``.
    """
    shift = 2 * (index_order - order)
    return int(pixel) << shift, (int(pixel) + 1) << shift


def pixels_to_index_ranges(orders, pixels, index_order: int = SPATIAL_INDEX_ORDER) -> tuple[np.ndarray, np.ndarray]:
    """:func:`pixel_to_index_range` for arrays of pixels (orders may differ per pixel).

    Parameters
    ----------
    orders : int or array of int
        The order of each pixel (one value for all of them, or one each).
    pixels : array of int
        Nested pixel numbers.
    index_order : int
        The order of the index the ranges are in.

    Returns
    -------
    lo, hi : numpy.ndarray of int64
        Half-open ranges ``[lo, hi)`` of indices at ``index_order``.
    """
    pix = np.asarray(pixels, dtype=np.int64)
    shift = 2 * (index_order - np.asarray(orders, dtype=np.int64))
    return pix << shift, (pix + 1) << shift


def npix(order: int) -> int:
    return 12 * 4**order


def pixel_directory(order: int, pixel: int) -> str:
    """HATS' directory for a pixel: ``Norder=K/Dir=D/Npix=P`` with D the pixel rounded down to HATS_DIR_STEP."""
    return f"Norder={order}/Dir={hats_dir(pixel)}/Npix={pixel}"


def hats_dir(pixel):
    """The ``Dir=`` value of a pixel (int or numpy array)."""
    return (pixel // HATS_DIR_STEP) * HATS_DIR_STEP


def mean_pixel_size_deg(order: int) -> float:
    """Square root of the pixel area, in degrees."""
    return float(np.degrees(np.sqrt(4 * np.pi / npix(order))))
