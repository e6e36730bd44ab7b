"""Director-table ingest, light-curve features and periodograms.

Features are checked against a straightforward per-object numpy/pandas/scipy computation (an independent oracle
written from the definitions), periodograms against astropy's LombScargle on the same grid and against the periods
injected by the simulator.
"""

from __future__ import annotations

import astropy.units as u
import numpy as np
import pandas as pd
import pytest
from astropy.coordinates import SkyCoord
from astropy.timeseries import LombScargle, LombScargleMultiband
from helpers import module_facility
from scipy import stats

from userbatch.errors import ColumnNotFound, UserbatchError
from userbatch.ops.lightcurves import FEATURES, features
from userbatch.ops.periodogram import make_grid, periodogram
from userbatch.sim import SurveyConfig, simulate_survey
from userbatch.tables.director import VisitTimes, write_child_table
from userbatch.tables.write import write_table

# a survey's director tables, then features and periodograms on both engines: more than the fast tier has time for
pytestmark = pytest.mark.heavy

# ---------------------------------------------------------------- data


@pytest.fixture(scope="module")
def lc(spark, session_home, tmp_path_factory):
    """A small survey: Object (many partitions), Visit, and ForcedSource as a director child with visit times."""
    with module_facility(tmp_path_factory, "lightcurves"):
        s = simulate_survey(SurveyConfig(n_objects=400, n_visits=90, seed=5))
        obj, vis, fs = s["object"], s["visit"], s["forced_source"].copy()
        # bad rows that must be ignored, not crash: NaN flux, zero error; plus an orphan and an unknown visit
        fs.loc[fs.index[::97], "psfFlux"] = np.nan
        fs.loc[fs.index[5::101], "psfFluxErr"] = 0.0
        extra = pd.DataFrame({"objectId": [10**15, obj.objectId.iloc[0]], "visit": [vis.visit.iloc[0], 10**12],
                              "band": ["r", "r"], "psfFlux": [1.0, 1.0], "psfFluxErr": [1.0, 1.0]})
        write_table(spark.createDataFrame(obj), "dp1.object", pixel_threshold=40)
        write_table(spark.createDataFrame(vis), "dp1.visit", ra_column=None, dec_column=None)
        result = write_child_table(spark.createDataFrame(pd.concat([fs, extra], ignore_index=True)),
                                   "dp1.forced_source", parent="dp1.object", times=VisitTimes("dp1.visit"))
        truth = fs.merge(vis[["visit", "expMidptMJD"]], on="visit")
        yield {"object": obj, "visit": vis, "fs": truth, "result": result, "spark": spark}


# ---------------------------------------------------------------- director ingest


def test_director_ingest_puts_every_child_with_its_parent(lc):
    from userbatch.tables.catalog import Catalog
    from userbatch.tables.delta import history
    from userbatch.tables.read import path_pixel, resolve

    cat = Catalog()
    res = lc["result"]
    assert res.rejected == 2 and res.rows == len(lc["fs"])
    child, parent = cat.get("dp1.forced_source"), cat.get("dp1.object")
    assert child.properties["director"]["table"] == "dp1.object" and child.properties["time_column"] == "expMidptMJD"
    import pyarrow.dataset as pads

    def rows_by_pixel(entry, columns):
        snap = resolve(entry)
        parts = []
        for rel in snap.files.column("path").to_pylist():
            t = pads.dataset(f"{snap.location}/{rel}", format="parquet").to_table(columns=columns).to_pandas()
            order, pixel = path_pixel(rel)
            parts.append(t.assign(order=order, pixel=pixel))
        return pd.concat(parts, ignore_index=True), snap

    kids, ksnap = rows_by_pixel(child, ["objectId", "visit", "expMidptMJD", "coord_ra"])
    moms, psnap = rows_by_pixel(parent, ["objectId", "coord_ra"])
    assert len(kids) == len(lc["fs"])
    joined = kids.merge(moms, on="objectId", suffixes=("", "_parent"))
    assert len(joined) == len(kids)  # every child has a parent
    assert (joined.order == joined.order_parent).all() and (joined.pixel == joined.pixel_parent).all()
    assert (joined.coord_ra == joined.coord_ra_parent).all()
    # times are the visit's
    t = kids.merge(lc["visit"][["visit", "expMidptMJD"]], on="visit", suffixes=("", "_v"))
    assert (t.expMidptMJD == t.expMidptMJD_v).all()
    prov = history(child.location)[0]["provenance"]
    roles = {i["table"]: i.get("role") for i in prov["inputs"]}
    assert roles == {"dp1.object": "parent", "dp1.visit": "times"}
    assert prov["parameters"]["refused"] == {"orphans": 1, "unknown_visits": 1}


