"""Pictures of tables: a sky density map and the partition layout, because people would rather look."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def _mollweide_xy(ra_deg: np.ndarray, dec_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Matplotlib's mollweide axes want longitude in [-pi, pi], east to the left as astronomers draw it."""
    lon = np.radians(np.mod(ra_deg + 180.0, 360.0) - 180.0)
    return -lon, np.radians(dec_deg)


def plot_sky(table, out: str | Path | None = None, *, order: int = 7, version: int | None = None, spark=None,
             catalog=None) -> Path:
    """Draw one catalog table's sky: row density, its partitions by HEALPix order, and a zoom on the densest part
    (binned by :func:`zoom_grid`, whose bins hold several rows each, so a footprint is drawn filled).

    Parameters
    ----------
    table : str or TableEntry
        A catalog table (``"dp1.object"``).
    out : str or Path, optional
        The PNG to write (default ``<table>_sky.png`` in the current directory).
    order : int
        HEALPix order of the density map (7: pixels of about 0.46 deg).
    version : int, optional
        The table version (default: the latest, or the pinned one in a facility run).
    spark : SparkSession, optional
        The session that counts the rows (default: the running one, or a new one).
    catalog : Catalog, optional
        The catalog the table is in.

    Returns
    -------
    Path
        The PNG written.
    """
    from .engine import get_session
    from .tables.catalog import Catalog, TableEntry
    from .tables.info import partitions_of, pixel_counts
    from .tables.read import resolve

    entry = table if isinstance(table, TableEntry) else (catalog or Catalog()).get(table)
    counts = pixel_counts(spark or get_session(), entry, order, version)
    out = Path(out) if out is not None else Path(f"{entry.name}_sky.png")
    return plot_density(counts, order, partitions_of(resolve(entry, version=version)), entry.name, out)


def plot_density(pixel_counts: dict[int, int], density_order: int, partitions: np.ndarray, title: str,
                 out: str | Path) -> Path:
    """Write a PNG from counts already made: row density per square degree at ``density_order`` and the partition
    pixels by order (what :func:`plot_sky` draws for a table).

    Parameters
    ----------
    pixel_counts : dict of int to int
        Rows per nested pixel at ``density_order``.
    density_order : int
        The HEALPix order of ``pixel_counts``.
    partitions : numpy.ndarray
        ``(n, 2)`` array of (order, pixel) partitions.
    title : str
        The title above the panels.
    out : str or Path
        The PNG to write.

    Returns
    -------
    Path
    """
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
        _zoom_panel(fig.add_subplot(1, 3, 3), zoom_grid(pixel_counts, density_order))
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    log.info("wrote %s", out)
    return out


#: rows a typical bin of the zoom panel should hold: fewer and the panel is mostly noise and empty bins
ZOOM_ROWS_PER_BIN = 8.0


@dataclass(frozen=True)
class ZoomGrid:
    """The zoom panel's picture: row density on a flat grid around ``(ra0_deg, dec0_deg)``.

    ``density_per_deg2[i, j]`` is the density in Dec bin ``i`` and ΔRA·cos(Dec0) bin ``j`` (NaN where the bin holds
    no rows: sky outside the data). ``bin_deg`` is the bin's side, chosen from the data (:func:`zoom_grid`).
    """

    density_per_deg2: np.ndarray
    x_edges_deg: np.ndarray
    dec_edges_deg: np.ndarray
    ra0_deg: float
    dec0_deg: float
    bin_deg: float
    rows_in_window: float


