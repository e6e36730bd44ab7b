"""Spark standalone as a tested target, and Spark Connect for notebooks.

One dev cluster (``userbatch cluster start --workers 2 --cores 1``) serves the module: the cross-match and
light-curve jobs give row-for-row the same output tables on ``local[2]`` and on the cluster, also when one worker
(with its executor and Python workers) is SIGKILLed mid-job; a facility run on the standalone runner, cancelled,
releases its reservation and leaves no process. A Spark Connect server (``userbatch connect start``) gives a client
the same catalog views and table functions; what needs a classic session says so.

Cluster runs use ``spark.sql.shuffle.partitions=4``: 2 executor cores x 2, the same number as the local[2] runs, so
both sides plan the same shuffles (the data is a few thousand rows; 200 partitions would be 200 empty tasks).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from helpers import facility_under, module_facility, sky_points

from userbatch.cli import main
from userbatch.cluster import dev
from userbatch.cluster.base import spark_submit

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

ROOT = Path(__file__).resolve().parents[1]
SHUFFLE_PARTITIONS = "4"

CONFIG = """
capacity: {cores: 100, user_fraction: 0.10}
defaults:
  user:  {core_hours: 20, max_cores: 4, storage_gb: 5}
runs: {max_concurrent: 1, default_cores: 1, default_max_hours: 0.25}
"""

LONG_SCRIPT = """
import time
import userbatch
spark = userbatch.session()
assert spark.sparkContext.master.startswith("spark://")
spark.sparkContext.parallelize(range(1), 1).map(lambda x: time.sleep(600) or x).collect()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(*args) -> str:
    r = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return r.output


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=3) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def data(spark, session_home, tmp_path_factory):
    """Input tables (written once on the test session's local[2]): dp1.left / dp1.right for the cross-match, and a
    director ForcedSource table for the light-curve job."""
    from userbatch.sim import SurveyConfig, simulate_survey
    from userbatch.tables.director import VisitTimes, write_child_table
    from userbatch.tables.write import write_table

    with module_facility(tmp_path_factory, "cluster") as fx:
        left = sky_points(3000, seed=21)
        rng = np.random.default_rng(22)
        right = left.sample(1800, random_state=4).assign(
            objectId=lambda d: d.objectId + 100_000,
            coord_dec=lambda d: np.clip(d.coord_dec + rng.normal(0, 2e-4, len(d)), -90, 90))
        write_table(spark.createDataFrame(left), "dp1.left", pixel_threshold=300, margin_radius_arcsec=5)
        write_table(spark.createDataFrame(right), "dp1.right", pixel_threshold=300, margin_radius_arcsec=5)
        s = simulate_survey(SurveyConfig(n_objects=300, n_visits=40, seed=5))
        write_table(spark.createDataFrame(s["object"]), "dp1.object", pixel_threshold=60)
        write_table(spark.createDataFrame(s["visit"]), "dp1.visit", ra_column=None, dec_column=None)
        write_child_table(spark.createDataFrame(s["forced_source"]), "dp1.forced_source", parent="dp1.object",
                          times=VisitTimes("dp1.visit"))
        yield {"base": fx.base, "fx": fx, "spark": spark}


@pytest.fixture(scope="module")
def devcluster(data):
    """``userbatch cluster start --workers 2 --cores 1 --memory 1g``, stopped (processes and record) at the end."""
    try:
        _cli("cluster", "start", "--workers", "2", "--cores", "1", "--memory", "1g")
        yield dev.cluster_state()
    finally:
        CliRunner().invoke(main, ["cluster", "stop"])
        assert dev.cluster_state() is None


XM = {"left": "dp1.left", "right": "dp1.right", "radius_arcsec": 2.0, "engine": "spark"}
FS = {"source": "dp1.forced_source", "bands": "[g, r, i]", "engine": "spark", "lc_features": "[StetsonK]"}


def _start_job(job: str, params: dict, master: str, log: Path) -> subprocess.Popen:
    argv = [spark_submit(), "--master", master, "--driver-memory", "1g",
            "--conf", f"spark.sql.shuffle.partitions={SHUFFLE_PARTITIONS}", "--conf", "spark.ui.enabled=false",
            "--conf", "spark.driver.host=127.0.0.1"]
    if master.startswith("spark://"):
        argv += ["--total-executor-cores", "2", "--executor-cores", "1", "--executor-memory", "1g"]
    argv.append(str(ROOT / "jobs" / f"{job}.py"))
    for k, v in params.items():
        argv += ["-p", f"{k}={v}"]
    env = dict(os.environ, SPARK_MASTER=master, PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable,
               SPARK_LOCAL_IP="127.0.0.1", USERBATCH_SPARK_LOG_LEVEL="WARN")
    with open(log, "wb") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True)