def test_director_ingest_refuses_orphans_when_asked(lc):
    spark = lc["spark"]
    df = spark.createDataFrame(pd.DataFrame({"objectId": [10**15 + 1, 10**15 + 2], "visit": [1, 1], "band": ["r", "r"],
                                             "psfFlux": [1.0, 2.0], "psfFluxErr": [1.0, 1.0]}))
    with pytest.raises(UserbatchError, match="2 row.*no parent in dp1.object"):
        write_child_table(df, "dp1.orphans", parent="dp1.object", on_orphans="error")
    with pytest.raises(ColumnNotFound, match="objectID"):
        write_child_table(df, "dp1.orphans", parent="dp1.object", key="objectID")
    with pytest.raises(UserbatchError, match="pixel_threshold is set by the parent"):
        write_child_table(df, "dp1.orphans", parent="dp1.object", pixel_threshold=10)
    from userbatch.tables.catalog import Catalog

    assert not Catalog().exists("dp1.orphans")


# ---------------------------------------------------------------- features vs an independent oracle


def _stetson_j(f, e):
    n = len(f)
    w = 1 / e ** 2
    mean = np.average(f, weights=w)
    nf = np.sqrt(n / (n - 1))
    for _ in range(20):
        chi = np.abs(nf * (f - mean) / e)
        new = np.average(f, weights=w / (1 + (chi / 2) ** 2))
        diff = abs(new - mean)
        mean = new
        if diff / abs(mean) < 1e-6 and diff < 1e-6:
            break
    p = (nf * (f - mean) / e) ** 2 - 1
    return np.mean(np.sign(p) * np.sqrt(np.abs(p)))


def oracle(fs: pd.DataFrame) -> pd.DataFrame:
    """Per (object, band), from the definitions, one group at a time."""
    good = fs[np.isfinite(fs.psfFlux) & np.isfinite(fs.psfFluxErr) & (fs.psfFluxErr > 0)]
    out = {}
    for (o, b), g in good.sort_values("expMidptMJD").groupby(["objectId", "band"]):
        f, e, t = g.psfFlux.to_numpy(), g.psfFluxErr.to_numpy(), g.expMidptMJD.to_numpy()
        n = len(f)
        w = 1 / e ** 2
        mean = np.sum(w * f) / np.sum(w)
        r = {"psfFluxMean": mean, "psfFluxMeanErr": np.sqrt(1 / np.sum(w)), "psfFluxNdata": n,
             "psfFluxMin": f.min(), "psfFluxMax": f.max(), "psfFluxErrMean": e.mean(),
             "psfFluxMAD": np.median(np.abs(f - np.median(f)))}
        for p in (5, 25, 50, 75, 95):
            r[f"psfFluxPercentile{p:02d}"] = np.percentile(f, p)
        if n >= 2:
            r["psfFluxSigma"] = np.std(f, ddof=1)
            r["psfFluxChi2"] = np.sum(((f - mean) / e) ** 2)
            r["psfFluxStetsonJ"] = _stetson_j(f, e)
            A = np.column_stack([t / e, 1 / e])
            slope, intercept = np.linalg.lstsq(A, f / e, rcond=None)[0]
            r["psfFluxLinearSlope"], r["psfFluxLinearIntercept"] = slope, intercept
            dt = np.diff(t)
            r["psfFluxMaxSlope"] = np.max(np.diff(f)[dt > 0] / dt[dt > 0]) if (dt > 0).any() else np.nan
        if n >= 3:
            r["psfFluxSkew"] = pd.Series(f).skew()
            assert np.isclose(r["psfFluxSkew"], stats.skew(f, bias=False)) or np.ptp(f) == 0
        out[(o, b)] = r
    df = pd.DataFrame.from_dict(out, orient="index")
    df.index.names = ["objectId", "band"]
    return df.reindex(columns=list(FEATURES))


