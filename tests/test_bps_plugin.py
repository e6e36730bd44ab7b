"""The BPS WMS plugin end to end: plain ``bps submit/report/cancel/restart`` on a real butler repository and a real
QuantumGraph (a tiny PipelineTask from tests/bps_test_tasks.py), each workflow one facility run (a real
spark-submit launched by a worker thread) whose jobs run ``pipetask run-qbb`` as Spark tasks."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import module_facility

pytest.importorskip("lsst.ctrl.bps")

TESTS = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
SERVICE = "userbatch.images.bps_service.UserbatchService"
CONFIG = """
capacity: {cores: 100, user_fraction: 0.10}
defaults:
  user:  {core_hours: 20, max_cores: 4, storage_gb: 5}
  group: {core_hours: 50, max_cores: 8, storage_gb: 50}
users:
  poor: {core_hours: 0.01, max_cores: 4, storage_gb: 5}
admins: [tester]
runs: {max_concurrent: 3, default_cores: 1, default_max_hours: 0.5}
"""


@pytest.fixture(scope="module")
def bps_env(session_home, tmp_path_factory):
    """A facility with a worker thread, a butler repository with two detectors, and the environment ``bps`` and
    the jobs need (the test tasks importable, the venv's pipetask on PATH, the plugin as default WMS)."""
    import bps_test_tasks

    # USERBATCH_TEST_STANDALONE_MASTER=spark://... runs the same tests with every run on a standalone cluster
    # (`userbatch cluster start`): how "the BPS plugin runs unchanged against it" is checked by hand
    master = os.environ.get("USERBATCH_TEST_STANDALONE_MASTER")
    runner = f"runner: {{kind: standalone, master: '{master}', executor_cores: 1, executor_memory: 768m}}\n"
    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p),
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "BPS_WMS_SERVICE_CLASS": SERVICE,
           "USERBATCH_USER": "tester"}
    with module_facility(tmp_path_factory, "bps", CONFIG + (runner if master else ""), env=env) as fx:
        repo = fx.base / "repo"
        bps_test_tasks.make_repo(str(repo))
        fac = fx.fac("tester")
        with fx.worker():
            yield {"base": fx.base, "repo": repo, "fac": fac}


def _workflow(env, name: str, step1_config: dict | None = None, extra: str = "") -> tuple[Path, Path]:
    """A pipeline and submit YAML named ``name``; returns (submit YAML, submit directory)."""
    import bps_test_tasks

    base = env["base"]
    pipe = base / f"{name}_pipeline.yaml"
    pipe.write_text(bps_test_tasks.pipeline_yaml(2, step1_config))
    submit_dir = base / "submit" / name
    yaml = base / f"{name}_submit.yaml"
    yaml.write_text(f"""
pipelineYaml: {pipe}
wmsServiceClass: {SERVICE}
payload:
  payloadName: bt_{name}
  butlerConfig: {env['repo']}
  inCollection: bt/inputs
  dataQuery: "instrument='BT'"
  output: u/tester/{name}
  outputRun: u/tester/{name}/run
submitPath: {submit_dir}
userbatchCores: 2
userbatchMaxHours: 0.5
{extra}
""")
    return yaml, submit_dir


