"""The cross-match algorithm interface (``ops/crossmatch/algorithms.py``), without Spark: the built-ins against brute
force with astropy separations (the RA seam and both poles included) and against today's kernel, every contract
violation with its message, the ways to load an algorithm, and the two science algorithms pair by pair against an
independent computation (astropy separations and position angles, an explicit 2x2 inverse per pair, the Bayes
factor written out separately)."""

from __future__ import annotations

import ast
import math
import sys
from pathlib import Path

import astropy.units as u
import numpy as np
import pyarrow as pa
import pytest
from astropy.coordinates import SkyCoord, angular_separation
from helpers import sky_points
from hypothesis import given, settings, strategies as st

from userbatch.errors import UserbatchError
from userbatch.ops.crossmatch import algorithms as xa
from userbatch.ops.crossmatch.algorithms import (AlgorithmContractError, AllWithin, Annulus, BayesianMatch,
                                             CrossmatchAlgorithm, ErrorAwareMatch, KNearest, NearestNeighbour,
                                             load_algorithm, run_algorithm)

RADIUS = 600.0  # arcsec: the seam and polar caps of sky_points hold several neighbours within it


def _rows(df) -> dict[str, np.ndarray]:
    return {"ra": df["coord_ra"].to_numpy(), "dec": df["coord_dec"].to_numpy()}


@pytest.fixture(scope="module")
def sides():
    return _rows(sky_points(600, seed=1)), _rows(sky_points(600, seed=2))


@pytest.fixture(scope="module")
def brute(sides):
    """Separations (arcsec) of every left-right pair, by astropy."""
    left, right = sides
    a = SkyCoord(left["ra"][:, None] * u.deg, left["dec"][:, None] * u.deg)
    b = SkyCoord(right["ra"][None, :] * u.deg, right["dec"][None, :] * u.deg)
    return a.separation(b).arcsec


def _oracle(sep: np.ndarray, radius: float, min_radius: float = 0.0, k: int = 0):
    """(left, right) -> separation for the pairs an algorithm must return, per left row nearest first."""
    out = {}
    for i in range(sep.shape[0]):
        js = np.flatnonzero((sep[i] <= radius) & (sep[i] >= min_radius))
        js = js[np.lexsort((js, sep[i, js]))]
        for j in js[:k] if k else js:
            out[(i, int(j))] = sep[i, j]
    return out


def _near_edge(sep: np.ndarray, *radii: float) -> set:
    """Pairs within a micro-arcsecond of a radius: rounding may put them on either side, so they are not compared."""
    return {(int(i), int(j)) for r in radii if r > 0 for i, j in zip(*np.nonzero(np.abs(sep - r) < 1e-6))}


@pytest.mark.parametrize("alg,min_radius,k", [
    (NearestNeighbour(RADIUS), 0.0, 1),
    (KNearest(3, RADIUS), 0.0, 3),
    (AllWithin(RADIUS), 0.0, 0),
    (Annulus(200.0, RADIUS), 200.0, 0),
    (Annulus(200.0, RADIUS, k=2), 200.0, 2),
], ids=["nearest", "k3", "all", "annulus", "annulus_k2"])
def test_builtins_match_astropy_brute_force(sides, brute, alg, min_radius, k):
    left, right = sides
    li, ri, extra = run_algorithm(alg, left, right)
    want = _oracle(brute, RADIUS, min_radius, k)
    skip = _near_edge(brute, RADIUS, min_radius)
    got = {(int(i), int(j)): d for i, j, d in zip(li, ri, extra[xa.DIST_COLUMN])}
    assert set(got) - skip == set(want) - skip
    pairs = sorted(set(got) & set(want))
    np.testing.assert_allclose([got[p] for p in pairs], [want[p] for p in pairs], rtol=0, atol=1e-6)
    # sorted by (left, distance), ranks 1.. within each left row
    order = np.lexsort((ri, extra[xa.DIST_COLUMN], li))
    assert np.array_equal(order, np.arange(len(li)))
    np.testing.assert_array_equal(extra[xa.RANK_COLUMN], xa.rank_within_left(li))
    assert extra[xa.RANK_COLUMN].dtype == np.int32
    # the hard places are in the test: pairs across RA=0/360 and inside both polar caps
    lra, rra, ldec = left["ra"][li], right["ra"][ri], left["dec"][li]
    assert ((np.minimum(lra, rra) < 1) & (np.maximum(lra, rra) > 359)).any()
    assert (ldec > 88.5).any() and (ldec < -88.5).any()


