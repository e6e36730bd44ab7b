"""Generalised Lomb–Scargle periodograms per object (per band, or all bands together), at catalog scale.

The power is the floating-mean ("generalised") Lomb–Scargle of astropy's ``LombScargle`` with its ``standard``
normalisation, computed with ``nifty-ls`` (a NUFFT; CPU ``finufft`` by default, ``cufinufft`` on a GPU executor
when ``backend="cufinufft"``) or with astropy itself (``backend="astropy"``, the fallback).

**Batching.** nifty-ls evaluates many series at once when they share their times. Light curves in one partition
and band mostly come from the same visits, so the series of a group are put on the union of their times, a point
an object lacks getting zero weight (an infinite error): the generalised LS of a weighted series ignores
zero-weight points exactly, so the result equals the object's own periodogram (tested against astropy), while
the NUFFT is planned once per group. Groups whose union is mostly empty are done one object at a time.

**The frequency grid** is the same for every object of a call, so results do not depend on how rows are
partitioned: from ``1 / max_period_day`` to ``1 / min_period_day`` in steps of ``1 / (samples_per_peak *
baseline_day)``. The default ``min_period_day = 0.05`` (72 min) reaches short-period variables (RR Lyrae
0.2–1 d, delta Scuti, contact binaries); the "average Nyquist" limit used by default elsewhere (about N / 2T,
0.1 per day for 150 visits over 2 years) would only see periods above ~10 days on LSST's irregular cadence,
whose pseudo-Nyquist frequency is far higher than the mean sampling rate suggests. ``baseline_day`` defaults to the
span of the call's times (read from the data once), ``max_period_day`` to that baseline.

Outputs per object (and band unless ``multiband``): ``n_points``, ``best_period_day``, ``best_power``,
``fap`` (Baluev's analytic false-alarm probability for single-band series; null for multiband), and with
``top_n > 1`` the lists ``peak_periods_day`` / ``peak_powers`` of the highest local maxima.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from ..errors import UserbatchError
from ..tables.catalog import Catalog
from ..tables.read import read_table
from .lightcurves import LSST_BANDS, Columns
from .lightcurves import features as _features
from .lightcurves import series as series_of
from .per_object import PerObject

log = logging.getLogger(__name__)

BACKENDS = ("auto", "finufft", "cufinufft", "astropy")
MIN_POINTS = 5
#: a group of series is batched on its union of times when at least this fraction of that union is filled
MIN_FILL = 0.25
#: series per nifty-ls call (bounds memory: Nf x this many float64)
BATCH = 128


@dataclass(frozen=True)
class Grid:
    fmin: float
    df: float
    nf: int

    @property
    def frequencies(self) -> np.ndarray:
        return self.fmin + self.df * np.arange(self.nf)

    @property
    def fmax(self) -> float:
        return self.fmin + self.df * (self.nf - 1)


def make_grid(baseline_day: float, min_period_day: float = 0.05, max_period_day: float | None = None,
              samples_per_peak: int = 5, max_frequencies: int = 2_000_000) -> Grid:
    for what, v in (("baseline_day", baseline_day), ("min_period_day", min_period_day)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise UserbatchError(f"{what} must be a positive number of days; got {v!r}")
    if not isinstance(samples_per_peak, int) or samples_per_peak < 1:
        raise UserbatchError(f"samples_per_peak must be a positive integer; got {samples_per_peak!r}")
    max_period_day = baseline_day if max_period_day is None else max_period_day
    if not (math.isfinite(max_period_day) and max_period_day > min_period_day):
        raise UserbatchError(f"max_period_day ({max_period_day}) must exceed min_period_day ({min_period_day})")
    fmin, fmax = 1.0 / max_period_day, 1.0 / min_period_day
    df = 1.0 / (samples_per_peak * baseline_day)
    nf = int(math.floor((fmax - fmin) / df)) + 1
    if nf > max_frequencies:
        raise UserbatchError(f"the grid would have {nf:,} frequencies (> {max_frequencies:,}); raise min_period_day "
                             "or lower samples_per_peak")
    return Grid(fmin, df, nf)


# ---------------------------------------------------------------- power


def _backend(name: str) -> str:
    if name != "auto":
        return name
    try:
        import nifty_ls  # noqa: F401

        return "finufft"
    except ImportError:  # pragma: no cover - nifty-ls is a dependency
        return "astropy"


def powers(t_union: np.ndarray, ys: np.ndarray, dys: np.ndarray, grid: Grid, backend: str) -> np.ndarray:
    """Standard-normalised GLS power of each row of ``ys`` (zero-weight points have ``dy = inf``), (n, nf)."""
    if backend == "astropy":
        from astropy.timeseries import LombScargle

        freq = grid.frequencies
        out = np.empty((len(ys), grid.nf))
        for k in range(len(ys)):
            m = np.isfinite(dys[k])
            out[k] = LombScargle(t_union[m], ys[k][m], dys[k][m]).power(freq, method="fast")
        return out
    import nifty_ls

    res = nifty_ls.lombscargle(t_union, ys, dys, fmin=grid.fmin, fmax=grid.fmax, Nf=grid.nf, backend=backend)
    return np.atleast_2d(res.power)


def _chi2_ref(y: np.ndarray, dy: np.ndarray) -> float:
    w = 1.0 / dy ** 2
    return float(np.sum(w * (y - np.sum(w * y) / np.sum(w)) ** 2))


def _peaks(p: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` highest local maxima (the global maximum first)."""
    if n <= 1 or len(p) < 3:
        return np.array([int(np.argmax(p))])
    inner = np.flatnonzero((p[1:-1] >= p[:-2]) & (p[1:-1] > p[2:])) + 1
    cand = np.concatenate([inner, [0, len(p) - 1]])
    cand = cand[np.argsort(-p[cand], kind="stable")]
    return cand[:n]


