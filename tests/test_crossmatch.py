"""Cross-match against astropy, on in-memory inputs and on catalog tables partitioned differently on each side.

The data put rows where partitioned matching goes wrong: both poles (within 0.05 deg of dec = +-90), the RA = 0
seam (ra 359.99..0.01), HEALPix pixel corners at several orders, a dense cluster that only the left side splits
finely, another that only the right side does, and a patch where the right side has rows on one half and no
partition at all on the other. Truth is astropy's ``search_around_sky`` / ``match_to_catalog_sky`` /
``apply_space_motion``; pair sets must agree exactly and distances to 1e-6 arcsec.

The tables are written once for the module (Spark writes cost seconds); each test reads them.
"""

from __future__ import annotations

from types import SimpleNamespace

import astropy.units as u
import cdshealpix
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from astropy.coordinates import Distance, SkyCoord, search_around_sky
from astropy.time import Time
from helpers import module_facility

from userbatch.errors import BadCoordinates, ColumnNotFound, TableNotFound, UserbatchError
from userbatch.ops.crossmatch import MarginTooSmall, crossmatch
from userbatch.sky.motion import Motion
from userbatch.tables.write import write_table

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")

RADIUS = 20.0  # arcsec
MARGIN = 30.0  # both tables' stored margin caches, >= RADIUS
LEFT_THRESHOLD = 300
RIGHT_THRESHOLD = 500
RIGHT_ID0 = 1_000_000
ENGINES = ["local", "spark"]
# region C: the left has rows over the whole box, the right only west of RA_CUT (and no partition east of it)
C_RA, C_DEC, C_HALF, C_CUT = 200.0, 10.0, 0.4, 200.0


# ---------------------------------------------------------------- data


def _offset(ra, dec, sep_arcsec, rng):
    """Points ``sep_arcsec`` from (ra, dec) in random directions (exact on the sphere, poles included)."""
    c = SkyCoord(ra * u.deg, dec * u.deg).directional_offset_by(rng.uniform(0, 360, len(ra)) * u.deg,
                                                                  sep_arcsec * u.arcsec)
    return c.ra.deg % 360.0, c.dec.deg


def _cap(rng, n, sign):
    """Uniform within 0.05 deg of a pole."""
    r = 0.05 * np.sqrt(rng.uniform(0, 1, n))
    return rng.uniform(0, 360, n), sign * (90.0 - r)


def _cluster(rng, n, ra0, dec0, sigma):
    return ra0 + rng.normal(0, sigma, n) / np.cos(np.radians(dec0)), dec0 + rng.normal(0, sigma, n)


def _in_c(ra, dec, east: bool | None = None):
    box = (np.abs(ra - C_RA) <= C_HALF + 0.05) & (np.abs(dec - C_DEC) <= C_HALF + 0.05)
    if east is None:
        return box
    return box & ((ra >= C_CUT) if east else (ra < C_CUT))


def _frame(pieces, id0, rng) -> pd.DataFrame:
    ra = np.mod(np.concatenate([p[0] for p in pieces]), 360.0)
    dec = np.clip(np.concatenate([p[1] for p in pieces]), -90.0, 90.0)
    n = len(ra)
    return pd.DataFrame({
        "objectId": np.arange(id0, id0 + n, dtype=np.int64),
        "coord_ra": ra,
        "coord_dec": dec,
        "mag": rng.uniform(15, 25, n),
        "band": rng.choice(list("gri"), n),
    })


def make_left(seed: int = 11) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    pieces = []
    n = 900
    sky = (rng.uniform(0, 360, n), np.degrees(np.arcsin(rng.uniform(-1, 1, n))))
    keep = ~_in_c(*sky)
    pieces.append((sky[0][keep], sky[1][keep]))
    pieces.append((rng.uniform(-0.01, 0.01, 150), rng.uniform(-0.05, 0.05, 150)))  # ra 359.99 .. 0.01
    pieces.append((rng.uniform(-0.08, 0.08, 150), rng.uniform(-0.08, 0.08, 150)))  # around the seam
    pieces.append(_cap(rng, 200, +1))
    pieces.append(_cap(rng, 200, -1))
    pieces.append(_cluster(rng, 800, 150.0, 30.0, 0.05))  # A: dense here (left partitions finer)
    pieces.append(_cluster(rng, 80, 45.0, -45.0, 0.05))  # B: sparse here (right partitions finer)
    pieces.append((rng.uniform(C_RA - C_HALF, C_RA + C_HALF, 400), rng.uniform(C_DEC - C_HALF, C_DEC + C_HALF, 400)))
    # HEALPix pixel corners at orders 3..8, jittered by about the radius: pairs straddle partition edges
    for order in range(3, 9):
        pix = rng.integers(0, 12 * 4 ** order, 12).astype(np.uint64)
        lon, lat = cdshealpix.nested.vertices(pix, order)
        vra, vdec = np.asarray(lon.deg).ravel(), np.asarray(lat.deg).ravel()
        pieces.append(_offset(vra, vdec, rng.uniform(0, RADIUS / 2, len(vra)), rng))
    return _frame(pieces, 0, rng)


