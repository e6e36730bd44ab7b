"""Partition plans: which HEALPix pixel (order, pixel) each row goes to. Pure numpy, no Spark.

Adaptive plans follow hats' alignment rule (dense pixels split until each holds at most ``threshold`` rows), so our
partitions are the ones hats-import would choose for the same histogram. A plan is a sorted list of disjoint
pixels; a row finds its partition by a binary search of its order-29 index over the pixels' index ranges.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ..errors import UserbatchError
from ..sky.healpix import pixels_to_index_ranges

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 1_000_000
DEFAULT_HIGHEST_ORDER = 9
#: Finest order a partition may have (HATS catalogs stay well below it).
MAX_PARTITION_ORDER = 20


@dataclass(frozen=True)
class PartitionPlan:
    partitions: np.ndarray  # (n, 2) int64 (order, pixel), sorted by the start of their index range
    counts: np.ndarray | None = None  # rows per partition in the data the plan was made from

    def __post_init__(self):
        parts = np.asarray(self.partitions, dtype=np.int64).reshape(-1, 2)
        starts = pixels_to_index_ranges(parts[:, 0], parts[:, 1])[0]
        order = np.argsort(starts, kind="stable")
        object.__setattr__(self, "partitions", parts[order])
        if self.counts is not None:
            object.__setattr__(self, "counts", np.asarray(self.counts, dtype=np.int64)[order])

    @property
    def starts(self) -> np.ndarray:
        return pixels_to_index_ranges(self.partitions[:, 0], self.partitions[:, 1])[0]

    @property
    def ends(self) -> np.ndarray:
        return pixels_to_index_ranges(self.partitions[:, 0], self.partitions[:, 1])[1]

    def lookup(self, index: np.ndarray) -> np.ndarray:
        """Partition position of each order-29 index, -1 where no partition covers it."""
        starts, ends = self.starts, self.ends
        pos = np.searchsorted(starts, index, side="right") - 1
        ok = (pos >= 0) & (index < ends[np.clip(pos, 0, None)])
        return np.where(ok, pos, -1)

    def __len__(self) -> int:
        return len(self.partitions)


def align(
    pixels: np.ndarray,
    counts: np.ndarray,
    highest_order: int,
    *,
    threshold: int = DEFAULT_THRESHOLD,
    lowest_order: int = 0,
    blocked: np.ndarray | None = None,
    use_lower_order: bool = True,
) -> np.ndarray:
    """Final order of each non-empty pixel at ``highest_order``: hats' alignment with empty siblings dropped.

    ``use_lower_order`` (what hats-import does) first lowers the highest order to the coarsest one at which no
    pixel exceeds the threshold, so sparse data is not split finer than it needs to be.

    Same rule as ``hats.pixel_math.partition_stats.generate_alignment(..., drop_empty_siblings=True)``: a pixel
    at order o absorbs its children when it holds at most ``threshold`` rows and more than one child is non-empty;
    the coarsest such ancestor wins. Works on the sparse list of non-empty pixels, so the cost follows the data
    and not the 12 * 4**k bins of the dense histogram (hats' loop takes seconds at order 9).
    ``blocked`` (n, 2) half-open order-29 ranges may not be overlapped by a collapsed pixel (an append keeps the
    partitions the table already has).
    """
    pixels = np.asarray(pixels, dtype=np.int64)
    counts = np.asarray(counts, dtype=np.int64)
    if lowest_order > highest_order:
        raise UserbatchError("lowest order must not exceed the highest order")
    if use_lower_order and blocked is None:  # an append keeps the orders it has
        effective = _effective_highest_order(pixels, counts, highest_order, lowest_order, threshold)
        if effective < highest_order:
            coarse, inverse = np.unique(pixels >> (2 * (highest_order - effective)), return_inverse=True)
            sums = np.bincount(inverse.ravel(), weights=counts).astype(np.int64)
            final = align(coarse, sums, effective, threshold=threshold, lowest_order=lowest_order, blocked=blocked,
                          use_lower_order=False)
            return final[inverse.ravel()]
    sort = np.argsort(pixels, kind="stable")
    pixels, counts = pixels[sort], counts[sort]
    final = np.full(len(pixels), highest_order, dtype=np.int64)
    child = pixels
    for order in range(highest_order - 1, lowest_order - 1, -1):
        parent = pixels >> (2 * (highest_order - order))
        # sorted input: a new parent / a new child starts wherever the shifted value changes
        new_parent = np.empty(len(parent), dtype=bool)
        new_parent[:1] = True
        new_parent[1:] = parent[1:] != parent[:-1]
        new_child = np.empty(len(child), dtype=bool)
        new_child[:1] = True
        new_child[1:] = child[1:] != child[:-1]
        inverse = np.cumsum(new_parent) - 1
        uparent = parent[new_parent]
        sums = np.bincount(inverse, weights=counts)
        nchild = np.bincount(inverse, weights=new_child)
        collapse = (sums <= threshold) & (nchild > 1)
        if blocked is not None and len(blocked):
            lo, hi = pixels_to_index_ranges(order, uparent)
            pos = np.searchsorted(blocked[:, 1], lo, side="right")
            overlaps = (pos < len(blocked)) & (blocked[np.clip(pos, 0, len(blocked) - 1), 0] < hi)
            collapse &= ~overlaps
        final = np.where(collapse[inverse], order, final)
        child = parent
    out = np.empty_like(final)
    out[sort] = final
    return out


def _effective_highest_order(pixels, counts, highest_order: int, lowest_order: int, threshold: int) -> int:
    """hats' ``use_lower_order``: walk down from the highest order while every pixel still fits the threshold."""
    effective = highest_order
    for order in range(highest_order, lowest_order, -1):
        _, inverse = np.unique(pixels >> (2 * (highest_order - order)), return_inverse=True)
        if np.bincount(inverse.ravel(), weights=counts).max(initial=0) > threshold:
            break
        effective = order
    return effective


def plan_from_histogram(
    pixels: np.ndarray,
    counts: np.ndarray,
    histogram_order: int,
    *,
    partition_order: int | None = None,
    threshold: int = DEFAULT_THRESHOLD,
    lowest_order: int = 0,
    existing: np.ndarray | None = None,
) -> PartitionPlan:
    """Choose partitions for data whose non-empty pixels at ``histogram_order`` hold ``counts`` rows.

    ``partition_order`` fixes the order; otherwise pixels adapt to ``threshold``. ``existing`` (order, pixel)
    pairs are kept as they are (an append): data inside them goes there, new pixels are made only outside them.
    """
    pixels = np.asarray(pixels, dtype=np.int64)
    counts = np.asarray(counts, dtype=np.int64)
    if not 0 <= histogram_order <= MAX_PARTITION_ORDER:
        raise UserbatchError(f"the highest partition order must be in 0..{MAX_PARTITION_ORDER}; got {histogram_order}")
    if partition_order is not None and not 0 <= partition_order <= histogram_order:
        raise UserbatchError(f"partition order must be in 0..{histogram_order}; got {partition_order}")
    dest_order = np.full(len(pixels), histogram_order, dtype=np.int64)
    keep_existing = existing is not None and len(existing) > 0
    if keep_existing:
        old = PartitionPlan(existing)
        inside = old.lookup(pixels_to_index_ranges(histogram_order, pixels)[0])
        covered = inside >= 0
        blocked = np.column_stack([old.starts, old.ends])
    else:
        covered = np.zeros(len(pixels), dtype=bool)
        blocked = None
    free = ~covered
    if partition_order is not None:
        dest_order[free] = partition_order
    elif free.any():
        dest_order[free] = align(pixels[free], counts[free], histogram_order, threshold=threshold,
                                 lowest_order=lowest_order, blocked=blocked)
    dest_pixel = pixels >> (2 * (histogram_order - dest_order))
    parts = np.column_stack([dest_order[free], dest_pixel[free]])
    part_counts = counts[free]
    if keep_existing:
        parts = np.concatenate([parts, old.partitions])
        part_counts = np.concatenate([part_counts, np.bincount(inside[covered], weights=counts[covered],
                                                               minlength=len(old)).astype(np.int64)])
    key = pixels_to_index_ranges(parts[:, 0], parts[:, 1])[0]  # pixels are disjoint: range start is a key
    _, first, inv = np.unique(key, return_index=True, return_inverse=True)
    uniq = parts[first]
    total = np.bincount(inv.ravel(), weights=part_counts, minlength=len(uniq)).astype(np.int64)
    big = total > threshold
    if partition_order is None and big.any():
        log.warning("%d partition(s) exceed the %d-row threshold at the highest order %d; raise highest_order",
                    int(big.sum()), threshold, histogram_order)
    return PartitionPlan(uniq, total)


def pack_tasks(counts: np.ndarray, rows_per_task: int, max_tasks: int) -> np.ndarray:
    """Assign consecutive partitions to tasks of about ``rows_per_task`` rows; a partition never splits."""
    counts = np.asarray(counts, dtype=np.int64)
    if len(counts) == 0:
        return np.zeros(0, dtype=np.int64)
    total = int(counts.sum())
    n_tasks = int(max(1, min(max_tasks, len(counts), -(-total // max(rows_per_task, 1)))))
    target = total / n_tasks
    cum = np.cumsum(counts) - counts / 2.0  # each partition's midpoint in row order
    return np.minimum((cum // max(target, 1)).astype(np.int64), n_tasks - 1)
