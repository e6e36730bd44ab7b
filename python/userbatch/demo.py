"""The end-to-end demo behind ``userbatch demo`` (and the README's first command).

Simulate a small survey -> ingest Object, Visit, ForcedSource and a Gaia-like catalog -> cone and box searches ->
an SQL aggregate -> the facility: user 'demo' submits the cross-match, light-curve and periodogram jobs under a
quota and is charged what Spark used -> a derived table written twice (versions, time travel) -> provenance. Later
issues extend this same path. Output goes through ``echo`` so the library itself never prints.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Callable

from .config import settings
from .errors import UserbatchError

log = logging.getLogger(__name__)

_MARKER = ".userbatch-demo"


def _fresh_home(home: str | Path | None) -> Path:
    home = Path(home or "demo_output").resolve()
    if home.exists() and any(home.iterdir()):
        if not (home / _MARKER).exists():
            raise UserbatchError(f"{home} exists and is not a demo directory; choose another --home")
        shutil.rmtree(home)
    home.mkdir(parents=True, exist_ok=True)
    (home / _MARKER).touch()
    # the demo chooses its own home: every later settings() call in this process (and its runs) sees it
    os.environ.update(USERBATCH_HOME=str(home), USERBATCH_DB_URL=f"sqlite:///{home / 'facility.db'}",
                      USERBATCH_WAREHOUSE=str(home / "warehouse"))
    return home


def build_catalog(home: Path, n_objects: int, spark, echo: Callable[[str], None] = log.info) -> dict:
    """Simulate a survey under ``home/input`` and ingest it: dp1.object, dp1.visit, ref.gaia and the director table
    dp1.forced_source, into the catalog the environment names (``USERBATCH_DB_URL`` / ``USERBATCH_WAREHOUSE``).

    Shared by the demo, the notebooks (:func:`userbatch.notebook.open_demo`) and their tests, so all three explore
    the same tables. Returns ``{"config": SurveyConfig, "paths": {...}, "pixel_threshold": int,
    "ingested": {table: result}}``.
    """
    from .sim import SurveyConfig, write_survey
    from .tables.director import VisitTimes, write_child_table
    from .tables.ingest import ingest, read_input

    home = Path(home)
    cfg = SurveyConfig(n_objects=n_objects, n_visits=120, seed=7)
    paths = write_survey(cfg, home / "input")
    echo(f"simulated {n_objects:,} objects, {cfg.n_visits} visits -> {home / 'input'}")

    threshold = max(2_000, n_objects // 8)
    specs = [
        ("dp1.object", "object", dict(ra_column="coord_ra", dec_column="coord_dec", pixel_threshold=threshold,
                                      margin_radius_arcsec=5.0, description="simulated DP1-like Object table")),
        ("dp1.visit", "visit", dict(ra_column="ra", dec_column="dec", pixel_threshold=threshold,
                                    description="visits with pointing centres and expMidptMJD")),
        ("ref.gaia", "gaia", dict(ra_column="ra", dec_column="dec", pixel_threshold=threshold,
                                  margin_radius_arcsec=5.0, description="Gaia-like reference catalog, epoch 2016.0")),
    ]
    ingested = {}
    echo("\n== ingest")
    for name, key, opts in specs:
        res = ingested[name] = ingest(paths[key], name, spark=spark, **opts)
        echo(f"{name:20s} v{res.version}  {res.rows:>9,} rows  {res.partitions:>3d} partitions"
             + (f"  margin {res.margin_rows:,} rows" if res.margin_rows is not None else ""))
    # ForcedSource is a director table: each row in its Object's partition, with the visit time joined once
    res = write_child_table(read_input(spark, [paths["forced_source"]])[0], "dp1.forced_source",
                            parent="dp1.object", times=VisitTimes("dp1.visit"),
                            description="forced photometry, co-located with dp1.object, with expMidptMJD")
    ingested["dp1.forced_source"] = res
    echo(f"{'dp1.forced_source':20s} v{res.version}  {res.rows:>9,} rows  {res.partitions:>3d} partitions"
         "  (in dp1.object's partitions; times from dp1.visit)")
    return {"config": cfg, "paths": paths, "pixel_threshold": threshold, "ingested": ingested}


def run_demo(n_objects: int = 20_000, home=None, master: str | None = None, echo: Callable[[str], None] = log.info):
    from .ops.search import box_search, cone_search
    from .spark import session
    from .tables import delta
    from .tables.catalog import Catalog
    from .tables.info import partitions_of
    from .tables.provenance import Provenance
    from .tables.read import read_table, resolve
    from .tables.write import write_table
    from .viz import plot_lightcurve, plot_sky

    t0 = time.perf_counter()
    home = _fresh_home(home)
    echo(f"== userbatch demo (facility home: {home})")
    spark = session(master=master)
    built = build_catalog(home, n_objects, spark, echo)
    cfg, threshold = built["config"], built["pixel_threshold"]

    echo("\n== cone search: 0.5 deg around the dense cluster at (0.3, 2.0), crossing RA=0")
    s = cone_search("dp1.object", 0.3, 2.0, 1800.0)
    echo(s.explain())
    cone = s.to_pandas()
    echo(f"{len(cone):,} objects; RA range {cone.coord_ra.min():.3f}..{cone.coord_ra.max():.3f} (wraps through 0)")

    echo("\n== box search near the south pole: RA 0..360, Dec -90..-88")
    b = box_search("dp1.object", 0, 360, -90, -88)
    echo(b.explain())
    echo(f"{len(b.to_pandas()):,} objects")

    echo("\n== SQL: forced photometry per band (ForcedSource joined with Visit)")
    agg = spark.sql(
        """SELECT v.band, count(*) AS n_sources, count(DISTINCT fs.objectId) AS n_objects,
                  round(avg(fs.psfFlux), 1) AS mean_flux_nJy, round(min(v.expMidptMJD), 2) AS first_mjd
           FROM dp1.forced_source fs JOIN dp1.visit v ON fs.visit = v.visit
           GROUP BY v.band ORDER BY v.band"""
    ).toPandas()
    echo(agg.to_string(index=False))

    echo("\n== the facility: user 'demo' submits three jobs under a quota (conf/facility.yaml), walks away")
    from .facility.service import Facility, Identity
    from .facility.worker import running_worker
    from .tables.db import engine_for

    db_url = settings().db_url
    user = Facility(Identity.lookup("demo", engine_for(db_url)), db_url=db_url, start_worker=False)
    q = user.quota_show()["user"]
    echo(f"demo's allocation: {q['core_hours']:.0f} core-hours per {q['period']}, {q['max_cores']} cores at once")
    with running_worker(db_url):
        t_submit = time.perf_counter()
        jobs = {
            "crossmatch": user.submit(template="crossmatch", cores=1, max_hours=0.5, params={
                "left": "dp1.object", "right": "ref.gaia", "radius_arcsec": 1.0, "one_to_one": True,
                "left_columns": ["objectId", "coord_ra", "coord_dec"],
                "right_columns": ["source_id", "truth_objectId", "pmra", "pmdec"],
                # Gaia moved from 2016.0 to the Object epoch; the fastest star outruns the 5" margin in 9 years
                "motion": {"epoch": cfg.observation_epoch_jyear, "parallax": "parallax", "ref_epoch": 2016.0},
                "margin_fallback": "read", "output": "u_demo.object_gaia", "pixel_threshold": threshold}),
            "features": user.submit(template="forced_source_stats", cores=1, max_hours=0.5, params={
                "source": "dp1.forced_source", "bands": ["g", "r", "i"], "lc_features": ["StetsonK"],
                "output": "u_demo.fs_stats"}),
            "periodogram": user.submit(template="periodogram", cores=1, max_hours=0.5, params={
                "source": "dp1.forced_source", "multiband": True, "min_period_day": 0.1,
                "output": "u_demo.periods"}),
        }
        echo(f"submitted {len(jobs)} runs in {time.perf_counter() - t_submit:.2f} s: "
             + ", ".join(f"{k}={r['id']}" for k, r in jobs.items()))
        done = {k: user.wait(r["id"], timeout_s=1800) for k, r in jobs.items()}
    for k, r in done.items():
        outs = ", ".join(f"{o['table']}@v{o['version']} ({o['rows']:,} rows)" for o in r["result"].get("outputs", []))
        echo(f"{k:12s} {r['id']} {r['state']:9s} charged {r['charged_core_hours'] or 0:.4f} core-hours -> {outs}"
             + (f"  error: {r['error']}" if r["error"] else ""))
        if r["state"] != "succeeded":
            raise UserbatchError(f"demo run {k} {r['state']}: {r['error']}; see 'userbatch logs {r['id']}'")
    q = user.quota_show()["user"]
    echo(f"demo's quota now: used {q['used']:.4f} of {q['core_hours']:.0f} core-hours, "
         f"{q['remaining']:.4f} remaining")

    mine = Catalog(user="demo")  # a run's outputs are private to its owner unless it shares them
    pairs = read_table("u_demo.object_gaia", catalog=mine).toPandas()
    right = (pairs.objectId == pairs.truth_objectId).mean() if len(pairs) else 0.0
    echo(f"u_demo.object_gaia: {len(pairs):,} one-to-one pairs, {right:.1%} the simulator's true counterpart; "
         f"median separation {pairs._dist_arcsec.median() * 1000:.2f} mas")
    periods = read_table("u_demo.periods", catalog=mine).toPandas().merge(
        read_table("dp1.object", columns=["objectId", "variability_class", "period_day"]).toPandas(), on="objectId")
    per = periods[(periods.variability_class == "periodic") & (periods.n_points >= 40)]
    hit = ((per.best_period_day / per.period_day - 1).abs() < 0.01) | ((per.best_period_day / per.period_day - 0.5)
                                                                        .abs() < 0.01)
    echo(f"u_demo.periods: {len(periods):,} objects; injected period (or half, for eclipses) found for "
         f"{hit.sum()} of {len(per)} periodic objects with >= 40 points")
    if len(per):
        star = int(per[hit].objectId.iloc[0]) if hit.any() else int(per.objectId.iloc[0])
        echo(f"light curve of object {star}: {plot_lightcurve('dp1.forced_source', star, home / f'lc_{star}.png')}")
    echo("provenance of u_demo.object_gaia:")
    tree = user.provenance("u_demo.object_gaia")
    echo(f"  v{tree['version']} run={tree['run_id']} job={tree['job']} user={tree['user']} "
         f"code={tree['code_version']}")
    for i in tree["inputs"]:
        echo(f"    <- {i['table']}@v{i['version']} job={i.get('job')} user={i.get('user')}")

    echo("\n== a classifier: user 'demo' trains on the light-curve features, then classifies every object")
    with running_worker(db_url):
        train = user.wait(user.submit(template="train_classifier", cores=1, max_hours=0.5, params={
            "features": "u_demo.fs_stats", "labels": "dp1.object", "label_column": "variability_class",
            "hyperparameters": {"numTrees": 60, "maxDepth": 8}, "model_name": "demo-varclass",
            "model_alias": "champion"})["id"], timeout_s=1800)
        if train["state"] != "succeeded":
            raise UserbatchError(f"demo training run {train['state']}: {train['error']}")
        ml = train["result"]["mlflow"]
        m = train["result"]["summary"]["metrics"]
        echo(f"train_classifier {train['id']}: random forest, validation accuracy {m['accuracy']:.3f} "
             f"(balanced {m['balanced_accuracy']:.3f}; recall periodic {m['recall_periodic']:.2f}, transient "
             f"{m['recall_transient']:.2f}); MLflow run {ml['run_id']} -> model {ml['registered_model']} "
             f"v{ml['model_version']} @champion; charged {train['charged_core_hours']:.4f} core-hours")
        cls = user.wait(user.submit(template="classify", cores=1, max_hours=0.5, params={
            "source": "u_demo.fs_stats", "model": "demo-varclass", "model_alias": "champion",
            "output": "u_demo.varclass"})["id"], timeout_s=1800)
        if cls["state"] != "succeeded":
            raise UserbatchError(f"demo classify run {cls['state']}: {cls['error']}")
    counts = read_table("u_demo.varclass", catalog=mine).groupBy("predicted_class").count().toPandas()
    echo(f"classify {cls['id']}: u_demo.varclass, " + ", ".join(
        f"{r.predicted_class} {r['count']:,}" for _, r in counts.sort_values("predicted_class").iterrows()))
    from .ml.tracking import tracking_uri

    echo(f"MLflow store: {tracking_uri()}  (browse it: userbatch mlflow ui; models: userbatch models list)")

    echo("\n== a derived table, written twice (versions and time travel)")
    obj_version = resolve(Catalog().get("dp1.object")).version
    for cut in (20_000.0, 50_000.0):
        prov = Provenance(job="demo.bright_objects", parameters={"r_psfFlux_min_nJy": cut})
        prov.add_input("dp1.object", obj_version)
        bright = spark.sql(f"SELECT objectId, coord_ra, coord_dec, r_psfFlux FROM dp1.object WHERE r_psfFlux > {cut}")
        mode = "overwrite" if Catalog().exists("demo.bright") else "create"
        res = write_table(bright, "demo.bright", mode, provenance=prov, pixel_threshold=threshold,
                          description="objects brighter than a flux cut")
        echo(f"demo.bright v{res.version}: {res.rows:,} rows (r_psfFlux > {cut:,.0f} nJy)")
    v0 = read_table("demo.bright", version=0).count()
    latest = read_table("demo.bright").count()
    echo(f"time travel: version 0 has {v0:,} rows, latest has {latest:,}")

    echo("\n== tables and versions")
    for e in Catalog().list():
        snap = resolve(e)
        echo(f"{e.name:28s} v{snap.version:<3d} {snap.num_rows:>9,} rows  {len(partitions_of(snap)):>3d} partitions")

    echo("\n== provenance of demo.bright (newest first)")
    for h in delta.history(Catalog().get("demo.bright").location):
        p = h["provenance"]
        ins = ", ".join(f"{i['table']}@v{i['version']}" for i in p.get("inputs", []))
        echo(f"v{h['version']} {h['mode']:9s} user={p.get('user')} job={p.get('job')} inputs=[{ins}] "
             f"params={p.get('parameters')} code={p.get('code_version')}")

    entry = Catalog().get("dp1.object")
    png = plot_sky(entry, home / "dp1_object_sky.png", spark=spark)
    echo(f"\nsky map of dp1.object: {png}")
    echo(f"demo finished in {time.perf_counter() - t0:.1f} s")