def make_right(left: pd.DataFrame, seed: int = 12) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    lra, ldec = left.coord_ra.to_numpy(), left.coord_dec.to_numpy()
    pick = (rng.random(len(left)) < 0.55) & ~_in_c(lra, ldec, east=True)
    # copies of left rows a few arcsec away (never at bit-identical positions)
    pieces = [_offset(lra[pick], ldec[pick], rng.rayleigh(7.0, pick.sum()) + 1e-3, rng)]
    n = 600
    sky = (rng.uniform(0, 360, n), np.degrees(np.arcsin(rng.uniform(-1, 1, n))))
    keep = ~_in_c(*sky)
    pieces.append((sky[0][keep], sky[1][keep]))
    pieces.append((rng.uniform(-0.01, 0.01, 80), rng.uniform(-0.05, 0.05, 80)))
    pieces.append(_cap(rng, 100, +1))
    pieces.append(_cap(rng, 100, -1))
    pieces.append(_cluster(rng, 100, 150.0, 30.0, 0.05))  # A: sparse here
    pieces.append(_cluster(rng, 900, 45.0, -45.0, 0.05))  # B: dense here
    # C: dense on the west half only, so the right side is split finely there and has no partition east of it
    pieces.append((rng.uniform(C_RA - C_HALF, C_CUT - 0.01, 800), rng.uniform(C_DEC - C_HALF, C_DEC + C_HALF, 800)))
    return _frame(pieces, RIGHT_ID0, rng)


def make_stars(n: int = 300, seed: int = 21) -> pd.DataFrame:
    """A proper-motion catalogue at epoch 2016.0: some stars fast (to 5000 mas/yr), some with parallax and radial
    velocity, some with null proper motion; a few at the poles and on the RA seam."""
    rng = np.random.default_rng(seed)
    ra = rng.uniform(0, 360, n)
    dec = np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    ra[:8], dec[:8] = rng.uniform(0, 360, 8), rng.uniform(89.9, 89.99, 8)
    ra[8:16], dec[8:16] = rng.uniform(0, 360, 8), rng.uniform(-89.99, -89.9, 8)
    ra[16:24], dec[16:24] = np.mod(rng.uniform(-0.001, 0.001, 8), 360), rng.uniform(-10, 10, 8)
    speed = np.where(np.arange(n) % 4 == 0, rng.uniform(300, 5000, n), rng.uniform(0, 30, n))
    angle = rng.uniform(0, 2 * np.pi, n)
    pmra, pmdec = speed * np.sin(angle), speed * np.cos(angle)
    parallax = np.where(rng.random(n) < 0.4, rng.uniform(5, 700, n), np.nan)
    rv = np.where(np.isfinite(parallax) & (rng.random(n) < 0.7), rng.uniform(-300, 300, n), np.nan)
    null_pm = (np.arange(n) % 4 != 0) & (rng.random(n) < 0.08)
    pmra[null_pm] = np.nan
    pmdec[null_pm] = np.nan
    parallax[null_pm] = np.nan
    rv[null_pm] = np.nan
    return pd.DataFrame({"objectId": np.arange(n, dtype=np.int64), "ra": ra, "dec": dec, "pmra": pmra,
                         "pmdec": pmdec, "parallax": parallax, "rv": rv})


def astropy_motion(stars: pd.DataFrame, when: Time) -> tuple[np.ndarray, np.ndarray]:
    """astropy's apply_space_motion of each star from 2016.0 to ``when`` (scalar or one per star)."""
    n = len(stars)
    ra_out, dec_out = np.empty(n), np.empty(n)
    has_px = np.isfinite(stars.parallax.to_numpy())
    t0 = Time(2016.0, format="jyear")
    for sel in (has_px, ~has_px):
        if not sel.any():
            continue
        s = stars[sel]
        kw = dict(ra=s.ra.to_numpy() * u.deg, dec=s.dec.to_numpy() * u.deg,
                  pm_ra_cosdec=np.nan_to_num(s.pmra.to_numpy()) * u.mas / u.yr,
                  pm_dec=np.nan_to_num(s.pmdec.to_numpy()) * u.mas / u.yr, obstime=t0)
        if sel is has_px:
            kw.update(distance=Distance(parallax=s.parallax.to_numpy() * u.mas),
                      radial_velocity=np.nan_to_num(s.rv.to_numpy()) * u.km / u.s)
        t = when if when.isscalar else when[sel]
        moved = SkyCoord(**kw).apply_space_motion(new_obstime=t)
        ra_out[sel], dec_out[sel] = moved.ra.deg, moved.dec.deg
    return ra_out, dec_out


# ---------------------------------------------------------------- truth and comparisons


def sky(df: pd.DataFrame, ra: str = "coord_ra", dec: str = "coord_dec") -> SkyCoord:
    return SkyCoord(df[ra].to_numpy() * u.deg, df[dec].to_numpy() * u.deg)


