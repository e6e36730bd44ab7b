"""Pictures of tables: a sky density map and the partition layout, because people would rather look."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def _mollweide_xy(ra_deg: np.ndarray, dec_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Matplotlib's mollweide axes want longitude in [-pi, pi], east to the left as astronomers draw it."""
    lon = np.radians(np.mod(ra_deg + 180.0, 360.0) - 180.0)
    return -lon, np.radians(dec_deg)


def plot_sky(pixel_counts: dict[int, int], density_order: int, partitions: np.ndarray, title: str, out: str | Path) -> Path:
    """Write a PNG: row density per square degree at ``density_order`` and the partition pixels by order."""
    import astropy.units as u
    import cdshealpix
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig = plt.figure(figsize=(13, 5.2))
    area_deg2 = 4 * np.pi * (180 / np.pi) ** 2 / (12 * 4**density_order)
    pix = np.fromiter(pixel_counts.keys(), dtype=np.uint64, count=len(pixel_counts))
    cnt = np.fromiter(pixel_counts.values(), dtype=np.float64, count=len(pixel_counts))
    ax = fig.add_subplot(1, 2, 1, projection="mollweide")
    if len(pix):
        lon, lat = cdshealpix.nested.healpix_to_lonlat(pix, density_order)
        x, y = _mollweide_xy(lon.to_value(u.deg), lat.to_value(u.deg))
        sc = ax.scatter(x, y, c=np.log10(cnt / area_deg2), s=2, cmap="viridis", marker="s", linewidths=0)
        fig.colorbar(sc, ax=ax, orientation="horizontal", pad=0.05, label="log10 rows / deg²")
    ax.set_title(f"{title}: density (order {density_order})")
    ax.grid(True, alpha=0.3)
    ax.set_xticklabels([])
    ax2 = fig.add_subplot(1, 2, 2, projection="mollweide")
    if len(partitions):
        for order in np.unique(partitions[:, 0]):
            sel = partitions[partitions[:, 0] == order, 1].astype(np.uint64)
            lon, lat = cdshealpix.nested.vertices(sel, int(order))
            for lo, la in zip(lon.to_value(u.deg), lat.to_value(u.deg)):
                x, y = _mollweide_xy(lo, la)
                if np.ptp(x) > np.pi:  # a pixel straddling the plot edge: skip its outline
                    continue
                ax2.fill(x, y, color=plt.cm.plasma(order / 12.0), alpha=0.6, linewidth=0.3, edgecolor="k")
    ax2.set_title(f"{len(partitions)} partitions (colour = HEALPix order)")
    ax2.grid(True, alpha=0.3)
    ax2.set_xticklabels([])
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    log.info("wrote %s", out)
    return out
