"""The per-partition cross-match kernel: which right rows lie within a radius of each left row.

Why not a KD-tree (what LSDB uses): building and querying a tree costs a few microseconds per row, and the tree is
rebuilt for every partition pair. Here both sides are unit vectors hashed into a 3-D grid of cubes whose side is the
match chord, so every neighbour of a point lies in its own cube or one of the 26 around it. Sorting both sides by
cube key turns the neighbour lookup into nine monotone sweeps (the three cubes along z are adjacent keys), each
linear in the row count. Distances are chord lengths in 3-D, so the poles and RA = 0/360 need no special case.

Everything runs in numba with the GIL released, so partitions match in parallel on threads.

The one-to-one greedy (:func:`one_to_one`, with :func:`dense_keys` to number the rows it assigns) lives here too:
both engines finish a one-to-one match with it (the local engine on every pair, the Spark engine on the pairs left
after its rounds), and it is the same kind of code: numpy in, a numba loop, numpy out.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

ARCSEC_RAD = math.pi / (180.0 * 3600.0)
#: The grid never gets finer than 2**20 cubes per axis, so a cube key fits in int64 (tiny radii just use
#: cubes larger than the radius: still correct, a few more candidates).
_MAX_CELLS_PER_AXIS = 2 ** 20


_D2R = math.pi / 180.0
# Taylor coefficients of sin and cos on |t| <= pi/4, where the first omitted terms are below 1e-18.
_S3, _S5, _S7, _S9 = -1.0 / 6, 1.0 / 120, -1.0 / 5040, 1.0 / 362880
_S11, _S13, _S15, _S17 = -1.0 / 39916800, 1.0 / 6227020800, -1.0 / 1307674368000, 1.0 / 355687428096000
_C2, _C4, _C6, _C8, _C10 = -0.5, 1.0 / 24, -1.0 / 720, 1.0 / 40320, -1.0 / 3628800
_C12, _C14, _C16, _C18 = 1.0 / 479001600, -1.0 / 87178291200, 1.0 / 20922789888000, -1.0 / 6402373705728000


@njit(inline="always")
def _sincos_deg(x):
    """sin and cos of ``x`` degrees, to within 1e-15 absolute, exact at multiples of 90 degrees.

    Why not ``math.sin``/``math.cos``: four libm calls per row were a third of a task's time outside the match
    itself; a polynomial has no calls, so the loop vectorises (about 2.5x faster here). The argument is reduced
    exactly to |t| <= 45 degrees (``x - 90 k`` with integer ``k``) and the quadrant picks the signs. 1e-15 of a
    unit vector is 2e-10 arcsec, far below any match radius or the 1e-6 arcsec the tests hold distances to.
    """
    k = np.floor(x / 90.0 + 0.5)
    t = (x - 90.0 * k) * _D2R
    t2 = t * t
    s = t * (1.0 + t2 * (_S3 + t2 * (_S5 + t2 * (_S7 + t2 * (_S9 + t2 * (_S11 + t2 * (_S13 + t2 * (
        _S15 + t2 * _S17))))))))
    c = 1.0 + t2 * (_C2 + t2 * (_C4 + t2 * (_C6 + t2 * (_C8 + t2 * (_C10 + t2 * (_C12 + t2 * (_C14 + t2 * (
        _C16 + t2 * _C18))))))))
    q = np.int64(k) & 3
    sin = s if q == 0 else (c if q == 1 else (-s if q == 2 else -c))
    cos = c if q == 0 else (-s if q == 1 else (-c if q == 2 else s))
    return sin, cos


@njit(nogil=True, cache=True)
def _xyz(ra_deg, dec_deg, out):
    for i in range(ra_deg.shape[0]):
        sr, cr = _sincos_deg(ra_deg[i])
        sd, cd = _sincos_deg(dec_deg[i])
        out[i, 0] = cd * cr
        out[i, 1] = cd * sr
        out[i, 2] = sd


def radec_to_xyz(ra_deg, dec_deg) -> np.ndarray:
    """Unit vectors, shape (n, 3), C-contiguous float64.

    Parameters
    ----------
    ra_deg, dec_deg : array_like
        Coordinates in degrees (finite).
    """
    ra = np.ascontiguousarray(ra_deg, dtype=np.float64)
    dec = np.ascontiguousarray(dec_deg, dtype=np.float64)
    out = np.empty((ra.shape[0], 3), dtype=np.float64)
    _xyz(ra, dec, out)
    return out


def chord(radius_arcsec: float) -> float:
    """Straight-line distance between unit vectors ``radius_arcsec`` apart on the sphere."""
    return 2.0 * math.sin(min(float(radius_arcsec), 648000.0) * ARCSEC_RAD / 2.0)


def chord_to_arcsec(chord_len: np.ndarray) -> np.ndarray:
    return 2.0 * np.arcsin(np.minimum(chord_len / 2.0, 1.0)) / ARCSEC_RAD


@njit(nogil=True, cache=True)
def _keys(xyz, cell, n_cells):
    n = xyz.shape[0]
    keys = np.empty(n, dtype=np.int64)
    for i in range(n):
        ix = np.int64((xyz[i, 0] + 1.0) / cell) + 1
        iy = np.int64((xyz[i, 1] + 1.0) / cell) + 1
        iz = np.int64((xyz[i, 2] + 1.0) / cell) + 1
        keys[i] = (ix * n_cells + iy) * n_cells + iz
    return keys


@njit(nogil=True, cache=True)
def _gather(xyz, order):
    out = np.empty((order.shape[0], 3), dtype=np.float64)
    for i in range(order.shape[0]):
        j = order[i]
        out[i, 0] = xyz[j, 0]
        out[i, 1] = xyz[j, 1]
        out[i, 2] = xyz[j, 2]
    return out


@njit(nogil=True, cache=True, inline="always")
def _advance(skr, ptr, o, lo, nr):
    """Move sweep pointer ``o`` to the first right key >= ``lo`` (keys only grow, so pointers never go back)."""
    p = ptr[o]
    while p < nr and skr[p] < lo:
        p += 1
    ptr[o] = p
    return p


@njit(nogil=True, cache=True, inline="always")
def _d2(rxyz, p, x, y, z):
    ex = rxyz[p, 0] - x
    ey = rxyz[p, 1] - y
    ez = rxyz[p, 2] - z
    return ex * ex + ey * ey + ez * ez


@njit(nogil=True, cache=True)
def _sweep(lxyz, kl, rxyz, skr, dmax2, dmin2, k, n_cells):
    """Both sides sorted by cube key; indices returned are positions in the sorted arrays."""
    nl = lxyz.shape[0]
    nr = rxyz.shape[0]
    offs = np.empty(9, dtype=np.int64)
    o = 0
    for dx in range(-1, 2):
        for dy in range(-1, 2):
            offs[o] = (dx * n_cells + dy) * n_cells
            o += 1
    ptr = np.zeros(9, dtype=np.int64)
    cap = max(16, nl)
    out_l = np.empty(cap, dtype=np.int64)
    out_r = np.empty(cap, dtype=np.int64)
    out_d = np.empty(cap, dtype=np.float64)
    out_k = np.empty(cap, dtype=np.int32)
    cj = np.empty(64, dtype=np.int64)
    cd = np.empty(64, dtype=np.float64)
    m = 0
    for i in range(nl):
        key = kl[i]
        x = lxyz[i, 0]
        y = lxyz[i, 1]
        z = lxyz[i, 2]
        if k == 1:
            # the common case (nearest neighbour): no candidate list, one output row at most
            bj = -1
            bd = 0.0
            for o in range(9):
                p = _advance(skr, ptr, o, key + offs[o] - 1, nr)
                hi = key + offs[o] + 1
                while p < nr and skr[p] <= hi:
                    d2 = _d2(rxyz, p, x, y, z)
                    if d2 <= dmax2 and d2 >= dmin2 and (bj < 0 or d2 < bd or (d2 == bd and p < bj)):
                        bj = p
                        bd = d2
                    p += 1
            if bj >= 0:
                out_l[m] = i
                out_r[m] = bj
                out_d[m] = math.sqrt(bd)
                out_k[m] = 1
                m += 1
            continue
        nc = 0
        for o in range(9):
            p = _advance(skr, ptr, o, key + offs[o] - 1, nr)
            hi = key + offs[o] + 1
            while p < nr and skr[p] <= hi:
                d2 = _d2(rxyz, p, x, y, z)
                if d2 <= dmax2 and d2 >= dmin2:
                    if nc == cj.shape[0]:
                        cj2 = np.empty(2 * nc, dtype=np.int64)
                        cd2 = np.empty(2 * nc, dtype=np.float64)
                        cj2[:nc] = cj
                        cd2[:nc] = cd
                        cj = cj2
                        cd = cd2
                    cj[nc] = p
                    cd[nc] = d2
                    nc += 1
                p += 1
        if nc == 0:
            continue
        # nearest first; ties broken by right row so results do not depend on sort stability
        for a in range(1, nc):
            vj = cj[a]
            vd = cd[a]
            b = a - 1
            while b >= 0 and (cd[b] > vd or (cd[b] == vd and cj[b] > vj)):
                cj[b + 1] = cj[b]
                cd[b + 1] = cd[b]
                b -= 1
            cj[b + 1] = vj
            cd[b + 1] = vd
        take = nc if k <= 0 else min(k, nc)
        if m + take > cap:
            cap = max(2 * cap, m + take)
            n_l = np.empty(cap, dtype=np.int64)
            n_r = np.empty(cap, dtype=np.int64)
            n_d = np.empty(cap, dtype=np.float64)
            n_k = np.empty(cap, dtype=np.int32)
            n_l[:m] = out_l[:m]
            n_r[:m] = out_r[:m]
            n_d[:m] = out_d[:m]
            n_k[:m] = out_k[:m]
            out_l, out_r, out_d, out_k = n_l, n_r, n_d, n_k
        for t in range(take):
            out_l[m] = i
            out_r[m] = cj[t]
            out_d[m] = math.sqrt(cd[t])
            out_k[m] = t + 1
            m += 1
    return out_l[:m], out_r[:m], out_d[:m], out_k[:m]


def match(left_xyz: np.ndarray, right_xyz: np.ndarray, radius_arcsec: float, min_radius_arcsec: float = 0.0,
          k: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (left row, right row) with ``min_radius <= separation <= radius``, the ``k`` nearest per left row.

    ``k <= 0`` keeps every pair. Returns ``(left_index, right_index, dist_arcsec, rank)``; rank 1 is the nearest.
    Pairs of one left row are consecutive, nearest first; left rows come in grid order, not input order.
    """
    dmax = chord(radius_arcsec)
    dmin = chord(min_radius_arcsec) if min_radius_arcsec > 0 else 0.0
    # a hair of slack on the squared chords, then the exact test on the angle below
    cell = max(dmax, 2.0 / _MAX_CELLS_PER_AXIS)
    n_cells = int(2.0 / cell) + 3
    lxyz = np.ascontiguousarray(left_xyz, dtype=np.float64)
    rxyz = np.ascontiguousarray(right_xyz, dtype=np.float64)
    if len(lxyz) == 0 or len(rxyz) == 0:
        return (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64), np.zeros(0, np.int32))
    # numpy's sort (GIL released) beats numba's; inputs in HEALPix order are nearly sorted by cube already
    kl = _keys(lxyz, cell, n_cells)
    kr = _keys(rxyz, cell, n_cells)
    ol = np.argsort(kl)
    orr = np.argsort(kr)
    li, ri, dc, rank = _sweep(_gather(lxyz, ol), kl[ol], _gather(rxyz, orr), kr[orr], dmax * dmax, dmin * dmin,
                              int(k), n_cells)
    return ol[li], orr[ri], chord_to_arcsec(dc), rank


