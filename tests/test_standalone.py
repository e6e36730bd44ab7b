"""The standalone runner on a real Spark standalone cluster (master + worker on 127.0.0.1): a run submitted to the
facility executes on the cluster's executors, and its charge is the executors' core-time from the event log."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from userbatch.cluster.standalone import start_cluster
from userbatch.facility.worker import Worker

# a standalone master and worker, and a run through spark-submit
pytestmark = [pytest.mark.slow, pytest.mark.cluster]

SCRIPT = """
import userbatch
from userbatch.tables.write import write_table
spark = userbatch.session()
assert spark.sparkContext.master.startswith("spark://"), spark.sparkContext.master
df = spark.range(0, 20000, numPartitions=4).selectExpr("id AS objectId", "id % 7 AS k")
write_table(df, "u_ann.on_cluster", ra_column=None, dec_column=None)
"""


@pytest.fixture
def cluster(tmp_path):
    c = start_cluster(tmp_path / "cluster", workers=1, cores_per_worker=2, memory_per_worker="2g")
    yield c
    c.stop()


def test_a_run_executes_on_the_standalone_cluster(cluster, facility):
    fx = facility(f"runner: {{kind: standalone, master: '{cluster.master_url}'}}\n"
                  "runs: {max_concurrent: 1, default_cores: 2, default_max_hours: 0.25}\n",
                  env={"SPARK_LOCAL_IP": "127.0.0.1"})
    ann = fx.fac("ann")
    run = ann.submit(script=("cluster_job.py", SCRIPT))
    worker = Worker(db_url=fx.db_url, config=fx.config)
    assert worker.acquire()
    try:
        import time

        deadline = time.monotonic() + 300
        while ann.status(run["id"])["state"] not in ("succeeded", "failed", "cancelled"):
            assert time.monotonic() < deadline
            worker.step()
            time.sleep(0.3)
    finally:
        worker.shutdown()
        worker.release()
    done = ann.status(run["id"])
    assert done["state"] == "succeeded", ann.logs(run["id"], 80)
    assert done["runner"] == "standalone" and done["app_id"].startswith("app-")
    assert done["result"]["outputs"][0]["rows"] == 20000
    # executors, not the driver, held the cores: the event log has a non-driver executor with 2 cores
    (log,) = [p for p in (Path(done["run_dir"]) / "eventlog").iterdir() if not p.name.startswith(".")]
    events = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    execs = [e for e in events if e["Event"] == "SparkListenerExecutorAdded"]
    assert execs and all(e["Executor ID"] != "driver" for e in execs)
    assert sum(e["Executor Info"]["Total Cores"] for e in execs) == 2
    assert done["charged_core_hours"] > 0
