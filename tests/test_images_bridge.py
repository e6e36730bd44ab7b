"""The catalog→image bridge: image requests checked (each mistake named, nothing submitted), rendered into BPS
submit YAML for the userbatch plugin, refused before any graph is built when over quota, and — end to end — the
stamps of objects chosen by a catalog query cut out by a BPS workflow that ran as one facility run."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import module_facility

from userbatch.facility.ledger import QuotaExceeded
from userbatch.images.bridge import (DEFAULT_CLUSTERING, DIMENSION_CLUSTERING, ImageRequestError, parse_request,
                                     submit, submit_yaml)

pytest.importorskip("lsst.ctrl.bps")

CONFIG = """
defaults:
  user: {core_hours: 20, max_cores: 4, storage_gb: 5}
users:
  poor: {core_hours: 0.01, max_cores: 4, storage_gb: 5}
runs: {max_concurrent: 2, default_cores: 1, default_max_hours: 0.5}
"""


@pytest.fixture(scope="module")
def env(session_home, tmp_path_factory):
    from userbatch.images.sim_repo import build_repo

    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    with module_facility(tmp_path_factory, "bridge", CONFIG, env={"PATH": path}) as fx:
        info = build_repo(fx.base / "repo", n_visits=1, n_detectors=2)
        yield {"base": fx.base, "info": info, "fac": fx.fac, "fx": fx}


def _request(env, **changes):
    return {"pipeline": "stamps", "butler": env["info"].root, "inputs": [env["info"].input_collection],
            "name": "st", **changes}


@pytest.mark.parametrize("changes, message", [
    ({"pipeline": "nope"}, "neither a YAML file nor one of"),
    ({"pipeline": "../../etc/passwd"}, "neither a YAML file"),
    ({"name": "../x"}, "lower-case identifier"),
    ({"name": None}, "needs 'name'"),
    ({"inputs": [3]}, "inputs must be"),
    ({"config": {"stampSize": 3}}, "task_label:field"),
    ({"cores": 0}, "cores >= 1"),
    ({"bogus": 1}, "unknown request key"),
])
def test_bad_requests_are_refused_naming_the_key(env, changes, message):
    with pytest.raises(ImageRequestError, match=message):
        parse_request(_request(env, **changes))


def test_a_butler_path_without_a_repository_and_malformed_yaml(env, tmp_path):
    with pytest.raises(ImageRequestError, match="no butler repository"):
        parse_request(_request(env, butler=str(tmp_path)))
    bad = tmp_path / "r.yaml"
    bad.write_text("pipeline: [unclosed\n")
    with pytest.raises(ImageRequestError, match="not valid YAML"):
        parse_request(bad)


def test_submit_yaml_names_the_plugin_the_user_collections_and_overrides(env):
    req = parse_request(_request(env, config={"cutout:stampSize": 41}, cores=3, max_hours=0.25, group="g1"))
    doc = submit_yaml(req, "ann", Path("/tmp/sub"))
    assert doc["wmsServiceClass"] == "userbatch.images.bps_service.UserbatchService"
    assert doc["payload"]["output"] == "u/ann/st" and doc["payload"]["outputRun"] == "u/ann/st/run"
    assert doc["extraQgraphOptions"] == "-c cutout:stampSize=41"
    assert (doc["userbatchCores"], doc["userbatchMaxHours"], doc["userbatchGroup"]) == (3, 0.25, "g1")
    with pytest.raises(ImageRequestError, match="shell characters"):
        submit_yaml(parse_request(_request(env, config={"cutout:stampSize": "1; rm -rf /"})), "ann", Path("/t"))


def test_submit_yaml_clusters_by_default_and_the_request_wins(env):
    doc = submit_yaml(parse_request(_request(env, cores=3)), "ann", Path("/tmp/sub"))
    assert doc["clusterAlgorithm"] == DEFAULT_CLUSTERING and doc["userbatchClusters"] == 3 and "cluster" not in doc
    doc = submit_yaml(parse_request(_request(env, clusters=0)), "ann", Path("/tmp/sub"))
    assert doc["userbatchClusters"] == 0  # one quantum per job
    own = {"chain": {"pipetasks": "cutout", "dimensions": "visit", "clusterTemplate": "chain_{visit}"}}
    doc = submit_yaml(parse_request(_request(env, cluster=own, clusters=5)), "ann", Path("/tmp/sub"))
    assert doc["clusterAlgorithm"] == DIMENSION_CLUSTERING and doc["cluster"] == own
    assert "userbatchClusters" not in doc
    for bad, message in [({"chain": {"dimensions": "visit"}}, "needs 'pipetasks'"),
                         ({"chain": {"pipetasks": "cutout", "runQuantumCommand": "rm -rf ~"}}, "unknown key"),
                         ({"chain": {"pipetasks": "cutout; rm -rf ~"}}, "name list or a number"),
                         (["chain"], "must map a cluster label")]:
        with pytest.raises(ImageRequestError, match=message):
            parse_request(_request(env, cluster=bad))
    with pytest.raises(ImageRequestError, match="clusters must be"):
        parse_request(_request(env, clusters=-1))


@pytest.mark.slow
def _wait_for_no_worker(db_url: str, timeout_s: float = 60) -> None:
    """Until no worker holds the facility's lock (a background worker exits a few seconds after going idle)."""
    import fcntl
    import time

    from userbatch.facility.worker_lock import lock_path

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with open(lock_path(db_url), "a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(fh, fcntl.LOCK_UN)
                return
            except BlockingIOError:
                pass
        time.sleep(0.3)
    raise AssertionError(f"a worker still serves {db_url} after {timeout_s} s")


def test_the_default_clustering_runs_fewer_jobs_than_quanta(env):
    """The background pipeline on 1 visit x 2 detectors: 6 quanta, 2 cores -> 2 jobs of 3 quanta (one detector's
    chain each, one run-qbb process), besides pipetaskInit and the final job. Only prepared: no worker runs it."""
    import json

    ann = env["fac"]("ann")
    run = submit(_request(env, pipeline="background", name="bg_default", cores=2), facility=ann,
                 submit_root=env["base"] / "submit")
    try:
        plan = json.loads((env["base"] / "submit" / "bg_default" / "userbatch_plan.json").read_text())
    finally:
        ann.cancel(run["id"])
        _wait_for_no_worker(env["fx"].db_url)  # the worker 'bps submit' started exits once the run is cancelled
    quantum_jobs = [j for j in plan["jobs"] if j["label"] != "pipetaskInit"]
    n_quanta = sum(sum(j["quanta"].values()) for j in quantum_jobs)
    assert n_quanta == 6 and len(quantum_jobs) == 2 < n_quanta and plan["clustered"]
    assert all(sum(j["quanta"].values()) == 3 and "--qgraph-node-id" in j["command"] for j in quantum_jobs)


def test_over_quota_is_refused_before_any_graph_is_built(env):
    poor = env["fac"]("poor")
    with pytest.raises(QuotaExceeded, match="core-hours left"):
        submit(_request(env, name="poor_try", cores=2, max_hours=1), facility=poor, submit_root=env["base"] / "s")
    assert not (env["base"] / "s" / "poor_try").exists() and poor.runs() == []


@pytest.mark.slow
def test_stamps_from_a_catalog_query_through_bps(env, spark):
    """Objects chosen by SQL on a catalog table -> stamp_targets -> a BPS workflow run by the facility worker ->
    stamps centred on the objects' true positions."""
    from lsst.daf.butler import Butler

    from userbatch.images.bridge import stamps
    from userbatch.tables.write import write_table

    truth = env["info"].catalog
    stars = truth[truth["type"] == "star"].nlargest(6, "flux") if "type" in truth else truth.nlargest(6, "flux")
    cat = stars.rename(columns={"ra": "coord_ra", "dec": "coord_dec"})[["objectId", "coord_ra", "coord_dec",
                                                                        "flux"]]
    write_table(spark.createDataFrame(cat.reset_index(drop=True)), "ubsim.bright", ra_column="coord_ra",
                dec_column="coord_dec")
    ann = env["fac"]("ann")
    _wait_for_no_worker(env["fx"].db_url)
    with env["fx"].worker():
        run = stamps("ubsim.bright", "flux > 0", env["info"].root, [env["info"].input_collection], "bright_stamps",
                     facility=ann, cores=2, max_hours=0.5, submit_root=env["base"] / "submit")
        assert run["kind"] == "bps" and run["targets"] == len(cat)
        done = ann.wait(run["id"], timeout_s=600)
    assert done["state"] == "succeeded", ann.logs(run["id"], 80)
    assert done["charged_core_hours"] > 0
    prov = done["result"]["bps"]  # the run's provenance links the graph and the butler collections
    assert prov["output_run"] == "u/ann/bright_stamps/run" and prov["butler"] == env["info"].root
    assert prov["qgraph"] and "stamps.yaml" in prov["pipeline"]
    butler = Butler.from_config(env["info"].root, collections="u/ann/bright_stamps")
    try:
        refs = list(butler.registry.queryDatasets("stamp_catalog", collections="u/ann/bright_stamps"))
        assert refs
        got = np.concatenate([np.asarray(butler.get(r)["objectId"]) for r in refs])
    finally:
        butler.close()
    assert set(got) <= set(cat.objectId) and len(set(got)) >= 1