@njit(nogil=True, cache=True)
def _greedy(order, lid, rid, n_left, n_right):
    used_l = np.zeros(n_left, dtype=np.bool_)
    used_r = np.zeros(n_right, dtype=np.bool_)
    keep = np.zeros(order.shape[0], dtype=np.bool_)
    for t in range(order.shape[0]):
        p = order[t]
        a = lid[p]
        b = rid[p]
        if not used_l[a] and not used_r[b]:
            used_l[a] = True
            used_r[b] = True
            keep[p] = True
    return keep


def one_to_one(left_id: np.ndarray, right_id: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """Greedy best-pairs-first assignment: a mask over the pairs keeping each left and right id at most once.

    Pairs are taken in order of distance (ties by left id, then right id); a pair is kept when neither of its rows
    is already used. ``left_id``/``right_id`` are dense integer ids (0..n-1).
    """
    if len(dist) == 0:
        return np.zeros(0, dtype=bool)
    order = np.lexsort((right_id, left_id, dist))
    return _greedy(order, left_id.astype(np.int64), right_id.astype(np.int64),
                   int(left_id.max()) + 1, int(right_id.max()) + 1)


def dense_keys(*columns: np.ndarray) -> np.ndarray:
    """Dense ids 0..n-1 of the distinct tuples, numbered in lexicographic order of the tuples.

    Parameters
    ----------
    *columns : numpy.ndarray
        Equal-length arrays; row ``i`` of the tuple is ``(columns[0][i], columns[1][i], ...)``.

    Returns
    -------
    numpy.ndarray
        int64 id per row: equal tuples get equal ids, the smallest tuple 0.
    """
    order = np.lexsort(tuple(reversed(columns)))
    change = np.zeros(len(order), dtype=bool)
    if len(order):
        change[0] = True
        for c in columns:
            s = c[order]
            change[1:] |= s[1:] != s[:-1]
    ids = np.empty(len(order), dtype=np.int64)
    ids[order] = np.cumsum(change) - 1
    return ids