def truth_all(left: pd.DataFrame, right: pd.DataFrame, radius: float = RADIUS, min_radius: float = 0.0):
    il, ir, sep, _ = search_around_sky(sky(left), sky(right), radius * u.arcsec)
    t = pd.DataFrame({"l": left.objectId.to_numpy()[il], "r": right.objectId.to_numpy()[ir], "d": sep.arcsec})
    return t[t.d >= min_radius].reset_index(drop=True)


def truth_nearest(left: pd.DataFrame, right: pd.DataFrame, radius: float = RADIUS):
    idx, sep, _ = sky(left).match_to_catalog_sky(sky(right))
    ok = sep.arcsec <= radius
    return pd.DataFrame({"l": left.objectId.to_numpy()[ok], "r": right.objectId.to_numpy()[idx[ok]],
                         "d": sep.arcsec[ok]})


def truth_knn(left, right, k, radius=RADIUS):
    t = truth_all(left, right, radius).sort_values(["l", "d", "r"])
    t["rank"] = t.groupby("l").cumcount() + 1
    return t[t["rank"] <= k].reset_index(drop=True)


def greedy_one_to_one(pairs: pd.DataFrame) -> pd.DataFrame:
    """Sequential greedy over all pairs: best distance first (ties by left id, right id), keep if both free."""
    used_l, used_r, keep = set(), set(), []
    for row in pairs.sort_values(["d", "l", "r"]).itertuples(index=False):
        if row.l not in used_l and row.r not in used_r:
            used_l.add(row.l)
            used_r.add(row.r)
            keep.append(row)
    return pd.DataFrame(keep, columns=pairs.columns)


def pairs_of(res, l_id="objectId", r_id="objectId_right") -> pd.DataFrame:
    """Matched rows of a result as (l, r, d, rank)."""
    t = res if isinstance(res, pd.DataFrame) else res.to_pandas()
    m = t[t["_rank"].notna()]
    return pd.DataFrame({"l": m[l_id].astype(np.int64).to_numpy(), "r": m[r_id].astype(np.int64).to_numpy(),
                         "d": m["_dist_arcsec"].to_numpy(), "rank": m["_rank"].astype(np.int64).to_numpy()})


def assert_same_pairs(got: pd.DataFrame, want: pd.DataFrame, atol: float = 1e-6) -> None:
    dup = got[got.duplicated(["l", "r"], keep=False)]
    assert dup.empty, f"duplicate pairs:\n{dup.head(10)}"
    g = got.set_index(["l", "r"]).sort_index()
    w = want.set_index(["l", "r"]).sort_index()
    missing, extra = w.index.difference(g.index), g.index.difference(w.index)
    assert len(missing) == 0 and len(extra) == 0, (
        f"{len(missing)} pairs missing (e.g. {list(missing[:5])}), {len(extra)} extra (e.g. {list(extra[:5])})")
    np.testing.assert_allclose(g.d.to_numpy(), w.loc[g.index].d.to_numpy(), rtol=0, atol=atol)


def assert_ranks_in_distance_order(got: pd.DataFrame) -> None:
    s = got.sort_values(["l", "d", "r"])
    np.testing.assert_array_equal(s["rank"].to_numpy(), s.groupby("l").cumcount().to_numpy() + 1)


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def xm(spark, session_home, tmp_path_factory):
    """A facility for the module with the two differently partitioned tables written once."""
    with module_facility(tmp_path_factory, "xmatch") as fx:
        left = make_left()
        right = make_right(left)
        write_table(spark.createDataFrame(left), "xm.left", pixel_threshold=LEFT_THRESHOLD,
                    margin_radius_arcsec=MARGIN)
        write_table(spark.createDataFrame(right), "xm.right", pixel_threshold=RIGHT_THRESHOLD,
                    margin_radius_arcsec=MARGIN)
        yield SimpleNamespace(left=left, right=right, base=fx.base, spark=spark)


def _inputs(xm, source: str):
    """(left, right, keyword arguments) for the same rows as tables or as in-memory frames."""
    if source == "table":
        return "xm.left", "xm.right", {}
    coords = dict(left_ra="coord_ra", left_dec="coord_dec", right_ra="coord_ra", right_dec="coord_dec")
    if source == "pandas":
        return xm.left, xm.right, coords
    if source == "arrow":
        return pa.Table.from_pandas(xm.left), pa.Table.from_pandas(xm.right), coords
    if source == "spark":
        return xm.spark.createDataFrame(xm.left), xm.spark.createDataFrame(xm.right), coords
    raise AssertionError(source)


# ---------------------------------------------------------------- the setting itself