RTOL = {"psfFluxLinearIntercept": 1e-6, "psfFluxLinearSlope": 1e-6, "psfFluxStetsonJ": 1e-9}


def _compare(got_long: pd.DataFrame, want: pd.DataFrame) -> None:
    got = got_long.set_index(["objectId", "band"]).sort_index()
    got = got[got.psfFluxNdata > 0]
    want = want.sort_index()
    assert list(got.index) == list(want.index)
    for c in FEATURES:
        np.testing.assert_allclose(got[c].to_numpy(float), want[c].to_numpy(float), rtol=RTOL.get(c, 1e-10),
                                   atol=1e-9, equal_nan=True, err_msg=c)


@pytest.mark.parametrize("engine", ["local", "spark"])
def test_features_equal_the_per_object_oracle(lc, engine):
    want = oracle(lc["fs"])
    got = features("dp1.forced_source", layout="long", engine=engine).to_pandas()
    _compare(got, want)
    # every object with rows is there; ones with no usable row in a band have a zero count and nulls
    assert set(got.objectId) == set(lc["fs"].objectId)


def test_features_wide_layout_and_light_curve_extractors(lc):
    import light_curve as lcp

    res = features("dp1.forced_source", bands="gr", lc_features=["StetsonK", {"BeyondNStd": {"nstd": 2.0}}])
    assert "director" in res.explain() and "no shuffle" in res.explain()
    wide = res.to_pandas().set_index("objectId")
    assert wide.shape[0] == lc["fs"].objectId.nunique()
    assert {"g_psfFluxMean", "r_lc_stetson_K", "g_lc_beyond_2_std"} <= set(wide.columns)
    assert not any(c.startswith("u_") for c in wide.columns)
    ext = lcp.Extractor(lcp.StetsonK(), lcp.BeyondNStd(nstd=2.0))
    fs = lc["fs"]
    good = fs[np.isfinite(fs.psfFlux) & (fs.psfFluxErr > 0) & (fs.band == "r")].sort_values("expMidptMJD")
    checked = 0
    for o, g in list(good.groupby("objectId"))[:40]:
        if len(g) < 3:
            continue
        want = ext(g.expMidptMJD.to_numpy(), g.psfFlux.to_numpy(), g.psfFluxErr.to_numpy())
        np.testing.assert_allclose(wide.loc[o, ["r_lc_stetson_K", "r_lc_beyond_2_std"]].to_numpy(float), want,
                                   rtol=1e-10)
        checked += 1
    assert checked > 20
    want = oracle(fs[fs.band.isin(["g", "r"])]).reset_index()
    got = wide.reset_index()
    for b in "gr":
        w = want[want.band == b].set_index("objectId")
        np.testing.assert_allclose(got.set_index("objectId").loc[w.index, f"{b}_psfFluxMean"], w.psfFluxMean,
                                   rtol=1e-10)


