"""Tests for userbatch.sim: the survey simulator every later layer uses as its input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from userbatch.sim import (
    SurveyConfig,
    iter_object_chunks,
    simulate_forced_sources,
    simulate_gaia,
    simulate_objects,
    simulate_survey,
    simulate_visits,
    write_survey,
)
from userbatch.sim import survey as sim

CFG = SurveyConfig(n_objects=3000, n_visits=160, seed=7)
BANDS = CFG.bands


@pytest.fixture(scope="module")
def tables() -> dict[str, pd.DataFrame]:
    return simulate_survey(CFG)


def test_same_config_gives_identical_tables(tables):
    again = simulate_survey(SurveyConfig(n_objects=3000, n_visits=160, seed=7))
    assert set(again) == {"object", "visit", "forced_source", "gaia"}
    for name in tables:
        pd.testing.assert_frame_equal(tables[name], again[name], check_exact=True)


def test_different_seed_gives_different_tables(tables):
    other = simulate_survey(SurveyConfig(n_objects=3000, n_visits=160, seed=8))
    assert not np.array_equal(tables["object"]["coord_ra"], other["object"]["coord_ra"])
    assert not np.array_equal(tables["visit"]["expMidptMJD"], other["visit"]["expMidptMJD"])
    assert not tables["forced_source"]["psfFlux"].equals(other["forced_source"]["psfFlux"])
    assert not np.array_equal(tables["gaia"]["ra"], other["gaia"]["ra"])


def test_object_columns_and_dtypes(tables):
    obj = tables["object"]
    expected = ["objectId", "coord_ra", "coord_dec"]
    for b in BANDS:
        expected += [f"{b}_psfFlux", f"{b}_psfFluxErr"]
    expected += ["refExtendedness", "variability_class", "period_day"]
    assert list(obj.columns) == expected
    assert len(obj) == CFG.n_objects
    assert obj["objectId"].dtype == np.int64
    assert obj["objectId"].is_unique and (obj["objectId"] > 0).all()
    for col in expected[1:-3] + ["refExtendedness", "period_day"]:
        assert obj[col].dtype == np.float64, col
    assert set(obj["variability_class"]) <= {"constant", "periodic", "transient"}
    assert all(isinstance(v, str) for v in obj["variability_class"].head())
    assert set(obj["refExtendedness"]) <= {0.0, 1.0}
    for b in BANDS:
        assert (obj[f"{b}_psfFluxErr"] > 0).all()


def test_visit_forced_source_gaia_columns_and_dtypes(tables):
    visit, fs, gaia = tables["visit"], tables["forced_source"], tables["gaia"]
    assert list(visit.columns) == ["visit", "band", "expMidptMJD", "ra", "dec", "airmass", "seeing_arcsec"]
    assert visit["visit"].dtype == np.int64 and visit["visit"].is_unique
    assert len(visit) == CFG.n_visits
    assert list(fs.columns) == ["objectId", "visit", "band", "psfFlux", "psfFluxErr"]
    assert fs["objectId"].dtype == np.int64 and fs["visit"].dtype == np.int64
    assert fs["psfFlux"].dtype == np.float64 and (fs["psfFluxErr"] > 0).all()
    assert not any(k in c.lower() for c in fs.columns for k in ("mjd", "time", "midpt"))
    assert list(gaia.columns)[:8] == ["source_id", "ra", "dec", "pmra", "pmdec", "parallax", "phot_g_mean_mag",
                                      "ref_epoch"]
    assert gaia["source_id"].dtype == np.int64 and gaia["source_id"].is_unique and (gaia["source_id"] > 0).all()
    assert (gaia["ref_epoch"] == 2016.0).all()


@pytest.mark.parametrize(("table", "ra", "dec"), [("object", "coord_ra", "coord_dec"), ("visit", "ra", "dec"),
                                                  ("gaia", "ra", "dec")])
def test_positions_are_normalised(tables, table, ra, dec):
    df = tables[table]
    assert df[ra].between(0.0, 360.0, inclusive="left").all()
    assert df[dec].between(-90.0, 90.0).all()


def test_wrap_and_pole_patches_populated(tables):
    obj = tables["object"]
    ra, dec = obj["coord_ra"], obj["coord_dec"]
    pole = dec < -85.0
    main = ~pole
    assert ((ra[main] >= 350.0) | (ra[main] <= 10.0)).all() and dec[main].between(-10.0, 10.0).all()
    assert (main & (ra > 350.0)).sum() > 100 and (main & (ra < 10.0)).sum() > 100
    # The pole cap gets its area share of the non-cluster objects (about 14 % of 80 %).
    assert 0.07 < pole.mean() < 0.16
    assert obj.loc[pole, "coord_ra"].max() - obj.loc[pole, "coord_ra"].min() > 300.0
    # The cluster blob itself straddles RA = 0.
    ra_c, dec_c, rad = sim._cluster_region(CFG)
    near = _separation_deg(ra, dec, ra_c, dec_c) < rad
    assert (near & (ra > 359.0)).any() and (near & (ra < 1.0)).any()


def test_cluster_is_denser_than_median(tables):
    obj = tables["object"]
    main = obj[obj["coord_dec"] > -85.0]
    # Equal-area cells: uniform in RA (unwrapped across 0) and in sin(dec).
    ra_unwrapped = np.mod(main["coord_ra"] - 350.0, 360.0)
    sin_dec = np.sin(np.radians(main["coord_dec"]))
    s = np.sin(np.radians(10.0))
    counts, ra_edges, sin_edges = np.histogram2d(ra_unwrapped, sin_dec, bins=[20, 20], range=[[0, 20], [-s, s]])
    densest = np.unravel_index(np.argmax(counts), counts.shape)
    assert counts.max() > 10 * np.median(counts)
    ra_c, dec_c, _ = sim._cluster_region(CFG)
    cell_ra = 0.5 * (ra_edges[densest[0]] + ra_edges[densest[0] + 1]) + 350.0
    cell_dec = np.degrees(np.arcsin(0.5 * (sin_edges[densest[1]] + sin_edges[densest[1] + 1])))
    assert _separation_deg(cell_ra % 360.0, cell_dec, ra_c, dec_c) < 1.5
    # and the blob holds about cluster_fraction of all objects
    inside = _separation_deg(obj["coord_ra"], obj["coord_dec"], ra_c, dec_c) < 0.5
    assert abs(inside.mean() - CFG.cluster_fraction) < 0.02


def test_variability_classes_at_configured_fractions(tables):
    obj = tables["object"]
    frac = obj["variability_class"].value_counts(normalize=True)
    assert abs(frac["periodic"] - CFG.variable_fraction) < 0.01
    assert abs(frac["transient"] - CFG.transient_fraction) < 0.01
    periodic = obj["variability_class"] == "periodic"
    assert obj.loc[periodic, "period_day"].between(0.1, 100.0).all()
    assert obj.loc[~periodic, "period_day"].isna().all()
    assert (obj.loc[periodic, "refExtendedness"] == 0.0).all()


def test_periodic_light_curves_vary_more_than_constant(tables):
    obj, fs = tables["object"], tables["forced_source"]
    fs = fs.merge(obj[["objectId", "variability_class"]], on="objectId")
    w = 1.0 / fs["psfFluxErr"] ** 2
    fs = fs.assign(w=w, wf=w * fs["psfFlux"])
    grp = fs.groupby(["objectId", "band"])
    wmean = grp["wf"].transform("sum") / grp["w"].transform("sum")
    fs = fs.assign(chi2=((fs["psfFlux"] - wmean) / fs["psfFluxErr"]) ** 2)
    per_obj = fs.groupby(["objectId", "variability_class"]).agg(chi2=("chi2", "sum"), n=("chi2", "size"),
                                                                  nb=("band", "nunique")).reset_index()
    per_obj = per_obj[per_obj["n"] > per_obj["nb"] + 5]
    per_obj["red_chi2"] = per_obj["chi2"] / (per_obj["n"] - per_obj["nb"])
    med = per_obj.groupby("variability_class")["red_chi2"].median()
    # Noise is consistent with psfFluxErr: constant objects scatter at chi2/dof ~ 1.
    assert 0.8 < med["constant"] < 1.2
    assert med["periodic"] > 3.0 * med["constant"]
    assert med["transient"] > med["constant"]


def test_forced_source_rows_reference_object_and_visit(tables):
    obj, visit, fs = tables["object"], tables["visit"], tables["forced_source"]
    assert fs["objectId"].isin(obj["objectId"]).all()
    assert fs["visit"].isin(visit["visit"]).all()
    assert not fs.duplicated(["objectId", "visit"]).any()
    joined = fs.merge(visit[["visit", "band", "dec"]], on="visit", suffixes=("", "_visit"))
    assert (joined["band"] == joined["band_visit"]).all()
    # Objects are only measured in visits pointed at their own patch (main patch or pole cap).
    joined = joined.merge(obj[["objectId", "coord_dec"]], on="objectId")
    assert ((joined["coord_dec"] < -85.0) == (joined["dec"] < -85.0)).all()
    # Each object is measured in 30-100 % of its patch's visits: enough epochs for light curves.
    n_per_obj = fs.groupby("objectId").size()
    assert n_per_obj.median() > 40


def test_forced_source_membership_does_not_depend_on_row_order(tables):
    obj, visit, fs = tables["object"], tables["visit"], tables["forced_source"]
    subset = obj.sample(200, random_state=1)
    again = simulate_forced_sources(CFG, subset, visit)
    expected = fs[fs["objectId"].isin(subset["objectId"])]
    assert set(zip(again["objectId"], again["visit"])) == set(zip(expected["objectId"], expected["visit"]))


def test_visit_cadence_is_lsst_like(tables):
    visit = tables["visit"]
    t = visit["expMidptMJD"].to_numpy()
    assert np.all(np.diff(t) >= 30.0 / 86400.0)  # sorted, exposures do not overlap
    assert t.min() >= CFG.mjd_start and t.max() <= CFG.mjd_start + CFG.survey_days + 1.0
    assert set(visit["band"]) == set(BANDS)
    # Pairs: most visits share their pointing with another visit of the same night, ~33 min apart.
    by_pointing = visit.groupby(["ra", "dec"])["expMidptMJD"].agg(["size", "min", "max"])
    assert (by_pointing["size"] == 2).mean() > 0.95
    dt_min = (by_pointing["max"] - by_pointing["min"]) * 1440.0
    assert dt_min[by_pointing["size"] == 2].between(30.0, 45.0).all()
    # Seasonal gaps for the equatorial patch (the pole cap is circumpolar and observed all year).
    main_t = np.sort(visit.loc[visit["dec"] > -85.0, "expMidptMJD"].to_numpy())
    assert np.diff(main_t).max() > 90.0
    # Visits are taken at night (local midnight is ~04:00 UTC) and at sensible airmass and seeing.
    night_frac = np.mod(t, 1.0)
    assert ((night_frac < 0.45) | (night_frac > 0.9)).all()
    assert visit["airmass"].between(1.0, 3.5).all() and visit["seeing_arcsec"].between(0.2, 4.0).all()


def test_gaia_propagates_onto_object_positions(tables):
    from astropy import units as u
    from astropy.coordinates import Distance, SkyCoord
    from astropy.time import Time

    obj, gaia = tables["object"], tables["gaia"]
    with_pm = gaia[(gaia["truth_objectId"] > 0) & gaia["pmra"].notna()]
    m = with_pm.merge(obj, left_on="truth_objectId", right_on="objectId")
    assert len(m) == len(with_pm) > 1000
    start = SkyCoord(
        ra=m["ra"].to_numpy() * u.deg, dec=m["dec"].to_numpy() * u.deg,
        pm_ra_cosdec=m["pmra"].to_numpy() * u.mas / u.yr, pm_dec=m["pmdec"].to_numpy() * u.mas / u.yr,
        distance=Distance(parallax=m["parallax"].to_numpy() * u.mas),
        radial_velocity=np.zeros(len(m)) * u.km / u.s, obstime=Time(CFG.gaia_epoch_jyear, format="jyear"),
    )
    moved = start.apply_space_motion(new_obstime=Time(CFG.observation_epoch_jyear, format="jyear"))
    target = SkyCoord(ra=m["coord_ra"].to_numpy() * u.deg, dec=m["coord_dec"].to_numpy() * u.deg)
    sep_mas = moved.separation(target).to_value(u.mas)
    assert sep_mas.max() < 1.0

    # High proper motion stars exist (one in the pole cap) and really moved: without propagation they miss badly.
    pm_total = np.hypot(m["pmra"], m["pmdec"]).to_numpy()
    high = pm_total > 500.0
    assert 3 <= high.sum() <= 20
    assert (m.loc[high, "coord_dec"] < -85.0).any()
    unmoved = SkyCoord(ra=m["ra"].to_numpy() * u.deg, dec=m["dec"].to_numpy() * u.deg)
    assert (unmoved.separation(target).to_value(u.mas)[high] > 4000.0).all()
    # The simulator's own rigorous propagation agrees with astropy to far below a mas, also near the pole.
    ra2, dec2 = sim._propagate(m["ra"].to_numpy(), m["dec"].to_numpy(), m["pmra"].to_numpy(), m["pmdec"].to_numpy(),
                               CFG.observation_epoch_jyear - CFG.gaia_epoch_jyear)
    assert np.max(_separation_deg(ra2, dec2, m["coord_ra"].to_numpy(), m["coord_dec"].to_numpy())) * 3.6e6 < 1e-3


def test_gaia_subset_shape(tables):
    obj, gaia = tables["object"], tables["gaia"]
    assert abs(len(gaia) - 0.6 * CFG.n_objects) <= 1
    matched = gaia[gaia["truth_objectId"] > 0]
    assert matched["truth_objectId"].is_unique
    stars = obj.set_index("objectId").loc[matched["truth_objectId"], "refExtendedness"]
    assert (stars == 0.0).all()
    nan_pm = gaia["pmra"].isna()
    assert 0.03 < nan_pm.mean() < 0.07
    assert (gaia["pmdec"].isna() == nan_pm).all()
    gaia_only = gaia[gaia["truth_objectId"] == 0]
    assert 0 < len(gaia_only) and (gaia_only["phot_g_mean_mag"] < 16.0).all()
    assert (gaia["parallax"].dropna() > 0).all()
    # Cluster members share a proper motion, field stars scatter.
    ra_c, dec_c, rad = sim._cluster_region(CFG)
    members = matched[_separation_deg(matched["ra"], matched["dec"], ra_c, dec_c) < 0.9 * rad].dropna()
    assert len(members) > 50 and members["pmra"].std() < 0.2


def test_iter_object_chunks_unique_ids_and_chunk_size_independent():
    cfg = SurveyConfig(n_objects=150_000, seed=3)
    chunks = list(iter_object_chunks(cfg, chunk_rows=40_000))
    assert [c.num_rows for c in chunks] == [40_000, 40_000, 40_000, 30_000]
    schema = chunks[0].schema
    assert all(c.schema == schema for c in chunks)
    assert schema.field("objectId").type == pa.int64() and schema.field("variability_class").type == pa.string()
    ids = np.concatenate([c.column("objectId").to_numpy() for c in chunks])
    assert len(np.unique(ids)) == cfg.n_objects and ids.min() > 0
    whole = pa.concat_tables(chunks)
    pd.testing.assert_frame_equal(whole.to_pandas(),
                                  pa.concat_tables(iter_object_chunks(cfg, chunk_rows=65_537)).to_pandas())
    small = simulate_objects(SurveyConfig(n_objects=2000, seed=3))
    pd.testing.assert_frame_equal(pa.concat_tables(iter_object_chunks(SurveyConfig(n_objects=2000, seed=3),
                                                                      chunk_rows=700)).to_pandas(), small)
    # Later blocks carry the same structure as the first (cluster share, classes) from their own seed.
    tail = whole.slice(140_000).to_pandas()
    assert abs((tail["variability_class"] == "periodic").mean() - cfg.variable_fraction) < 0.02


def test_custom_footprint_without_wrap_and_with_wrap():
    for footprint in [(100.0, 120.0, 20.0, 30.0), (355.0, 5.0, -40.0, -30.0)]:
        cfg = SurveyConfig(n_objects=500, n_visits=40, seed=1, footprint=footprint)
        obj = simulate_objects(cfg)
        inside = sim._patch_index(cfg, obj["coord_ra"].to_numpy(), obj["coord_dec"].to_numpy()) == 0
        assert inside.all()
        visits = simulate_visits(cfg)
        assert len(visits) == 40
        assert (sim._patch_index(cfg, visits["ra"].to_numpy(), visits["dec"].to_numpy()) == 0).all()
        fs = simulate_forced_sources(cfg, obj, visits)
        assert fs["objectId"].nunique() > 450
        assert len(simulate_gaia(cfg, obj)) == 300


def test_odd_visit_count_and_explicit_gaia_size():
    cfg = SurveyConfig(n_objects=400, n_visits=31, n_gaia=100, seed=5, bands=("g", "r", "i"))
    visits = simulate_visits(cfg)
    assert len(visits) == 31 and set(visits["band"]) == {"g", "r", "i"}
    obj = simulate_objects(cfg)
    assert [c for c in obj.columns if c.endswith("_psfFlux")] == ["g_psfFlux", "r_psfFlux", "i_psfFlux"]
    assert len(simulate_gaia(cfg, obj)) == 100


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_write_survey(tmp_path, fmt):
    cfg = SurveyConfig(n_objects=300, n_visits=20, seed=2)
    paths = write_survey(cfg, tmp_path / "out", fmt=fmt)
    assert set(paths) == {"object", "visit", "forced_source", "gaia"}
    expected = simulate_survey(cfg)
    for name, path in paths.items():
        assert path.exists() and path.suffix == f".{fmt}"
        back = pq.read_table(path).to_pandas() if fmt == "parquet" else pd.read_csv(path)
        pd.testing.assert_frame_equal(back, expected[name], check_exact=fmt == "parquet")


def test_bad_configs_are_rejected_with_a_message():
    with pytest.raises(ValueError, match="variable_fraction"):
        SurveyConfig(variable_fraction=0.9, transient_fraction=0.2)
    with pytest.raises(ValueError, match="footprint"):
        SurveyConfig(footprint=(10.0, 20.0, 30.0, 20.0))
    with pytest.raises(ValueError, match="bands"):
        SurveyConfig(bands=("g", "g"))
    with pytest.raises(ValueError, match="fmt"):
        write_survey(SurveyConfig(n_objects=10, n_visits=2), "/nonexistent-never-written", fmt="fits")
    with pytest.raises(ValueError, match="chunk_rows"):
        next(iter_object_chunks(SurveyConfig(n_objects=10), chunk_rows=0))


def _separation_deg(ra1, dec1, ra2, dec2):
    """Haversine separation in degrees (vectorised, accurate at small angles)."""
    ra1, dec1, ra2, dec2 = (np.radians(np.asarray(x, dtype=np.float64)) for x in (ra1, dec1, ra2, dec2))
    h = np.sin((dec2 - dec1) / 2) ** 2 + np.cos(dec1) * np.cos(dec2) * np.sin((ra2 - ra1) / 2) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0))))