def test_data_exercise_the_hard_places(xm):
    """The truth has pairs at both poles and across RA = 0; the two tables are partitioned differently (left
    finer in places, coarser in others, and left partitions that no right partition overlaps)."""
    from userbatch.ops.sides import FileSide
    from userbatch.tables.catalog import Catalog

    t = truth_all(xm.left, xm.right)
    assert len(t) > 3000
    pos_l = xm.left.set_index("objectId").loc[t.l]
    pos_r = xm.right.set_index("objectId").loc[t.r]
    assert ((pos_l.coord_dec.to_numpy() > 89.95) & (pos_r.coord_dec.to_numpy() > 89.95)).sum() > 20
    assert ((pos_l.coord_dec.to_numpy() < -89.95) & (pos_r.coord_dec.to_numpy() < -89.95)).sum() > 20
    across = (pos_l.coord_ra.to_numpy() > 359.9) & (pos_r.coord_ra.to_numpy() < 0.1)
    across |= (pos_l.coord_ra.to_numpy() < 0.1) & (pos_r.coord_ra.to_numpy() > 359.9)
    assert across.sum() > 10

    cat = Catalog()
    ls, rs = FileSide.from_entry(cat.get("xm.left")), FileSide.from_entry(cat.get("xm.right"))
    assert len(ls.partitions) > 15 and len(rs.partitions) > 8
    assert ls.margin_radius_arcsec == rs.margin_radius_arcsec == MARGIN

    def inside(a_s, a_e, b_s, b_e):  # a strictly inside some b
        return [(s, e) for s, e in zip(a_s, a_e) if any(bs <= s and e <= be and (be - bs) > (e - s)
                                                        for bs, be in zip(b_s, b_e))]

    assert inside(ls.starts, ls.ends, rs.starts, rs.ends), "left is nowhere finer than right"
    assert inside(rs.starts, rs.ends, ls.starts, ls.ends), "right is nowhere finer than left"
    lone = [i for i in range(len(ls.partitions))
            if not any(rs_ < ls.ends[i] and ls.starts[i] < re_ for rs_, re_ in zip(rs.starts, rs.ends))]
    assert lone, "every left partition overlaps a right one"
    res = crossmatch("xm.left", "xm.right", RADIUS, mode="all")
    tasks = res.plan.tasks
    assert any(t.left_keep is not None for t in tasks)
    assert any(t.left_drop is not None or (t.right_ranges is not None and len(t.right_ranges)) for t in tasks)
    assert any(t.right_margin is not None for t in tasks)
    assert "tasks" in res.explain()


# ---------------------------------------------------------------- 1. all pairs


@pytest.mark.parametrize("source", ["pandas", "arrow"])
def test_all_pairs_in_memory_equal_astropy(xm, source):
    left, right, kw = _inputs(xm, source)
    got = pairs_of(crossmatch(left, right, RADIUS, mode="all", **kw))
    assert_same_pairs(got, truth_all(xm.left, xm.right))
    assert_ranks_in_distance_order(got)


@pytest.mark.parametrize("engine", ENGINES)
def test_all_pairs_tables_equal_astropy(xm, engine):
    res = crossmatch("xm.left", "xm.right", RADIUS, mode="all", engine=engine)
    out = res.to_pandas()
    assert list(out.columns) == ["objectId", "coord_ra", "coord_dec", "mag", "band", "objectId_right",
                                 "coord_ra_right", "coord_dec_right", "mag_right", "band_right", "_dist_arcsec",
                                 "_rank"]
    got = pairs_of(out)
    assert_same_pairs(got, truth_all(xm.left, xm.right))
    assert_ranks_in_distance_order(got)
    # the columns travel with their own rows
    lpos = xm.left.set_index("objectId").loc[got.l]
    rpos = xm.right.set_index("objectId").loc[got.r]
    np.testing.assert_array_equal(out.coord_ra.to_numpy(), lpos.coord_ra.to_numpy())
    np.testing.assert_array_equal(out.mag_right.to_numpy(), rpos.mag.to_numpy())
    np.testing.assert_array_equal(out.band_right.to_numpy(), rpos.band.to_numpy())


def test_all_pairs_swapped_sides_and_spark_dataframe_input(xm):
    """Right as left (coarse against fine the other way round), and a Spark DataFrame against a table."""
    got = pairs_of(crossmatch("xm.right", "xm.left", RADIUS, mode="all"), "objectId", "objectId_right")
    want = truth_all(xm.left, xm.right).rename(columns={"l": "r", "r": "l"})
    assert_same_pairs(got, want)
    left = xm.spark.createDataFrame(xm.left)
    got = pairs_of(crossmatch(left, "xm.right", RADIUS, mode="all", left_ra="coord_ra", left_dec="coord_dec"))
    assert_same_pairs(got, truth_all(xm.left, xm.right))


# ---------------------------------------------------------------- 2. nearest and k nearest


@pytest.mark.parametrize("source", ["table", "pandas"])
def test_nearest_equals_match_to_catalog_sky(xm, source):
    left, right, kw = _inputs(xm, source)
    got = pairs_of(crossmatch(left, right, RADIUS, **kw))
    want = truth_nearest(xm.left, xm.right)
    assert len(want) > 1500
    assert_same_pairs(got, want)
    assert (got["rank"] == 1).all()


