"""Per-light-curve statistics in one numba pass over rows sorted by (object, band, time).

The set and definitions follow the DP1 DiaObject columns computed by ``ap_association``'s diaCalculation plugins
(so users find the numbers they know): an inverse-variance weighted mean and its error, the sample standard
deviation, chi2 about the weighted mean, the count, min/max, the bias-corrected skew (as pandas computes it), the
Stetson J index about Stetson's iteratively reweighted mean, the error-weighted linear fit of flux against time
(intercept at t = 0), the median absolute deviation, the largest time-ordered slope, the mean error, and linearly
interpolated percentiles (numpy's default). A statistic a light curve is too short for is NaN (null in tables),
never an error: 1 point for the location statistics, 2 for spread, fit, chi2, Stetson J and slope, 3 for skew.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

PERCENTILES = (5, 25, 50, 75, 95)
FEATURES = (
    "psfFluxMean", "psfFluxMeanErr", "psfFluxSigma", "psfFluxChi2", "psfFluxNdata", "psfFluxMin", "psfFluxMax",
    "psfFluxSkew", "psfFluxStetsonJ", "psfFluxLinearSlope", "psfFluxLinearIntercept", "psfFluxMAD",
    "psfFluxMaxSlope", "psfFluxErrMean",
) + tuple(f"psfFluxPercentile{p:02d}" for p in PERCENTILES)
N_FEATURES = len(FEATURES)


@njit(nogil=True, cache=True)
def _percentile_sorted(x, q):
    """numpy's default ('linear') percentile of an already sorted array."""
    pos = q / 100.0 * (x.shape[0] - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, x.shape[0] - 1)
    return x[lo] + (x[hi] - x[lo]) * (pos - lo)


@njit(nogil=True, cache=True)
def _stetson_mean(f, e, mean, n_factor):
    """Stetson (1996) iteratively reweighted mean (alpha = beta = 2, at most 20 iterations, tol 1e-6)."""
    for _ in range(20):
        sw = 0.0
        swf = 0.0
        for i in range(f.shape[0]):
            chi = abs(n_factor * (f[i] - mean) / e[i])
            w = 1.0 / (e[i] * e[i]) / (1.0 + (chi / 2.0) ** 2)
            sw += w
            swf += w * f[i]
        new = swf / sw
        diff = abs(new - mean)
        mean = new
        if diff / abs(mean) < 1e-6 and diff < 1e-6:
            break
    return mean


@njit(nogil=True, cache=True)
def segment_features(starts, t, f, e, out):
    """Fill ``out[s, :]`` with :data:`FEATURES` for rows ``starts[s]:starts[s + 1]`` (sorted by time)."""
    nseg = starts.shape[0] - 1
    for s in range(nseg):
        a = starts[s]
        b = starts[s + 1]
        n = b - a
        for j in range(N_FEATURES):
            out[s, j] = np.nan
        out[s, 4] = n
        if n == 0:
            continue
        ts = t[a:b]
        fs = f[a:b]
        es = e[a:b]
        sw = 0.0
        swf = 0.0
        se = 0.0
        fmin = fs[0]
        fmax = fs[0]
        fsum = 0.0
        for i in range(n):
            w = 1.0 / (es[i] * es[i])
            sw += w
            swf += w * fs[i]
            se += es[i]
            fsum += fs[i]
            fmin = min(fmin, fs[i])
            fmax = max(fmax, fs[i])
        mean = swf / sw
        out[s, 0] = mean
        out[s, 1] = math.sqrt(1.0 / sw)
        out[s, 5] = fmin
        out[s, 6] = fmax
        out[s, 13] = se / n
        srt = np.sort(fs)
        med = _percentile_sorted(srt, 50.0)
        for k in range(len(PERCENTILES)):
            out[s, 14 + k] = _percentile_sorted(srt, float(PERCENTILES[k]))
        dev = np.empty(n)
        for i in range(n):
            dev[i] = abs(fs[i] - med)
        out[s, 11] = _percentile_sorted(np.sort(dev), 50.0)
        if n < 2:
            continue
        amean = fsum / n
        m2 = 0.0
        m3 = 0.0
        chi2 = 0.0
        for i in range(n):
            d = fs[i] - amean
            m2 += d * d
            m3 += d * d * d
            r = (fs[i] - mean) / es[i]
            chi2 += r * r
        out[s, 2] = math.sqrt(m2 / (n - 1))
        out[s, 3] = chi2
        # Stetson J about Stetson's mean
        n_factor = math.sqrt(n / (n - 1.0))
        smean = _stetson_mean(fs, es, mean, n_factor)
        acc = 0.0
        for i in range(n):
            p = (n_factor * (fs[i] - smean) / es[i]) ** 2 - 1.0
            acc += math.copysign(math.sqrt(abs(p)), p)
        out[s, 8] = acc / n
        # error-weighted linear fit, centred on the weighted mean time for precision
        swt = 0.0
        for i in range(n):
            swt += ts[i] / (es[i] * es[i])
        tbar = swt / sw
        sxx = 0.0
        sxy = 0.0
        for i in range(n):
            w = 1.0 / (es[i] * es[i])
            dt = ts[i] - tbar
            sxx += w * dt * dt
            sxy += w * dt * (fs[i] - mean)
        if sxx > 0:
            slope = sxy / sxx
            out[s, 9] = slope
            out[s, 10] = mean - slope * tbar
        best = -np.inf
        for i in range(1, n):
            dt = ts[i] - ts[i - 1]
            if dt > 0:
                best = max(best, (fs[i] - fs[i - 1]) / dt)
        if best > -np.inf:
            out[s, 12] = best
        if n < 3:
            continue
        if m2 == 0:
            out[s, 7] = 0.0
        else:
            out[s, 7] = n * math.sqrt(n - 1.0) / (n - 2.0) * m3 / m2 ** 1.5