def _finish(proc: subprocess.Popen, log: Path, timeout_s: float = 300) -> None:
    try:
        rc = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise AssertionError(f"job timed out; log tail:\n{log.read_text(errors='replace')[-3000:]}") from None
    assert rc == 0, log.read_text(errors="replace")[-4000:]


def _run_job(job, params, master, log):
    _finish(_start_job(job, params, master, log), log)


def _table(spark, name: str) -> pd.DataFrame:
    from userbatch.tables.read import read_table

    pdf = read_table(name, spark=spark).toPandas()
    pdf = pdf[sorted(pdf.columns)]
    return pdf.sort_values(list(pdf.columns)).reset_index(drop=True)


def _assert_identical(spark, a: str, b: str) -> int:
    x, y = _table(spark, a), _table(spark, b)
    pd.testing.assert_frame_equal(x, y, check_exact=True)
    return len(x)


def test_cluster_start_status_and_second_start_refused(devcluster):
    st = json.loads(_cli("cluster", "status", "--json"))
    assert st["running"] and st["source"] == "master" and st["alive_workers"] == 2
    assert {w["cores"] for w in st["worker_list"]} == {1} and st["master_url"].startswith("spark://127.0.0.1:")
    r = CliRunner().invoke(main, ["cluster", "start"])
    assert r.exit_code == 2 and "already running" in r.output


def test_jobs_give_identical_tables_on_local_and_on_the_cluster(devcluster, data, tmp_path):
    """The same templated job by spark-submit on the two-worker cluster and in this process on local Spark (the
    test session; a spark-submit on local[2] runs the same code and only costs a JVM start). Both cluster
    applications are submitted first and the local runs happen while they start and run (the master queues the
    second application until the first gives its cores back); each pair is compared once both have ended."""
    import yaml

    from userbatch.facility.jobmain import run_template

    spark, master = data["spark"], devcluster["master_url"]
    jobs = (("crossmatch", XM, "xm"), ("forced_source_stats", FS, "fs"))
    procs = {out: _start_job(job, {**params, "output": f"u_tester.{out}_cluster"}, master,
                             tmp_path / f"{out}_cluster.log") for job, params, out in jobs}
    try:
        for job, params, out in jobs:
            run_template(job, {**{k: yaml.safe_load(v) if isinstance(v, str) else v for k, v in params.items()},
                               "output": f"u_tester.{out}_local"})
        for job, params, out in jobs:
            _finish(procs[out], tmp_path / f"{out}_cluster.log")
            n = _assert_identical(spark, f"u_tester.{out}_local", f"u_tester.{out}_cluster")
            assert n > 100, (job, n)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def test_a_cancelled_cluster_run_releases_its_reservation(devcluster, data, monkeypatch):
    monkeypatch.setenv("SPARK_LOCAL_IP", "127.0.0.1")
    runner = f"runner: {{kind: standalone, master: '{devcluster['master_url']}'}}\n"
    with facility_under(data["fx"].base, CONFIG + runner, db_url=data["fx"].db_url) as fx:
        ann = fx.fac("ann")
        with fx.worker():
            run = ann.submit(script=("long.py", LONG_SCRIPT), cores=1, max_hours=0.25)
            deadline = time.monotonic() + 240
            while True:  # until its Spark job runs tasks on the cluster
                r = ann.status(run["id"])
                assert r["state"] in ("queued", "starting", "running"), ann.logs(run["id"], 60)
                if r["state"] == "running" and (r.get("progress") or {}).get("tasks_total", 0) > 0:
                    break
                assert time.monotonic() < deadline, r
                time.sleep(0.5)
            assert ann.quota_show()["user"]["reserved"] > 0
            assert ann.cancel(run["id"])["cancel_requested"]
            done = ann.wait(run["id"], timeout_s=120)
        assert done["state"] == "cancelled" and done["reserved_core_hours"] == 0.0
        assert ann.quota_show()["user"]["reserved"] == 0
        with pytest.raises(ProcessLookupError):
            os.killpg(r["pid"], 0)
        assert subprocess.run(["pgrep", "-f", run["id"]], capture_output=True, text=True).stdout.split() == []
        deadline = time.monotonic() + 60  # the master took the application and its executors off the workers
        while _get_json(devcluster["webui_url"] + "/json/")["activeapps"]:
            assert time.monotonic() < deadline
            time.sleep(0.5)