@pytest.mark.parametrize("alg", [NearestNeighbour(RADIUS), KNearest(4, RADIUS), AllWithin(RADIUS, 100.0),
                                 Annulus(150.0, RADIUS, k=3)], ids=["nearest", "k4", "all_min", "annulus_k3"])
def test_builtins_give_the_pairs_of_todays_kernel(sides, alg):
    """Wiring the interface into the engines must not change a result: the same pairs, ranks and distances as
    ``crossmatch.kernel.match`` with the same radius, minimum radius and k."""
    kernel = pytest.importorskip("userbatch.ops.crossmatch.kernel")
    left, right = sides
    kl, kr, kd, kk = kernel.match(kernel.radec_to_xyz(left["ra"], left["dec"]),
                                  kernel.radec_to_xyz(right["ra"], right["dec"]), alg.radius_arcsec,
                                  alg.min_radius_arcsec, alg.k)
    li, ri, extra = run_algorithm(alg, left, right)
    o = np.lexsort((kr, kl))
    p = np.lexsort((ri, li))
    assert np.array_equal(kl[o], li[p]) and np.array_equal(kr[o], ri[p])
    assert np.array_equal(kk[o], extra[xa.RANK_COLUMN][p])
    np.testing.assert_allclose(kd[o], extra[xa.DIST_COLUMN][p], rtol=1e-12, atol=1e-9)


_centers = st.sampled_from([(0.0, 0.0), (359.99, 10.0), (45.0, 89.99), (300.0, -89.99), (120.0, 40.0)])