def test_features_without_a_director_table_group_by_spark(lc, spark):
    """The same rows written by their own (jittered) positions: an object's rows straddle partition edges, so
    the planner shuffles by object, and the answer is the same."""
    fs = lc["fs"].merge(lc["object"][["objectId", "coord_ra", "coord_dec"]], on="objectId")
    rng = np.random.default_rng(3)
    c = SkyCoord(fs.coord_ra.to_numpy() * u.deg, fs.coord_dec.to_numpy() * u.deg).directional_offset_by(
        rng.uniform(0, 360, len(fs)) * u.deg, rng.uniform(0, 600, len(fs)) * u.arcsec)
    fs = fs.assign(coord_ra=c.ra.deg % 360, coord_dec=c.dec.deg)
    write_table(spark.createDataFrame(fs), "dp1.fs_plain", pixel_threshold=300)
    res = features("dp1.fs_plain", layout="long")
    assert "shuffle" in res.explain()
    _compare(res.to_pandas(), oracle(lc["fs"]))
    with pytest.raises(UserbatchError, match="not a director table"):
        features("dp1.fs_plain", engine="local")


def test_features_in_memory_and_bad_inputs(lc):
    fs = lc["fs"]
    few = fs[fs.objectId.isin(fs.objectId.unique()[:30])]
    _compare(features(few, layout="long").to_pandas(), oracle(few))
    one = pd.DataFrame({"objectId": [7, 8, 8], "band": ["r", "r", "r"], "expMidptMJD": [1.0, 1.0, 2.0],
                        "psfFlux": [5.0, np.nan, 3.0], "psfFluxErr": [1.0, 1.0, 1.0]})
    got = features(one, layout="long", bands="r").to_pandas().set_index("objectId")
    assert got.loc[7, "psfFluxNdata"] == 1 and got.loc[7, "psfFluxMean"] == 5.0
    assert pd.isna(got.loc[7, "psfFluxSigma"]) and pd.isna(got.loc[7, "psfFluxSkew"])
    assert got.loc[8, "psfFluxNdata"] == 1  # the NaN flux is not counted
    assert features(one.iloc[:0], bands="r").to_arrow().num_rows == 0
    with pytest.raises(UserbatchError, match="LSST bands"):
        features(fs, bands=["r", "q"])
    with pytest.raises(UserbatchError, match="layout"):
        features(fs, layout="tall")
    with pytest.raises(ColumnNotFound, match="expMidptMJD.*Visit"):
        features(fs.drop(columns="expMidptMJD"))
    with pytest.raises(UserbatchError, match="no feature 'StetsonQ'"):
        features(fs, lc_features=["StetsonQ"])
    with pytest.raises(UserbatchError, match="BeyondNStd"):
        features(fs, lc_features=[{"BeyondNStd": {"sigmas": 2}}])


def test_features_write_records_provenance(lc):
    from userbatch.tables.catalog import Catalog
    from userbatch.tables.delta import history
    from userbatch.tables.read import read_table

    res = features("dp1.forced_source", bands="ri").write("u.fs_stats")
    assert res.rows == lc["fs"].objectId.nunique()
    back = read_table("u.fs_stats").toPandas()
    assert "r_psfFluxStetsonJ" in back.columns
    prov = history(Catalog().get("u.fs_stats").location)[0]["provenance"]
    assert prov["inputs"] == [{"table": "dp1.forced_source", "version": 0}]
    assert prov["parameters"]["features"]["bands"] == ["r", "i"]


# ---------------------------------------------------------------- periodograms


def _curves(kind: str, period: float, rng, n_visits=220, years=3.0):
    """LSST-like sampling: seasons of ~6 months, nightly gaps, irregular times."""
    t = np.sort(rng.uniform(0, 365.25 * years, n_visits * 3))
    t = t[((t % 365.25) < 180)][:n_visits] + 60000.0
    phase = ((t - 60000.0) / period) % 1.0
    if kind == "sine":
        f = 1000 + 300 * np.sin(2 * np.pi * phase)
    elif kind == "eclipse":
        f = 1000 * (1 - 0.5 * np.exp(-0.5 * (np.minimum(phase, 1 - phase) / 0.03) ** 2)
                    - 0.2 * np.exp(-0.5 * ((phase - 0.5) / 0.03) ** 2))
    else:
        f = np.full_like(t, 1000.0)
    err = np.full_like(t, 15.0)
    return t, f + rng.normal(0, 1, len(t)) * err, err