@pytest.mark.parametrize("source", ["table", "pandas"])
def test_k_nearest_equals_three_smallest(xm, source):
    left, right, kw = _inputs(xm, source)
    got = pairs_of(crossmatch(left, right, RADIUS, mode="k_nearest", k=3, **kw))
    want = truth_knn(xm.left, xm.right, 3)
    assert (want["rank"] == 3).sum() > 100, "few left rows have three neighbours: the test would be weak"
    assert_same_pairs(got, want[["l", "r", "d"]])
    merged = got.merge(want, on=["l", "r"], suffixes=("", "_want"))
    np.testing.assert_array_equal(merged["rank"].to_numpy(), merged["rank_want"].to_numpy())
    assert_ranks_in_distance_order(got)
    assert got["rank"].between(1, 3).all()


# ---------------------------------------------------------------- 3. annulus


@pytest.mark.parametrize("source", ["table", "pandas"])
def test_annulus_excludes_inner_pairs(xm, source):
    left, right, kw = _inputs(xm, source)
    got = pairs_of(crossmatch(left, right, RADIUS, mode="all", min_radius_arcsec=8.0, **kw))
    want = truth_all(xm.left, xm.right, min_radius=8.0)
    assert len(truth_all(xm.left, xm.right)) - len(want) > 500, "the annulus should drop many pairs"
    assert_same_pairs(got, want)
    assert got.d.min() >= 8.0
    # nearest within the annulus: the nearest pair that is at least 8 arcsec away
    got = pairs_of(crossmatch(left, right, RADIUS, min_radius_arcsec=8.0, **kw))
    assert_same_pairs(got, want.sort_values(["d", "r"]).drop_duplicates("l"))


# ---------------------------------------------------------------- 4. left and outer joins


@pytest.mark.parametrize("engine", ENGINES)
def test_nearest_left_and_outer_joins(xm, engine):
    want = truth_nearest(xm.left, xm.right)
    nl = len(xm.left)
    right_cols = ["objectId_right", "coord_ra_right", "coord_dec_right", "mag_right", "band_right"]
    left_cols = ["objectId", "coord_ra", "coord_dec", "mag", "band"]

    out = crossmatch("xm.left", "xm.right", RADIUS, how="left", engine=engine).to_pandas()
    assert len(out) == nl and sorted(out.objectId) == sorted(xm.left.objectId)
    matched = out._rank.notna()
    assert matched.sum() == len(want) and (~matched).sum() == nl - len(want) > 100
    lone = out[~matched]
    assert lone[right_cols + ["_dist_arcsec", "_rank"]].isna().all().all()
    assert lone[left_cols].notna().all().all()
    assert set(lone.objectId) == set(xm.left.objectId) - set(want.l)
    assert_same_pairs(pairs_of(out), want)

    out = crossmatch("xm.left", "xm.right", RADIUS, how="outer", engine=engine).to_pandas()
    unmatched_right = set(xm.right.objectId) - set(want.r)
    assert len(out) == nl + len(unmatched_right)
    assert_same_pairs(pairs_of(out), want)
    has_left = out.objectId.notna()
    assert sorted(out.objectId[has_left].astype(np.int64)) == sorted(xm.left.objectId)
    right_only = out[~has_left]
    assert len(right_only) == len(unmatched_right)
    assert set(right_only.objectId_right.astype(np.int64)) == unmatched_right
    assert right_only[left_cols + ["_dist_arcsec", "_rank"]].isna().all().all()
    assert right_only[right_cols].notna().all().all()
    pos = xm.right.set_index("objectId").loc[right_only.objectId_right.astype(np.int64)]
    np.testing.assert_array_equal(right_only.coord_ra_right.to_numpy(), pos.coord_ra.to_numpy())
    left_only = out[has_left & out._rank.isna()]
    assert len(left_only) == nl - len(want) and left_only[right_cols].isna().all().all()
    # every right row appears at least once
    assert set(out.objectId_right.dropna().astype(np.int64)) == set(xm.right.objectId)


def test_all_pairs_left_join_in_memory(xm):
    left, right, kw = _inputs(xm, "pandas")
    out = crossmatch(left, right, RADIUS, mode="all", how="left", **kw).to_pandas()
    want = truth_all(xm.left, xm.right)
    lonely = set(xm.left.objectId) - set(want.l)
    assert len(out) == len(want) + len(lonely)
    assert set(out.objectId[out._rank.isna()]) == lonely
    assert_same_pairs(pairs_of(out), want)


# ---------------------------------------------------------------- 5. one to one


@pytest.mark.parametrize("engine", ["local", *(pytest.param(e, marks=pytest.mark.heavy)
                                                for e in ("spark", "spark-rounds"))])
