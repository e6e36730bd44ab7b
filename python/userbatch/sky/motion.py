"""Space motion: where a star catalogued at one epoch is at another.

The propagation is ERFA's ``pmsafe`` (rigorous space motion, with parallax and radial velocity when given: the
perspective acceleration that matters for nearby fast stars), the routine astropy's
``SkyCoord.apply_space_motion`` calls, run vectorised on whole partitions. Proper motion in RA is taken the way
Gaia and LSST publish it, ``pmra = dRA/dt * cos(dec)`` in mas/yr.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import erfa
import numpy as np

from ..errors import UserbatchError

#: Julian date of J2000.0 and days per Julian year: epochs are Julian years (TDB), e.g. 2016.0 for Gaia DR3.
_J2000_JD = 2451545.0
_JYEAR_DAYS = 365.25
_MJD_OFFSET = 2400000.5
EPOCH_FORMATS = ("jyear", "mjd")
# Rows without a parallax are propagated with ERFA's default large distance (its Note 6), as astropy does; that
# is the intended result, so its per-call notice is not worth a warning in every task log.
warnings.filterwarnings("ignore", message='ERFA function "pmsafe" yielded .* "distance overridden',
                        category=erfa.ErfaWarning)

_MAS_RAD = np.pi / (180.0 * 3600.0 * 1000.0)


@dataclass(frozen=True)
class Motion:
    """How to move the right-hand catalogue's rows to the epoch of the left-hand rows before matching.

    ``pmra``/``pmdec`` (mas/yr, pmra includes cos dec), ``parallax`` (mas) and ``radial_velocity`` (km/s) name
    right-hand columns; ``ref_epoch`` is the right-hand catalogue's epoch, a Julian year (2016.0) or a column.
    ``epoch`` is when the left-hand rows were observed: a number, or a left-hand column, in ``epoch_format``
    (``jyear`` or ``mjd``). Rows whose proper motion is null are matched at their catalogued position.
    """

    epoch: float | str
    pmra: str = "pmra"
    pmdec: str = "pmdec"
    parallax: str | None = None
    radial_velocity: str | None = None
    ref_epoch: float | str = 2016.0
    epoch_format: str = "jyear"

    def __post_init__(self):
        if self.epoch_format not in EPOCH_FORMATS:
            raise UserbatchError(f"epoch_format must be one of {', '.join(EPOCH_FORMATS)}; got {self.epoch_format!r}")
        for what, value in (("epoch", self.epoch), ("ref_epoch", self.ref_epoch)):
            if isinstance(value, str):
                continue
            if not np.isfinite(float(value)):
                raise UserbatchError(f"{what} must be a finite number or a column name; got {value!r}")

    @property
    def epoch_is_column(self) -> bool:
        return isinstance(self.epoch, str)

    def right_columns(self) -> list[str]:
        cols = [self.pmra, self.pmdec, self.parallax, self.radial_velocity]
        if isinstance(self.ref_epoch, str):
            cols.append(self.ref_epoch)
        return [c for c in cols if c]

    def left_columns(self) -> list[str]:
        return [self.epoch] if self.epoch_is_column else []

    def to_jyear(self, epoch) -> np.ndarray:
        """Observation epochs as Julian years."""
        e = np.asarray(epoch, dtype=np.float64)
        return 2000.0 + (e + _MJD_OFFSET - _J2000_JD) / _JYEAR_DAYS if self.epoch_format == "mjd" else e


def _nan0(a) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return np.where(np.isfinite(a), a, 0.0)


def propagate(ra_deg, dec_deg, pmra_masyr, pmdec_masyr, ref_epoch_jyear, epoch_jyear, parallax_mas=None,
              radial_velocity_kms=None) -> tuple[np.ndarray, np.ndarray]:
    """Positions (deg) at ``epoch_jyear`` of stars at ``ra/dec`` at ``ref_epoch_jyear``; null motions count as 0."""
    ra = np.radians(np.asarray(ra_deg, dtype=np.float64))
    dec = np.radians(np.asarray(dec_deg, dtype=np.float64))
    n = ra.shape[0]
    if n == 0:
        return np.zeros(0), np.zeros(0)
    pmra = _nan0(pmra_masyr)
    pmdec = _nan0(pmdec_masyr)
    cosd = np.cos(dec)
    # dRA/dt (rad/yr); at the pole itself RA is undefined and the motion is carried by the Dec term only
    pmr = np.where(cosd > 1e-12, pmra * _MAS_RAD / np.where(cosd > 1e-12, cosd, 1.0), 0.0)
    pmd = pmdec * _MAS_RAD
    px = _nan0(parallax_mas) / 1000.0 if parallax_mas is not None else np.zeros(n)
    rv = _nan0(radial_velocity_kms) if radial_velocity_kms is not None else np.zeros(n)
    ep1 = np.broadcast_to(np.asarray(ref_epoch_jyear, dtype=np.float64), (n,))
    ep2 = np.broadcast_to(np.asarray(epoch_jyear, dtype=np.float64), (n,))
    moving = (pmr != 0) | (pmd != 0) | (rv != 0)
    ra_out = np.degrees(ra)
    dec_out = np.degrees(dec)
    if moving.any():
        sel = np.flatnonzero(moving)
        jd1 = _J2000_JD + (ep1[sel] - 2000.0) * _JYEAR_DAYS
        jd2 = _J2000_JD + (ep2[sel] - 2000.0) * _JYEAR_DAYS
        ra2, dec2, *_ = erfa.pmsafe(ra[sel], dec[sel], pmr[sel], pmd[sel], px[sel], rv[sel],
                                    jd1, np.zeros_like(jd1), jd2, np.zeros_like(jd2))
        ra_out[sel] = np.degrees(ra2) % 360.0
        dec_out[sel] = np.degrees(dec2)
    return ra_out, dec_out


def max_displacement_arcsec(pm_max_masyr: float, dt_max_yr: float) -> float:
    """An upper bound on how far any row moves: ``|pm| * |dt|``, plus 1% for perspective effects and a milliarcsec."""
    return float(pm_max_masyr) * abs(float(dt_max_yr)) / 1000.0 * 1.01 + 1e-3
