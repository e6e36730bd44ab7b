"""Entry functions of the catalog templated jobs: resolved parameters in, a written table with provenance out.

Each is ``f(params, provenance) -> summary``; the parameters were checked against the job's template
(``conf/templates/<job>.yaml``), so what is left to check here is what needs the data (columns, coordinates),
which the library functions do with their own clear errors.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any

from ..errors import UserbatchError
from ..tables.provenance import Provenance

log = logging.getLogger(__name__)


def _motion(spec: dict | None):
    from ..sky.motion import Motion

    if not spec:
        return None
    known = set(Motion.__dataclass_fields__)
    unknown = sorted(set(spec) - known)
    if unknown or "epoch" not in spec:
        raise UserbatchError(f"motion takes {', '.join(sorted(known))} (epoch required); "
                             + (f"unknown: {', '.join(unknown)}" if unknown else "epoch is missing"))
    return Motion(**spec)


def crossmatch(params: dict[str, Any], provenance: Provenance) -> dict:
    """Cross-match two catalog tables and write the pairs as a new table (see ``conf/templates/crossmatch.yaml``)."""
    from ..ops.crossmatch import crossmatch as xmatch
    from ..spark import session

    p = params
    spark = session(app_name="userbatch-crossmatch")
    xm = xmatch(p["left"], p["right"], p["radius_arcsec"], mode=p["mode"], k=p["k"], how=p["how"],
                one_to_one=p["one_to_one"], min_radius_arcsec=p["min_radius_arcsec"], motion=_motion(p["motion"]),
                left_columns=p["left_columns"], right_columns=p["right_columns"],
                suffixes=("", p["right_suffix"]), left_version=p["left_version"], right_version=p["right_version"],
                margin_fallback=p["margin_fallback"], engine=p["engine"], spark=spark)
    log.info("crossmatch: %s", xm.explain())
    result = xm.write(p["output"], mode=p["write_mode"], provenance=provenance,
                      pixel_threshold=p["pixel_threshold"], margin_radius_arcsec=p["margin_radius_arcsec"])
    return {"outputs": [{"table": result.table, "version": result.version, "rows": result.rows}],
            "inputs": provenance.inputs, "plan": xm.explain(), "write": asdict(result)}


def forced_source_stats(params: dict[str, Any], provenance: Provenance) -> dict:
    """Per-object light-curve features of a ForcedSource table (see ``conf/templates/forced_source_stats.yaml``)."""
    from ..ops.lightcurves import features
    from ..spark import session

    p = params
    spark = session(app_name="userbatch-forced_source_stats")
    f = features(p["source"], bands=p["bands"], layout=p["layout"], lc_features=p["lc_features"],
                 time_column=p["time_column"], version=p["source_version"], engine=p["engine"], spark=spark)
    log.info("forced_source_stats: %s", f.explain())
    result = f.write(p["output"], mode=p["write_mode"], provenance=provenance)
    return {"outputs": [{"table": result.table, "version": result.version, "rows": result.rows}],
            "inputs": provenance.inputs, "plan": f.explain()}


def periodogram(params: dict[str, Any], provenance: Provenance) -> dict:
    """Lomb–Scargle periodograms per object (see ``conf/templates/periodogram.yaml``)."""
    from ..ops.periodogram import periodogram as run
    from ..spark import session

    p = params
    spark = session(app_name="userbatch-periodogram")
    pg = run(p["source"], bands=p["bands"], multiband=p["multiband"], min_period_day=p["min_period_day"],
             max_period_day=p["max_period_day"], baseline_day=p["baseline_day"],
             samples_per_peak=p["samples_per_peak"], top_n=p["top_n"], fap=p["fap"], backend=p["backend"],
             time_column=p["time_column"], version=p["source_version"], engine=p["engine"], spark=spark)
    log.info("periodogram: %s", pg.explain())
    result = pg.write(p["output"], mode=p["write_mode"], provenance=provenance)
    return {"outputs": [{"table": result.table, "version": result.version, "rows": result.rows}],
            "inputs": provenance.inputs, "plan": pg.explain()}