def test_one_to_one_equals_sequential_greedy(xm, engine, monkeypatch):
    if engine == "spark-rounds":  # no driver finish: Spark's mutual-best rounds settle every pair
        monkeypatch.setenv("USERBATCH_XMATCH_DRIVER_PAIRS", "0")
        engine = "spark"
    nearest = pairs_of(crossmatch("xm.left", "xm.right", RADIUS, engine="local"))
    assert nearest.r.duplicated().sum() > 100, "the plain nearest match has few conflicts: test not meaningful"

    want = greedy_one_to_one(truth_all(xm.left, xm.right))
    got = pairs_of(crossmatch("xm.left", "xm.right", RADIUS, one_to_one=True, engine=engine))
    assert not got.l.duplicated().any() and not got.r.duplicated().any()
    assert_same_pairs(got, want)
    assert (got["rank"] == 1).all()

    out = crossmatch("xm.left", "xm.right", RADIUS, one_to_one=True, how="left", engine=engine).to_pandas()
    assert len(out) == len(xm.left) and not out.objectId.duplicated().any()
    assert_same_pairs(pairs_of(out), want)
    lone = out[out._rank.isna()]
    assert set(lone.objectId) == set(xm.left.objectId) - set(want.l)
    assert lone[["objectId_right", "coord_ra_right", "_dist_arcsec"]].isna().all().all()

    out = crossmatch("xm.left", "xm.right", RADIUS, one_to_one=True, how="outer", engine=engine).to_pandas()
    assert len(out) == len(xm.left) + len(xm.right) - len(want)
    assert_same_pairs(pairs_of(out), want)
    assert not out.objectId.dropna().duplicated().any() and not out.objectId_right.dropna().duplicated().any()


def test_one_to_one_in_memory(xm):
    left, right, kw = _inputs(xm, "pandas")
    got = pairs_of(crossmatch(left, right, RADIUS, one_to_one=True, **kw))
    assert_same_pairs(got, greedy_one_to_one(truth_all(xm.left, xm.right)))


# ---------------------------------------------------------------- 6. proper motion


MOTION_RADIUS = 0.5


