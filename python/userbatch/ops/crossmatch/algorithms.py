"""Cross-match algorithms as plug-ins: one task's left rows and right rows (margin included) in, pairs out.

Why an interface. Which pairs of sources are "the same object" is a science decision (DMTN-202: true cross-matching
is "generally a science-case-specific activity"), so the engines must not hard-wire it. An algorithm here declares
everything an engine needs *before* any task runs — the search radius to size margins from, the input columns it
reads, the schema of the columns it adds, the score to rank by for one-to-one — and then sees only numpy arrays of
one task. It never learns which engine (threads or Spark) called it: the shape of LSDB's
``AbstractCrossmatchAlgorithm`` (``lsdb/core/crossmatch/abstract_crossmatch_algorithm.py``), with two differences:
the extra columns are a ``pyarrow.Schema`` (our results are Arrow), and the contract is checked by one wrapper,
:func:`run_algorithm`, so an algorithm that breaks it is named and told what it broke instead of producing a
misaligned table.

The contract of :meth:`CrossmatchAlgorithm.match`:

- inputs: two mappings of column name to numpy array (:class:`TaskRows`), each with the positions under the keys
  ``ra`` and ``dec`` (degrees, ICRS; already propagated to the match epoch where the engine does that) and every
  column the algorithm lists in ``required_left_columns`` / ``required_right_columns`` under its own name;
- output: ``(left_idx, right_idx, extra)`` — two integer arrays of equal length (positions into the left and right
  rows, ``0 <= i < n``) and a dict holding exactly the columns of ``extra_columns``, each with one value per pair and
  the declared type.

``crossmatch(..., algorithm=...)`` runs an algorithm through :func:`run_algorithm` in every task on both engines
(:mod:`~userbatch.ops.crossmatch.tasks`); the built-ins keep the numba kernel there (same pairs, see the tests).
This module imports only numpy, pyarrow, scipy and :mod:`userbatch.errors`, so the engines can import it without a
cycle.
"""

from __future__ import annotations

import importlib
import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
from scipy.spatial import cKDTree
from scipy.special import expit

from ...errors import UserbatchError

log = logging.getLogger(__name__)

#: Keys under which an engine hands an algorithm the positions of a task's rows (degrees).
RA = "ra"
DEC = "dec"
#: Columns the built-ins add; the same names as the result of ``crossmatch()`` today.
DIST_COLUMN = "_dist_arcsec"
RANK_COLUMN = "_rank"
CHI2_COLUMN = "_chi2"
NORM_DIST_COLUMN = "_norm_dist"
LOG_BF_COLUMN = "_log_bayes_factor"
P_MATCH_COLUMN = "_p_match"

ARCSEC_RAD = math.pi / (180.0 * 3600.0)
#: Relative slack on the candidate chord, so rounding never loses a pair the exact test below would keep.
_CANDIDATE_SLACK = 1e-9


class AlgorithmContractError(UserbatchError):
    """A cross-match algorithm broke its contract (or could not be loaded); the message names what it broke."""


# ---------------------------------------------------------------- task rows


class TaskRows(Mapping):
    """One side's rows of one task as a read-only mapping of column name to numpy array.

    Why a view rather than a dict: a task's table may hold many columns the algorithm never reads, and converting
    Arrow to numpy costs a copy for some types, so columns are converted on first access and cached. The positions
    appear under ``ra``/``dec`` whatever the table calls them.

    Parameters
    ----------
    data : dict of str to array-like, pyarrow.Table or pandas.DataFrame
        The rows.
    ra, dec : str
        The columns of ``data`` that hold the positions in degrees; exposed as ``ra`` and ``dec``.
    what : str
        ``"left"`` or ``"right"``, for messages.
    """

    def __init__(self, data: Any, ra: str = RA, dec: str = DEC, what: str = "left"):
        self._data = data
        self._alias = {RA: ra, DEC: dec}
        self._hidden = {ra, dec} - {RA, DEC}
        self.what = what
        self._cache: dict[str, np.ndarray] = {}
        if isinstance(data, pa.Table):
            self._names = list(data.column_names)
        elif hasattr(data, "columns") and hasattr(data, "__getitem__"):  # a pandas DataFrame
            self._names = [str(c) for c in data.columns]
        elif isinstance(data, Mapping):
            self._names = list(data.keys())
        else:
            raise AlgorithmContractError(f"the {what} rows must be a dict of arrays, a pyarrow Table or a pandas "
                                         f"DataFrame; got {type(data).__name__}")

    def _source(self, key: str) -> str:
        return self._alias.get(key, key)

    def __getitem__(self, key: str) -> np.ndarray:
        if key in self._cache:
            return self._cache[key]
        src = self._source(key)
        if key in self._hidden or src not in self._names:
            raise KeyError(key)
        col = self._data[src] if not isinstance(self._data, pa.Table) else self._data.column(src)
        if isinstance(col, (pa.ChunkedArray, pa.Array)):
            arr = col.to_numpy(zero_copy_only=False)
        elif hasattr(col, "to_numpy"):
            arr = col.to_numpy()
        else:
            arr = np.asarray(col)
        if key in (RA, DEC):
            arr = np.ascontiguousarray(arr, dtype=np.float64)
        self._cache[key] = arr
        return arr

    def __iter__(self) -> Iterator[str]:
        seen = [k for k in (RA, DEC) if self._source(k) in self._names]
        return iter(seen + [n for n in self._names if n not in self._hidden and n not in (RA, DEC)])

    def __len__(self) -> int:
        return sum(1 for _ in self)

    @property
    def num_rows(self) -> int:
        """Number of rows (the length of the ``ra`` column)."""
        return int(len(self[RA]))

    def missing(self, columns: list[str]) -> list[str]:
        """Which of ``columns`` these rows lack.

        Parameters
        ----------
        columns : list of str
            Column names (``ra``/``dec`` stand for the position columns).
        """
        return [c for c in columns if c not in self]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key not in self._hidden and self._source(key) in self._names


def as_rows(data: Any, what: str = "left") -> TaskRows:
    """``data`` as :class:`TaskRows` (positions under ``ra``/``dec``); a TaskRows is returned as it is.

    Parameters
    ----------
    data : TaskRows, dict of str to array-like, pyarrow.Table or pandas.DataFrame
        One side's rows.
    what : str
        ``"left"`` or ``"right"``, for messages.
    """
    return data if isinstance(data, TaskRows) else TaskRows(data, what=what)


# ---------------------------------------------------------------- geometry (pure numpy)


