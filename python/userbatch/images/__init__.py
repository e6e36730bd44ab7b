"""The image side-car: a ctrl_bps WMS plugin that runs Rubin pipelines (QuantumGraph jobs) as Spark tasks inside a
facility run, so image work shares the catalog jobs' queue, quota ledger, accounting and provenance."""

from ..extras import require

# Every part of the side-car needs the Rubin middleware (the ``images`` extra): say so at the first import, by name,
# rather than as a ModuleNotFoundError deep in a plugin. Looked up only (cheap); the modules import what they use.
for _module in ("lsst.daf.butler", "lsst.pipe.base", "lsst.ctrl.mpexec", "lsst.ctrl.bps"):
    require(_module, "images", what="userbatch.images", load=False)
del _module
