"""Margin caches: which rows of neighbouring partitions lie close enough to a partition's edge to matter.

Same scheme as hats-import, so our margins and LSDB's agree: pick a *margin order* whose pixels are wider than the
margin radius; a row belongs to partition P's margin when its margin-order pixel touches P from outside (cdshealpix
``external_neighbours``). The result is a superset of the rows within the radius of P (never a subset), which is
what a cross-match needs; the radius is checked against the margin's width before any match uses it.
"""

from __future__ import annotations

import cdshealpix
import numpy as np

from ..errors import BadCoordinates

#: hats estimates a pixel's minimum width as its mean size / 1.6 (``healpix_shim.margin2order``, repeated here so
#: the write path does not import hats on every Spark worker); we double the radius on top of that so the
#: margin never falls short in the distorted pixels near the poles and the 8-neighbour corners.
MARGIN_SAFETY = 2.0


def margin_order(radius_arcsec: float, partition_orders) -> int:
    """Finest order whose pixels are still wider than the (safety-padded) margin radius."""
    if not (radius_arcsec > 0 and np.isfinite(radius_arcsec)):
        raise BadCoordinates(f"margin radius must be a positive number of arcsec; got {radius_arcsec!r}")
    min_width_rad = np.radians(MARGIN_SAFETY * radius_arcsec / 3600.0)
    order = int(np.clip(np.floor(np.log2(np.sqrt(np.pi / 3) / (1.6 * min_width_rad))), 0, 29))
    finest_partition = int(max(partition_orders, default=0))
    if order <= finest_partition:
        raise BadCoordinates(
            f"a {radius_arcsec} arcsec margin is wider than the table's finest partitions (order "
            f"{finest_partition}); use a smaller radius or repartition with a lower order/higher threshold"
        )
    return order


def margin_pairs(partitions: np.ndarray, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Map margin-order pixels to the partitions they border from outside.

    ``partitions`` is an (n, 2) array of (order, pixel). Returns ``(margin_pixel, partition_idx)`` sorted by
    margin pixel; a margin pixel at a corner borders several partitions and so appears several times.
    """
    mpix, pidx = [], []
    for p_order in np.unique(partitions[:, 0]):
        sel = np.flatnonzero(partitions[:, 0] == p_order)
        edges, corners = cdshealpix.nested.external_neighbours(
            partitions[sel, 1].astype(np.uint64), int(p_order), int(order - p_order)
        )
        neigh = np.concatenate([np.asarray(edges, dtype=np.int64), np.asarray(corners, dtype=np.int64)], axis=1)
        owner = np.repeat(sel, neigh.shape[1])
        flat = neigh.ravel()
        keep = flat >= 0  # -1 marks a missing corner (the 8 HEALPix base-pixel corners with 7 neighbours)
        mpix.append(flat[keep])
        pidx.append(owner[keep])
    m = np.concatenate(mpix) if mpix else np.zeros(0, np.int64)
    p = np.concatenate(pidx) if pidx else np.zeros(0, np.int64)
    order_idx = np.argsort(m, kind="stable")
    return m[order_idx], p[order_idx]
