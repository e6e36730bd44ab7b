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
    fig = plt.figure(figsize=(16, 5.2))
    area_deg2 = 4 * np.pi * (180 / np.pi) ** 2 / (12 * 4**density_order)
    pix = np.fromiter(pixel_counts.keys(), dtype=np.uint64, count=len(pixel_counts))
    cnt = np.fromiter(pixel_counts.values(), dtype=np.float64, count=len(pixel_counts))
    ax = fig.add_subplot(1, 3, 1, projection="mollweide")
    if len(pix):
        lon, lat = cdshealpix.nested.healpix_to_lonlat(pix, density_order)
        x, y = _mollweide_xy(lon.to_value(u.deg), lat.to_value(u.deg))
        sc = ax.scatter(x, y, c=np.log10(cnt / area_deg2), s=2, cmap="viridis", marker="s", linewidths=0)
        fig.colorbar(sc, ax=ax, orientation="horizontal", pad=0.05, label="log10 rows / deg²")
    ax.set_title(f"{title}: density (order {density_order})")
    ax.grid(True, alpha=0.3)
    ax.set_xticklabels([])
    ax2 = fig.add_subplot(1, 3, 2, projection="mollweide")
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
    if len(pix):
        _zoom_panel(fig.add_subplot(1, 3, 3), pix, cnt / area_deg2, density_order)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    log.info("wrote %s", out)
    return out


def _zoom_panel(ax, pix: np.ndarray, density: np.ndarray, order: int, half_width_deg: float = 6.0) -> None:
    """A flat RA/Dec view around the densest pixel, where a whole-sky map shows a survey footprint as a speck."""
    import astropy.units as u
    import cdshealpix

    lon, lat = cdshealpix.nested.healpix_to_lonlat(pix, order)
    ra, dec = lon.to_value(u.deg), lat.to_value(u.deg)
    peak = int(np.argmax(density))
    ra0, dec0 = ra[peak], float(np.clip(dec[peak], -90 + half_width_deg, 90 - half_width_deg))
    dra = (ra - ra0 + 180.0) % 360.0 - 180.0  # RA offsets that stay continuous through RA = 0
    cos0 = max(np.cos(np.radians(dec0)), 0.05)
    x = dra * cos0
    sel = (np.abs(x) <= half_width_deg * 1.2) & (np.abs(dec - dec0) <= half_width_deg * 1.2)
    ax.set_xlim(half_width_deg, -half_width_deg)  # east to the left
    ax.set_ylim(dec0 - half_width_deg, dec0 + half_width_deg)
    ax.set_aspect("equal")
    fig = ax.figure
    fig.canvas.draw()
    pts_per_deg = ax.get_window_extent().width * 72.0 / fig.dpi / (2 * half_width_deg)
    size_deg = float(np.degrees(np.sqrt(4 * np.pi / (12 * 4**order))))
    sc = ax.scatter(x[sel], dec[sel], c=np.log10(density[sel]), marker="s", linewidths=0,
                    s=(size_deg * pts_per_deg) ** 2, cmap="viridis")
    fig.colorbar(sc, ax=ax, orientation="horizontal", pad=0.12, label="log10 rows / deg²")
    ax.set_xlabel(f"ΔRA·cos(Dec) from {ra0:.2f}° (deg)")
    ax.set_ylabel("Dec (deg)")
    ax.set_title(f"around the densest pixel ({ra0:.2f}, {dec[peak]:.2f})")
