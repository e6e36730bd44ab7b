"""Cross-match algorithms wired into ``crossmatch()`` (issue 18): the built-ins through the interface give exactly
the pairs of ``mode=``; ErrorAwareMatch, BayesianMatch and a class defined here give, on both engines and from
differently partitioned tables (margins, ring reads), the pairs of ``run_algorithm`` on the whole catalogues at
once; one-to-one and outer joins rank by the algorithm's score; a broken contract surfaces as
AlgorithmContractError.

Small on purpose (a few thousand rows): the pair-by-pair science checks are in test_xmatch_algorithms.py; here the
question is only whether the engines hand every task what the algorithm needs and assemble what it returns.
"""

from __future__ import annotations

import sys
from types import SimpleNamespace

import astropy.units as u
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from astropy.coordinates import SkyCoord
from astropy.time import Time
from helpers import module_facility, sky_points

from userbatch.errors import UserbatchError
from userbatch.ops.crossmatch import crossmatch
from userbatch.ops.crossmatch.algorithms import (AlgorithmContractError, AllWithin, Annulus, BayesianMatch,
                                             CrossmatchAlgorithm, ErrorAwareMatch, KNearest, NearestNeighbour,
                                             run_algorithm)
from userbatch.sky.motion import Motion
from userbatch.tables.write import write_table

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")

ENGINES = ["local", "spark"]
MARGIN = 15.0  # arcsec, both tables
RIGHT_ID0 = 1_000_000


def _make_sides(seed: int = 5) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Left: sky_points (RA seam, both polar caps, a dense clump); right: copies of 70% of them a few arcsec away
    plus unrelated points. Both with circular and elliptical sigmas and a magnitude."""
    rng = np.random.default_rng(seed)
    left = sky_points(2400, seed=seed, id_start=0)[["objectId", "coord_ra", "coord_dec"]]
    pick = rng.random(len(left)) < 0.7
    c = SkyCoord(left.coord_ra.to_numpy()[pick] * u.deg, left.coord_dec.to_numpy()[pick] * u.deg)
    moved = c.directional_offset_by(rng.uniform(0, 360, pick.sum()) * u.deg,
                                    rng.rayleigh(2.0, pick.sum()) * u.arcsec)
    extra = sky_points(600, seed=seed + 1)
    right = pd.DataFrame({"coord_ra": np.r_[moved.ra.deg % 360.0, extra.coord_ra.to_numpy()],
                          "coord_dec": np.r_[moved.dec.deg, extra.coord_dec.to_numpy()]})
    right.insert(0, "objectId", np.arange(RIGHT_ID0, RIGHT_ID0 + len(right), dtype=np.int64))
    for df in (left, right):
        n = len(df)
        df["sigma"] = rng.uniform(0.3, 2.5, n)
        df["sigma_ra"] = rng.uniform(0.3, 2.5, n)
        df["sigma_dec"] = rng.uniform(0.3, 2.5, n)
        df["rho"] = rng.uniform(-0.8, 0.8, n)
        df["mag"] = rng.uniform(15, 25, n)
    return left.reset_index(drop=True), right


@pytest.fixture(scope="module")
def xa(spark, session_home, tmp_path_factory):
    """Two small tables partitioned differently (so tasks use margins and ring reads), written once."""
    with module_facility(tmp_path_factory, "xmalg") as fx:
        left, right = _make_sides()
        write_table(spark.createDataFrame(left), "xa.left", pixel_threshold=150, margin_radius_arcsec=MARGIN)
        write_table(spark.createDataFrame(right), "xa.right", pixel_threshold=400, margin_radius_arcsec=MARGIN)
        yield SimpleNamespace(left=left, right=right, spark=spark, base=fx.base)


def _rows(df: pd.DataFrame) -> dict[str, np.ndarray]:
    """A whole catalogue as one task's rows (the brute-force input of run_algorithm)."""
    out = {c: df[c].to_numpy() for c in df.columns if c not in ("coord_ra", "coord_dec")}
    out.update(ra=df.coord_ra.to_numpy(), dec=df.coord_dec.to_numpy())
    return out


def _direct(xa, alg) -> pd.DataFrame:
    """run_algorithm on the whole catalogues at once, as (l, r, extra columns...)."""
    p = run_algorithm(alg, _rows(xa.left), _rows(xa.right))
    return pd.DataFrame({"l": xa.left.objectId.to_numpy()[p.left_idx], "r": xa.right.objectId.to_numpy()[p.right_idx],
                         **p.extra})


