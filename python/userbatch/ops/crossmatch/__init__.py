"""Cross-match two catalogues: the public :func:`crossmatch` and its :class:`Crossmatch` result, and the parts
they are built from, one concept per module.

Why a package: a cross-match is a front (:mod:`.api`: check, plan, hand to an engine), a plan read before anything
runs (:mod:`.plan`), one task's run shared by both engines (:mod:`.tasks`), the numba kernel and one-to-one greedy
(:mod:`.kernel`), the algorithm plug-ins (:mod:`.algorithms`) and two engines (:mod:`.local`, threads here;
:mod:`.spark`, Spark tasks). The imports point one way, front to engines to task to plan to algorithms and
kernel; the engines share the per-partition runner of :mod:`userbatch.ops.partition_tasks` and never import each
other. The inputs (:mod:`userbatch.ops.sides`) live one level up because per-object computations read director
tables through them too.

The names most callers need are re-exported here: ``from userbatch.ops.crossmatch import crossmatch``.
"""

from .algorithms import (
    AlgorithmContractError,
    AllWithin,
    Annulus,
    BayesianMatch,
    CrossmatchAlgorithm,
    ErrorAwareMatch,
    KNearest,
    NearestNeighbour,
    Pairs,
    TaskRows,
    load_algorithm,
    run_algorithm,
)
from .api import Crossmatch, crossmatch
from .plan import DIST_COLUMN, RANK_COLUMN, MarginTooSmall

__all__ = [
    "DIST_COLUMN",
    "RANK_COLUMN",
    "AlgorithmContractError",
    "AllWithin",
    "Annulus",
    "BayesianMatch",
    "Crossmatch",
    "CrossmatchAlgorithm",
    "ErrorAwareMatch",
    "KNearest",
    "MarginTooSmall",
    "NearestNeighbour",
    "Pairs",
    "TaskRows",
    "crossmatch",
    "load_algorithm",
    "run_algorithm",
]
