"""Spark operations on catalog tables and DataFrames: searches and the cross-match (light curves later)."""

from .crossmatch import Crossmatch, MarginTooSmall, crossmatch
from .search import Search, SearchPlan, box_search, cone_search, polygon_search, search

__all__ = ["Crossmatch", "MarginTooSmall", "Search", "SearchPlan", "box_search", "cone_search", "crossmatch",
           "polygon_search", "search"]