def test_spark_connect_gives_the_same_views_and_functions(data, tmp_path):
    from userbatch.ops.crossmatch import crossmatch

    spark = data["spark"]
    port = _free_port()
    client = textwrap.dedent("""
        import json, sys
        import userbatch
        from sklearn.dummy import DummyClassifier
        from userbatch.errors import UserbatchError
        from userbatch.ml.models import Predictor
        from userbatch.ops.crossmatch import crossmatch
        spark = userbatch.session(remote=sys.argv[1])
        out = {"connect": type(spark).__module__}
        out["views"] = sorted(r["viewName"] for r in spark.sql("SHOW VIEWS IN dp1").collect())
        out["sql"] = [list(r) for r in spark.sql(sys.argv[2]).collect()]
        xm = crossmatch("dp1.left", "dp1.right", 2.0, engine="spark").to_pandas()
        out["xm"] = sorted(map(list, zip(xm.objectId.tolist(), xm.objectId_right.tolist(), xm._dist_arcsec.tolist())))
        model = Predictor("sklearn", DummyClassifier().fit([[0.0], [1.0]], ["a", "b"]), ["x"], ["a", "b"])
        try:
            model.predict(spark.range(3).selectExpr("id AS objectId", "CAST(id AS DOUBLE) AS x"), ["objectId"])
            out["classic_only"] = "no error"
        except UserbatchError as exc:
            out["classic_only"] = str(exc)
        print("RESULT " + json.dumps(out))
    """)
    (tmp_path / "client.py").write_text(client)
    query = "SELECT band, count(*) AS n, sum(objectId) AS s FROM dp1.left GROUP BY band ORDER BY band"
    try:
        out = _cli("connect", "start", "--master", "local[1]", "--port", str(port))
        assert f"sc://127.0.0.1:{port}" in out
        assert json.loads(_cli("connect", "status", "--json"))["running"]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYSPARK_GATEWAY", "SPARK_CONNECT_MODE"))}
        p = subprocess.run([sys.executable, str(tmp_path / "client.py"), f"sc://127.0.0.1:{port}", query],
                           capture_output=True, text=True, timeout=300, env=env)
        assert p.returncode == 0, p.stderr[-3000:]
        got = json.loads(next(line for line in p.stdout.splitlines() if line.startswith("RESULT "))[7:])
    finally:
        CliRunner().invoke(main, ["connect", "stop"])
    assert not dev.connect_status()["running"]
    assert got["connect"].startswith("pyspark.sql.connect")
    assert {"left", "right", "object", "visit", "forced_source"} <= set(got["views"])
    from userbatch.tables.views import register_catalog_views

    register_catalog_views(spark)
    assert got["sql"] == [list(r) for r in spark.sql(query).collect()]
    xm = crossmatch("dp1.left", "dp1.right", 2.0, engine="spark", spark=spark).to_pandas()
    assert got["xm"] == sorted(map(list, zip(xm.objectId.tolist(), xm.objectId_right.tolist(),
                                             xm._dist_arcsec.tolist())))
    assert "needs a classic session" in got["classic_only"]


def test_killing_a_worker_mid_job_still_gives_identical_output(devcluster, data, tmp_path):
    """Last in the module: it takes one of the two workers away (SIGKILL of its process group: the worker JVM, its
    executor and their Python workers — what losing a node looks like to the driver)."""
    spark, master = data["spark"], devcluster["master_url"]
    if not dev.cluster_state():
        pytest.skip("no cluster")
    log = tmp_path / "xm_kill.log"
    proc = _start_job("crossmatch", {**XM, "output": "u_tester.xm_kill"}, master, log)
    try:
        victim = devcluster["worker_pids"][1]
        deadline = time.monotonic() + 180
        while True:  # until the application has an executor on both workers
            info = _get_json(devcluster["webui_url"] + "/json/")
            busy = [w for w in info["workers"] if w.get("state") == "ALIVE" and w.get("coresused", 0) > 0]
            if info["activeapps"] and len(busy) == 2:
                break
            assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, info
            time.sleep(0.2)
        time.sleep(1.0)  # let tasks start on the executors
        assert proc.poll() is None  # mid-job
        os.killpg(os.getpgid(victim), signal.SIGKILL)
        _finish(proc, log)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    from userbatch.tables.catalog import Catalog

    if "u_tester.xm_local" not in {e.name for e in Catalog().list()}:  # this test run alone
        _run_job("crossmatch", {**XM, "output": "u_tester.xm_local"}, "local[2]", tmp_path / "xm_local.log")
    assert _assert_identical(spark, "u_tester.xm_local", "u_tester.xm_kill") > 100
