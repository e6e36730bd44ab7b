"""Operations on catalog tables and in-memory data: sky searches (cone, box, polygon), the cross-match, per-object
light-curve features and periodograms.

Each operation plans at the pixel level first (testable without Spark), then runs a row kernel on Arrow/numpy
data, locally or as Spark tasks; the kernels do not know the engine.
"""

from .crossmatch import Crossmatch, MarginTooSmall, crossmatch
from .search import Search, SearchPlan, box_search, cone_search, polygon_search, search

__all__ = ["Crossmatch", "MarginTooSmall", "Search", "SearchPlan", "box_search", "cone_search", "crossmatch",
           "polygon_search", "search"]