def _got(out: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    m = out[out.objectId.notna() & out.objectId_right.notna()]
    return pd.DataFrame({"l": m.objectId.astype(np.int64).to_numpy(), "r": m.objectId_right.astype(np.int64).to_numpy(),
                         **{n: m[n].to_numpy() for n in names}})


def assert_same(got: pd.DataFrame, want: pd.DataFrame, names: list[str], rtol: float = 1e-9) -> None:
    assert not got.duplicated(["l", "r"]).any()
    g, w = got.set_index(["l", "r"]).sort_index(), want.set_index(["l", "r"]).sort_index()
    missing, extra = w.index.difference(g.index), g.index.difference(w.index)
    assert len(missing) == 0 and len(extra) == 0, f"{len(missing)} pairs missing, {len(extra)} extra"
    for n in names:
        if np.issubdtype(w[n].dtype, np.floating):
            np.testing.assert_allclose(g[n].to_numpy(np.float64), w[n].to_numpy(np.float64), rtol=rtol, atol=1e-7,
                                       err_msg=n)
        else:
            np.testing.assert_array_equal(g[n].to_numpy(), w[n].to_numpy(), err_msg=n)


class SlowAllWithin(AllWithin):
    """AllWithin under another type: the same pairs, but through run_algorithm instead of the numba kernel."""


class BrighterWithin(CrossmatchAlgorithm):
    """A user's algorithm: right rows within the radius that are brighter than the left row, scored by how much."""

    extra_columns = pa.schema([pa.field("_dist_arcsec", pa.float64()), pa.field("gain", pa.float32())])
    score_column = "gain"
    score_higher_is_better = True

    def __init__(self, radius: float = 8.0):
        self.radius = radius

    @property
    def radius_arcsec(self) -> float:
        return self.radius

    @property
    def required_left_columns(self) -> list[str]:
        return ["mag"]

    @property
    def required_right_columns(self) -> list[str]:
        return ["mag"]

    def match(self, left, right):
        li, ri, dist = self.candidates(left, right, self.radius)
        gain = left["mag"][li] - right["mag"][ri]
        keep = gain > 0
        return li[keep], ri[keep], {"_dist_arcsec": dist[keep], "gain": gain[keep].astype(np.float32)}


class OutOfRange(BrighterWithin):
    """Breaks the contract: a right index one past the end."""

    def match(self, left, right):
        li, ri, extra = super().match(left, right)
        if len(ri):
            ri = ri.copy()
            ri[0] = len(right["ra"])
        return li, ri, extra


@pytest.fixture
def by_value():
    """Classes defined in this module travel to Spark's Python workers by value (they cannot import the test
    module); a notebook's classes do so by themselves."""
    from pyspark import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def _tables_exercise_margins(res) -> None:
    assert any(t.right_margin is not None for t in res.plan.tasks)
    assert len(res.plan.tasks) > 10


# ---------------------------------------------------------------- built-ins: exactly today's pairs


@pytest.mark.parametrize("source", ["table", "pandas"])
def test_builtins_through_the_interface_equal_mode(xa, source):
    if source == "table":
        left, right, kw = "xa.left", "xa.right", {}
    else:
        left, right = xa.left, xa.right
        kw = dict(left_ra="coord_ra", left_dec="coord_dec", right_ra="coord_ra", right_dec="coord_dec")
    cases = [(dict(radius_arcsec=8.0), NearestNeighbour(8.0)),
             (dict(radius_arcsec=8.0, mode="k_nearest", k=3), KNearest(3, 8.0)),
             (dict(radius_arcsec=8.0, mode="all"), AllWithin(8.0)),
             (dict(radius_arcsec=8.0, mode="all", min_radius_arcsec=2.0), Annulus(2.0, 8.0))]
    for mode_kw, alg in cases:
        want = crossmatch(left, right, engine="local", **mode_kw, **kw).to_arrow()
        got = crossmatch(left, right, engine="local", algorithm=alg, **kw).to_arrow()
        assert want.num_rows > 500
        assert got.equals(want), alg
    # the general path (run_algorithm in every task, not the kernel) keeps the same pairs
    want = _got(crossmatch(left, right, 8.0, mode="all", engine="local", **kw).to_pandas(), ["_dist_arcsec", "_rank"])
    got = _got(crossmatch(left, right, algorithm=SlowAllWithin(8.0), engine="local", **kw).to_pandas(),
               ["_dist_arcsec", "_rank"])
    assert_same(got, want, ["_dist_arcsec", "_rank"], rtol=1e-12)


# ---------------------------------------------------------------- science algorithms on both engines


@pytest.mark.parametrize("engine", ENGINES)
def test_error_aware_and_bayesian_equal_run_algorithm_on_everything(xa, engine):
    alg = ErrorAwareMatch(10.0, ("sigma_ra", "sigma_dec", "rho"), "sigma", n_sigma=3.0)
    res = crossmatch("xa.left", "xa.right", algorithm=alg, engine=engine)
    _tables_exercise_margins(res)
    names = ["_dist_arcsec", "_chi2", "_norm_dist", "_rank"]
    out = res.to_pandas()
    assert list(out.columns[-4:]) == names
    want = _direct(xa, alg)
    assert len(want) > 1000 and (want._rank > 1).sum() > 20
    assert_same(_got(out, names), want, names)

    alg = BayesianMatch(10.0, "sigma", "sigma", density_left_per_sr=1e6, density_right_per_sr=1e6, min_p_match=0.2,
                        k=2)
    names = ["_dist_arcsec", "_log_bayes_factor", "_p_match", "_rank"]
    want = _direct(xa, alg)
    assert len(want) > 1000 and (want._rank == 2).sum() > 10
    assert_same(_got(crossmatch("xa.left", "xa.right", algorithm=alg, engine=engine).to_pandas(), names), want,
                names)


def _greedy(pairs: pd.DataFrame, score: str, higher: bool) -> pd.DataFrame:
    used_l, used_r, keep = set(), set(), []
    s = pairs.assign(_key=-pairs[score] if higher else pairs[score]).sort_values(["_key", "l", "r"])
    for row in s.itertuples(index=False):
        if row.l not in used_l and row.r not in used_r:
            used_l.add(row.l)
            used_r.add(row.r)
            keep.append(row)
    return pd.DataFrame(keep, columns=s.columns).drop(columns="_key")


@pytest.mark.parametrize("engine", ENGINES)
def test_user_class_one_to_one_and_outer(xa, engine, by_value):
    alg = BrighterWithin(8.0)
    want = _direct(xa, alg)
    assert len(want) > 500 and want.l.duplicated().sum() > 20 and want.r.duplicated().sum() > 20
    out = crossmatch("xa.left", "xa.right", algorithm=alg, engine=engine).to_pandas()
    assert out.gain.dtype == np.float32
    assert_same(_got(out, ["_dist_arcsec", "gain"]), want, ["_dist_arcsec", "gain"], rtol=1e-6)

    # one-to-one by the largest gain, outer join: unmatched rows of both sides, the extra columns null
    best = _greedy(want, "gain", higher=True)
    out = crossmatch("xa.left", "xa.right", algorithm=alg, one_to_one=True, how="outer", engine=engine).to_pandas()
    assert_same(_got(out, ["gain"]), best, ["gain"], rtol=1e-6)
    assert len(out) == len(xa.left) + len(xa.right) - len(best)
    assert not out.objectId.dropna().duplicated().any() and not out.objectId_right.dropna().duplicated().any()
    lone = out[out.objectId.isna() | out.objectId_right.isna()]
    assert lone[["_dist_arcsec", "gain"]].isna().all().all()


def test_per_row_epoch_motion_through_the_interface():
    """Per-left-row epochs: the general path (positions propagated per epoch, then match) keeps the pairs of the
    built-in path."""
    rng = np.random.default_rng(3)
    n = 200
    stars = pd.DataFrame({"objectId": np.arange(n), "ra": rng.uniform(0, 360, n),
                          "dec": np.degrees(np.arcsin(rng.uniform(-1, 1, n))),
                          "pmra": rng.uniform(-3000, 3000, n), "pmdec": rng.uniform(-3000, 3000, n)})
    epochs = rng.choice([2019.5, 2023.25, 2027.0], n)
    moved = SkyCoord(stars.ra.to_numpy() * u.deg, stars.dec.to_numpy() * u.deg,
                     pm_ra_cosdec=stars.pmra.to_numpy() * u.mas / u.yr, pm_dec=stars.pmdec.to_numpy() * u.mas / u.yr,
                     obstime=Time(2016.0, format="jyear")).apply_space_motion(new_obstime=Time(epochs, format="jyear"))
    left = pd.DataFrame({"objectId": np.arange(n) + 10_000, "ra": moved.ra.deg, "dec": moved.dec.deg, "ep": epochs})
    kw = dict(left_ra="ra", left_dec="dec", right_ra="ra", right_dec="dec", engine="local",
              motion=Motion(epoch="ep", ref_epoch=2016.0))
    names = ["_dist_arcsec", "_rank"]
    want = _got(crossmatch(left, stars, 1.0, mode="all", **kw).to_pandas(), names)
    assert set(zip(want.l - 10_000, want.r)) >= {(i, i) for i in range(n)}
    got = _got(crossmatch(left, stars, algorithm=SlowAllWithin(1.0), **kw).to_pandas(), names)
    assert_same(got, want, names, rtol=1e-6)


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize("engine", ENGINES)
def test_contract_violation_surfaces_as_algorithm_contract_error(xa, engine, by_value):
    with pytest.raises(AlgorithmContractError, match="right_idx out of range"):
        crossmatch("xa.left", "xa.right", algorithm=OutOfRange(8.0), engine=engine).to_arrow()


def test_declaration_and_option_refusals_before_any_read(xa):
    class NoScore(BrighterWithin):
        score_column = None

    class BadScore(BrighterWithin):
        score_column = "nope"

    with pytest.raises(AlgorithmContractError, match="score_column 'nope'"):
        crossmatch("xa.nothing", "xa.right", algorithm=BadScore())  # refused before the missing table is looked up
    with pytest.raises(UserbatchError, match="no score_column"):
        crossmatch("xa.nothing", "xa.right", algorithm=NoScore(), one_to_one=True)
    with pytest.raises(UserbatchError, match="radius_arcsec cannot be given too"):
        crossmatch("xa.left", "xa.right", 5.0, algorithm=AllWithin(5.0))
    with pytest.raises(AlgorithmContractError, match="unknown algorithm"):
        crossmatch("xa.left", "xa.right", algorithm="closest")
    with pytest.raises(UserbatchError, match="magg"):
        crossmatch("xa.left", "xa.right", algorithm=ErrorAwareMatch(5.0, "magg", "sigma"))
    # a built-in by name with its parameters, as a template job gives it
    res = crossmatch("xa.left", "xa.right", algorithm="error_aware", algorithm_params={"max_radius_arcsec": 5.0})
    assert isinstance(res.options.algorithm, ErrorAwareMatch) and "ErrorAwareMatch" in res.parameters()["algorithm"]


# ---------------------------------------------------------------- a template job


USER_MODULE = '''
import numpy as np
import pyarrow as pa
from userbatch.ops.crossmatch.algorithms import CrossmatchAlgorithm


class Brighter(CrossmatchAlgorithm):
    extra_columns = pa.schema([pa.field("_dist_arcsec", pa.float64()), pa.field("gain", pa.float64())])
    score_column = "gain"
    score_higher_is_better = True

    def __init__(self, radius):
        self.radius = float(radius)

    @property
    def radius_arcsec(self):
        return self.radius

    @property
    def required_left_columns(self):
        return ["mag"]

    @property
    def required_right_columns(self):
        return ["mag"]

    def match(self, left, right):
        li, ri, dist = self.candidates(left, right, self.radius)
        gain = left["mag"][li] - right["mag"][ri]
        keep = gain > 0
        return li[keep], ri[keep], {"_dist_arcsec": dist[keep], "gain": gain[keep]}
'''


def test_template_job_with_a_user_algorithm(xa, tmp_path, monkeypatch):
    from userbatch.facility.jobmain import run_template
    from userbatch.tables.read import read_table

    (tmp_path / "my_xmatch_alg.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    base = {"left": "xa.left", "right": "xa.right", "left_columns": ["objectId", "coord_ra", "coord_dec"],
            "right_columns": ["objectId"], "engine": "local"}
    summary = run_template("crossmatch", {**base, "output": "u.brighter", "algorithm": "my_xmatch_alg:Brighter",
                                          "algorithm_params": {"radius": 8.0}})
    got = read_table("u.brighter").toPandas()
    assert summary["outputs"][0]["rows"] == len(got)
    assert_same(_got(got, ["gain"]), _direct(xa, BrighterWithin(8.0)), ["gain"], rtol=1e-6)
    with pytest.raises(UserbatchError, match="with algorithm, drop radius_arcsec"):
        run_template("crossmatch", {**base, "output": "u.never", "algorithm": "bayesian", "radius_arcsec": 3.0})