def _moved_left(stars: pd.DataFrame, when: Time, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ra, dec = astropy_motion(stars, when)
    nra, ndec = _offset(ra, dec, rng.uniform(0, 0.02, len(ra)), rng)  # <= 20 mas of noise
    return pd.DataFrame({"objectId": stars.objectId.to_numpy() + 10_000, "ra": nra, "dec": ndec,
                         "exact_ra": ra, "exact_dec": dec})


def _own_pairs(got: pd.DataFrame) -> set:
    return {(int(a), int(b)) for a, b in zip(got.l, got.r)}


def test_motion_fixed_and_per_row_epoch_equals_astropy(xm):
    stars = make_stars()
    fast = np.hypot(np.nan_to_num(stars.pmra), np.nan_to_num(stars.pmdec)) * 9.5 / 1000 > 1.0
    assert fast.sum() > 50 and stars.pmra.isna().sum() > 5 and stars.rv.notna().sum() > 30
    coords = dict(left_ra="ra", left_dec="dec", right_ra="ra", right_dec="dec")
    everyone = {(i + 10_000, i) for i in stars.objectId}

    left = _moved_left(stars, Time(2025.5, format="jyear"), seed=3)
    motion = Motion(epoch=2025.5, pmra="pmra", pmdec="pmdec", parallax="parallax", radial_velocity="rv",
                    ref_epoch=2016.0)
    res = crossmatch(left, stars, MOTION_RADIUS, motion=motion, left_columns=["objectId", "exact_ra", "exact_dec"],
                     **coords)
    assert res.plan.displacement_arcsec > 40
    got = pairs_of(res, "objectId", "objectId_right")
    assert _own_pairs(got) == everyone
    exp = SkyCoord(left.ra.to_numpy() * u.deg, left.dec.to_numpy() * u.deg).separation(
        SkyCoord(left.exact_ra.to_numpy() * u.deg, left.exact_dec.to_numpy() * u.deg)).arcsec
    want = pd.Series(exp, index=left.objectId)
    np.testing.assert_allclose(got.d.to_numpy(), want.loc[got.l].to_numpy(), rtol=0, atol=1e-3)

    # without motion the fast stars are lost (and only they)
    got = pairs_of(crossmatch(left, stars, MOTION_RADIUS, **coords))
    kept = _own_pairs(got)
    assert kept <= everyone
    assert not kept & {(i + 10_000, i) for i in stars.objectId[fast]}
    moved = SkyCoord(stars.ra.to_numpy() * u.deg, stars.dec.to_numpy() * u.deg).separation(
        SkyCoord(left.ra.to_numpy() * u.deg, left.dec.to_numpy() * u.deg)).arcsec
    assert kept == {(i + 10_000, i) for i in stars.objectId[moved <= MOTION_RADIUS]}

    # a different epoch per left row (MJD)
    rng = np.random.default_rng(9)
    mjd = rng.uniform(Time(2019.0, format="jyear").mjd, Time(2031.0, format="jyear").mjd, len(stars))
    left = _moved_left(stars, Time(mjd, format="mjd", scale="tt"), seed=4)
    left["mjd"] = mjd
    motion = Motion(epoch="mjd", epoch_format="mjd", pmra="pmra", pmdec="pmdec", parallax="parallax",
                    radial_velocity="rv", ref_epoch=2016.0)
    got = pairs_of(crossmatch(left, stars, MOTION_RADIUS, motion=motion, **coords))
    assert _own_pairs(got) == everyone
    exp = SkyCoord(left.ra.to_numpy() * u.deg, left.dec.to_numpy() * u.deg).separation(
        SkyCoord(left.exact_ra.to_numpy() * u.deg, left.exact_dec.to_numpy() * u.deg)).arcsec
    np.testing.assert_allclose(got.d.to_numpy(), pd.Series(exp, index=left.objectId).loc[got.l].to_numpy(),
                               rtol=0, atol=1e-3)
    # k_nearest with per-row epochs ranks from 1 too
    got = pairs_of(crossmatch(left, stars, MOTION_RADIUS, mode="k_nearest", k=2, motion=motion, **coords))
    assert _own_pairs(got) == everyone and (got["rank"] == 1).all()


def test_motion_table_margin_too_small_then_read(xm):
    stars = make_stars(seed=22)
    write_table(xm.spark.createDataFrame(stars), "xm.stars", ra_column="ra", dec_column="dec", pixel_threshold=40,
                margin_radius_arcsec=10.0)
    left = _moved_left(stars, Time(2025.5, format="jyear"), seed=5)
    motion = Motion(epoch=2025.5, parallax="parallax", radial_velocity="rv", ref_epoch=2016.0)
    coords = dict(left_ra="ra", left_dec="dec")
    everyone = {(i + 10_000, i) for i in stars.objectId}

    # the match alone fits in the 10 arcsec margin; with up to ~70 arcsec of motion it does not
    assert len(pairs_of(crossmatch(left, "xm.stars", MOTION_RADIUS, **coords))) < len(stars)
    with pytest.raises(MarginTooSmall, match="10 arcsec margin"):
        crossmatch(left, "xm.stars", MOTION_RADIUS, motion=motion, **coords)
    res = crossmatch(left, "xm.stars", MOTION_RADIUS, motion=motion, margin_fallback="read", **coords)
    assert len(res.plan.tasks) > 3 and "ring" in res.explain()
    assert _own_pairs(pairs_of(res)) == everyone

    # the table as the left side, stars matched back to themselves at a per-row epoch column of the right
    # catalogue's own epoch: no motion, zero distance
    star_left = stars.assign(ep=2016.0)
    got = pairs_of(crossmatch(star_left, "xm.stars", MOTION_RADIUS, left_ra="ra", left_dec="dec",
                              motion=Motion(epoch="ep", ref_epoch=2016.0), margin_fallback="read"))
    assert _own_pairs(got) == {(i, i) for i in stars.objectId}
    assert got.d.max() < 1e-6


# ---------------------------------------------------------------- 7. bad inputs


def test_bad_inputs_raise_clear_errors(xm):
    left, right, kw = _inputs(xm, "pandas")
    with pytest.raises(UserbatchError, match="radius_arcsec"):
        crossmatch(left, right, -1.0, **kw)
    with pytest.raises(UserbatchError, match="radius_arcsec"):
        crossmatch(left, right, 0.0, **kw)
    with pytest.raises(UserbatchError, match="min_radius_arcsec .* smaller than radius_arcsec"):
        crossmatch(left, right, 5.0, min_radius_arcsec=5.0, **kw)
    with pytest.raises(UserbatchError, match="mode must be one of"):
        crossmatch(left, right, 5.0, mode="closest", **kw)
    with pytest.raises(UserbatchError, match="how must be one of"):
        crossmatch(left, right, 5.0, how="full", **kw)
    with pytest.raises(UserbatchError, match="positive integer k"):
        crossmatch(left, right, 5.0, mode="k_nearest", **kw)
    with pytest.raises(UserbatchError, match="engine must be one of"):
        crossmatch(left, right, 5.0, engine="dask", **kw)
    with pytest.raises(ColumnNotFound, match="objectID"):
        crossmatch(left, right, 5.0, left_columns=["objectID", "mag"], **kw)
    with pytest.raises(ColumnNotFound, match="magg"):
        crossmatch("xm.left", "xm.right", 5.0, right_columns=["objectId", "magg"])
    with pytest.raises(UserbatchError, match="left_ra"):
        crossmatch(left, right, 5.0)
    bad = xm.left.copy()
    bad.loc[7, "coord_dec"] = np.nan
    with pytest.raises(BadCoordinates, match="NaN"):
        crossmatch(bad, right, 5.0, **kw)
    with pytest.raises(TableNotFound):
        crossmatch("xm.nothing", "xm.right", 5.0)
    with pytest.raises(MarginTooSmall, match="30 arcsec margin"):
        crossmatch("xm.left", "xm.right", 45.0)
    # and the fallback reads the neighbours instead, correctly
    got = pairs_of(crossmatch("xm.left", "xm.right", 45.0, mode="all", margin_fallback="read"))
    assert_same_pairs(got, truth_all(xm.left, xm.right, radius=45.0))


# ---------------------------------------------------------------- 8. HATS


def test_hats_left_and_right_equal_delta(xm):
    from userbatch.tables.hats_io import export_hats, register_hats

    register_hats(export_hats("xm.left", xm.base / "hats_left"), "xm.hleft")
    register_hats(export_hats("xm.right", xm.base / "hats_right"), "xm.hright")
    want = truth_all(xm.left, xm.right)
    delta_pairs = pairs_of(crossmatch("xm.left", "xm.right", RADIUS, mode="all"))
    assert_same_pairs(delta_pairs, want)
    assert_same_pairs(pairs_of(crossmatch("xm.hleft", "xm.right", RADIUS, mode="all")), want)
    res = crossmatch("xm.left", "xm.hright", RADIUS, mode="all")
    assert any(t.right_margin is not None for t in res.plan.tasks), "the HATS margin should be used"
    assert_same_pairs(pairs_of(res), want)
    assert_same_pairs(pairs_of(crossmatch("xm.hleft", "xm.hright", RADIUS)), truth_nearest(xm.left, xm.right))


# ---------------------------------------------------------------- 9. writing the result


@pytest.mark.heavy  # the fast tier writes tables elsewhere
def test_write_result_with_provenance(xm):
    from userbatch.tables.catalog import Catalog
    from userbatch.tables.delta import history
    from userbatch.tables.read import read_table

    right = xm.right
    write_table(xm.spark.createDataFrame(right.iloc[:2000]), "w.right", pixel_threshold=RIGHT_THRESHOLD,
                margin_radius_arcsec=MARGIN)
    write_table(xm.spark.createDataFrame(right.iloc[2000:]), "w.right", "append")
    old = pairs_of(crossmatch("xm.left", "w.right", RADIUS, mode="all", right_version=0))
    assert_same_pairs(old, truth_all(xm.left, right.iloc[:2000]))

    res = crossmatch("xm.left", "w.right", RADIUS, mode="all")
    n = res.to_arrow().num_rows
    assert n == len(truth_all(xm.left, right))
    result = res.write("user.xm", pixel_threshold=1000)
    assert result.rows == n
    back = read_table("user.xm").toPandas()
    assert len(back) == n
    assert_same_pairs(pairs_of(back), truth_all(xm.left, right))
    prov = history(Catalog().get("user.xm").location)[0]["provenance"]
    assert prov["job"] == "crossmatch"
    assert {"table": "xm.left", "version": 0} in prov["inputs"]
    assert {"table": "w.right", "version": 1} in prov["inputs"]
    assert len(prov["inputs"]) == 2
    params = prov["parameters"]["crossmatch"]
    assert params["radius_arcsec"] == RADIUS and params["k"] == 0 and params["how"] == "inner"


def _table_rows_and_layout(name: str):
    """A written table's rows (sorted, _healpix_29 kept) and its layout: partition -> row count."""
    from pathlib import Path

    import pyarrow.parquet as pq

    from userbatch.tables.catalog import Catalog
    from userbatch.tables.read import path_pixel, resolve

    entry = Catalog().get(name)
    layout: dict = {}
    pieces = []
    for path in resolve(entry).files.column("path").to_pylist():
        t = pq.read_table(Path(entry.location) / path)
        layout[path_pixel(path)] = layout.get(path_pixel(path), 0) + t.num_rows
        pieces.append(t.to_pandas())
    rows = pd.concat(pieces, ignore_index=True)
    keys = [c for c in ("objectId", "objectId_right", "_rank") if c in rows.columns]
    return rows.sort_values(keys, na_position="first").reset_index(drop=True), layout


@pytest.mark.heavy
@pytest.mark.parametrize("how,one_to_one,mode", [("inner", False, "all"), ("left", False, "nearest"),
                                                 ("outer", True, "nearest")])
def test_write_is_the_same_table_on_both_engines(xm, how, one_to_one, mode):
    """Local (pyarrow, no JVM) and Spark (tasks write their own pairs; global steps by Spark) write the same rows in
    the same layout: the left table's partitions, plus partitions of their own for right-only rows."""
    from chispa import assert_df_equality

    from userbatch.tables.catalog import Catalog
    from userbatch.tables.read import path_pixel, resolve

    got = {}
    for engine in ENGINES:
        res = crossmatch("xm.left", "xm.right", RADIUS, mode=mode, how=how, one_to_one=one_to_one, engine=engine)
        name = f"w.{engine}_{how}_{int(one_to_one)}_{mode}"
        written = res.write(name)
        got[engine] = _table_rows_and_layout(name)
        assert written.rows == len(got[engine][0]) == res.to_arrow().num_rows
    (lrows, llayout), (srows, slayout) = got["local"], got["spark"]
    assert_df_equality(xm.spark.createDataFrame(srows), xm.spark.createDataFrame(lrows[srows.columns]),
                       ignore_row_order=True, ignore_nullable=True)
    assert llayout == slayout
    left_parts = {path_pixel(p) for p in resolve(Catalog().get("xm.left")).files.column("path").to_pylist()}
    if how != "outer":
        assert set(llayout) <= left_parts, "pairs must be filed under their left row's partition"
    else:
        assert set(llayout) - left_parts, "right-only rows outside the left partitions need partitions of their own"
    if how == "inner" and not one_to_one:
        assert_same_pairs(pairs_of(lrows), truth_all(xm.left, xm.right))