def unit_vectors(ra_deg: np.ndarray, dec_deg: np.ndarray) -> np.ndarray:
    """Unit vectors, shape (n, 3): distances between them are chords, with no special case at RA=0/360 or the poles.

    Parameters
    ----------
    ra_deg, dec_deg : numpy.ndarray
        Positions in degrees.
    """
    ra = np.radians(np.asarray(ra_deg, dtype=np.float64))
    dec = np.radians(np.asarray(dec_deg, dtype=np.float64))
    cd = np.cos(dec)
    return np.ascontiguousarray(np.stack([cd * np.cos(ra), cd * np.sin(ra), np.sin(dec)], axis=1))


def chord(radius_arcsec: float) -> float:
    """Straight-line distance between unit vectors ``radius_arcsec`` apart on the sphere.

    Parameters
    ----------
    radius_arcsec : float
        Angle in arcseconds (clipped at 180 degrees).
    """
    return 2.0 * math.sin(min(float(radius_arcsec), 648000.0) * ARCSEC_RAD / 2.0)


def chord_to_arcsec(chord_len: np.ndarray) -> np.ndarray:
    """Angle in arcseconds subtended by chords of the unit sphere.

    Parameters
    ----------
    chord_len : numpy.ndarray
        Chord lengths.
    """
    return 2.0 * np.arcsin(np.minimum(np.asarray(chord_len) / 2.0, 1.0)) / ARCSEC_RAD