def zoom_grid(pixel_counts: dict[int, int], order: int, *, half_width_deg: float = 6.0,
              rows_per_bin: float = ZOOM_ROWS_PER_BIN, min_bins: int = 6, max_bins: int = 120) -> ZoomGrid:
    """Bin the rows around the densest pixel on a flat RA/Dec grid whose resolution follows the data.

    A grid finer than the data shows empty bins between rows (the white dashes of a 2-D histogram binned below
    the data's spacing) and HEALPix pixels drawn as squares do not tile the plane. So the bin side is chosen so that
    a typical bin (at the median density of the window's non-empty pixels) holds about ``rows_per_bin`` rows, and
    never below the pixels' own size; each pixel's rows are spread evenly over its sub-pixels before binning, so
    every bin inside the data's footprint receives rows.

    Parameters
    ----------
    pixel_counts : dict of int to int
        Rows per nested HEALPix pixel at ``order`` (what :func:`userbatch.tables.info.pixel_counts` returns).
    order : int
        The HEALPix order of ``pixel_counts``.
    half_width_deg : float
        Half the side of the square window, in degrees.
    rows_per_bin : float
        Rows a typical bin should hold.
    min_bins, max_bins : int
        Bounds on the number of bins along a side.

    Returns
    -------
    ZoomGrid
        The density grid (rows per square degree, NaN where empty), its edges and the bin side.
    """
    import astropy.units as u
    import cdshealpix

    if not pixel_counts:
        raise ValueError("no rows to draw: pixel_counts is empty")
    if not (half_width_deg > 0 and rows_per_bin > 0 and 1 <= min_bins <= max_bins):
        raise ValueError("need half_width_deg > 0, rows_per_bin > 0 and 1 <= min_bins <= max_bins")
    pix = np.fromiter(pixel_counts.keys(), dtype=np.uint64, count=len(pixel_counts))
    cnt = np.fromiter(pixel_counts.values(), dtype=np.float64, count=len(pixel_counts))
    area_deg2 = 4 * np.pi * (180 / np.pi) ** 2 / (12 * 4**order)
    size_deg = float(np.sqrt(area_deg2))
    lon, lat = cdshealpix.nested.healpix_to_lonlat(pix, order)
    ra, dec = lon.to_value(u.deg), lat.to_value(u.deg)
    peak = int(np.argmax(cnt))
    ra0, dec0 = float(ra[peak]), float(np.clip(dec[peak], -90 + half_width_deg, 90 - half_width_deg))
    cos0 = max(np.cos(np.radians(dec0)), 0.05)

    def flat(ra_deg, dec_deg):
        return ((ra_deg - ra0 + 180.0) % 360.0 - 180.0) * cos0, dec_deg  # RA offsets continuous through RA = 0

    x, _ = flat(ra, dec)
    reach = half_width_deg + 2 * size_deg  # pixels whose rows may fall inside the window
    near = (np.abs(x) <= reach) & (np.abs(dec - dec0) <= reach)
    inside = near & (np.abs(x) <= half_width_deg) & (np.abs(dec - dec0) <= half_width_deg)
    typical = float(np.median(cnt[inside if inside.any() else near])) / area_deg2  # rows / deg² of the bulk
    side = 2 * half_width_deg
    bin_deg = max(np.sqrt(rows_per_bin / typical), size_deg, side / max_bins)
    n_bins = int(np.clip(np.floor(side / bin_deg), min_bins, max_bins))
    bin_deg = side / n_bins
    # spread each pixel's rows over sub-pixels at most a quarter of a bin across, so pixel centres do not alias
    depth = int(np.clip(np.ceil(np.log2(4 * size_deg / bin_deg)), 0, 6))
    children = 4**depth
    sub = (pix[near][:, None] * np.uint64(children) + np.arange(children, dtype=np.uint64)).ravel()
    lon, lat = cdshealpix.nested.healpix_to_lonlat(sub, order + depth)
    sx, sdec = flat(lon.to_value(u.deg), lat.to_value(u.deg))
    weights = np.repeat(cnt[near] / children, children)
    x_edges = np.linspace(-half_width_deg, half_width_deg, n_bins + 1)
    dec_edges = np.linspace(dec0 - half_width_deg, dec0 + half_width_deg, n_bins + 1)
    rows, _, _ = np.histogram2d(sdec, sx, bins=[dec_edges, x_edges], weights=weights)
    # true sky area of each bin: an RA range of bin_deg / cos0 between two declinations
    band = np.degrees(np.diff(np.sin(np.radians(dec_edges))))
    bin_area_deg2 = (bin_deg / cos0) * band[:, None] * np.ones((1, n_bins))
    density = np.where(rows > 0, rows / bin_area_deg2, np.nan)
    return ZoomGrid(density, x_edges, dec_edges, ra0, dec0, float(bin_deg), float(rows.sum()))


def _zoom_panel(ax, grid: ZoomGrid) -> None:
    """A flat RA/Dec view around the densest pixel, where a whole-sky map shows a survey footprint as a speck."""
    fig = ax.figure
    mesh = ax.pcolormesh(grid.x_edges_deg, grid.dec_edges_deg, np.ma.masked_invalid(np.log10(grid.density_per_deg2)),
                         cmap="viridis", shading="flat")
    ax.set_xlim(grid.x_edges_deg[-1], grid.x_edges_deg[0])  # east to the left
    ax.set_ylim(grid.dec_edges_deg[0], grid.dec_edges_deg[-1])
    ax.set_aspect("equal")
    fig.colorbar(mesh, ax=ax, orientation="horizontal", pad=0.12, label="log10 rows / deg²")
    ax.set_xlabel(f"ΔRA·cos(Dec) from {grid.ra0_deg:.2f}° (deg)")
    ax.set_ylabel("Dec (deg)")
    ax.set_title(f"around ({grid.ra0_deg:.2f}, {grid.dec0_deg:.2f}), {grid.bin_deg * 60:.0f}' bins")


BAND_COLORS = {"u": "#56b4e9", "g": "#009e73", "r": "#f0e442", "i": "#e69f00", "z": "#d55e00", "y": "#cc79a7"}