# ---------------------------------------------------------------- one unit of rows


@dataclass
class Spec(Columns):
    multiband: bool = False
    top_n: int = 1
    fap: bool = True
    backend: str = "finufft"
    grid: Grid | None = None

    def schema(self, object_type=pa.int64()) -> pa.Schema:
        fields = [pa.field(self.object_column, object_type)]
        if not self.multiband:
            fields.append(pa.field(self.band_column, pa.string()))
        fields += [pa.field("n_points", pa.int64()), pa.field("best_period_day", pa.float64()),
                   pa.field("best_power", pa.float64()), pa.field("fap", pa.float64())]
        if self.top_n > 1:
            fields += [pa.field("peak_periods_day", pa.list_(pa.float64())),
                       pa.field("peak_powers", pa.list_(pa.float64()))]
        return pa.schema(fields)


def compute(table: pa.Table, spec: Spec) -> pa.Table:
    """Periodograms of every object (and band) in ``table``; all rows of an object must be in it."""
    from astropy.timeseries.periodograms.lombscargle._statistics import false_alarm_probability

    otype = table.schema.field(spec.object_column).type
    schema = spec.schema(otype)
    if table.num_rows == 0:
        return schema.empty_table()
    ser = series_of(table, spec)
    objects, oi, code, t, y, dy, starts = ser.objects, ser.obj_i, ser.code, ser.t, ser.y, ser.dy, ser.starts
    series = [(int(oi[a]), int(code[a]), a, b) for a, b in zip(starts[:-1], starts[1:])]
    grid = spec.grid
    power = {}
    # group the series by band: the union of times of a band's series, zero weight where a series lacks a time
    for bcode in range(len(spec.bands)):
        group = [s for s in series if s[1] == bcode and s[3] - s[2] >= MIN_POINTS]
        for lo in range(0, len(group), BATCH):
            chunk = group[lo:lo + BATCH]
            tu = np.unique(np.concatenate([t[a:b] for _, _, a, b in chunk]))
            fill = sum(b - a for _, _, a, b in chunk) / (len(chunk) * len(tu))
            dup = any(len(np.unique(t[a:b])) != b - a for _, _, a, b in chunk)
            if fill >= MIN_FILL and not dup and spec.backend != "astropy":
                ys = np.zeros((len(chunk), len(tu)))
                dys = np.full((len(chunk), len(tu)), np.inf)
                for k, (_, _, a, b) in enumerate(chunk):
                    pos = np.searchsorted(tu, t[a:b])
                    ys[k, pos] = y[a:b]
                    dys[k, pos] = dy[a:b]
                ps = powers(tu, ys, dys, grid, spec.backend)
                for k, s in enumerate(chunk):
                    power[(s[0], s[1])] = ps[k]
            else:
                for s in chunk:
                    a, b = s[2], s[3]
                    power[(s[0], s[1])] = powers(t[a:b], y[a:b][None, :], dy[a:b][None, :], grid, spec.backend)[0]
    freq = grid.frequencies
    rows = []
    by_object: dict[int, list] = {}
    for s in series:
        by_object.setdefault(s[0], []).append(s)
    for o in range(len(objects)):
        mine = by_object.get(o, [])
        if spec.multiband:
            use = [s for s in mine if (s[0], s[1]) in power]
            n = sum(s[3] - s[2] for s in mine)
            if use:
                w = np.array([_chi2_ref(y[s[2]:s[3]], dy[s[2]:s[3]]) for s in use])
                p = sum(wk * power[(s[0], s[1])] for wk, s in zip(w, use)) / w.sum() if w.sum() > 0 else None
            else:
                p = None
            rows.append((objects[o], None, n, p, None))
        else:
            present = {s[1]: s for s in mine}
            for bcode in sorted(present):
                s = present[bcode]
                n = s[3] - s[2]
                p = power.get((s[0], s[1]))
                z = None
                if p is not None and spec.fap:
                    a, b = s[2], s[3]
                    z = float(false_alarm_probability(float(p.max()), grid.fmax, t[a:b], y[a:b], dy[a:b],
                                                      normalization="standard", method="baluev"))
                rows.append((objects[o], spec.bands[bcode], n, p, z))
    cols = {spec.object_column: [], "n_points": [], "best_period_day": [], "best_power": [], "fap": []}
    if not spec.multiband:
        cols[spec.band_column] = []
    peaks_p, peaks_w = [], []
    for o, b, n, p, z in rows:
        cols[spec.object_column].append(o)
        if not spec.multiband:
            cols[spec.band_column].append(b)
        cols["n_points"].append(n)
        if p is None:
            cols["best_period_day"].append(None)
            cols["best_power"].append(None)
            cols["fap"].append(None)
            peaks_p.append(None)
            peaks_w.append(None)
            continue
        idx = _peaks(p, spec.top_n)
        cols["best_period_day"].append(float(1.0 / freq[idx[0]]))
        cols["best_power"].append(float(p[idx[0]]))
        cols["fap"].append(z)
        peaks_p.append([float(1.0 / freq[i]) for i in idx])
        peaks_w.append([float(p[i]) for i in idx])
    arrays = []
    for f in schema:
        if f.name == "peak_periods_day":
            arrays.append(pa.array(peaks_p, f.type))
        elif f.name == "peak_powers":
            arrays.append(pa.array(peaks_w, f.type))
        else:
            arrays.append(pa.array(cols[f.name], f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


# ---------------------------------------------------------------- the API


class Periodograms(PerObject):
    """Planned periodograms; read or write them as :class:`~userbatch.ops.lightcurves.Features`."""
    kernel = staticmethod(compute)
    job = "periodogram"
    param_key = "periodogram"

    def explain(self) -> str:
        g = self.spec.grid
        return (f"{super().explain()}; grid {g.nf:,} frequencies {g.fmin:.4g}..{g.fmax:.4g} /day "
                f"(periods {1 / g.fmax:.3g}..{1 / g.fmin:.4g} d); backend {self.spec.backend}")

    def parameters(self) -> dict:
        s, g = self.spec, self.spec.grid
        return {"source": self.table or self.source[0], "version": self.version, "bands": list(s.bands),
                "multiband": s.multiband, "top_n": s.top_n, "backend": s.backend, "fmin": g.fmin, "df": g.df,
                "nf": g.nf, "engine": self.engine}


def periodogram(
    source,
    *,
    bands=LSST_BANDS,
    multiband: bool = False,
    min_period_day: float = 0.05,
    max_period_day: float | None = None,
    baseline_day: float | None = None,
    samples_per_peak: int = 5,
    top_n: int = 1,
    fap: bool = True,
    backend: str = "auto",
    object_column: str = "objectId",
    band_column: str = "band",
    time_column: str | None = None,
    flux_column: str = "psfFlux",
    err_column: str = "psfFluxErr",
    version: int | None = None,
    engine: str = "auto",
    spark=None,
    catalog: Catalog | None = None,
) -> Periodograms:
    """Lomb–Scargle periodograms of every object of ``source`` (table name, pandas / Arrow / Spark DataFrame);
    see the module docstring for the grid, batching and outputs. ``backend="cufinufft"`` runs nifty-ls on a GPU
    (executors need one: ``spark.task.resource.gpu.amount``); ``"astropy"`` is the slow fallback.

    Parameters
    ----------
    source : str, pandas.DataFrame, pyarrow.Table or pyspark.sql.DataFrame
        A catalog table name (``"dp1.forced_source"``), or the rows themselves.
    bands : str or sequence of str
        Distinct LSST bands to use, e.g. ``("g", "r")`` or ``"gr"``; by default ``ugrizy``.
    multiband : bool
        One periodogram per object over all its bands (the per-band powers averaged, weighted by each band's
        chi-squared about its mean; ``fap`` is then null) instead of one per (object, band).
    min_period_day : float
        Shortest period of the frequency grid, in days.
    max_period_day : float, optional
        Longest period of the grid, in days; by default ``baseline_day``.
    baseline_day : float, optional
        Time span that sets the grid step, ``1 / (samples_per_peak * baseline_day)``; by default the span of the
        input's times.
    samples_per_peak : int
        Grid frequencies per periodogram peak width.
    top_n : int
        How many of the highest local maxima to report; above 1, adds ``peak_periods_day`` and ``peak_powers``.
    fap : bool
        Compute the false-alarm probability of the best peak (Baluev) for single-band series.
    backend : {"auto", "finufft", "cufinufft", "astropy"}
        How the power is computed; ``"auto"`` is ``"finufft"`` when nifty-ls is installed, else ``"astropy"``.
    object_column : str
        Column holding the object id the rows are grouped by.
    band_column : str
        Column holding each row's band.
    time_column : str, optional
        Column holding each row's time in days (MJD); by default the table's declared one, else ``expMidptMJD``.
    flux_column : str
        Column holding the flux.
    err_column : str
        Column holding the flux error.
    version : int, optional
        Delta version of a catalog table; by default the latest. Ignored for in-memory or Spark input.
    engine : {"auto", "local", "spark"}
        Where the work runs, as for :func:`~userbatch.ops.lightcurves.features`.
    spark : pyspark.sql.SparkSession, optional
        The session for Spark work; by default the running session, or a new bare one.
    catalog : Catalog, optional
        The catalog ``source`` is looked up in; by default ``Catalog()`` for the current user.

    Returns
    -------
    Periodograms
        The planned computation (grid fixed, nothing computed yet); read it with ``to_arrow``, ``to_pandas`` or
        ``to_spark``, or ``write`` it.
    """

    if backend not in BACKENDS:
        raise UserbatchError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    if not isinstance(top_n, int) or isinstance(top_n, bool) or top_n < 1:
        raise UserbatchError(f"top_n must be a positive integer; got {top_n!r}")
    backend = _backend(backend)
    if backend == "cufinufft":
        import nifty_ls.core

        if "cufinufft" not in nifty_ls.core.AVAILABLE_BACKENDS:
            raise UserbatchError("backend 'cufinufft' needs nifty-ls installed with its 'cuda' extra and a GPU; "
                                 "use 'finufft' (CPU) here")
    plan = _features(source, bands=bands, object_column=object_column, band_column=band_column,
                     time_column=time_column, flux_column=flux_column, err_column=err_column, version=version,
                     engine=engine, spark=spark, catalog=catalog)
    fspec = plan.spec
    spec = Spec(fspec.object_column, fspec.band_column, fspec.time_column, fspec.flux_column, fspec.err_column,
                fspec.bands, multiband, top_n, fap, backend)
    if baseline_day is None:
        baseline_day = _baseline(plan, spec)
    spec.grid = make_grid(baseline_day, min_period_day, max_period_day, samples_per_peak)
    out = Periodograms(spec, plan.source, plan.engine, spark, plan.table, plan.version)
    log.info("periodogram: %s", out.explain())
    return out


def _baseline(plan, spec: Spec) -> float:
    """The time span of the input (from Delta statistics when the table has them, else one column read)."""
    kind = plan.source[0]
    if kind == "director":
        side = plan.source[1]
        rng = side.stats.get(spec.time_column) or side.column_range(spec.time_column)
    elif kind == "arrow":
        v = plan.source[1].column(spec.time_column).to_numpy(zero_copy_only=False).astype(float)
        v = v[np.isfinite(v)]
        rng = (v.min(), v.max()) if len(v) else None
    else:
        from pyspark.sql import functions as F

        df = plan.source[1] if kind == "spark" else None
        if df is None:

            df = read_table(plan.source[1], plan.source[2], columns=[spec.time_column])
        r = df.agg(F.min(spec.time_column), F.max(spec.time_column)).first()
        rng = (r[0], r[1]) if r[0] is not None else None
    if rng is None or not rng[1] > rng[0]:
        raise UserbatchError("the input's times span no interval; give baseline_day")
    return float(rng[1] - rng[0])
