"""Spark operations on catalog tables and DataFrames (searches now; cross-match and light curves later)."""

from .search import Search, SearchPlan, box_search, cone_search, polygon_search, search

__all__ = ["Search", "SearchPlan", "box_search", "cone_search", "polygon_search", "search"]