def _bps(*args, user: str = "tester", timeout: float = 180) -> subprocess.CompletedProcess:
    env = dict(os.environ, USERBATCH_USER=user)
    return subprocess.run([str(BIN / "bps"), *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=str(TESTS.parent))


def _submit(yaml: Path) -> str:
    p = _bps("submit", yaml)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    m = re.search(r"Run Id: (\S+)", p.stdout)
    assert m, p.stdout
    return m.group(1)


def _ts(text: str):
    from datetime import datetime

    return datetime.fromisoformat(text)


def _report(run_id: str):
    """The plugin's report as BPS gets it: one WmsRunReport with per-job states."""
    from userbatch.images.bps_service import UserbatchService

    reports, message = UserbatchService({}).report(run_id)
    assert len(reports) == 1, message
    return reports[0]


def _states(report) -> dict[str, str]:
    return {j.name: j.state.name for j in report.jobs}


def _datasets(repo: Path, dataset_type: str, collection: str) -> dict[int, int]:
    from lsst.daf.butler import Butler, MissingCollectionError, MissingDatasetTypeError

    butler = Butler.from_config(str(repo))
    try:
        try:
            refs = butler.query_datasets(dataset_type, collections=collection, explain=False)
        except (MissingCollectionError, MissingDatasetTypeError):  # run-qbb leaves the registry to the final job
            return {}
        return {ref.dataId["detector"]: butler.get(ref)["value"] for ref in refs}
    finally:
        butler.close()


def test_plan_command_resolution():
    from userbatch.images.bps_service import _resolve_command

    cmd = _resolve_command("<ENV:CTRL_MPEXEC_DIR>/bin/pipetask run-qbb <FILE:butlerConfig> <FILE:runQgraphFile> "
                           "--qgraph-node-id {qgraphNodeId}", {"qgraphNodeId": "abc"},
                           {"butlerConfig": "/repo", "runQgraphFile": "/s/x.qg"})
    assert cmd == "${CTRL_MPEXEC_DIR}/bin/pipetask run-qbb /repo /s/x.qg --qgraph-node-id abc"


DIMENSION_CLUSTERING = "lsst.ctrl.bps.quantum_clustering_funcs.dimension_clustering"


@pytest.fixture(scope="module")
def workflows(bps_env):
    """The module's three finished workflows, submitted together so that they run side by side (two at a time:
    the user's max_cores is 4, each asks for 2) and each test waits only for its own: ``ok`` one quantum per
    job; ``clus`` the plugin's clustering (a cluster per detector chain); ``clusfail`` ctrl_bps' dimension
    clustering of step1 only, with detector 1 failing while a marker file exists (for the restart)."""
    marker = bps_env["base"] / "fail_marker"
    marker.write_text("fail while I exist")
    made = {
        "ok": _workflow(bps_env, "ok"),
        "clus": _workflow(bps_env, "clus",
                          extra="clusterAlgorithm: userbatch.images.bps_service.userbatch_clustering\n"),
        "clusfail": _workflow(bps_env, "clusfail", {"failDetectors": [1], "failIfExists": str(marker)}, extra=f"""
numberOfRetries: 1
retryUnlessExit: 2
clusterAlgorithm: {DIMENSION_CLUSTERING}
cluster:
  first:
    pipetasks: step1
    dimensions: detector
"""),
    }
    runs = {name: {"id": _submit(yaml), "dir": submit_dir} for name, (yaml, submit_dir) in made.items()}
    return {**runs, "marker": marker}


@pytest.mark.slow
def test_submit_report_outputs_and_charge(bps_env, workflows):
    run_id, submit_dir = workflows["ok"]["id"], workflows["ok"]["dir"]
    plan = json.loads((submit_dir / "userbatch_plan.json").read_text())
    assert {j["label"] for j in plan["jobs"]} == {"pipetaskInit", "step1", "step2"}
    assert len(plan["jobs"]) == 5  # unclustered: pipetaskInit + 2 x 2 quanta
    assert plan["final"]["when_run"] == "ALWAYS" and "final_job.bash" in plan["final"]["command"]
    assert all("<FILE:" not in j["command"] and "{" not in j["command"] for j in plan["jobs"])
    run = bps_env["fac"].wait(run_id, timeout_s=400)
    assert run["state"] == "succeeded", (run["error"], bps_env["fac"].logs(run_id, tail=60))
    assert run["kind"] == "bps" and run["cores"] == 2
    assert run["charged_core_hours"] > 0
    assert run["result"]["summary"]["jobs"] == {"SUCCEEDED": 6}
    # the charge covers the jobs' own run times (each job held at least one of the run's cores while it ran) and
    # never more than the run's cores for its wall time
    jobs = json.loads((submit_dir / "userbatch_jobs.json").read_text())["jobs"]
    job_seconds = sum(j.get("seconds", 0) for j in jobs.values())
    charged_s = run["charged_core_hours"] * 3600
    assert job_seconds > 0 and job_seconds <= charged_s * 1.02
    wall = (_ts(run["ended_at"]) - _ts(run["started_at"])).total_seconds()
    assert charged_s <= run["cores"] * wall
    prov = run["result"]["bps"]
    assert prov["output_run"] == "u/tester/ok/run" and prov["qgraph"] and Path(prov["qgraph"][0]).exists()

    report = _report(run_id)
    assert report.state.name == "SUCCEEDED" and report.total_number_jobs == 6
    assert set(_states(report).values()) == {"SUCCEEDED"}
    assert report.job_summary["step1"][type(report.state).SUCCEEDED] == 2
    p = _bps("report", "--id", run_id)
    assert p.returncode == 0, p.stderr[-2000:]
    for word in ("SUCCEEDED", "step1", "step2", "pipetaskInit", "finalJob", run_id):
        assert word in p.stdout, p.stdout
    assert run_id in _bps("report", "--hist", "1").stdout  # the summary lists the user's recent workflows
    # the outputs are in the butler's output run collection: value + 1 (step1) + 1 (step2)
    assert _datasets(bps_env["repo"], "bt_in2", "u/tester/ok/run") == {0: 2, 1: 12}
    # every job left its logs in the submit directory
    assert len(list((submit_dir / "jobs").glob("*/*.1.out"))) == 6


@pytest.mark.slow
def test_clustering_same_outputs_as_one_quantum_per_job(bps_env, workflows):
    """The plugin's default clustering (a cluster per detector chain: one run-qbb for step1 + step2) writes the
    same datasets and values as the unclustered ``ok`` workflow on the same inputs."""
    from lsst.ctrl.bps import WmsStates

    run_id, clus_dir = workflows["clus"]["id"], workflows["clus"]["dir"]
    run = bps_env["fac"].wait(run_id, timeout_s=400)
    assert run["state"] == "succeeded", (run["error"], bps_env["fac"].logs(run_id, tail=60))
    assert bps_env["fac"].wait(workflows["ok"]["id"], timeout_s=400)["state"] == "succeeded"

    # the default: one job per detector chain (both tasks in one run-qbb), pipetaskInit and the final job
    plan = json.loads((clus_dir / "userbatch_plan.json").read_text())
    quantum_jobs = [j for j in plan["jobs"] if j["label"] != "pipetaskInit"]
    assert plan["clustered"] and len(quantum_jobs) == 2 and plan["quanta"]["step1"] == plan["quanta"]["step2"] == 2
    assert all(j["quanta"] == {"step1": 1, "step2": 1} and j["label"] == "quanta" for j in quantum_jobs)
    assert all(j["command"].split("--qgraph-node-id ")[1].split()[0].count(",") == 1 for j in quantum_jobs)
    assert all(j["parents"] == ["pipetaskInit"] for j in quantum_jobs)
    report = _report(run_id)
    assert report.total_number_jobs == 4 and report.job_summary["quanta"][WmsStates.SUCCEEDED] == 2
    assert "step1:2" in report.run_summary and "step2:2" in report.run_summary
    # ... writing the same datasets, with the same values, as one quantum per job
    for dataset_type in ("bt_in1", "bt_in2"):
        assert (_datasets(bps_env["repo"], dataset_type, "u/tester/clus/run")
                == _datasets(bps_env["repo"], dataset_type, "u/tester/ok/run"))
    assert _datasets(bps_env["repo"], "bt_in2", "u/tester/clus/run") == {0: 2, 1: 12}


@pytest.mark.slow
def test_failed_cluster_retries_prunes_and_restart(bps_env, workflows):
    """A failing cluster (ctrl_bps' dimension clustering of step1): retried (numberOfRetries: 1), then its
    descendant (step2 of detector 1) pruned while the final job still runs (whenRun: ALWAYS); ``bps report``
    shows it; ``bps restart`` after the cause is gone runs only the failed and pruned jobs and the final job."""
    from lsst.ctrl.bps import WmsStates

    run_id, submit_dir = workflows["clusfail"]["id"], workflows["clusfail"]["dir"]
    run = bps_env["fac"].wait(run_id, timeout_s=400)
    assert run["state"] == "failed"
    assert "1 BPS job(s) failed" in run["error"] and "1 pruned" in run["error"]
    plan = json.loads((submit_dir / "userbatch_plan.json").read_text())
    assert {j["label"] for j in plan["jobs"]} == {"pipetaskInit", "first", "step2"}
    report = _report(run_id)
    assert report.state.name == "FAILED"
    states = _states(report)
    jobs = json.loads((submit_dir / "userbatch_jobs.json").read_text())["jobs"]
    by = {(jobs[n]["label"], n.split("_")[-1]): s for n, s in states.items() if n in jobs}
    assert by[("first", "1")] == "FAILED" and by[("step2", "1")] == "PRUNED"
    assert by[("first", "0")] == by[("step2", "0")] == "SUCCEEDED"
    assert states["pipetaskInit"] == "SUCCEEDED" and states["finalJob"] == "SUCCEEDED"  # whenRun: ALWAYS
    failed = next(n for n, s in states.items() if s == "FAILED")
    assert jobs[failed]["attempts"] == 2 and jobs[failed]["exit_codes"] == [1, 1]  # 1 + numberOfRetries
    assert "configured to fail" in (submit_dir / "jobs" / "first" / f"{failed}.2.err").read_text()
    assert report.job_summary["first"][WmsStates.FAILED] == 1 and report.job_summary["step2"][WmsStates.PRUNED] == 1
    assert _datasets(bps_env["repo"], "bt_in2", "u/tester/clusfail/run") == {0: 2}
    p = _bps("report", "--id", run_id)
    assert "FAILED" in p.stdout and "PRUNED" in p.stdout

    # restart after the cause is gone: only the failed and pruned jobs (and the final job) run again
    workflows["marker"].unlink()
    p = _bps("restart", "--id", submit_dir)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    new_id = re.search(r"Run Id: (\S+)", p.stdout).group(1)
    assert new_id != run_id
    run = bps_env["fac"].wait(new_id, timeout_s=240)
    assert run["state"] == "succeeded", run["error"]
    assert set(_states(_report(new_id)).values()) == {"SUCCEEDED"}
    jobs = json.loads((submit_dir / "userbatch_jobs.json").read_text())["jobs"]
    rerun = {n for n, j in jobs.items() if j["run_id"] == new_id}
    assert rerun == {n for n, s in states.items() if s in ("FAILED", "PRUNED")} | {"finalJob"}
    assert _datasets(bps_env["repo"], "bt_in2", "u/tester/clusfail/run") == {0: 2, 1: 12}
    assert _states(_report(run_id)) == states  # the first run's report is still its own


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if text.encode() in (proc / "cmdline").read_bytes():
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


def _wait_for_job(submit_dir, wanted, timeout_s: float, why) -> None:
    """Until some job in the plugin's state file (``userbatch_jobs.json``) is ``wanted``; fail with ``why()``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            jobs = json.loads((submit_dir / "userbatch_jobs.json").read_text())["jobs"]
        except (OSError, ValueError, KeyError):
            jobs = {}
        if any(wanted(j) for j in jobs.values()):
            return
        time.sleep(0.5)
    pytest.fail(why())


@pytest.mark.slow
def test_cancel_stops_running_jobs(bps_env):
    yaml, submit_dir = _workflow(bps_env, "slow", {"sleepSeconds": 600.0})
    run_id = _submit(yaml)
    _wait_for_job(submit_dir, lambda j: j["label"] == "step1" and j["state"] == "RUNNING", 120,
                  lambda: f"step1 never started: {bps_env['fac'].logs(run_id, tail=40)}")
    assert _report(run_id).job_state_counts[type(_report(run_id).state).RUNNING] == 2
    time.sleep(2)  # the pipetask processes are up
    p = _bps("cancel", "--id", run_id)
    assert p.returncode == 0 and "Successfully canceled" in p.stdout, p.stdout + p.stderr[-2000:]
    run = bps_env["fac"].wait(run_id, timeout_s=120)
    assert run["state"] == "cancelled"
    report = _report(run_id)
    assert report.state.name == "DELETED"
    assert {s for n, s in _states(report).items() if n != "pipetaskInit"} == {"DELETED"}
    time.sleep(1)
    assert _processes_mentioning(str(submit_dir)) == []  # no job outlives the run
    assert _datasets(bps_env["repo"], "bt_in1", "u/tester/slow/run") == {}
    assert not list(bps_env["repo"].glob("u/tester/slow/**/bt_in1*"))  # nor any file in the datastore


@pytest.mark.slow
def test_over_quota_refused_before_any_job(bps_env):
    yaml, submit_dir = _workflow(bps_env, "poor")
    p = _bps("submit", yaml, user="poor")
    assert p.returncode != 0
    assert "core-hours" in (p.stdout + p.stderr) and "QuotaExceeded" in (p.stdout + p.stderr)
    assert bps_env["fac"].runs(user="poor") == []
    assert not (submit_dir / "userbatch_plan.json").exists()  # refused before the QuantumGraph was built
    assert not (submit_dir / "userbatch_jobs.json").exists()


class _FakeRDD:
    def __init__(self, data, spark):
        self.data, self.spark = data, spark

    def map(self, f):
        return _FakeRDD([self.spark.run(f, d) for d in self.data], self.spark)

    def collect(self):
        return self.data


class _FakeSpark:
    """Just enough of a SparkSession for the executor's scheduling logic: each Spark job (one BPS job, submitted
    from a thread of the placement) runs in this process; ``runs`` records (name, start, end) of each."""

    def __init__(self):
        import threading

        self.runs: list[tuple[str, float, float]] = []
        self.sparkContext = self
        self.defaultParallelism = 2
        self._lock = threading.Lock()

    def run(self, f, payload):
        t0 = time.monotonic()
        out = f(payload)
        with self._lock:
            self.runs.append((payload["name"], t0, time.monotonic()))
        return out

    @property
    def started(self) -> list[str]:
        return [n for n, *_ in sorted(self.runs, key=lambda r: r[1])]

    def parallelize(self, data, n):
        assert n == len(data) == 1  # one BPS job per Spark job
        return _FakeRDD(list(data), self)

    def setJobDescription(self, text):
        pass


def _exec_job(name, parents=(), cpus=1, command="true", retries=0):
    return {"name": name, "label": name.rstrip("0123456789"), "command": command, "env": {"X": "${HOME}"},
            "parents": list(parents), "request_cpus": cpus, "number_of_retries": retries, "retry_unless_exit": [2]}


def test_executor_schedules_retries_cpus_and_restart(tmp_path):
    """The executor's scheduling without Spark start-up: request_cpus keeps a 2-core job alone, a failing job is
    retried then fails, its descendants are pruned, the final job runs anyway, and a restart runs only what is
    left."""
    from userbatch.images.bps_executor import BpsJobsFailed, execute

    job = _exec_job
    fail = tmp_path / "fail"
    fail.write_text("")
    plan = {"name": "wf", "jobs": [job("a"), job("b", ["a"], cpus=2), job("c", ["a"], command="sleep 0.3"),
                                   job("d", ["b"], command=f"test ! -e {fail} && echo $X", retries=2),
                                   job("e", ["d"])],
            "final": {**job("final"), "when_run": "ALWAYS"}}
    (tmp_path / "userbatch_plan.json").write_text(json.dumps(plan))
    spark = _FakeSpark()
    with pytest.raises(BpsJobsFailed, match="1 BPS job"):
        execute(spark, {"submit_path": str(tmp_path), "cores": 2}, tmp_path / "run1")
    started = spark.started
    assert started[:2] == ["a", "b"] and started[-1] == "final"
    assert sorted(started[2:-1]) == ["c", "d", "d", "d"]  # d: 1 + numberOfRetries, retried as soon as it fails
    b = next(r for r in spark.runs if r[0] == "b")
    assert all(r[2] <= b[1] or r[1] >= b[2] for r in spark.runs if r[0] != "b")  # b (2 cpus) runs alone
    c = next(r for r in spark.runs if r[0] == "c")
    d_first = min(r[1] for r in spark.runs if r[0] == "d")
    assert d_first < c[2]  # no waves: d (after b) starts while c (after a) still runs
    state = json.loads((tmp_path / "userbatch_jobs.json").read_text())["jobs"]
    assert {n: r["state"] for n, r in state.items()} == {"a": "SUCCEEDED", "b": "SUCCEEDED", "c": "SUCCEEDED",
                                                        "d": "FAILED", "e": "PRUNED", "final": "SUCCEEDED"}
    assert state["d"]["attempts"] == 3 and state["d"]["exit_codes"] == [1, 1, 1]
    assert (tmp_path / "jobs" / "d" / "d.3.out").exists()

    fail.unlink()
    spark = _FakeSpark()
    summary = execute(spark, {"submit_path": str(tmp_path), "cores": 2}, tmp_path / "run2")
    assert spark.started == ["d", "e", "final"]
    assert summary["jobs"] == {"SUCCEEDED": 6} and summary["failed"] == []
    assert (tmp_path / "jobs" / "d" / "d.4.out").read_text().strip().endswith(os.environ["HOME"])


def test_executor_fills_free_cores_without_waves(tmp_path):
    """Dynamic scheduling: on 2 cores, a long job does not hold back the short ones beside it (with waves, each
    short job would wait for the long one), whenRun: ON_SUCCESS prunes the final job after a failure, and a
    placement that cannot run a job at all counts as a failed attempt."""
    from userbatch.images.bps_executor import BpsJobsFailed, execute

    job = _exec_job
    plan = {"name": "wf2", "jobs": [job("init"), job("long", ["init"], command="sleep 1.5"),
                                    *[job(f"short{i}", ["init"], command="sleep 0.2") for i in range(4)],
                                    job("bad", ["short3"], command="exit 2", retries=3), job("after", ["bad"])],
            "final": {**job("final"), "when_run": "ON_SUCCESS"}}
    (tmp_path / "userbatch_plan.json").write_text(json.dumps(plan))
    spark = _FakeSpark()
    with pytest.raises(BpsJobsFailed):
        execute(spark, {"submit_path": str(tmp_path), "cores": 2}, tmp_path / "run1")
    long_run = next(r for r in spark.runs if r[0] == "long")
    shorts = [r for r in spark.runs if r[0].startswith("short")]
    assert all(r[2] <= long_run[2] for r in shorts)  # the 4 short jobs ran beside the long one, one after another
    state = json.loads((tmp_path / "userbatch_jobs.json").read_text())["jobs"]
    assert state["bad"]["state"] == "FAILED" and state["bad"]["exit_codes"] == [2]  # retryUnlessExit: 2
    assert state["after"]["state"] == "PRUNED" and state["final"]["state"] == "PRUNED"
    assert "final" not in spark.started

    class Broken(_FakeSpark):
        def parallelize(self, data, n):
            raise RuntimeError("no executors")

    plan["jobs"] = plan["jobs"][:1]
    plan["name"] = "wf3"
    plan["jobs"][0]["number_of_retries"] = 1
    (tmp_path / "userbatch_plan.json").write_text(json.dumps(plan))
    with pytest.raises(BpsJobsFailed, match="no executors"):
        execute(Broken(), {"submit_path": str(tmp_path), "cores": 2}, tmp_path / "run2")
    state = json.loads((tmp_path / "userbatch_jobs.json").read_text())["jobs"]
    assert state["init"]["exit_codes"] == [-1, -1] and state["init"]["state"] == "FAILED"