@settings(max_examples=25)
@given(center=_centers, n_left=st.integers(0, 25), n_right=st.integers(0, 25), radius=st.floats(1.0, 120.0),
       k=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_builtins_property(center, n_left, n_right, radius, k, seed):
    """On small random clumps (seam and poles among the centres): AllWithin is every pair within the radius
    (astropy), KNearest its first k per left row, NearestNeighbour its first."""
    rng = np.random.default_rng(seed)

    def clump(n):
        c = SkyCoord(center[0] * u.deg, center[1] * u.deg)
        pts = c.directional_offset_by(rng.uniform(0, 360, n) * u.deg, rng.uniform(0, 100, n) * u.arcsec)
        return {"ra": pts.ra.deg, "dec": pts.dec.deg}

    left, right = clump(n_left), clump(n_right)
    sep = np.degrees(angular_separation(*(np.radians(v) for v in (
        left["ra"][:, None], left["dec"][:, None], right["ra"][None, :], right["dec"][None, :])))) * 3600
    li, ri, extra = run_algorithm(AllWithin(radius), left, right)
    skip = _near_edge(sep, radius)
    assert {(int(i), int(j)) for i, j in zip(li, ri)} - skip == set(zip(*np.nonzero(sep <= radius))) - skip
    kn = run_algorithm(KNearest(k, radius), left, right)
    sel = extra[xa.RANK_COLUMN] <= k
    assert np.array_equal(kn.left_idx, li[sel]) and np.array_equal(kn.right_idx, ri[sel])
    nn = run_algorithm(NearestNeighbour(radius), left, right)
    assert np.array_equal(nn.right_idx, ri[extra[xa.RANK_COLUMN] == 1])


def test_run_algorithm_reads_arrow_and_pandas_with_named_coordinates():
    df = sky_points(200, seed=3)
    other = sky_points(200, seed=4)
    want = run_algorithm(AllWithin(RADIUS), _rows(df), _rows(other))
    for a, b in ((df, other), (pa.Table.from_pandas(df), pa.Table.from_pandas(other))):
        got = run_algorithm(AllWithin(RADIUS), a, b, left_coords=("coord_ra", "coord_dec"),
                            right_coords=("coord_ra", "coord_dec"))
        assert np.array_equal(got.left_idx, want.left_idx) and np.array_equal(got.right_idx, want.right_idx)
    table = want.extra_table(AllWithin.extra_columns)
    assert table.schema == AllWithin.extra_columns and table.num_rows == len(want.left_idx)


def test_an_empty_side_gives_typed_empty_pairs_without_calling_match():
    class Never(AllWithin):
        def match(self, left, right):
            raise AssertionError("match called on an empty task")

    empty = {"ra": np.zeros(0), "dec": np.zeros(0)}
    some = {"ra": np.array([1.0]), "dec": np.array([2.0])}
    for a, b in ((empty, some), (some, empty)):
        li, ri, extra = run_algorithm(Never(1.0), a, b)
        assert len(li) == len(ri) == 0 and li.dtype == np.int64
        assert extra[xa.RANK_COLUMN].dtype == np.int32 and extra[xa.DIST_COLUMN].dtype == np.float64


# ---------------------------------------------------------------- the contract


class _Fixed(CrossmatchAlgorithm):
    """Returns whatever it is told to: for breaking the contract on purpose."""

    extra_columns = pa.schema([pa.field("_score", pa.float64())])
    score_column = "_score"

    def __init__(self, result=None, radius=1.0, required=(), schema=None, score="_score"):
        self.result, self.radius, self.required = result, radius, list(required)
        if schema is not None:
            self.extra_columns = schema
        self.score_column = score

    @property
    def radius_arcsec(self):
        return self.radius

    @property
    def required_left_columns(self):
        return self.required

    def match(self, left, right):
        return self.result


_L = {"ra": np.array([1.0, 2.0, 3.0]), "dec": np.array([0.0, 0.0, 0.0])}
_R = {"ra": np.array([1.0, 2.0]), "dec": np.array([0.0, 0.0])}
_OK_IDX = (np.array([0, 2]), np.array([1, 0]))


@pytest.mark.parametrize("result,message", [
    ((*_OK_IDX, {"_score": np.ones(2), "_x": np.ones(2)}), r"undeclared extra column\(s\) \['_x'\]"),
    ((*_OK_IDX, {}), r"did not return declared extra column\(s\) \['_score'\]"),
    ((*_OK_IDX, {"_score": np.ones(2, np.float32)}), "'_score' as float; extra_columns declares double"),
    ((*_OK_IDX, {"_score": np.ones(2, np.int64)}), "'_score' as int64; extra_columns declares double"),
    ((*_OK_IDX, {"_score": pa.array([1, 2], pa.int32())}), "'_score' as int32; extra_columns declares double"),
    ((np.array([0, 1, 2]), np.array([0, 1]), {"_score": np.ones(2)}),
     "index arrays of different lengths: left_idx has 3, right_idx 2"),
    ((np.array([0, 3]), np.array([0, 1]), {"_score": np.ones(2)}), "left_idx out of range: 3 with 3 left rows"),
    ((np.array([0, 1]), np.array([0, 2]), {"_score": np.ones(2)}), "right_idx out of range: 2 with 2 right rows"),
    ((np.array([0, -1]), np.array([0, 1]), {"_score": np.ones(2)}), r"negative left_idx \(-1\)"),
    ((np.array([0, 1]), np.array([-2, 1]), {"_score": np.ones(2)}), r"negative right_idx \(-2\)"),
    ((*_OK_IDX, {"_score": np.ones(3)}), "'_score' with 3 values for 2 pairs"),
    ((*_OK_IDX, {"_score": np.ones((2, 2))}), "it must be 1-D"),
    ((np.array([0.0, 1.0]), np.array([0, 1]), {"_score": np.ones(2)}), "left_idx of dtype float64; it must hold "
                                                                       "integers"),
    ((np.array([[0, 1]]), np.array([0, 1]), {"_score": np.ones(2)}), "left_idx with shape"),
    ((*_OK_IDX,), r"must return a tuple \(left_idx, right_idx, extra\); got tuple of length 2"),
    ([*_OK_IDX, {"_score": np.ones(2)}], "got list"),
    ((*_OK_IDX, [np.ones(2)]), "returned extra as list"),
], ids=["undeclared", "missing", "float32", "int64", "arrow_int32", "idx_lengths", "left_range", "right_range",
        "neg_left", "neg_right", "extra_length", "extra_2d", "float_idx", "idx_2d", "two_tuple", "list",
        "extra_list"])
def test_contract_violations_are_named(result, message):
    with pytest.raises(AlgorithmContractError, match=message) as e:
        run_algorithm(_Fixed(result), _L, _R)
    assert isinstance(e.value, UserbatchError) and "_Fixed" in str(e.value)


def test_a_well_behaved_result_passes_and_comes_back_as_int64():
    li, ri, extra = run_algorithm(_Fixed((np.array([0, 2], np.int32), np.array([1, 0], np.uint8),
                                          {"_score": pa.array([0.5, 0.25])})), _L, _R)
    assert li.dtype == ri.dtype == np.int64 and extra["_score"].tolist() == [0.5, 0.25]
    strings = _Fixed((*_OK_IDX, {"_name": np.array(["a", "b"], dtype=object)}),
                     schema=pa.schema([pa.field("_name", pa.string())]), score=None)
    assert run_algorithm(strings, _L, _R).extra["_name"].tolist() == ["a", "b"]


@pytest.mark.parametrize("alg,message", [
    (_Fixed(radius=0.0), r"radius_arcsec must be a positive finite number of arcseconds; got 0.0"),
    (_Fixed(radius=float("nan")), "radius_arcsec must be a positive finite"),
    (_Fixed(radius="wide"), "radius_arcsec must be a number of arcseconds"),
    (_Fixed(score="_p"), r"score_column '_p' is not one of its extra_columns \(_score\)"),
    (_Fixed(schema={"_score": "float64"}), "extra_columns must be a pyarrow.Schema; got dict"),
    (_Fixed(required=["ra"]), r"required_left_columns lists \['ra'\]: the positions are always passed"),
    (_Fixed(required=[3]), "required_left_columns must be a list of column names"),
    ("nearest", "must be an instance of a CrossmatchAlgorithm subclass; got str"),
], ids=["radius0", "radius_nan", "radius_str", "score", "schema", "required_ra", "required_int", "not_alg"])
def test_declaration_violations_are_named_before_any_match(alg, message):
    with pytest.raises(AlgorithmContractError, match=message):
        run_algorithm(alg, _L, _R)


def test_missing_input_columns_are_named():
    with pytest.raises(AlgorithmContractError, match=r"_Fixed needs left column\(s\) \['sig'\]; the left rows have "
                                                     r"\['dec', 'ra'\]"):
        run_algorithm(_Fixed((*_OK_IDX, {"_score": np.ones(2)}), required=["sig"]), _L, _R)
    with pytest.raises(AlgorithmContractError, match=r"needs right column\(s\) \['RA'\]"):
        run_algorithm(AllWithin(1.0), _L, pa.table({"ra": [1.0], "dec": [2.0]}), right_coords=("RA", "dec"))
    with pytest.raises(AlgorithmContractError, match=r"the left rows' column\(s\) \['dec'\] do not have 3 values"):
        run_algorithm(AllWithin(1.0), {"ra": _L["ra"], "dec": np.zeros(2)}, _R)
    with pytest.raises(AlgorithmContractError, match="must be a dict of arrays, a pyarrow Table or a pandas "
                                                     "DataFrame; got list"):
        run_algorithm(AllWithin(1.0), [1, 2], _R)


# ---------------------------------------------------------------- loading


def test_load_algorithm_from_instance_class_name_and_module_path(tmp_path, monkeypatch):
    inst = KNearest(2, 5.0)
    assert load_algorithm(inst) is inst
    assert repr(load_algorithm(KNearest, k=2, radius_arcsec=5.0)) == repr(inst)
    assert isinstance(load_algorithm("nearest", radius_arcsec=1.0), NearestNeighbour)
    assert isinstance(load_algorithm("userbatch.ops.crossmatch.algorithms:AllWithin", radius_arcsec=1.0), AllWithin)
    (tmp_path / "my_xm_plugin.py").write_text(
        "import numpy as np\nimport pyarrow as pa\nfrom userbatch.ops.crossmatch.algorithms import AllWithin\n\n"
        "class Twice(AllWithin):\n    pass\n\nclass NotOne:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    alg = load_algorithm("my_xm_plugin:Twice", radius_arcsec=RADIUS)
    assert type(alg).__name__ == "Twice" and len(run_algorithm(alg, _L, _R).left_idx) > 0
    with pytest.raises(AlgorithmContractError, match="'my_xm_plugin:NotOne' is not a CrossmatchAlgorithm subclass"):
        load_algorithm("my_xm_plugin:NotOne")
    monkeypatch.delitem(sys.modules, "my_xm_plugin")


@pytest.mark.parametrize("spec,params,message", [
    (KNearest(2, 5.0), {"k": 3}, r"already an instance; parameters \['k'\] cannot be applied"),
    ("collections:OrderedDict", {}, "is not a CrossmatchAlgorithm subclass"),
    (dict, {}, "is not a CrossmatchAlgorithm subclass"),
    (42, {}, "is not a CrossmatchAlgorithm subclass"),
    ("no_such_module_xm:Foo", {}, "cannot import module 'no_such_module_xm'"),
    ("userbatch.ops.crossmatch.algorithms:Nope", {}, "has no 'Nope'"),
    ("nearest_neighbour", {}, r"unknown algorithm 'nearest_neighbour': use one of \['all', 'annulus'"),
    (":Foo", {}, "expected 'package.module:ClassName'"),
    (CrossmatchAlgorithm, {}, "does not implement"),
    ("nearest", {"radius": 1.0}, r"cannot create NearestNeighbour with parameters \{'radius': 1.0\}"),
], ids=["instance_params", "not_subclass_path", "not_subclass_class", "int", "no_module", "no_attr", "unknown",
        "empty_module", "abstract", "bad_kwarg"])
def test_load_algorithm_refusals(spec, params, message):
    with pytest.raises(AlgorithmContractError, match=message):
        load_algorithm(spec, **params)


@pytest.mark.parametrize("spec,params,message", [
    ("nearest", {"radius_arcsec": -1.0}, "radius_arcsec must be a positive finite number"),
    ("all", {"radius_arcsec": 5.0, "min_radius_arcsec": 5.0}, r"min_radius_arcsec \(5\) must be smaller"),
    ("k_nearest", {"k": 0, "radius_arcsec": 1.0}, "KNearest needs k >= 1"),
    ("error_aware", {"max_radius_arcsec": 5.0, "n_sigma": 0}, "n_sigma must be a positive finite number"),
    ("error_aware", {"max_radius_arcsec": 5.0, "p_min": 1.0}, "p_min must lie strictly between 0 and 1"),
    ("error_aware", {"max_radius_arcsec": 5.0, "left_errors": ("a", "b", 1.5)}, "rho must lie strictly between"),
    ("error_aware", {"max_radius_arcsec": 5.0, "left_errors": ("a", "b", "c", "d")}, "give a sigma, "),
    ("bayesian", {"max_radius_arcsec": 5.0}, "BayesianMatch needs a prior"),
    ("bayesian", {"max_radius_arcsec": 5.0, "prior": 1.5}, "prior P0 must lie strictly between 0 and 1"),
    ("bayesian", {"max_radius_arcsec": 5.0, "prior": 0.1, "density_left_per_sr": 1.0}, "not both"),
    ("bayesian", {"max_radius_arcsec": 5.0, "left_sigma": ("a", "b"), "prior": 0.1}, "circular errors"),
    ("bayesian", {"max_radius_arcsec": 5.0, "density_left_per_sr": 1.0, "density_right_per_sr": 2.0,
                  "density_common_per_sr": 3.0}, "cannot exceed"),
], ids=["radius", "min_radius", "k0", "n_sigma", "p_min", "rho", "four", "no_prior", "prior", "both",
        "ellipse", "common"])
def test_bad_parameters_say_what_to_change(spec, params, message):
    with pytest.raises(UserbatchError, match=message):
        load_algorithm(spec, **params)


def test_the_module_imports_only_what_the_engines_may_share():
    """Numpy, pyarrow, scipy and the pure layers: the engines can import it without a cycle or a Spark import."""
    src = Path(xa.__file__).read_text()
    names = set()
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add(("." * node.level) + (node.module or ""))
    allowed = {"__future__", "importlib", "logging", "math", "abc", "collections.abc", "typing", "numpy", "pyarrow",
               "scipy.spatial", "scipy.special", "...errors"}
    assert names <= allowed, names - allowed


# ---------------------------------------------------------------- science algorithms


def _science_sides(seed: int = 7):
    """Left sources (seam, poles — a few within arcseconds of the pole, where east/north turn fast — and a clump)
    with elliptical errors; right sources: most left ones displaced by a few arcsec, plus unrelated ones."""
    rng = np.random.default_rng(seed)
    base = sky_points(400, seed=seed)
    ra, dec = base["coord_ra"].to_numpy().copy(), base["coord_dec"].to_numpy().copy()
    ra[:8], dec[:8] = rng.uniform(0, 360, 8), 90 - rng.uniform(0.5, 6, 8) / 3600  # arcseconds from the pole
    ra[8:16], dec[8:16] = rng.uniform(0, 360, 8), -90 + rng.uniform(0.5, 6, 8) / 3600
    n = len(ra)
    left = {"ra": ra, "dec": dec, "sra": rng.uniform(0.2, 2.0, n), "sdec": rng.uniform(0.2, 2.0, n),
            "rho": rng.uniform(-0.8, 0.8, n), "sig": rng.uniform(0.2, 1.5, n)}
    take = rng.random(n) < 0.8
    c = SkyCoord(ra[take] * u.deg, dec[take] * u.deg)
    moved = c.directional_offset_by(rng.uniform(0, 360, take.sum()) * u.deg,
                                    np.abs(rng.normal(0, 2.5, take.sum())) * u.arcsec)
    extra = sky_points(150, seed=seed + 1)
    rra = np.r_[moved.ra.deg, extra["coord_ra"].to_numpy()]
    rdec = np.r_[moved.dec.deg, extra["coord_dec"].to_numpy()]
    m = len(rra)
    right = {"ra": rra, "dec": rdec, "sig": rng.uniform(0.1, 1.5, m), "sra": rng.uniform(0.2, 1.5, m),
             "sdec": rng.uniform(0.2, 1.5, m), "rho": rng.uniform(-0.5, 0.5, m)}
    return left, right


@pytest.fixture(scope="module")
def science():
    left, right = _science_sides()
    a = SkyCoord(left["ra"][:, None] * u.deg, left["dec"][:, None] * u.deg)
    b = SkyCoord(right["ra"][None, :] * u.deg, right["dec"][None, :] * u.deg)
    sep = a.separation(b).arcsec
    i, j = np.nonzero(sep <= 60.0)
    ca = SkyCoord(left["ra"][i] * u.deg, left["dec"][i] * u.deg)
    cb = SkyCoord(right["ra"][j] * u.deg, right["dec"][j] * u.deg)
    pa_lr = ca.position_angle(cb).rad
    pa_rl = cb.position_angle(ca).rad
    return left, right, (i, j, sep[i, j], pa_lr, pa_rl)


def _cov(sx, sy, rho):
    c = np.empty((len(sx), 2, 2))
    c[:, 0, 0], c[:, 1, 1] = sx ** 2, sy ** 2
    c[:, 0, 1] = c[:, 1, 0] = rho * sx * sy
    return c


def _oracle_chi2(left, right, cand, left_ellipse: bool, right_ellipse: bool):
    """chi2 per candidate pair, computed another way: the offset from astropy's separation and position angle; the
    right ellipse turned by parallel transport along the great circle (the angle between the position angle out of
    the left source and the continuation of the one back from the right source); ``numpy.linalg.inv`` per pair."""
    i, j, sep, pa_lr, pa_rl = cand
    d = np.stack([sep * np.sin(pa_lr), sep * np.cos(pa_lr)], axis=1)
    cl = (_cov(left["sra"][i], left["sdec"][i], left["rho"][i]) if left_ellipse
          else _cov(left["sig"][i], left["sig"][i], np.zeros(len(i))))
    cr = (_cov(right["sra"][j], right["sdec"][j], right["rho"][j]) if right_ellipse
          else _cov(right["sig"][j], right["sig"][j], np.zeros(len(j))))
    g = pa_lr - (pa_rl + np.pi)
    rot = np.empty((len(i), 2, 2))
    rot[:, 0, 0], rot[:, 0, 1], rot[:, 1, 0], rot[:, 1, 1] = np.cos(g), np.sin(g), -np.sin(g), np.cos(g)
    cov = cl + rot @ cr @ np.transpose(rot, (0, 2, 1))
    inv = np.linalg.inv(cov)
    return np.einsum("pi,pij,pj->p", d, inv, d)


@pytest.mark.parametrize("left_ellipse,right_ellipse", [(True, False), (True, True), (False, False)],
                         ids=["ellipse_circle", "ellipse_ellipse", "circle_circle"])
def test_error_aware_match_pair_by_pair(science, left_ellipse, right_ellipse):
    left, right, cand = science
    alg = ErrorAwareMatch(60.0, left_errors=("sra", "sdec", "rho") if left_ellipse else "sig",
                          right_errors=("sra", "sdec", "rho") if right_ellipse else "sig", n_sigma=3.0)
    li, ri, extra = run_algorithm(alg, left, right)
    chi2 = _oracle_chi2(left, right, cand, left_ellipse, right_ellipse)
    i, j, sep = cand[:3]
    want = {(int(a), int(b)): (c, s) for a, b, c, s in zip(i, j, chi2, sep) if c <= 9.0}
    edge = {(int(a), int(b)) for a, b, c in zip(i, j, chi2) if abs(c - 9.0) < 1e-6}
    got = {(int(a), int(b)): (c, s) for a, b, c, s in zip(li, ri, extra[xa.CHI2_COLUMN], extra[xa.DIST_COLUMN])}
    assert len(want) > 200
    assert set(got) - edge == set(want) - edge
    keys = sorted(set(got) & set(want))
    np.testing.assert_allclose([got[k][0] for k in keys], [want[k][0] for k in keys], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose([got[k][1] for k in keys], [want[k][1] for k in keys], rtol=0, atol=1e-6)
    np.testing.assert_allclose(extra[xa.NORM_DIST_COLUMN], np.sqrt(extra[xa.CHI2_COLUMN]))
    assert np.array_equal(np.lexsort((ri, extra[xa.CHI2_COLUMN], li)), np.arange(len(li)))
    # pairs near the poles are among them: the frame rotation is exercised
    assert (np.abs(left["dec"][li]) > 89.998).sum() >= 4


def test_error_aware_circular_chi2_is_separation_over_combined_sigma(science):
    left, right, _ = science
    li, ri, extra = run_algorithm(ErrorAwareMatch(60.0, "sig", "sig", n_sigma=4.0), left, right)
    np.testing.assert_allclose(extra[xa.CHI2_COLUMN],
                               extra[xa.DIST_COLUMN] ** 2 / (left["sig"][li] ** 2 + right["sig"][ri] ** 2), rtol=1e-9)


def test_error_aware_probability_threshold_and_bounds(science):
    left, right, _ = science
    by_sigma = run_algorithm(ErrorAwareMatch(60.0, "sig", "sig", n_sigma=3.0), left, right)
    by_p = run_algorithm(ErrorAwareMatch(60.0, "sig", "sig", p_min=math.exp(-4.5)), left, right)
    assert np.array_equal(by_sigma.left_idx, by_p.left_idx) and np.array_equal(by_sigma.right_idx, by_p.right_idx)
    # max_radius bounds what is kept, whatever the chi2
    tight = run_algorithm(ErrorAwareMatch(2.0, "sig", "sig", n_sigma=10.0), left, right)
    assert len(tight.left_idx) and tight.extra[xa.DIST_COLUMN].max() <= 2.0
    best = run_algorithm(ErrorAwareMatch(60.0, "sig", "sig", n_sigma=3.0, k=1), left, right)
    first = by_sigma.extra[xa.RANK_COLUMN] == 1
    assert np.array_equal(best.right_idx, by_sigma.right_idx[first])
    # constants stand for columns; unusable errors match nothing and do not fail the task
    const = run_algorithm(ErrorAwareMatch(60.0, 1.0, 0.5), left, right)
    assert len(const.left_idx) > 0
    nan_left = dict(left, sig=np.where(np.arange(len(left["sig"])) % 2 == 0, np.nan, left["sig"]))
    half = run_algorithm(ErrorAwareMatch(60.0, "sig", "sig"), nan_left, right)
    assert len(half.left_idx) and (half.left_idx % 2 == 1).all()
    assert ErrorAwareMatch(60.0, "a", ("b", "c")).required_right_columns == ["b", "c"]


def test_bayes_factor_of_one_pair_by_hand():
    """Two sources at the same place, each with a 1 arcsec sigma: B = 2 / (2 sigma**2) = 1 / sigma**2 (radians)."""
    left = {"ra": np.array([10.0]), "dec": np.array([20.0]), "sigma": np.array([1.0])}
    alg = BayesianMatch(5.0, prior=1e-9)
    _, _, extra = run_algorithm(alg, left, left)
    sigma_rad = math.radians(1 / 3600)
    assert extra[xa.LOG_BF_COLUMN][0] == pytest.approx(-2 * math.log(sigma_rad), rel=1e-12)
    b = 1 / sigma_rad ** 2
    assert extra[xa.P_MATCH_COLUMN][0] == pytest.approx(1 / (1 + (1 - 1e-9) / (b * 1e-9)), rel=1e-12)


def test_priors_from_densities_and_counts():
    nu1, nu2 = 1e8, 4e8
    assert BayesianMatch.prior_from_densities(nu1, nu2) == pytest.approx(nu1 / (4 * math.pi * nu1 * nu2))
    area = 0.01
    assert BayesianMatch.prior_from_counts(nu1 * area, nu2 * area, area, 0.5 * nu1 * area) == pytest.approx(
        0.5 * nu1 * area * area / (4 * math.pi * nu1 * area * nu2 * area))
    alg = BayesianMatch(5.0, "s", "t", density_left_per_sr=nu1, density_right_per_sr=nu2)
    assert alg.prior == pytest.approx(1 / (4 * math.pi * nu2))
    assert alg.required_left_columns == ["s"] and alg.required_right_columns == ["t"]


@pytest.mark.parametrize("min_p", [0.0, 0.5, 0.99])
def test_bayesian_match_pair_by_pair(science, min_p):
    left, right, cand = science
    prior = BayesianMatch.prior_from_densities(400 / 0.01, 550 / 0.01)
    alg = BayesianMatch(60.0, "sig", "sig", prior=prior, min_p_match=min_p)
    li, ri, extra = run_algorithm(alg, left, right)
    i, j, sep = cand[:3]
    # the oracle, written separately: sigmas and psi in radians, B in log space, the posterior from B itself
    s2 = np.radians(np.hypot(left["sig"][i], right["sig"][j]) / 3600) ** 2
    psi = np.radians(sep / 3600)
    log_b = np.log(2.0 / s2) - psi ** 2 / (2.0 * s2)
    with np.errstate(over="ignore", divide="ignore"):  # exp(log B) underflows far out: the posterior is then 0
        post = 1.0 / (1.0 + (1.0 - prior) / (np.exp(log_b) * prior))
    want = {(int(a), int(b)): (lb, p) for a, b, lb, p in zip(i, j, log_b, post) if p >= min_p}
    edge = {(int(a), int(b)) for a, b, p in zip(i, j, post) if min_p > 0 and abs(p - min_p) < 1e-9}
    got = {(int(a), int(b)): (lb, p) for a, b, lb, p in zip(li, ri, extra[xa.LOG_BF_COLUMN],
                                                            extra[xa.P_MATCH_COLUMN])}
    assert len(want) > 100
    assert set(got) - edge == set(want) - edge
    keys = sorted(set(got) & set(want))
    np.testing.assert_allclose([got[k][0] for k in keys], [want[k][0] for k in keys], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose([got[k][1] for k in keys], [want[k][1] for k in keys], rtol=1e-9, atol=1e-12)
    # ranked by probability within each left row: rank 1 is the most probable
    assert np.array_equal(np.lexsort((ri, -extra[xa.LOG_BF_COLUMN], li)), np.arange(len(li)))
    first = extra[xa.RANK_COLUMN] == 1
    for a in np.unique(li)[:50]:
        assert extra[xa.P_MATCH_COLUMN][first & (li == a)][0] == extra[xa.P_MATCH_COLUMN][li == a].max()


def test_bayesian_candidate_radius_bounds_without_losing_pairs(science):
    """The search radius implied by min_p_match is smaller than max_radius and still keeps every pair that passes."""
    left, right, _ = science
    prior = 1e-9
    alg = BayesianMatch(60.0, "sig", "sig", prior=prior, min_p_match=0.5)
    rows_l, rows_r = xa.as_rows(left), xa.as_rows(right)
    r = alg.search_radius_arcsec(rows_l, rows_r)
    assert 0 < r < 60.0
    full = BayesianMatch(60.0, "sig", "sig", prior=prior)
    li, ri, extra = run_algorithm(full, left, right)
    keep = extra[xa.P_MATCH_COLUMN] >= 0.5
    assert extra[xa.DIST_COLUMN][keep].max() <= r
    got = run_algorithm(alg, left, right)
    assert np.array_equal(got.left_idx, li[keep]) and np.array_equal(got.right_idx, ri[keep])
    assert full.score_column == xa.LOG_BF_COLUMN and full.score_higher_is_better
    assert ErrorAwareMatch.score_column == xa.CHI2_COLUMN and not ErrorAwareMatch.score_higher_is_better


def test_unit_vectors_agree_with_numpy_trig_everywhere():
    """The polynomial sin/cos of the kernel against numpy's libm trig: random positions, quadrant edges, the RA seam,
    the poles and values a hair either side of them; 2e-15 absolute is 4e-10 arcsec."""
    from userbatch.ops.crossmatch import kernel

    rng = np.random.default_rng(7)
    ra = np.concatenate([rng.uniform(0, 360, 200_000), np.arange(0, 361, 45.0), np.array([1e-12, 359.999999999999]),
                         np.nextafter(np.array([90.0, 180.0, 270.0]), 0), np.nextafter(np.array([90.0, 180.0]), 400)])
    dec = np.concatenate([np.degrees(np.arcsin(rng.uniform(-1, 1, 200_000))), rng.uniform(-90, 90, len(ra) - 200_000)])
    dec[-4:] = [90.0, -90.0, np.nextafter(90.0, 0), -89.9999999999]
    got = kernel.radec_to_xyz(ra, dec)
    r, d = np.radians(ra), np.radians(dec)
    want = np.column_stack([np.cos(d) * np.cos(r), np.cos(d) * np.sin(r), np.sin(d)])
    assert np.abs(got - want).max() < 2e-15
    assert np.abs(np.linalg.norm(got, axis=1) - 1).max() < 4e-15
