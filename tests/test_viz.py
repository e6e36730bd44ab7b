"""The sky map's zoom panel: its resolution follows the data, so a footprint is drawn filled (no empty bins between
rows), for a sparse and a dense table. The oracle is the raw points: rows counted in the window and the density of
a uniform field, computed directly from the coordinates the tables were made from."""

from __future__ import annotations

import astropy.units as u
import cdshealpix
import numpy as np
import pandas as pd
import pytest

from userbatch.viz import ZOOM_ROWS_PER_BIN, plot_density, plot_sky, zoom_grid

#: the footprint: RA 350..10 (through RA = 0) x Dec -10..10, and a clump of extra rows at (2, 3)
BOX = (-10.0, 10.0, -10.0, 10.0)
CLUMP = (2.0, 3.0, 0.3)


def _points(n_field: int, n_clump: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ra = rng.uniform(BOX[0], BOX[1], n_field)
    dec = np.degrees(np.arcsin(rng.uniform(np.sin(np.radians(BOX[2])), np.sin(np.radians(BOX[3])), n_field)))
    ra = np.concatenate([ra, CLUMP[0] + rng.normal(0, CLUMP[2], n_clump)]) % 360
    dec = np.concatenate([dec, CLUMP[1] + rng.normal(0, CLUMP[2], n_clump)])
    n = len(ra)
    return pd.DataFrame({"objectId": np.arange(1, n + 1, dtype=np.int64), "coord_ra": ra, "coord_dec": dec,
                         "r_psfFlux": rng.lognormal(8, 1, n)})


def _counts(df: pd.DataFrame, order: int) -> dict[int, int]:
    pix = np.asarray(cdshealpix.lonlat_to_healpix(df.coord_ra.to_numpy() * u.deg, df.coord_dec.to_numpy() * u.deg,
                                                  order))
    p, c = np.unique(pix, return_counts=True)
    return dict(zip(p.tolist(), c.tolist()))


SPARSE = (1_500, 150)  # about 3.7 rows / deg²: most order-7 pixels (0.21 deg²) are empty
DENSE = (400_000, 20_000)  # about 1,000 rows / deg²


def _check(grid, df: pd.DataFrame, n_field: int) -> None:
    """The zoom grid against the points: no empty bins inside the footprint, typical bins hold several rows, the
    rows in the window and the field's density as counted from the coordinates."""
    dens = grid.density_per_deg2
    assert dens.shape[0] == dens.shape[1] >= 6
    assert abs(grid.ra0_deg - CLUMP[0]) < 1 and abs(grid.dec0_deg - CLUMP[1]) < 1  # centred on the densest part
    xc = 0.5 * (grid.x_edges_deg[1:] + grid.x_edges_deg[:-1])
    dc = 0.5 * (grid.dec_edges_deg[1:] + grid.dec_edges_deg[:-1])
    cos0 = np.cos(np.radians(grid.dec0_deg))
    ra_c = grid.ra0_deg + xc[None, :] / cos0
    ra_c = (ra_c + 180) % 360 - 180
    margin = grid.bin_deg  # bins whose centre is a bin or more inside the footprint's edge
    inside = ((ra_c > BOX[0] + margin) & (ra_c < BOX[1] - margin)
              & (dc[:, None] > BOX[2] + margin) & (dc[:, None] < BOX[3] - margin))
    assert inside.sum() >= 0.5 * dens.size
    assert np.isnan(dens[inside]).mean() <= 0.01, np.isnan(dens[inside]).mean()
    # a typical bin holds several rows (that is what chose the bin size)
    field_deg2 = (BOX[1] - BOX[0]) * np.degrees(np.sin(np.radians(BOX[3])) - np.sin(np.radians(BOX[2])))
    field_density = n_field / field_deg2
    assert field_density * grid.bin_deg**2 >= ZOOM_ROWS_PER_BIN / 2
    # density of the uniform field, away from the clump: the points' own density within sampling noise
    far = inside & (np.hypot(xc[None, :] - (CLUMP[0] - grid.ra0_deg) * cos0, dc[:, None] - CLUMP[1]) > 2)
    assert np.nanmedian(dens[far]) == pytest.approx(field_density, rel=0.15)
    # all rows of the window, counted from the coordinates (pixels straddling the edge: within a few per cent)
    dra = ((df.coord_ra - grid.ra0_deg + 180) % 360 - 180) * cos0
    in_window = ((dra.abs() <= grid.x_edges_deg[-1]) & (df.coord_dec >= grid.dec_edges_deg[0])
                 & (df.coord_dec <= grid.dec_edges_deg[-1])).sum()
    assert grid.rows_in_window == pytest.approx(in_window, rel=0.04)


@pytest.mark.parametrize("n_field, n_clump", [SPARSE, DENSE], ids=["sparse", "dense"])
def test_the_zoom_grid_follows_the_data(n_field, n_clump, tmp_path):
    df = _points(n_field, n_clump, seed=5)
    counts = _counts(df, 7)
    grid = zoom_grid(counts, 7)
    _check(grid, df, n_field)
    out = plot_density(counts, 7, np.array([[3, 0]]), "test", tmp_path / "sky.png")
    assert out.stat().st_size > 10_000


def test_the_bins_are_coarser_for_sparse_data_and_never_finer_than_the_pixels():
    sparse = zoom_grid(_counts(_points(*SPARSE, seed=1), 7), 7)
    dense = zoom_grid(_counts(_points(*DENSE, seed=1), 7), 7)
    pixel_deg = np.sqrt(4 * np.pi * (180 / np.pi) ** 2 / (12 * 4**7))
    assert sparse.bin_deg > 2 * dense.bin_deg
    assert dense.bin_deg >= pixel_deg * 0.999
    # at a finer density order the dense table's bins get finer too (the data allows it)
    finer = zoom_grid(_counts(_points(*DENSE, seed=1), 10), 10)
    assert finer.bin_deg < dense.bin_deg / 2


def test_zoom_grid_refusals():
    with pytest.raises(ValueError, match="no rows"):
        zoom_grid({}, 7)
    with pytest.raises(ValueError, match="half_width_deg > 0"):
        zoom_grid({1: 1}, 7, half_width_deg=0)
    with pytest.raises(ValueError, match="min_bins <= max_bins"):
        zoom_grid({1: 1}, 7, min_bins=10, max_bins=5)


@pytest.mark.parametrize("n_field, n_clump", [SPARSE, (60_000, 3_000)], ids=["sparse", "dense"])
def test_plot_sky_of_a_table(n_field, n_clump, spark, ub_env, tmp_path):
    """``plot_sky`` over real tables: the PNG is written, and the zoom grid of the table's own pixel counts (what
    plot_sky draws) passes the same checks against the points the table was ingested from."""
    from userbatch.tables.catalog import Catalog
    from userbatch.tables.info import pixel_counts
    from userbatch.tables.ingest import ingest

    df = _points(n_field, n_clump, seed=9)
    path = tmp_path / "points.parquet"
    df.to_parquet(path)
    ingest(path, "dp1.obj", spark=spark, pixel_threshold=20_000)
    out = plot_sky("dp1.obj", tmp_path / "sky.png", spark=spark)
    assert out.stat().st_size > 10_000
    grid = zoom_grid(pixel_counts(spark, Catalog().get("dp1.obj"), 7), 7)
    _check(grid, df, n_field)
