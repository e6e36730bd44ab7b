"""The driver of every facility run: ``spark-submit .../driver.py RUN_DIR``.

It reads the run's ``spec.json`` (written at submit), opens the Spark session with the run's pinned catalog views,
runs the templated job, the user's script or the SQL workflow, and leaves in ``RUN_DIR``:

* ``progress.json`` — the stage and Spark's task counts, refreshed every second (``userbatch status``);
* ``result.json`` — outputs and inputs with their versions, the catalog versions the session saw, the Spark
  configuration and code version (the run's provenance);
* ``error.json`` — on failure, the error in one line and the traceback.

The process exits 0 on success, 1 on failure; the worker reads the files, not the exit code alone.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
import traceback
from pathlib import Path

log = logging.getLogger("userbatch.facility.driver")

_SECRET_HINTS = ("password", "secret", "token", "credential")


class Progress:
    """Writes the stage and cumulative task counts of the active Spark jobs to progress.json, once a second."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / "progress.json"
        self.stage = "starting"
        self.spark = None
        self._stages: dict[int, tuple[int, int]] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()  # the main thread (set, stop) and the progress thread both write the file
        self._thread = threading.Thread(target=self._loop, name="ub-progress", daemon=True)

    def start(self):
        self._write()
        self._thread.start()
        return self

    def set(self, stage: str):
        self.stage = stage
        log.info("stage: %s", stage)
        self._write()

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=5)
        self._write()

    def _loop(self):
        while not self._stop.wait(1.0):
            try:
                self._write()
            except Exception:  # noqa: BLE001 - progress is best effort; the run goes on
                pass

    def _write(self):
        with self._lock:
            self._write_locked()

    def _write_locked(self):
        active = 0
        if self.spark is not None:
            tracker = self.spark.sparkContext.statusTracker()
            ids = tracker.getActiveStageIds()
            active = len(ids)
            for sid in ids:
                info = tracker.getStageInfo(sid)
                if info is not None:
                    self._stages[sid] = (info.numTasks, info.numCompletedTasks)
        done = sum(d for _, d in self._stages.values())
        total = sum(t for t, _ in self._stages.values())
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"stage": self.stage, "tasks_done": done, "tasks_total": total,
                                   "active_stages": active, "updated": time.time()}))
        tmp.replace(self.path)


def _spark_conf(spark) -> dict:
    conf = dict(spark.sparkContext.getConf().getAll())
    return {k: ("***" if any(h in k.lower() for h in _SECRET_HINTS) else v) for k, v in sorted(conf.items())}


def _mlflow_through_the_facility() -> None:
    """MLflow's client speaks HTTP over TCP; the run has only its own loopback and the run API's Unix socket. Pipe a
    loopback port to the socket and point MLflow at the facility's tracking server behind it, with the run's token
    (the facility adds the owner's MLflow credentials)."""
    from userbatch.config import settings

    s = settings()
    if not (s.mlflow_via_api and s.in_run):
        return
    from userbatch.facility.forward import forward_to_unix_socket
    from userbatch.facility.mlflow_service import RUN_ARTIFACT_ROOT

    port = forward_to_unix_socket(s.api_socket)
    os.environ.update(MLFLOW_TRACKING_URI=f"http://127.0.0.1:{port}/mlflow", MLFLOW_TRACKING_TOKEN=s.run_token,
                      USERBATCH_MLFLOW_ARTIFACTS=RUN_ARTIFACT_ROOT)


def main(run_dir: str) -> int:
    run_dir = Path(run_dir).resolve()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s [%(name)s] %(message)s", stream=sys.stdout)
    for noisy in ("py4j", "alembic", "numba", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    spec = json.loads((run_dir / "spec.json").read_text())
    _mlflow_through_the_facility()
    progress = Progress(run_dir).start()
    result: dict = {"run_id": spec["run_id"], "kind": spec["kind"]}
    try:
        from userbatch.spark import session
        from userbatch.tables import runctx
        from userbatch.tables.provenance import code_version

        progress.set("starting Spark")
        from userbatch.tables.views import register_catalog_views

        spark = session(app_name=f"userbatch-{spec['run_id']}", register_views=False)
        progress.spark = spark
        result["app_id"] = spark.sparkContext.applicationId
        (run_dir / "app_id").write_text(result["app_id"])
        # the views read the pinned versions (USERBATCH_PINS); what they read is the catalog this run saw
        result["catalog_versions"] = register_catalog_views(spark)
        from userbatch.facility import run_kinds

        kind = run_kinds.get(spec["kind"])
        progress.set(f"running {kind.name} {spec['name']}")
        summary, extra = kind.execute(spark, spec, run_dir, progress.set)
        result.update(extra)
        progress.set("finishing")
        result.update({
            "summary": summary,
            "outputs": runctx.writes(),
            "inputs": [{"table": t, "version": v} for t, v in sorted(runctx.reads().items())],
            "spark_conf": _spark_conf(spark),
            "code_version": code_version(),
            "python": sys.version.split()[0],
        })
        if isinstance(summary, dict) and summary.get("mlflow"):  # a training run: its MLflow run and model
            result["mlflow"] = summary["mlflow"]
        (run_dir / "result.json").write_text(json.dumps(result, indent=2, default=str))
        progress.set("done")
        status = 0
    except BaseException as e:  # noqa: BLE001 - every failure is reported to the facility, then re-signalled
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        (run_dir / "error.json").write_text(json.dumps({"error": f"{type(e).__name__}: {first}",
                                                        "traceback": traceback.format_exc()}, indent=2))
        log.error("run failed: %s", first)
        traceback.print_exc(file=sys.stdout)
        progress.set("failed")
        status = 1
    finally:
        progress.stop()
        try:
            from pyspark.sql import SparkSession

            active = SparkSession.getActiveSession()
            if active is not None:
                active.stop()  # writes the event log's ApplicationEnd: accounting reads it
        except Exception:  # noqa: BLE001
            pass
    sys.stdout.flush()
    return status


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main(sys.argv[1]))
