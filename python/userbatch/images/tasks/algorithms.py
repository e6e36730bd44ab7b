"""Pure numpy/scipy image algorithms behind the PipelineTasks (no butler here, so they are unit-testable).

* :func:`estimate_background` -- ``masked_poly`` (sources masked by a two-scale threshold + dilation, then a
  sigma-clipped low-order 2-D polynomial fit: follows a smooth sky gradient and does not bend into the wings of
  large galaxies), ``mesh`` (median in coarse cells, bilinearly interpolated: the usual approach, which eats
  low-surface-brightness wings) and ``median`` (one clipped median per detector).
* :func:`detect_sources` -- PSF-matched-filter detection: threshold in S/N, connected components for footprints,
  local maxima as peaks (so close blends give two peaks), sub-pixel peak positions and a matched-filter flux.
* :func:`match_positions` -- nearest-neighbour match within a radius (one-to-one, greedy by distance).
* :func:`cutouts` -- postage stamps around pixel positions (NaN outside the parent image).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

__all__ = ["estimate_background", "detection_mask", "detect_sources", "match_positions", "cutouts",
           "psf_sigma"]


def psf_sigma(psf: dict) -> float:
    return float(psf["fwhm_pix"]) / (2.0 * math.sqrt(2.0 * math.log(2.0)))


def _clipped_stats(values: np.ndarray, nsig: float = 3.0, iters: int = 5) -> tuple[float, float]:
    v = values[np.isfinite(values)]
    med, sd = float(np.median(v)), float(np.std(v))
    for _ in range(iters):
        keep = np.abs(v - med) < nsig * sd
        if keep.sum() < 10:
            break
        med = float(np.median(v[keep]))
        mad = float(np.median(np.abs(v[keep] - med)))
        sd = 1.4826 * mad if mad > 0 else float(np.std(v[keep]))
    return med, sd


def detection_mask(resid: np.ndarray, noise: float, psf: dict, threshold: float = 4.0, grow: float = 6.0,
                   lsb_scale: float = 12.0, lsb_threshold: float = 4.0) -> np.ndarray:
    """Pixels belonging to sources: PSF-scale detection grown by ``grow`` px, plus a heavily smoothed
    (``lsb_scale`` px) detection that catches extended low-surface-brightness light, grown by ``lsb_scale``."""
    s = max(psf_sigma(psf), 0.5)
    sm = ndimage.gaussian_filter(resid, s, mode="nearest")
    det = sm > threshold * noise / (2.0 * math.sqrt(math.pi) * s)
    if lsb_scale > 0:
        sm2 = ndimage.gaussian_filter(resid, lsb_scale, mode="nearest")
        det2 = sm2 > lsb_threshold * noise / (2.0 * math.sqrt(math.pi) * lsb_scale)
        det2 = ndimage.binary_dilation(det2, iterations=int(round(lsb_scale)))
    else:
        det2 = np.zeros_like(det)
    if grow > 0:
        det = ndimage.distance_transform_edt(~det) <= grow
    return det | det2


def _poly_design(x: np.ndarray, y: np.ndarray, order: int) -> np.ndarray:
    cols = [x ** i * y ** j for i in range(order + 1) for j in range(order + 1 - i)]
    return np.stack(cols, axis=-1)


def estimate_background(image: np.ndarray, variance: np.ndarray | None, psf: dict, method: str = "masked_poly",
                        order: int = 2, mesh: int = 64, threshold: float = 4.0, grow: float = 6.0,
                        lsb_scale: float = 12.0, iterations: int = 3, bad: np.ndarray | None = None,
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Return (background image, mask of pixels excluded from the fit) for ``image``."""
    ny, nx = image.shape
    img = np.asarray(image, dtype=float)
    good = np.isfinite(img) if bad is None else np.isfinite(img) & ~bad
    if method == "median":
        med, _ = _clipped_stats(img[good])
        return np.full(img.shape, med), np.zeros(img.shape, bool)
    if method == "mesh":
        nby, nbx = max(ny // mesh, 1), max(nx // mesh, 1)
        grid = np.empty((nby, nbx))
        ys = np.linspace(0, ny, nby + 1).astype(int)
        xs = np.linspace(0, nx, nbx + 1).astype(int)
        for j in range(nby):
            for i in range(nbx):
                cell = img[ys[j]:ys[j + 1], xs[i]:xs[i + 1]]
                grid[j, i] = _clipped_stats(cell[good[ys[j]:ys[j + 1], xs[i]:xs[i + 1]]])[0]
        cy = 0.5 * (ys[:-1] + ys[1:]) - 0.5
        cx = 0.5 * (xs[:-1] + xs[1:]) - 0.5
        yy, xx = np.mgrid[0:ny, 0:nx]
        fy = np.interp(yy.ravel(), cy, np.arange(nby)).reshape(ny, nx)
        fx = np.interp(xx.ravel(), cx, np.arange(nbx)).reshape(ny, nx)
        # Linear extrapolation is unstable with few cells; clamp to the cell grid (bilinear inside).
        bkg = ndimage.map_coordinates(grid, [fy, fx], order=1, mode="nearest")
        return bkg, np.zeros(img.shape, bool)
    if method != "masked_poly":
        raise ValueError(f"unknown background method {method!r}; use masked_poly, mesh or median")
    med, sd = _clipped_stats(img[good])
    noise = float(np.sqrt(np.median(variance[good]))) if variance is not None else sd
    bkg = np.full(img.shape, med)
    yy, xx = np.mgrid[0:ny, 0:nx]
    u, v = (xx - 0.5 * nx) / (0.5 * nx), (yy - 0.5 * ny) / (0.5 * ny)
    design = _poly_design(u.ravel(), v.ravel(), order)
    masked = np.zeros(img.shape, bool)
    for it in range(max(iterations, 1) + 1):
        resid = np.where(good, img - bkg, 0.0)
        # First pass: the sky gradient is still in the residual, so only mask compact, significant sources.
        masked = (detection_mask(resid, noise, psf, 5.0, grow, 0.0) if it == 0 else
                  detection_mask(resid, noise, psf, threshold, grow, lsb_scale))
        use = (good & ~masked).ravel()
        if use.sum() < design.shape[1] * 20:
            use = good.ravel()
        sel = np.flatnonzero(use)
        coef = None
        for _clip in range(3):
            coef, *_ = np.linalg.lstsq(design[sel], img.ravel()[sel], rcond=None)
            r = img.ravel()[sel] - design[sel] @ coef
            keep = np.abs(r) < 3.0 * noise
            if keep.all():
                break
            sel = sel[keep]
        bkg = (design @ coef).reshape(ny, nx)
    return bkg, masked


def detect_sources(image: np.ndarray, variance: np.ndarray, psf: dict, threshold: float = 5.0,
                   min_separation: int = 2) -> dict[str, np.ndarray]:
    """Detect sources on a background-subtracted image; return columns (x, y, sn, flux, footprint, area)."""
    s = max(psf_sigma(psf), 0.5)
    img = np.nan_to_num(np.asarray(image, dtype=float))
    var = np.nan_to_num(np.asarray(variance, dtype=float), nan=np.inf)
    sm = ndimage.gaussian_filter(img, s, mode="constant")
    # Var of a unit-sum Gaussian-filtered map: sum(K^2) var = var / (4 pi s^2) for a slowly varying var.
    var_s = ndimage.gaussian_filter(var, s / math.sqrt(2.0), mode="nearest") / (4.0 * math.pi * s * s)
    sn = sm / np.sqrt(np.maximum(var_s, 1e-30))
    above = sn > threshold
    labels, nlab = ndimage.label(above)
    peaks = (sn == ndimage.maximum_filter(sn, size=2 * min_separation + 1, mode="constant")) & above
    py, px = np.nonzero(peaks)
    ny, nx = img.shape
    xs, ys = px.astype(float), py.astype(float)
    inner = (px > 0) & (px < nx - 1) & (py > 0) & (py < ny - 1)
    for arr, axis in ((xs, 1), (ys, 0)):
        ii = np.flatnonzero(inner)
        if axis == 1:
            lo, c0, hi = sm[py[ii], px[ii] - 1], sm[py[ii], px[ii]], sm[py[ii], px[ii] + 1]
        else:
            lo, c0, hi = sm[py[ii] - 1, px[ii]], sm[py[ii], px[ii]], sm[py[ii] + 1, px[ii]]
        den = lo - 2 * c0 + hi
        off = np.where(den < 0, 0.5 * (lo - hi) / np.where(den == 0, -1, den), 0.0)
        arr[ii] += np.clip(off, -0.5, 0.5)
    areas = ndimage.sum(np.ones_like(labels), labels, index=np.arange(1, nlab + 1)) if nlab else np.zeros(0)
    fp = labels[py, px]
    return {
        "x": xs, "y": ys, "sn": sn[py, px], "flux": sm[py, px] * 4.0 * math.pi * s * s,
        "footprint": fp.astype(np.int64),
        "area": np.asarray(areas, dtype=np.int64)[fp - 1] if len(fp) else np.zeros(0, np.int64),
    }


def match_positions(x1, y1, x2, y2, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one match of (x1, y1) to (x2, y2) within ``radius``; returns (index into 2 or -1, distance)."""
    from scipy.spatial import cKDTree

    x1, y1, x2, y2 = (np.asarray(a, dtype=float) for a in (x1, y1, x2, y2))
    idx = np.full(len(x1), -1, dtype=np.int64)
    dist = np.full(len(x1), np.nan)
    if len(x1) == 0 or len(x2) == 0:
        return idx, dist
    tree = cKDTree(np.column_stack([x2, y2]))
    pairs = tree.query_ball_point(np.column_stack([x1, y1]), r=radius)
    cand = [(math.hypot(x1[i] - x2[j], y1[i] - y2[j]), i, j) for i, js in enumerate(pairs) for j in js]
    used: set[int] = set()
    for d, i, j in sorted(cand):
        if idx[i] < 0 and j not in used:
            idx[i], dist[i] = j, d
            used.add(j)
    return idx, dist


def cutouts(image: np.ndarray, x: np.ndarray, y: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray,
                                                                                   np.ndarray]:
    """Stamps of odd ``size`` centred on the nearest pixel to each (x, y); returns (cube, x0, y0) where
    (x0, y0) is the parent-image pixel of each stamp's [0, 0]; pixels outside the parent are NaN."""
    h = size // 2
    ny, nx = image.shape
    cube = np.full((len(x), size, size), np.nan, dtype=np.float32)
    x0 = np.rint(np.asarray(x)).astype(int) - h
    y0 = np.rint(np.asarray(y)).astype(int) - h
    for k in range(len(x)):
        xa, ya = max(x0[k], 0), max(y0[k], 0)
        xb, yb = min(x0[k] + size, nx), min(y0[k] + size, ny)
        if xa < xb and ya < yb:
            cube[k, ya - y0[k]:yb - y0[k], xa - x0[k]:xb - x0[k]] = image[ya:yb, xa:xb]
    return cube, x0, y0