def object_rows(table: str, object_id, key: str = "objectId", columns=None):
    """One object's rows of a catalog table, read with pyarrow: the files' statistics prune the rest."""
    import pyarrow as pa
    import pyarrow.dataset as pads

    from .errors import UserbatchError
    from .tables.catalog import Catalog
    from .tables.read import resolve

    entry = Catalog().get(table)
    snap = resolve(entry)
    if key not in snap.schema.names:
        raise UserbatchError(f"{table} has no column {key!r}")
    typ = snap.schema.field(key).type
    try:
        value = pa.scalar(int(object_id) if pa.types.is_integer(typ) else str(object_id), typ)
    except ValueError:
        raise UserbatchError(f"{key} of {table} is {typ}; {object_id!r} is not one") from None
    paths = [f"{snap.location}/{p}" for p in snap.files.column("path").to_pylist()]
    ds = pads.dataset(paths, schema=snap.schema, format="parquet")
    rows = ds.to_table(columns=columns, filter=pads.field(key) == value)
    if rows.num_rows == 0:
        raise UserbatchError(f"no rows for {key} {object_id} in {table}")
    return rows, entry


def plot_lightcurve(table: str, object_id, out: str | Path, *, min_period_day: float = 0.05,
                    key: str = "objectId") -> Path:
    """A PNG of one object: flux against time per band, its multiband periodogram, the curve folded at the best
    period.

    Parameters
    ----------
    table : str
        A catalog table of per-visit rows (``"dp1.forced_source"``) with ``band``, ``psfFlux``, ``psfFluxErr``
        and a time column (the table's declared one, else ``expMidptMJD``); its latest version is read.
    object_id : int or str
        The object to draw: a value of ``key``.
    out : str or pathlib.Path
        The PNG file to write (its directory is created).
    min_period_day : float
        Shortest period of the periodogram grid, in days.
    key : str
        The object id column.

    Returns
    -------
    pathlib.Path
        ``out``, written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .ops.lightcurves import DEFAULT_TIME_COLUMN, LSST_BANDS
    from .ops.periodogram import make_grid, powers

    first, entry = object_rows(table, object_id, key)
    tcol = entry.properties.get("time_column") or DEFAULT_TIME_COLUMN
    df = first.select([key, "band", tcol, "psfFlux", "psfFluxErr"]).to_pandas()
    df = df[np.isfinite(df.psfFlux) & (df.psfFluxErr > 0) & np.isfinite(df[tcol])].sort_values(tcol)
    bands = [b for b in LSST_BANDS if b in set(df.band)]
    fig, axes = plt.subplots(3, 1, figsize=(10, 11))
    for b in bands:
        d = df[df.band == b]
        axes[0].errorbar(d[tcol], d.psfFlux, d.psfFluxErr, fmt="o", ms=3, color=BAND_COLORS[b], label=b)
    axes[0].set(xlabel=f"{tcol} (MJD)", ylabel="psfFlux (nJy)", title=f"{table} {key}={object_id}")
    axes[0].legend(ncol=len(bands) or 1, fontsize=8)
    span = float(df[tcol].max() - df[tcol].min()) if len(df) > 1 else 0.0
    if len(df) >= 5 and span > 0:
        grid = make_grid(span, min_period_day=min_period_day)
        num, den = 0.0, 0.0
        for b in bands:
            d = df[df.band == b]
            if len(d) < 5:
                continue
            t, y, dy = d[tcol].to_numpy(), d.psfFlux.to_numpy(), d.psfFluxErr.to_numpy()
            w = 1 / dy ** 2
            chi0 = float(np.sum(w * (y - np.sum(w * y) / np.sum(w)) ** 2))
            num = num + chi0 * powers(t, y[None, :], dy[None, :], grid, "finufft")[0]
            den += chi0
        if den > 0:
            p = num / den
            freq = grid.frequencies
            best = 1.0 / freq[int(np.argmax(p))]
            axes[1].plot(1.0 / freq, p, lw=0.6, color="k")
            axes[1].axvline(best, color="tab:red", lw=0.8)
            axes[1].set(xscale="log", xlabel="period (days)", ylabel="multiband LS power",
                        title=f"best period {best:.5g} d")
            for b in bands:
                d = df[df.band == b]
                phase = ((d[tcol] - df[tcol].min()) / best) % 1.0
                scale = float(np.median(d.psfFlux)) or 1.0  # bands differ by colour: compare shapes
                axes[2].errorbar(phase, d.psfFlux / scale, d.psfFluxErr / abs(scale), fmt="o", ms=3,
                                 color=BAND_COLORS[b], label=b)
            axes[2].set(xlabel=f"phase at {best:.5g} d", ylabel="psfFlux / band median")
    else:
        axes[1].text(0.5, 0.5, "too few points for a periodogram", ha="center", transform=axes[1].transAxes)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    log.info("wrote %s", out)
    return out