def candidate_pairs(left_xyz: np.ndarray, right_xyz: np.ndarray, radius_arcsec: float,
                    min_radius_arcsec: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair with ``min_radius <= separation <= radius``, sorted by (left row, distance, right row).

    A k-d tree per side on unit vectors (as LSDB's ``kdtree_match.py``); the tree query has a hair of slack and the
    kept pairs are then tested on the squared chord computed as :mod:`~userbatch.ops.crossmatch.kernel` computes it,
    so the same radius keeps the same pairs there and here.

    Parameters
    ----------
    left_xyz, right_xyz : numpy.ndarray
        Unit vectors, shape (n, 3), from :func:`unit_vectors`.
    radius_arcsec : float
        Largest separation kept (inclusive).
    min_radius_arcsec : float
        Smallest separation kept (inclusive); 0 keeps coincident points.

    Returns
    -------
    left_idx, right_idx : numpy.ndarray of int64
        Positions of the pairs' rows.
    chord2 : numpy.ndarray of float64
        Squared chord of each pair.
    """
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64))
    if len(left_xyz) == 0 or len(right_xyz) == 0 or radius_arcsec < 0:
        return empty
    dmax = chord(radius_arcsec)
    dmin = chord(min_radius_arcsec) if min_radius_arcsec > 0 else 0.0
    lt = cKDTree(left_xyz, compact_nodes=True, balanced_tree=True)
    rt = cKDTree(right_xyz, compact_nodes=True, balanced_tree=True)
    sdm = lt.sparse_distance_matrix(rt, dmax * (1.0 + _CANDIDATE_SLACK) + 1e-15, output_type="ndarray")
    li = sdm["i"].astype(np.int64)
    ri = sdm["j"].astype(np.int64)
    ex = right_xyz[ri, 0] - left_xyz[li, 0]
    ey = right_xyz[ri, 1] - left_xyz[li, 1]
    ez = right_xyz[ri, 2] - left_xyz[li, 2]
    d2 = ex * ex + ey * ey + ez * ez
    ok = (d2 <= dmax * dmax) & (d2 >= dmin * dmin)
    li, ri, d2 = li[ok], ri[ok], d2[ok]
    order = np.lexsort((ri, d2, li))
    return li[order], ri[order], d2[order]


def rank_within_left(left_idx: np.ndarray) -> np.ndarray:
    """1-based rank of each pair among the pairs of its left row, for pairs already grouped by left row in order.

    Parameters
    ----------
    left_idx : numpy.ndarray
        Left positions, equal values consecutive.
    """
    n = len(left_idx)
    if n == 0:
        return np.zeros(0, np.int32)
    starts = np.r_[0, np.flatnonzero(np.diff(left_idx)) + 1]
    counts = np.diff(np.r_[starts, n])
    return (np.arange(n) - np.repeat(starts, counts) + 1).astype(np.int32)


def tangent_basis(ra_deg: np.ndarray, dec_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors pointing east (increasing RA) and north at each position, shape (n, 3) each.

    An offset or an error ellipse given as (RA*cos(dec), Dec) components is a vector in this basis.

    Parameters
    ----------
    ra_deg, dec_deg : numpy.ndarray
        Positions in degrees.
    """
    ra = np.radians(np.asarray(ra_deg, dtype=np.float64))
    dec = np.radians(np.asarray(dec_deg, dtype=np.float64))
    sa, ca, sd, cd = np.sin(ra), np.cos(ra), np.sin(dec), np.cos(dec)
    east = np.stack([-sa, ca, np.zeros_like(ra)], axis=1)
    north = np.stack([-sd * ca, -sd * sa, cd], axis=1)
    return east, north


# ---------------------------------------------------------------- the interface


class Pairs(NamedTuple):
    """What :func:`run_algorithm` returns: checked pair indices and extra columns (unpacks like the raw triple)."""

    left_idx: np.ndarray
    right_idx: np.ndarray
    extra: dict[str, np.ndarray]

    def extra_table(self, schema: pa.Schema) -> pa.Table:
        """The extra columns as an Arrow table in ``schema``'s order.

        Parameters
        ----------
        schema : pyarrow.Schema
            The algorithm's ``extra_columns``.
        """
        return pa.Table.from_arrays([pa.array(self.extra[f.name], f.type) for f in schema], schema=schema)


class CrossmatchAlgorithm(ABC):
    """Base class of every cross-match algorithm: declare up front, then match one task's rows.

    Subclasses set (as class attributes or in ``__init__``) ``extra_columns``, ``score_column`` and
    ``score_higher_is_better``; provide ``radius_arcsec`` (the largest separation at which a pair can be kept:
    the engines size margins and ring reads from it, so a pair farther apart may never be seen) and the input
    columns they read; and implement :meth:`match`. Parameters are checked in :meth:`validate`, which
    :func:`load_algorithm` calls before any task runs.
    """

    #: Columns :meth:`match` adds, with their types; every call returns exactly these.
    extra_columns: pa.Schema = pa.schema([])
    #: An extra column to rank pairs by (one-to-one, best first), or None when the algorithm offers none.
    score_column: str | None = None
    #: True when a larger score is a better pair (a probability), False when smaller is (a distance, a chi2).
    score_higher_is_better: bool = False

    @property
    @abstractmethod
    def radius_arcsec(self) -> float:
        """The largest separation (arcsec) at which this algorithm can keep a pair; margins are sized from it."""

    @property
    def required_left_columns(self) -> list[str]:
        """Left columns :meth:`match` reads besides ``ra``/``dec``."""
        return []

    @property
    def required_right_columns(self) -> list[str]:
        """Right columns :meth:`match` reads besides ``ra``/``dec``."""
        return []

    def validate(self) -> None:
        """Check the algorithm's own parameters; raise :class:`~userbatch.errors.UserbatchError` saying what to
        change. Called once, before any task runs; the default accepts everything."""

    @abstractmethod
    def match(self, left: TaskRows, right: TaskRows) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Pairs of one task.

        Parameters
        ----------
        left : TaskRows or dict of str to numpy.ndarray
            The task's left rows: ``ra``/``dec`` in degrees and ``required_left_columns``.
        right : TaskRows or dict of str to numpy.ndarray
            The task's right rows, margin included: ``ra``/``dec`` and ``required_right_columns``.

        Returns
        -------
        left_idx, right_idx : numpy.ndarray
            Integer positions into ``left`` and ``right``, one per pair.
        extra : dict of str to numpy.ndarray
            Exactly the columns of ``extra_columns``, one value per pair.
        """

    def candidates(self, left: TaskRows, right: TaskRows, radius_arcsec: float,
                   min_radius_arcsec: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pairs within a radius, sorted by (left, distance, right), with their separations in arcsec.

        One place for the candidate search, so an engine can swap in a faster one (the numba grid of
        :mod:`~userbatch.ops.crossmatch.kernel`) for every algorithm at once.

        Parameters
        ----------
        left, right : TaskRows
            The task's rows.
        radius_arcsec, min_radius_arcsec : float
            Separations kept, both inclusive.

        Returns
        -------
        left_idx, right_idx : numpy.ndarray of int64
            Positions of the pairs' rows.
        dist_arcsec : numpy.ndarray of float64
            Their separations.
        """
        li, ri, d2 = candidate_pairs(unit_vectors(left[RA], left[DEC]), unit_vectors(right[RA], right[DEC]),
                                     radius_arcsec, min_radius_arcsec)
        return li, ri, chord_to_arcsec(np.sqrt(d2))

    def empty_extra(self) -> dict[str, np.ndarray]:
        """Zero-length extra columns of the declared types (for a task with no pairs)."""
        return {f.name: np.zeros(0, dtype=f.type.to_pandas_dtype()) for f in self.extra_columns}

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({params})"


def check_declaration(alg: Any) -> CrossmatchAlgorithm:
    """Check what an algorithm declares, before any task runs; returns it.

    Parameters
    ----------
    alg : CrossmatchAlgorithm
        The algorithm.
    """
    if not isinstance(alg, CrossmatchAlgorithm):
        raise AlgorithmContractError(f"a cross-match algorithm must be an instance of a CrossmatchAlgorithm "
                                     f"subclass; got {type(alg).__name__}")
    name = type(alg).__name__
    schema = alg.extra_columns
    if not isinstance(schema, pa.Schema):
        raise AlgorithmContractError(f"{name}.extra_columns must be a pyarrow.Schema; got {type(schema).__name__}")
    if len(set(schema.names)) != len(schema.names):
        raise AlgorithmContractError(f"{name}.extra_columns names a column twice: {schema.names}")
    try:
        radius = float(alg.radius_arcsec)
    except (TypeError, ValueError) as e:
        raise AlgorithmContractError(f"{name}.radius_arcsec must be a number of arcseconds: {e}") from e
    if not (math.isfinite(radius) and radius > 0):
        raise AlgorithmContractError(f"{name}.radius_arcsec must be a positive finite number of arcseconds; "
                                     f"got {radius!r}")
    if alg.score_column is not None and alg.score_column not in schema.names:
        raise AlgorithmContractError(f"{name}.score_column {alg.score_column!r} is not one of its extra_columns "
                                     f"({', '.join(schema.names) or 'none'})")
    for side in ("left", "right"):
        cols = getattr(alg, f"required_{side}_columns")
        if not isinstance(cols, (list, tuple)) or not all(isinstance(c, str) for c in cols):
            raise AlgorithmContractError(f"{name}.required_{side}_columns must be a list of column names; "
                                         f"got {cols!r}")
        clash = [c for c in cols if c in (RA, DEC)]
        if clash:
            raise AlgorithmContractError(f"{name}.required_{side}_columns lists {clash}: the positions are always "
                                         f"passed as '{RA}'/'{DEC}'; list only the other columns")
    alg.validate()
    return alg


def _index_array(value: Any, what: str, name: str) -> np.ndarray:
    arr = value.to_numpy(zero_copy_only=False) if isinstance(value, (pa.Array, pa.ChunkedArray)) else np.asarray(value)
    if arr.ndim != 1:
        raise AlgorithmContractError(f"{name}.match returned {what} with shape {arr.shape}; it must be 1-D")
    if arr.dtype.kind not in "iu" and not (arr.size == 0 and arr.dtype.kind == "f"):
        raise AlgorithmContractError(f"{name}.match returned {what} of dtype {arr.dtype}; it must hold integers "
                                     "(positions into the task's rows)")
    return arr.astype(np.int64, copy=False)


def _check_result(alg: CrossmatchAlgorithm, result: Any, n_left: int, n_right: int) -> Pairs:
    name = type(alg).__name__
    if not isinstance(result, tuple) or len(result) != 3:
        raise AlgorithmContractError(f"{name}.match must return a tuple (left_idx, right_idx, extra); got "
                                     f"{type(result).__name__}" + (f" of length {len(result)}"
                                                                   if isinstance(result, tuple) else ""))
    li = _index_array(result[0], "left_idx", name)
    ri = _index_array(result[1], "right_idx", name)
    extra = result[2]
    if len(li) != len(ri):
        raise AlgorithmContractError(f"{name}.match returned index arrays of different lengths: left_idx has "
                                     f"{len(li)}, right_idx {len(ri)}")
    for what, idx, n in (("left_idx", li, n_left), ("right_idx", ri, n_right)):
        if len(idx) and idx.min() < 0:
            raise AlgorithmContractError(f"{name}.match returned negative {what} ({int(idx.min())}); positions "
                                         "count from 0")
        if len(idx) and idx.max() >= n:
            raise AlgorithmContractError(f"{name}.match returned {what} out of range: {int(idx.max())} with "
                                         f"{n} {what.split('_')[0]} rows")
    if not isinstance(extra, Mapping):
        raise AlgorithmContractError(f"{name}.match returned extra as {type(extra).__name__}; it must be a dict of "
                                     "column name to array")
    declared = alg.extra_columns
    undeclared = [c for c in extra if c not in declared.names]
    if undeclared:
        raise AlgorithmContractError(f"{name}.match returned undeclared extra column(s) {undeclared}; declare them "
                                     f"in extra_columns (declared: {declared.names})")
    missing = [c for c in declared.names if c not in extra]
    if missing:
        raise AlgorithmContractError(f"{name}.match did not return declared extra column(s) {missing}")
    out: dict[str, np.ndarray] = {}
    for f in declared:
        v = extra[f.name]
        arr = v.to_numpy(zero_copy_only=False) if isinstance(v, (pa.Array, pa.ChunkedArray)) else np.asarray(v)
        if arr.ndim != 1 or len(arr) != len(li):
            raise AlgorithmContractError(f"{name}.match returned extra column {f.name!r} with "
                                         f"{arr.shape[0] if arr.ndim else 0} values for {len(li)} pairs"
                                         + ("" if arr.ndim == 1 else f" (shape {arr.shape}; it must be 1-D)"))
        try:
            got = v.type if isinstance(v, (pa.Array, pa.ChunkedArray)) else pa.from_numpy_dtype(arr.dtype)
        except (pa.ArrowNotImplementedError, pa.ArrowInvalid, TypeError):
            got = None
        if got is None and arr.dtype == object:  # strings, lists: whatever Arrow can read as the declared type
            try:
                got = pa.array(arr, f.type).type
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
                got = None
        if got != f.type:
            raise AlgorithmContractError(f"{name}.match returned extra column {f.name!r} as "
                                         f"{got if got is not None else arr.dtype}; extra_columns declares {f.type}")
        out[f.name] = arr
    return Pairs(li, ri, out)


def run_algorithm(alg: CrossmatchAlgorithm, left: Any, right: Any, *, left_coords: tuple[str, str] = (RA, DEC),
                  right_coords: tuple[str, str] = (RA, DEC)) -> Pairs:
    """Run an algorithm on one task's rows and check everything it returns against its contract.

    What the engines call instead of ``alg.match`` directly: a user's algorithm that returns an index out of range,
    an undeclared column or a column of the wrong type gets an :class:`AlgorithmContractError` naming the fault,
    not a misaligned result. A task with no rows on either side returns no pairs without calling ``match``.

    Parameters
    ----------
    alg : CrossmatchAlgorithm
        The algorithm (its declaration is checked too).
    left : TaskRows, dict of str to array-like, pyarrow.Table or pandas.DataFrame
        The task's left rows.
    right : TaskRows, dict of str to array-like, pyarrow.Table or pandas.DataFrame
        The task's right rows, margin included.
    left_coords, right_coords : tuple of str
        The (ra, dec) columns of ``left``/``right`` in degrees; they reach the algorithm as ``ra``/``dec``.

    Returns
    -------
    Pairs
        ``(left_idx, right_idx, extra)`` with int64 indices and numpy extra columns.
    """
    check_declaration(alg)
    name = type(alg).__name__
    rows = []
    for what, data, coords, required in (("left", left, left_coords, alg.required_left_columns),
                                         ("right", right, right_coords, alg.required_right_columns)):
        r = data if isinstance(data, TaskRows) else TaskRows(data, coords[0], coords[1], what)
        lacking = r.missing([RA, DEC] + list(required))
        if lacking:
            shown = [coords[0] if c == RA else coords[1] if c == DEC else c for c in lacking]
            raise AlgorithmContractError(f"{name} needs {what} column(s) {shown}; the {what} rows have "
                                         f"{sorted(r)}")
        n = r.num_rows
        bad = [c for c in [DEC, *required] if len(r[c]) != n]
        if bad:
            raise AlgorithmContractError(f"the {what} rows' column(s) {bad} do not have {n} values like '{coords[0]}'")
        rows.append(r)
    n_left, n_right = rows[0].num_rows, rows[1].num_rows
    if n_left == 0 or n_right == 0:
        return Pairs(np.zeros(0, np.int64), np.zeros(0, np.int64), alg.empty_extra())
    return _check_result(alg, alg.match(rows[0], rows[1]), n_left, n_right)


# ---------------------------------------------------------------- built-ins


def _check_radius(value: Any, what: str, *, zero_ok: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError) as e:
        raise UserbatchError(f"{what} must be a number of arcseconds; got {value!r}") from e
    if not math.isfinite(v) or v < 0 or (v == 0 and not zero_ok):
        raise UserbatchError(f"{what} must be a {'non-negative' if zero_ok else 'positive'} finite number of "
                             f"arcseconds; got {value!r}")
    return v


class _WithinRadius(CrossmatchAlgorithm):
    """Pairs by separation alone: the ``k`` nearest right rows (all when ``k == 0``) with
    ``min_radius <= separation <= radius``, nearest first, ties by right row — what ``crossmatch(mode=...)``
    does today."""

    extra_columns = pa.schema([pa.field(DIST_COLUMN, pa.float64()), pa.field(RANK_COLUMN, pa.int32())])
    score_column = DIST_COLUMN
    score_higher_is_better = False

    def __init__(self, radius_arcsec: float, min_radius_arcsec: float = 0.0, k: int = 0):
        self._radius = _check_radius(radius_arcsec, "radius_arcsec")
        self.min_radius_arcsec = _check_radius(min_radius_arcsec, "min_radius_arcsec", zero_ok=True)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
            raise UserbatchError(f"k must be a non-negative integer (0 keeps every pair); got {k!r}")
        self.k = int(k)

    @property
    def radius_arcsec(self) -> float:
        return self._radius

    def validate(self) -> None:
        if self.min_radius_arcsec >= self._radius:
            raise UserbatchError(f"min_radius_arcsec ({self.min_radius_arcsec:g}) must be smaller than "
                                 f"radius_arcsec ({self._radius:g})")

    def match(self, left: TaskRows, right: TaskRows) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Pairs within the radius (see :meth:`CrossmatchAlgorithm.match`).

        Parameters
        ----------
        left, right : TaskRows or dict of str to numpy.ndarray
            The task's rows.
        """
        left, right = as_rows(left, "left"), as_rows(right, "right")
        li, ri, dist = self.candidates(left, right, self._radius, self.min_radius_arcsec)
        rank = rank_within_left(li)
        if self.k > 0:
            keep = rank <= self.k
            li, ri, dist, rank = li[keep], ri[keep], dist[keep], rank[keep]
        return li, ri, {DIST_COLUMN: dist, RANK_COLUMN: rank}

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(radius_arcsec={self._radius:g}, min_radius_arcsec={self.min_radius_arcsec:g}"
                f", k={self.k})")


class NearestNeighbour(_WithinRadius):
    """The nearest right row within the radius of each left row (``mode="nearest"``).

    Parameters
    ----------
    radius_arcsec : float
        Largest separation kept.
    min_radius_arcsec : float
        Smallest separation kept (0: coincident points match).
    """

    def __init__(self, radius_arcsec: float, min_radius_arcsec: float = 0.0):
        super().__init__(radius_arcsec, min_radius_arcsec, k=1)


class KNearest(_WithinRadius):
    """The ``k`` nearest right rows within the radius of each left row (``mode="k_nearest"``).

    Parameters
    ----------
    k : int
        How many neighbours per left row, at most (>= 1).
    radius_arcsec : float
        Largest separation kept.
    min_radius_arcsec : float
        Smallest separation kept.
    """

    def __init__(self, k: int, radius_arcsec: float, min_radius_arcsec: float = 0.0):
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise UserbatchError(f"KNearest needs k >= 1 (AllWithin keeps every pair); got {k!r}")
        super().__init__(radius_arcsec, min_radius_arcsec, k=int(k))


class AllWithin(_WithinRadius):
    """Every pair within the radius (``mode="all"``).

    Parameters
    ----------
    radius_arcsec : float
        Largest separation kept.
    min_radius_arcsec : float
        Smallest separation kept.
    """

    def __init__(self, radius_arcsec: float, min_radius_arcsec: float = 0.0):
        super().__init__(radius_arcsec, min_radius_arcsec, k=0)


class Annulus(_WithinRadius):
    """Every pair with ``inner <= separation <= outer``: neighbours that are *not* the source itself (for
    clustering statistics, background estimates, blends).

    Parameters
    ----------
    inner_arcsec : float
        Smallest separation kept (inclusive).
    outer_arcsec : float
        Largest separation kept (inclusive); also the search radius.
    k : int
        Keep only the ``k`` nearest in the annulus per left row; 0 keeps all.
    """

    def __init__(self, inner_arcsec: float, outer_arcsec: float, k: int = 0):
        super().__init__(outer_arcsec, inner_arcsec, k=k)


# ---------------------------------------------------------------- positional errors


def _finite_positive(value: Any, what: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError) as e:
        raise UserbatchError(f"{what} must be a number; got {value!r}") from e
    if not (math.isfinite(v) and v > 0):
        raise UserbatchError(f"{what} must be a positive finite number; got {value!r}")
    return v


class PositionErrors:
    """How one side's positional uncertainties are given, in arcsec: a circle or an ellipse, per row or constant.

    Parameters
    ----------
    spec : str, float or tuple
        A column name or a number: a circular sigma (per row, or the same for every row); or a tuple
        ``(sigma_ra, sigma_dec)`` or ``(sigma_ra, sigma_dec, rho)`` of column names or numbers: an ellipse with
        sigma along RA*cos(dec) (east), sigma along Dec (north) and their correlation coefficient.
    what : str
        ``"left"`` or ``"right"``, for messages.
    """

    def __init__(self, spec: Any, what: str):
        self.what = what
        parts = list(spec) if isinstance(spec, (tuple, list)) else [spec]
        if len(parts) not in (1, 2, 3):
            raise UserbatchError(f"{what} position errors: give a sigma, (sigma_ra, sigma_dec) or (sigma_ra, "
                                 f"sigma_dec, rho); got {spec!r}")
        for p in parts:
            if not isinstance(p, (str, int, float)) or isinstance(p, bool):
                raise UserbatchError(f"{what} position errors: {p!r} is neither a column name nor a number")
        for p, label in zip(parts, ("sigma_ra", "sigma_dec")):
            if not isinstance(p, str) and len(parts) > 1:
                _finite_positive(p, f"{what} {label}")
        if len(parts) == 1 and not isinstance(parts[0], str):
            _finite_positive(parts[0], f"{what} sigma")
        if len(parts) == 3 and not isinstance(parts[2], str) and not abs(float(parts[2])) < 1:
            raise UserbatchError(f"{what} rho must lie strictly between -1 and 1; got {parts[2]!r}")
        self.parts = parts
        self.circular = len(parts) == 1

    @property
    def columns(self) -> list[str]:
        """The columns these errors are read from."""
        return [p for p in self.parts if isinstance(p, str)]

    def _values(self, rows: TaskRows, i: int) -> np.ndarray:
        p = self.parts[i]
        n = rows.num_rows
        if isinstance(p, str):
            return np.asarray(rows[p], dtype=np.float64)
        return np.full(n, float(p))

    def covariance(self, rows: TaskRows) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per-row covariance ``[[a, b], [b, c]]`` (arcsec², east/north) and a mask of usable rows.

        A row with a non-finite or negative sigma, or ``|rho| >= 1``, cannot be matched: it is masked out (and
        counted in the log), rather than failing the whole job.

        Parameters
        ----------
        rows : TaskRows
            One side's rows.
        """
        if self.circular:
            s = self._values(rows, 0)
            ok = np.isfinite(s) & (s >= 0)
            a = np.where(ok, s * s, 0.0)
            return a, np.zeros_like(a), a.copy(), ok
        sx, sy = self._values(rows, 0), self._values(rows, 1)
        rho = self._values(rows, 2) if len(self.parts) == 3 else np.zeros_like(sx)
        ok = np.isfinite(sx) & np.isfinite(sy) & np.isfinite(rho) & (sx >= 0) & (sy >= 0) & (np.abs(rho) < 1)
        sx, sy, rho = (np.where(ok, v, 0.0) for v in (sx, sy, rho))
        return sx * sx, rho * sx * sy, sy * sy, ok

    def __repr__(self) -> str:
        return repr(self.parts[0] if self.circular else tuple(self.parts))


def _largest_eigenvalue(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    return 0.5 * (a + c) + np.sqrt(0.25 * (a - c) ** 2 + b * b)


def _log_unusable(alg: str, what: str, ok: np.ndarray) -> None:
    bad = int((~ok).sum())
    if bad:
        log.warning("%s: %d %s row(s) have unusable position errors (NaN, negative, |rho| >= 1) and match nothing",
                    alg, bad, what)


class _WithPositionErrors(CrossmatchAlgorithm):
    """What the algorithms that weigh positional uncertainties share: the largest separation ever kept (the radius
    engines size margins from), each side's :class:`PositionErrors` (their columns are the required inputs) and
    ``k`` best pairs per left row (0: all)."""

    def __init__(self, max_radius_arcsec: float, left_errors: Any, right_errors: Any, k: int):
        self.max_radius_arcsec = _check_radius(max_radius_arcsec, "max_radius_arcsec")
        self.left_errors = PositionErrors(left_errors, "left")
        self.right_errors = PositionErrors(right_errors, "right")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
            raise UserbatchError(f"k must be a non-negative integer (0 keeps every pair); got {k!r}")
        self.k = int(k)

    @property
    def radius_arcsec(self) -> float:
        return self.max_radius_arcsec

    @property
    def required_left_columns(self) -> list[str]:
        return self.left_errors.columns

    @property
    def required_right_columns(self) -> list[str]:
        return self.right_errors.columns


class ErrorAwareMatch(_WithPositionErrors):
    """Matching by the significance of the offset given both sides' positional uncertainties.

    Why: a fixed radius is too loose for well-measured sources and too tight for poorly measured ones; an offset
    matters relative to its uncertainty. In the tangent plane at the left source (east along RA*cos(dec), north),
    the offset ``d`` has the length of the great-circle separation and the direction of the position angle; its
    covariance is ``C = C_left + C_right``, with the right ellipse turned into the left source's east/north frame
    (matters near the poles, where those frames rotate quickly with RA). The pair's ``chi2 = d^T C^-1 d`` follows a
    chi-squared law with 2 degrees of freedom for a true match, so ``chi2 <= n_sigma**2`` is the n-sigma criterion
    (or ``chi2 <= -2 ln(p_min)``: the probability of a true match lying farther out is ``exp(-chi2 / 2)``).

    The candidate search radius of a task is ``sqrt(chi2_max) * sqrt(max lambda_left + max lambda_right)``
    (lambda: the larger eigenvalue of a row's covariance; it bounds the combined one), never more than
    ``max_radius_arcsec``; a pair farther than ``max_radius_arcsec`` is never kept, so engines size margins from it.

    Output: ``_dist_arcsec`` (separation), ``_chi2``, ``_norm_dist`` (``sqrt(chi2)``, the offset in units of its
    sigma) and ``_rank`` (by chi2 within a left row); pairs ordered by (left row, chi2).

    Parameters
    ----------
    max_radius_arcsec : float
        The largest separation ever kept (and the margin the engines need).
    left_errors, right_errors : str, float or tuple
        Each side's uncertainties in arcsec, see :class:`PositionErrors`: a sigma column (or number), or
        ``(sigma_ra, sigma_dec[, rho])`` columns (or numbers).
    n_sigma : float
        Keep pairs with ``chi2 <= n_sigma**2``.
    p_min : float, optional
        Instead of ``n_sigma``: keep pairs with ``exp(-chi2 / 2) >= p_min`` (0 < p_min < 1).
    k : int
        Keep the ``k`` best pairs (smallest chi2) per left row; 0 keeps all.
    """

    extra_columns = pa.schema([pa.field(DIST_COLUMN, pa.float64()), pa.field(CHI2_COLUMN, pa.float64()),
                               pa.field(NORM_DIST_COLUMN, pa.float64()), pa.field(RANK_COLUMN, pa.int32())])
    score_column = CHI2_COLUMN
    score_higher_is_better = False

    def __init__(self, max_radius_arcsec: float, left_errors: Any = "sigma", right_errors: Any = "sigma",
                 n_sigma: float = 3.0, p_min: float | None = None, k: int = 0):
        super().__init__(max_radius_arcsec, left_errors, right_errors, k)
        if p_min is not None:
            p = float(p_min)
            if not 0 < p < 1:
                raise UserbatchError(f"p_min must lie strictly between 0 and 1; got {p_min!r}")
            self.chi2_max = -2.0 * math.log(p)
        else:
            self.chi2_max = _finite_positive(n_sigma, "n_sigma") ** 2
        self.n_sigma = math.sqrt(self.chi2_max)

    def search_radius_arcsec(self, left: TaskRows, right: TaskRows) -> float:
        """The candidate radius of one task: no pair farther apart can pass the chi2 cut.

        Parameters
        ----------
        left, right : TaskRows
            The task's rows.
        """
        return self._search_radius(self.left_errors.covariance(left), self.right_errors.covariance(right))

    def _search_radius(self, lcov: tuple, rcov: tuple) -> float:
        (la, lb, lc, lok), (ra_, rb, rc, rok) = lcov, rcov
        if not lok.any() or not rok.any():
            return 0.0
        lam = float(_largest_eigenvalue(la, lb, lc)[lok].max() + _largest_eigenvalue(ra_, rb, rc)[rok].max())
        return min(self.max_radius_arcsec, math.sqrt(self.chi2_max * lam))

    def match(self, left: TaskRows, right: TaskRows) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Pairs passing the chi2 cut (see :meth:`CrossmatchAlgorithm.match`).

        Parameters
        ----------
        left, right : TaskRows or dict of str to numpy.ndarray
            The task's rows, with the error columns named in ``left_errors``/``right_errors``.
        """
        left, right = as_rows(left, "left"), as_rows(right, "right")
        lcov, rcov = self.left_errors.covariance(left), self.right_errors.covariance(right)
        (la, lb, lc, lok), (ra_, rb, rc, rok) = lcov, rcov
        _log_unusable(type(self).__name__, "left", lok)
        _log_unusable(type(self).__name__, "right", rok)
        radius = self._search_radius(lcov, rcov)
        if radius <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), self.empty_extra()
        li, ri, dist = self.candidates(left, right, radius * (1.0 + _CANDIDATE_SLACK))
        usable = lok[li] & rok[ri] & (dist <= self.max_radius_arcsec)
        li, ri, dist = li[usable], ri[usable], dist[usable]
        dx, dy = _offsets_arcsec(left, right, li, ri, dist)
        # the right ellipse in the left row's east/north frame: project the right frame's axes onto the left's
        le, ln = tangent_basis(left[RA][li], left[DEC][li])
        re_, rn = tangent_basis(right[RA][ri], right[DEC][ri])
        m = np.empty((len(li), 2, 2))
        m[:, 0, 0] = np.einsum("ij,ij->i", re_, le)
        m[:, 0, 1] = np.einsum("ij,ij->i", rn, le)
        m[:, 1, 0] = np.einsum("ij,ij->i", re_, ln)
        m[:, 1, 1] = np.einsum("ij,ij->i", rn, ln)
        cr = np.empty((len(li), 2, 2))
        cr[:, 0, 0], cr[:, 0, 1], cr[:, 1, 0], cr[:, 1, 1] = ra_[ri], rb[ri], rb[ri], rc[ri]
        cr = m @ cr @ np.transpose(m, (0, 2, 1))
        a = la[li] + cr[:, 0, 0]
        b = lb[li] + 0.5 * (cr[:, 0, 1] + cr[:, 1, 0])
        c = lc[li] + cr[:, 1, 1]
        det = a * c - b * b
        good = det > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            chi2 = np.where(good, (c * dx * dx - 2.0 * b * dx * dy + a * dy * dy) / np.where(good, det, 1.0), np.inf)
        keep = chi2 <= self.chi2_max
        li, ri, dist, chi2 = li[keep], ri[keep], dist[keep], chi2[keep]
        order = np.lexsort((ri, chi2, li))
        li, ri, dist, chi2 = li[order], ri[order], dist[order], chi2[order]
        rank = rank_within_left(li)
        if self.k > 0:
            sel = rank <= self.k
            li, ri, dist, chi2, rank = li[sel], ri[sel], dist[sel], chi2[sel], rank[sel]
        return li, ri, {DIST_COLUMN: dist, CHI2_COLUMN: chi2, NORM_DIST_COLUMN: np.sqrt(chi2), RANK_COLUMN: rank}


def _offsets_arcsec(left: TaskRows, right: TaskRows, li: np.ndarray, ri: np.ndarray,
                    dist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """East and north offsets (arcsec) of each right row from its left row: the separation along the position
    angle (an azimuthal equidistant projection, so ``|d|`` is the great-circle separation exactly)."""
    east, north = tangent_basis(left[RA][li], left[DEC][li])
    r = unit_vectors(right[RA][ri], right[DEC][ri])
    x = np.einsum("ij,ij->i", r, east)
    y = np.einsum("ij,ij->i", r, north)
    h = np.hypot(x, y)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(h > 0, dist / np.where(h > 0, h, 1.0), 0.0)
    return x * scale, y * scale


# ---------------------------------------------------------------- Bayesian


def _logit(p: float) -> float:
    return math.log(p) - math.log1p(-p)


class BayesianMatch(_WithPositionErrors):
    """Budavári & Szalay (2008, ApJ 679, 301) Bayes factor and posterior match probability, circular errors.

    Why: a probability says how much to trust a match, weighs astrometric precision against source density, and
    ranks candidates for one-to-one matching on a scale that means the same at every sigma.

    For one left and one right source with circular Gaussian sigmas ``s1``, ``s2`` and separation ``psi`` (all in
    radians), the Bayes factor of "same object" over "unrelated" (B&S 2008, two catalogues) is::

        B = 2 / (s1**2 + s2**2) * exp(-psi**2 / (2 (s1**2 + s2**2)))

    computed in log space (``_log_bayes_factor``, natural log). With ``P0`` the prior probability that a random
    pair is the same object, the posterior is ``P = (1 + (1 - P0) / (B P0))**-1`` (``_p_match``; evaluated as
    ``expit(ln B + logit P0)`` so it neither overflows nor loses precision).

    The prior, per B&S 2008, is ``P0 = N* / (N1 N2)`` with the counts of the two catalogues and of the objects in
    both *over the sphere that B's 4 pi normalisation assumes*. From sky densities per steradian (``nu1``,
    ``nu2``, and ``nu*`` of common objects, default ``min(nu1, nu2)``: every source of the sparser catalogue has a
    counterpart) that is ``P0 = nu* / (4 pi nu1 nu2)``; from counts ``N1``, ``N2``, ``N*`` over an overlap of
    ``area_sr`` steradians it is ``P0 = N* area_sr / (4 pi N1 N2)`` (see :meth:`prior_from_densities` and
    :meth:`prior_from_counts`). The posterior depends only on the densities, not on the area used.

    Candidates are bounded by ``max_radius_arcsec`` (the margin) and ``min_p_match``: ``P >= p_min`` needs
    ``ln B >= L = logit(p_min) - logit(P0)``, i.e. ``psi**2 <= 2 s**2 (ln 2 - ln s**2 - L)``; over
    ``s**2 <= s_max**2`` that is largest at ``s**2 = min(s_max**2, 2 exp(-L - 1))``, which sets a task's search
    radius.

    Ranking (``score_column``) is by ``_log_bayes_factor``, higher better: for a fixed prior the same order as
    ``_p_match``, without ties where the probability rounds to 1.

    Parameters
    ----------
    max_radius_arcsec : float
        The largest separation ever kept (and the margin the engines need).
    left_sigma, right_sigma : str or float
        Circular sigma in arcsec: a column name or one number for every row.
    prior : float, optional
        ``P0`` itself (0 < P0 < 1).
    density_left_per_sr, density_right_per_sr : float, optional
        Source densities per steradian, instead of ``prior``.
    density_common_per_sr : float, optional
        Density of objects in both catalogues; default the smaller of the two densities.
    min_p_match : float
        Keep pairs with ``_p_match >= min_p_match``; 0 keeps every pair within ``max_radius_arcsec``.
    k : int
        Keep the ``k`` most probable pairs per left row; 0 keeps all.
    """

    extra_columns = pa.schema([pa.field(DIST_COLUMN, pa.float64()), pa.field(LOG_BF_COLUMN, pa.float64()),
                               pa.field(P_MATCH_COLUMN, pa.float64()), pa.field(RANK_COLUMN, pa.int32())])
    score_column = LOG_BF_COLUMN
    score_higher_is_better = True

    def __init__(self, max_radius_arcsec: float, left_sigma: str | float = "sigma",
                 right_sigma: str | float = "sigma", *, prior: float | None = None,
                 density_left_per_sr: float | None = None, density_right_per_sr: float | None = None,
                 density_common_per_sr: float | None = None, min_p_match: float = 0.0, k: int = 0):
        for s, what in ((left_sigma, "left"), (right_sigma, "right")):
            if isinstance(s, (tuple, list)):
                raise UserbatchError(f"BayesianMatch takes circular errors: give the {what} sigma as one column or "
                                     "number (ErrorAwareMatch takes ellipses)")
        super().__init__(max_radius_arcsec, left_sigma, right_sigma, k)
        densities = (density_left_per_sr, density_right_per_sr)
        if prior is not None and any(d is not None for d in densities):
            raise UserbatchError("give either prior or the densities, not both")
        if prior is not None:
            self.prior = float(prior)
        elif all(d is not None for d in densities):
            self.prior = self.prior_from_densities(density_left_per_sr, density_right_per_sr, density_common_per_sr)
        else:
            raise UserbatchError("BayesianMatch needs a prior: prior=P0, or density_left_per_sr and "
                                 "density_right_per_sr (sources per steradian)")
        if not 0 < self.prior < 1:
            raise UserbatchError(f"the prior P0 must lie strictly between 0 and 1; got {self.prior!r}")
        p = float(min_p_match)
        if not 0 <= p < 1:
            raise UserbatchError(f"min_p_match must lie in [0, 1); got {min_p_match!r}")
        self.min_p_match = p

    @staticmethod
    def prior_from_densities(density_left_per_sr: float, density_right_per_sr: float,
                             density_common_per_sr: float | None = None) -> float:
        """``P0 = nu* / (4 pi nu1 nu2)``: the B&S 2008 prior ``N* / (N1 N2)`` with counts over the whole sphere.

        Parameters
        ----------
        density_left_per_sr, density_right_per_sr : float
            Source densities of the two catalogues per steradian.
        density_common_per_sr : float, optional
            Density of objects in both; default the smaller of the two.
        """
        n1 = _finite_positive(density_left_per_sr, "density_left_per_sr")
        n2 = _finite_positive(density_right_per_sr, "density_right_per_sr")
        common = min(n1, n2) if density_common_per_sr is None else _finite_positive(density_common_per_sr,
                                                                                    "density_common_per_sr")
        if common > min(n1, n2):
            raise UserbatchError(f"density_common_per_sr ({common:g}) cannot exceed either catalogue's density")
        return common / (4.0 * math.pi * n1 * n2)

    @staticmethod
    def prior_from_counts(n_left: float, n_right: float, area_sr: float, n_common: float | None = None) -> float:
        """``P0 = N* area_sr / (4 pi N1 N2)``: the same prior from counts over an overlap of ``area_sr``.

        Parameters
        ----------
        n_left, n_right : float
            Sources of each catalogue in the overlap.
        area_sr : float
            The overlap's area in steradians.
        n_common : float, optional
            Objects in both; default the smaller count.
        """
        area = _finite_positive(area_sr, "area_sr")
        return BayesianMatch.prior_from_densities(
            _finite_positive(n_left, "n_left") / area, _finite_positive(n_right, "n_right") / area,
            None if n_common is None else _finite_positive(n_common, "n_common") / area)

    def search_radius_arcsec(self, left: TaskRows, right: TaskRows) -> float:
        """The candidate radius of one task: no pair farther apart can reach ``min_p_match``.

        Parameters
        ----------
        left, right : TaskRows
            The task's rows.
        """
        la, _, _, lok = self.left_errors.covariance(left)
        ra_, _, _, rok = self.right_errors.covariance(right)
        if not lok.any() or not rok.any():
            return 0.0
        if self.min_p_match <= 0:
            return self.max_radius_arcsec
        s2max = float(la[lok].max() + ra_[rok].max()) * ARCSEC_RAD ** 2
        bound = _logit(self.min_p_match) - _logit(self.prior)
        s2 = min(s2max, 2.0 * math.exp(min(-bound - 1.0, 700.0)))  # exp(700) is past any real sigma
        psi2 = 2.0 * s2 * (math.log(2.0) - math.log(s2) - bound) if s2 > 0 else 0.0
        return min(self.max_radius_arcsec, math.sqrt(psi2) / ARCSEC_RAD) if psi2 > 0 else 0.0

    def match(self, left: TaskRows, right: TaskRows) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Pairs with their Bayes factor and posterior (see :meth:`CrossmatchAlgorithm.match`).

        Parameters
        ----------
        left, right : TaskRows or dict of str to numpy.ndarray
            The task's rows, with the sigma columns named in ``left_sigma``/``right_sigma``.
        """
        left, right = as_rows(left, "left"), as_rows(right, "right")
        l2, _, _, lok = self.left_errors.covariance(left)
        r2, _, _, rok = self.right_errors.covariance(right)
        _log_unusable(type(self).__name__, "left", lok)
        _log_unusable(type(self).__name__, "right", rok)
        radius = self.search_radius_arcsec(left, right)
        if radius <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), self.empty_extra()
        li, ri, dist = self.candidates(left, right, radius * (1.0 + _CANDIDATE_SLACK))
        s2 = (l2[li] + r2[ri]) * ARCSEC_RAD ** 2
        ok = lok[li] & rok[ri] & (s2 > 0) & (dist <= self.max_radius_arcsec)
        li, ri, dist, s2 = li[ok], ri[ok], dist[ok], s2[ok]
        psi = dist * ARCSEC_RAD
        log_b = math.log(2.0) - np.log(s2) - psi * psi / (2.0 * s2)
        p = expit(log_b + _logit(self.prior))
        keep = p >= self.min_p_match
        li, ri, dist, log_b, p = li[keep], ri[keep], dist[keep], log_b[keep], p[keep]
        order = np.lexsort((ri, -log_b, li))
        li, ri, dist, log_b, p = li[order], ri[order], dist[order], log_b[order], p[order]
        rank = rank_within_left(li)
        if self.k > 0:
            sel = rank <= self.k
            li, ri, dist, log_b, p, rank = li[sel], ri[sel], dist[sel], log_b[sel], p[sel], rank[sel]
        return li, ri, {DIST_COLUMN: dist, LOG_BF_COLUMN: log_b, P_MATCH_COLUMN: p, RANK_COLUMN: rank}


# ---------------------------------------------------------------- loading


#: Short names for the built-ins: today's ``mode`` strings, and the science algorithms.
BUILTINS: dict[str, type[CrossmatchAlgorithm]] = {
    "nearest": NearestNeighbour,
    "k_nearest": KNearest,
    "all": AllWithin,
    "annulus": Annulus,
    "error_aware": ErrorAwareMatch,
    "bayesian": BayesianMatch,
}


def load_algorithm(spec: Any, **params: Any) -> CrossmatchAlgorithm:
    """An algorithm from what a user or a template job gives: an instance, a class, a built-in name or
    ``"module:Class"``; its declaration is checked before it is returned.

    Parameters
    ----------
    spec : CrossmatchAlgorithm, type, or str
        An instance (then no ``params``), a :class:`CrossmatchAlgorithm` subclass, a name in :data:`BUILTINS`, or
        ``"package.module:ClassName"`` (as a template job's ``algorithm:`` key).
    **params
        Passed to the class's constructor.

    Returns
    -------
    CrossmatchAlgorithm
        The checked instance.
    """
    if isinstance(spec, CrossmatchAlgorithm):
        if params:
            raise AlgorithmContractError(f"{spec!r} is already an instance; parameters {sorted(params)} cannot be "
                                         "applied to it (pass the class, or set them when creating it)")
        return check_declaration(spec)
    label = spec
    if isinstance(spec, str):
        if spec in BUILTINS:
            spec = BUILTINS[spec]
        elif ":" in spec:
            module, _, attr = spec.partition(":")
            if not module or not attr:
                raise AlgorithmContractError(f"algorithm {spec!r}: expected 'package.module:ClassName'")
            try:
                mod = importlib.import_module(module)
            except ImportError as e:
                raise AlgorithmContractError(f"algorithm {spec!r}: cannot import module {module!r} ({e})") from e
            obj = mod
            for part in attr.split("."):
                if not hasattr(obj, part):
                    raise AlgorithmContractError(f"algorithm {spec!r}: module {module!r} has no {attr!r}")
                obj = getattr(obj, part)
            spec = obj
        else:
            raise AlgorithmContractError(f"unknown algorithm {spec!r}: use one of {sorted(BUILTINS)} or "
                                         "'package.module:ClassName'")
    if not (isinstance(spec, type) and issubclass(spec, CrossmatchAlgorithm)):
        raise AlgorithmContractError(f"algorithm {label!r} is not a CrossmatchAlgorithm subclass (got "
                                     f"{spec!r}); subclass userbatch.ops.crossmatch.CrossmatchAlgorithm")
    if getattr(spec, "__abstractmethods__", None):
        raise AlgorithmContractError(f"algorithm {spec.__name__} does not implement "
                                     f"{sorted(spec.__abstractmethods__)}")
    try:
        alg = spec(**params)
    except TypeError as e:
        raise AlgorithmContractError(f"cannot create {spec.__name__} with parameters {params}: {e}") from e
    log.debug("cross-match algorithm %r", alg)
    return check_declaration(alg)