def _frame(specs, rng):
    rows = []
    for o, (kind, period) in enumerate(specs):
        t, f, e = _curves(kind, period, rng)
        rows.append(pd.DataFrame({"objectId": o, "band": rng.choice(list("gri"), len(t)), "expMidptMJD": t,
                                  "psfFlux": f, "psfFluxErr": e}))
    return pd.concat(rows, ignore_index=True)


def test_periodogram_recovers_injected_periods_and_agrees_with_astropy():
    rng = np.random.default_rng(8)
    specs = [("sine", p) for p in (0.31, 0.57, 1.7, 3.3, 11.0, 27.0)] + [("eclipse", p) for p in (0.8, 2.4)] + \
        [("constant", 1.0)] * 3
    df = _frame(specs, rng)
    res = periodogram(df, bands="gri", multiband=True, top_n=3)
    g = res.spec.grid
    assert g.fmax == pytest.approx(20.0, rel=1e-3) and 1 / g.fmax <= 0.31 / 2  # the grid's last step <= 1/0.05
    got = res.to_pandas().set_index("objectId")
    for o, (kind, period) in enumerate(specs):
        p = got.loc[o, "best_period_day"]
        if kind == "sine":
            assert p == pytest.approx(period, rel=0.005), (o, p, period)
        elif kind == "eclipse":  # GLS often locks onto half the period of an eclipsing binary
            assert any(abs(x / period - m) < 0.005 for x in got.loc[o, "peak_periods_day"] for m in (1.0, 0.5))
        else:
            assert got.loc[o, "best_power"] < 0.2
    # single band: power on the same grid equals astropy's, and the FAP separates variables from constants
    single = periodogram(df, bands="gri", fap=True).to_pandas()
    freq = g.frequencies
    for r in single.sample(12, random_state=1).itertuples():
        d = df[(df.objectId == r.objectId) & (df.band == r.band)]
        ref = LombScargle(d.expMidptMJD, d.psfFlux, d.psfFluxErr).power(freq, method="cython")
        assert r.best_power == pytest.approx(ref.max(), abs=1e-7)
        assert r.best_period_day == pytest.approx(1 / freq[np.argmax(ref)], rel=1e-12)
        fap = LombScargle(d.expMidptMJD, d.psfFlux, d.psfFluxErr).false_alarm_probability(
            ref.max(), method="baluev", maximum_frequency=freq[-1])
        assert r.fap == pytest.approx(fap, rel=1e-3, abs=1e-12)  # nifty vs astropy power differ ~1e-9
    const = single[single.objectId >= 8]
    assert (const.fap > 1e-3).all() and (single[single.objectId < 6].fap < 1e-10).all()


def test_multiband_power_equals_astropy_multiband():
    rng = np.random.default_rng(4)
    df = _frame([("sine", 2.2)], rng)
    res = periodogram(df, bands="gri", multiband=True, top_n=1, min_period_day=1.0, max_period_day=5.0)
    freq = res.spec.grid.frequencies
    ref = LombScargleMultiband(df.expMidptMJD, df.psfFlux, df.band, df.psfFluxErr, nterms_base=0,
                               nterms_band=1).power(freq, method="flexible")
    got = res.to_pandas().iloc[0]
    assert got.best_power == pytest.approx(ref.max(), abs=1e-4)
    assert got.best_period_day == pytest.approx(1 / freq[np.argmax(ref)], rel=1e-3)


