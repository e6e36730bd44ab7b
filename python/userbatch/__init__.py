"""userbatch: the Rubin Observatory User Batch facility.

Catalog work runs as Spark applications over HEALPix-partitioned Delta tables; the facility runs it offline, under
a per-user and per-group quota, each run as its owner, every result reproducible. What a user needs is here at the
top, as LSDB has it (``import userbatch; userbatch.read_table("dp1.object")``)::

    spark = userbatch.session()                       # Spark, with every readable table as a SQL view
    obj = userbatch.read_table("dp1.object")          # a DataFrame, latest version (or version=3)
    cone = userbatch.cone_search("dp1.object", 62.0, -37.0, radius_arcsec=600).to_pandas()
    xm = userbatch.crossmatch("dp1.object", "dp1.gaia", radius_arcsec=1.0, motion=userbatch.Motion(epoch=2025.0))
    userbatch.plot_sky("dp1.object")                  # dp1.object_sky.png

Importing ``userbatch`` is cheap: each name loads its module (and Spark, pyarrow, MLflow ...) on first use. The deep
module paths (``userbatch.tables.read.read_table`` ...) keep working. Layers, lowest first: ``sky`` (pure
geometry) -> ``engine`` (the bare Spark session) -> ``tables`` -> ``ops`` -> ``spark`` (the session front) ->
``ml`` -> ``cluster`` (runners, scheduler renderings) -> ``facility`` (queue, ledger, service, API, worker) ->
``images``; ``config`` (settings) and ``errors`` sit below them all. ``docs/`` has the guide and the reference.
"""

from __future__ import annotations

import importlib

from .version import __version__

#: Public name -> the module that defines it (loaded on first access).
_API = {
    # sessions and settings
    "session": "userbatch.spark",
    "settings": "userbatch.config",
    "UserbatchError": "userbatch.errors",
    # the catalog and tables
    "Catalog": "userbatch.tables.catalog",
    "TableEntry": "userbatch.tables.catalog",
    "read_table": "userbatch.tables.read",
    "write_table": "userbatch.tables.write",
    "ingest": "userbatch.tables.ingest",
    "describe": "userbatch.tables.info",
    "register_hats": "userbatch.tables.hats_io",
    "import_hats": "userbatch.tables.hats_io",
    "export_hats": "userbatch.tables.hats_io",
    "Provenance": "userbatch.tables.provenance",
    # searches and the cross-match
    "cone_search": "userbatch.ops.search",
    "box_search": "userbatch.ops.search",
    "polygon_search": "userbatch.ops.search",
    "search": "userbatch.ops.search",
    "crossmatch": "userbatch.ops.crossmatch",
    "Motion": "userbatch.sky.motion",
    "Cone": "userbatch.sky.regions",
    "Box": "userbatch.sky.regions",
    "Polygon": "userbatch.sky.regions",
    # light curves
    "features": "userbatch.ops.lightcurves",
    "periodogram": "userbatch.ops.periodogram",
    # classifiers (the "ml" extra)
    "train_classifier": "userbatch.ml.train",
    "classify": "userbatch.ml.inference",
    # pictures
    "plot_sky": "userbatch.viz",
    "plot_lightcurve": "userbatch.viz",
    # the facility, from a notebook or a script (the "facility" extra for the REST client)
    "Client": "userbatch.facility.client",
    "open_demo": "userbatch.notebook",
}

__all__ = ["__version__", *sorted(_API)]


def __getattr__(name: str):
    """Load a public name's module on first use (PEP 562), so ``import userbatch`` stays light."""
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'userbatch' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next access is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
