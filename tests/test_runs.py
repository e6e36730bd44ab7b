"""Runs through the facility on real Spark: a templated job, a user script, cancel, failure, accounting from the
event log, rerun from pinned inputs, export, provenance — each run a real spark-submit launched by the worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import module_facility, sky_points

from userbatch.tables.db import engine_for

# every run a spark-submit launched by the worker
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
CONFIG = """
capacity: {cores: 100, user_fraction: 0.10}
defaults:
  user:  {core_hours: 20, max_cores: 4, storage_gb: 5}
  group: {core_hours: 50, max_cores: 8, storage_gb: 50}
admins: [tester]
runs: {max_concurrent: 3, default_cores: 1, default_max_hours: 0.5}
"""

LONG_SCRIPT = """
import time
import userbatch
spark = userbatch.session()
spark.sparkContext.parallelize(range(2), 2).map(lambda x: time.sleep(600) or x).collect()
"""

FAILING_SCRIPT = """
import userbatch
spark = userbatch.session()
assert spark.range(10).count() == 10
raise ValueError("boom: the user's own error")
"""


@pytest.fixture(scope="module")
def fac(spark, session_home, tmp_path_factory):
    """A facility with input tables dp1.left / dp1.right, and a worker thread launching runs."""
    from userbatch.tables.write import write_table

    with module_facility(tmp_path_factory, "runs", CONFIG) as fx:
        left = sky_points(800, seed=11)
        rng = np.random.default_rng(12)
        right = left.sample(500, random_state=3).assign(
            objectId=lambda d: d.objectId + 100_000,
            coord_dec=lambda d: np.clip(d.coord_dec + rng.normal(0, 2e-4, len(d)), -90, 90))
        write_table(spark.createDataFrame(left), "dp1.left", pixel_threshold=300, margin_radius_arcsec=5)
        write_table(spark.createDataFrame(right), "dp1.right", pixel_threshold=300, margin_radius_arcsec=5)
        ann = fx.fac("ann")
        with fx.worker():
            yield {"ann": ann, "left": left, "right": right, "db_url": fx.db_url, "config": fx.config, "base": fx.base}


@pytest.fixture(scope="module")
def background(fac):
    """A long run (to cancel) and a failing run, submitted first so they run while the template job waits."""
    ann = fac["ann"]
    long = ann.submit(script=("long.py", LONG_SCRIPT), cores=1, max_hours=0.25)
    failing = ann.submit(script=("failing.py", FAILING_SCRIPT), cores=1, max_hours=0.25)
    return {"long": long["id"], "failing": failing["id"]}


@pytest.fixture(scope="module")
def xmatch_run(fac, background):
    ann = fac["ann"]
    t0 = time.monotonic()
    run = ann.submit(template="crossmatch", params={"left": "dp1.left", "right": "dp1.right", "radius_arcsec": 2.0,
                                                    "output": "u_ann.xm"}, cores=2, max_hours=0.5)
    assert run["state"] == "queued" and time.monotonic() - t0 < 5  # submit returns at once
    done = ann.wait(run["id"], timeout_s=400)
    assert done["state"] == "succeeded", ann.logs(run["id"], 60)
    return done


def test_cancel_stops_the_spark_application_and_charges_what_it_held(fac, background):
    ann = fac["ann"]
    run_id = background["long"]
    deadline = time.monotonic() + 300
    while True:  # wait until its Spark job is really running tasks
        r = ann.status(run_id)
        if r["state"] == "running" and (r.get("progress") or {}).get("tasks_total", 0) > 0:
            break
        assert time.monotonic() < deadline, r
        time.sleep(0.5)
    pid = r["pid"]
    assert ann.cancel(run_id)["cancel_requested"]
    done = ann.wait(run_id, timeout_s=120)
    assert done["state"] == "cancelled"
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # the whole process group (spark-submit's JVM and the Python driver) is gone
    leftovers = subprocess.run(["pgrep", "-f", run_id], capture_output=True, text=True).stdout.split()
    assert leftovers == []
    assert done["charged_core_hours"] > 0 and done["reserved_core_hours"] == 0.0


def test_a_failing_script_is_reported_with_its_error_and_charged(fac, background):
    ann = fac["ann"]
    done = ann.wait(background["failing"], timeout_s=300)
    assert done["state"] == "failed"
    assert done["error"] == "ValueError: boom: the user's own error"
    assert done["charged_core_hours"] > 0
    assert "boom" in ann.logs(background["failing"])


def _independent_core_seconds(run_dir: str) -> float:
    """The oracle: executor cores x (application end - executor added), read straight from the event log."""
    (log,) = [p for p in (Path(run_dir) / "eventlog").iterdir() if not p.name.startswith(".")]
    events = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    end = next(e["Timestamp"] for e in events if e["Event"] == "SparkListenerApplicationEnd")
    return sum((end - e["Timestamp"]) / 1000 * e["Executor Info"]["Total Cores"]
               for e in events if e["Event"] == "SparkListenerExecutorAdded")


def test_templated_job_runs_and_writes_what_the_library_computes(fac, xmatch_run):
    from userbatch.ops.crossmatch import crossmatch

    res = fac["ann"].results(xmatch_run["id"])
    assert res["outputs"] == [{"table": "u_ann.xm", "version": 0, "rows": res["outputs"][0]["rows"]}]
    assert {(i["table"], i["version"]) for i in res["inputs"]} == {("dp1.left", 0), ("dp1.right", 0)}
    got = pd.read_parquet(_table_files("u_ann.xm"))
    want = crossmatch("dp1.left", "dp1.right", 2.0).to_pandas()
    assert len(want) > 400
    assert sorted(zip(got.objectId, got.objectId_right)) == sorted(zip(want.objectId, want.objectId_right))


def _table_files(name):
    from userbatch.tables.catalog import Catalog
    from userbatch.tables.read import resolve

    entry = Catalog(user=name.split(".")[0].removeprefix("u_")).get(name)  # a run's outputs are its owner's, private
    snap = resolve(entry, record=False)
    return [str(Path(entry.location) / p) for p in snap.paths]


def test_accounting_charges_cores_times_wall_and_shows_the_event_logs_use(fac, xmatch_run):
    """The charge is the worker's own measure (reserved cores x wall time held); the event log's executor time —
    which the run itself writes — is stored beside it, checked here against an independent reading."""
    from userbatch.facility.models import ChargeRow
    from userbatch.tables.db import transaction

    run = fac["ann"].status(xmatch_run["id"])
    expected_h = _independent_core_seconds(run["run_dir"]) / 3600
    assert run["reserved_core_hours"] == 0.0
    wall_h = (pd.Timestamp(run["ended_at"]) - pd.Timestamp(run["started_at"])).total_seconds() / 3600
    assert run["charged_core_hours"] == pytest.approx(run["cores"] * wall_h, rel=1e-6, abs=1e-9)
    with transaction(engine_for(fac["db_url"])) as s:
        charge = s.query(ChargeRow).filter_by(run_id=run["id"]).one()
    assert charge.source == "wall-clock"
    assert charge.used_core_hours == pytest.approx(expected_h, rel=0.02, abs=1e-4)
    assert 0 < charge.used_core_hours <= run["charged_core_hours"]  # held executor cores fit in cores x wall
    used = fac["ann"].quota_show()["user"]["used"]
    assert used >= run["charged_core_hours"]


def test_provenance_walks_back_from_the_output(fac, xmatch_run):
    tree = fac["ann"].provenance("u_ann.xm")
    assert tree["run_id"] == xmatch_run["id"] and tree["version"] == 0
    assert tree["parameters"]["template"] == "crossmatch"
    assert {(i["table"], i["version"]) for i in tree["inputs"]} == {("dp1.left", 0), ("dp1.right", 0)}
    spark_conf = xmatch_run["result"]["spark_conf"]
    assert spark_conf["spark.eventLog.enabled"] == "true" and spark_conf["spark.master"] == "local[2]"
    assert xmatch_run["result"]["code_version"]


def test_rerun_reproduces_identical_rows_from_pinned_inputs(fac, xmatch_run, spark):
    """dp1.right gains rows after the run; the rerun still reads version 0 and writes the same pairs."""
    from userbatch.tables.write import write_table

    extra = fac["left"].sample(200, random_state=9).assign(objectId=lambda d: d.objectId + 500_000)
    write_table(spark.createDataFrame(extra), "dp1.right", mode="append")
    ann = fac["ann"]
    again = ann.rerun(xmatch_run["id"], wait=True)
    assert again["state"] == "succeeded", ann.logs(again["id"], 60)
    assert again["rerun_of"] == xmatch_run["id"] and again["pins"]["dp1.right"] == 0
    (out,) = again["result"]["outputs"]
    assert out["table"].startswith("u_ann.xm_rerun_")
    first = pd.read_parquet(_table_files("u_ann.xm")).drop(columns=["_healpix_29"], errors="ignore")
    second = pd.read_parquet(_table_files(out["table"])).drop(columns=["_healpix_29"], errors="ignore")
    key = ["objectId", "objectId_right"]
    pd.testing.assert_frame_equal(first.sort_values(key).reset_index(drop=True)[sorted(first.columns)],
                                  second.sort_values(key).reset_index(drop=True)[sorted(second.columns)])
    assert {(i["table"], i["version"]) for i in again["result"]["inputs"]} == {("dp1.left", 0), ("dp1.right", 0)}


def test_vacuum_keeps_what_runs_read_and_a_rerun_after_it_gives_identical_rows(fac, xmatch_run, spark):
    """dp1.right gains versions no run reads; a vacuum with no retention window removes exactly their files,
    keeps version 0 (the run's pinned input) and the latest, and a rerun after it writes the same pairs."""
    from chispa import assert_df_equality
    from helpers import FacilityUnder

    from userbatch.errors import AccessDenied, VersionNotFound
    from userbatch.facility.upkeep import pinned_versions
    from userbatch.tables import delta
    from userbatch.tables.catalog import Catalog
    from userbatch.tables.read import resolve
    from userbatch.tables.write import write_table

    for seed in (21, 22):  # pandas rows: the Arrow writer
        extra = fac["left"].sample(40, random_state=seed).assign(objectId=lambda d, s=seed: d.objectId + s * 10_000)
        write_table(extra, "dp1.right", mode="overwrite" if seed == 21 else "append")
    entry = Catalog().get("dp1.right")
    latest = delta.latest_version(entry.location)
    fx = FacilityUnder(fac["db_url"], fac["base"])
    pinned = pinned_versions(fx.engine)["dp1.right"]
    assert 0 in pinned and latest not in pinned
    with pytest.raises(AccessDenied, match="owner of dp1.right"):
        fac["ann"].vacuum("dp1.right", retain_days=0, min_age_hours=0)
    (report,) = fx.fac("tester").vacuum("dp1.right", retain_days=0, min_age_hours=0)["tables"]
    kept = sorted(pinned | {latest})
    assert report["kept_versions"] == kept and report["files"]
    root = Path(entry.location)
    on_disk = {str(p.relative_to(root)) for p in root.rglob("*.parquet") if p.relative_to(root).parts[0][0] != "_"}
    assert on_disk == set().union(*(delta.files_of_version(root, v) for v in kept))
    for v in set(range(latest + 1)) - set(kept):
        with pytest.raises(VersionNotFound, match="removed by a vacuum"):
            resolve(entry, version=v, record=False)
    again = fac["ann"].rerun(xmatch_run["id"], wait=True)
    assert again["state"] == "succeeded", fac["ann"].logs(again["id"], 60)
    assert {(i["table"], i["version"]) for i in again["result"]["inputs"]} == {("dp1.left", 0), ("dp1.right", 0)}
    (out,) = again["result"]["outputs"]
    first = spark.read.parquet(*_table_files("u_ann.xm")).drop("_healpix_29")
    second = spark.read.parquet(*_table_files(out["table"])).drop("_healpix_29")
    assert first.count() > 400
    assert_df_equality(first, second, ignore_row_order=True, ignore_column_order=True)


def test_export_bundle_holds_job_config_inputs_and_command(fac, xmatch_run, tmp_path):
    path = fac["ann"].export(xmatch_run["id"], tmp_path)
    with tarfile.open(path) as tar:
        names = {Path(n).name for n in tar.getnames()}
        assert {"spec.json", "job.yaml", "inputs.json", "submit.sh", "crossmatch.yaml", "README.md"} <= names
        read = {Path(m.name).name: tar.extractfile(m).read().decode() for m in tar.getmembers()}
    inputs = json.loads(read["inputs.json"])
    assert {(i["table"], i["version"]) for i in inputs} == {("dp1.left", 0), ("dp1.right", 0)}
    assert "spark-submit" in read["submit.sh"] and '"dp1.right": 0' in read["submit.sh"]
    import yaml

    job = yaml.safe_load(read["job.yaml"])
    assert job["template"] == "crossmatch" and job["parameters"]["output"] == "u_ann.xm"
    subprocess.run(["bash", "-n", "-c", read["submit.sh"]], check=True)  # the script at least parses


WORKFLOW = """
name: north_bright
schedule: "*/5 * * * *"
steps:
  - name: north
    sql: SELECT objectId, coord_ra, coord_dec, r_psfFlux FROM dp1.left WHERE coord_dec > 0
  - name: bright
    sql: SELECT objectId, coord_ra, coord_dec FROM north WHERE r_psfFlux > 3000
    output: u_ann.north_bright
    ra_column: coord_ra
    dec_column: coord_dec
"""


def test_a_scheduled_workflow_runs_when_due_as_an_ordinary_job(fac):
    """The worker's scheduler submits a due workflow under its owner's quota, inputs pinned; the output equals
    pandas on the same rows, and the schedule moves on."""
    from datetime import datetime, timedelta, timezone

    from userbatch.facility.models import WorkflowRow
    from userbatch.tables.db import transaction

    ann = fac["ann"]
    wf = ann.add_workflow(WORKFLOW)
    assert wf["schedule"] == "*/5 * * * *" and wf["next_run_at"]
    with transaction(engine_for(fac["db_url"])) as s:
        s.get(WorkflowRow, wf["id"]).next_run_at = datetime.now(timezone.utc) - timedelta(minutes=1)
    deadline = time.monotonic() + 60
    while not (w := ann.workflows()[0])["last_run_id"]:
        assert time.monotonic() < deadline
        time.sleep(0.3)
    assert datetime.fromisoformat(w["next_run_at"]).replace(tzinfo=timezone.utc) > datetime.now(timezone.utc)
    done = ann.wait(w["last_run_id"], timeout_s=400)
    assert done["state"] == "succeeded", ann.logs(done["id"], 60)
    assert done["kind"] == "workflow" and done["pins"] == {"dp1.left": 0} and done["charged_core_hours"] > 0
    left = fac["left"]
    want = sorted(left[(left.coord_dec > 0) & (left.r_psfFlux > 3000)].objectId)
    got = pd.read_parquet(_table_files("u_ann.north_bright"))
    assert sorted(got.objectId) == want and len(want) > 10


def test_cli_submit_starts_its_own_worker_and_waits(fac, tmp_path):
    """No server: 'userbatch submit --wait' queues the run, starts a background worker and prints the charge."""
    script = tmp_path / "count.py"
    script.write_text("import userbatch\nfrom userbatch.tables.write import write_table\n"
                      "s = userbatch.session()\n"
                      "write_table(s.sql('SELECT objectId, coord_ra, coord_dec FROM dp1.left WHERE coord_dec > 0'),"
                      " 'u_tester.north')\n")
    env = dict(os.environ, USERBATCH_USER="tester")
    env.pop("USERBATCH_API_URL", None)
    out = subprocess.run([sys.executable, "-m", "userbatch.cli", "submit", "--script", str(script), "--cores", "1",
                          "--wait"], capture_output=True, text=True, env=env, timeout=400)
    assert out.returncode == 0, out.stderr[-2000:]
    assert " succeeded " in out.stdout and "charged" in out.stdout
    assert "output: u_tester.north@v0" in out.stdout
    n_north = int((fac["left"].coord_dec > 0).sum())
    assert f"({n_north:,} rows)" in out.stdout
    q = subprocess.run([sys.executable, "-m", "userbatch.cli", "quota", "show"], capture_output=True, text=True,
                       env=env, timeout=60)
    assert q.returncode == 0 and "user tester" in q.stdout