@pytest.mark.parametrize("engine", ["local", "spark"])
def test_periodogram_on_the_director_table(lc, engine):
    obj = lc["object"].set_index("objectId")
    res = periodogram("dp1.forced_source", multiband=True, engine=engine, min_period_day=0.1)
    got = res.to_pandas().set_index("objectId")
    periodic = [o for o in obj[obj.variability_class == "periodic"].index
                if o in got.index and got.loc[o, "n_points"] >= 40]
    hits = [any(abs(got.loc[o, "best_period_day"] / obj.loc[o, "period_day"] - m) < 0.01 for m in (1.0, 0.5))
            for o in periodic]
    assert len(periodic) > 20 and sum(hits) >= 0.6 * len(periodic), (sum(hits), len(periodic))
    if engine == "spark":
        local = periodogram("dp1.forced_source", multiband=True, engine="local", min_period_day=0.1).to_pandas()
        pd.testing.assert_frame_equal(got.sort_index(), local.set_index("objectId").sort_index())


def test_periodogram_bad_inputs():
    df = _frame([("sine", 1.0)], np.random.default_rng(1))
    with pytest.raises(UserbatchError, match="backend"):
        periodogram(df, backend="gpu")
    with pytest.raises(UserbatchError, match="cufinufft"):
        periodogram(df, backend="cufinufft")
    with pytest.raises(UserbatchError, match="top_n"):
        periodogram(df, top_n=0)
    with pytest.raises(UserbatchError, match="must exceed min_period_day"):
        periodogram(df, min_period_day=2.0, max_period_day=1.0)
    with pytest.raises(UserbatchError, match="frequencies"):
        make_grid(10_000.0, min_period_day=0.001, samples_per_peak=10)
    few = df.iloc[:3]
    out = periodogram(few, bands="gri").to_pandas()
    assert out.best_period_day.isna().all() and (out.n_points >= 1).all()


def test_light_curve_jobs_write_tables_with_provenance(lc):
    from userbatch.facility.jobmain import run_template
    from userbatch.tables.read import read_table

    out = run_template("forced_source_stats", {"source": "dp1.forced_source", "output": "u.job_stats",
                                               "bands": ["g", "r"], "lc_features": ["Eta"]})
    stats = read_table("u.job_stats").toPandas()
    assert out["outputs"][0]["rows"] == len(stats) == lc["fs"].objectId.nunique()
    assert {"g_psfFluxMean", "r_lc_eta"} <= set(stats.columns)
    out = run_template("periodogram", {"source": "dp1.forced_source", "output": "u.job_periods",
                                       "multiband": True, "top_n": 2, "min_period_day": 0.1})
    periods = read_table("u.job_periods").toPandas()
    assert out["outputs"][0]["rows"] == len(periods) and "peak_periods_day" in periods.columns
    assert {i["table"] for i in out["inputs"]} == {"dp1.forced_source"}


def test_cli_ingest_with_parent_and_lightcurve_plot(lc, tmp_path):
    from click.testing import CliRunner

    from userbatch.cli import main

    fs = lc["fs"].drop(columns="expMidptMJD")
    path = tmp_path / "fs.parquet"
    fs.to_parquet(path)
    run = CliRunner().invoke(main, ["ingest", str(path), "--table", "dp1.fs_cli", "--parent", "dp1.object",
                                    "--visits", "dp1.visit"], catch_exceptions=False)
    assert run.exit_code == 0, run.output
    assert f"{len(fs):,} rows" in run.output and "of dp1.object" in run.output

    obj = lc["object"]
    oid = int(obj[obj.variability_class == "periodic"].objectId.iloc[0])
    png = tmp_path / "lc.png"
    run = CliRunner().invoke(main, ["lightcurve", "plot", str(oid), "--table", "dp1.fs_cli", "-o", str(png)],
                             catch_exceptions=False)
    assert run.exit_code == 0, run.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    run = CliRunner().invoke(main, ["lightcurve", "plot", "123456789012", "--table", "dp1.fs_cli"])
    assert run.exit_code == 2 and run.output.startswith("error: no rows for objectId 123456789012")
