"""BPS on the real Slurm (issue 17): plain ``bps submit/report/cancel/restart`` against a facility whose runner is
Slurm. Each GenericWorkflow job (a quantum, or a cluster of quanta) is an ``sbatch`` job of its owner with
``--dependency=afterok`` along the graph; Slurm cancels the descendants of a failed job itself; the final job
(multi-user: under the facility's authority) follows; report, cancel and restart work from Slurm's state.
Skipped with the reason where the local Slurm cannot start.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time

import pytest
from helpers import module_facility
from test_bps_plugin import (BIN, CONFIG, SERVICE, TESTS, _bps, _datasets, _processes_mentioning, _report, _states,
                             _submit, _wait_for_job, _workflow)
from test_slurm import _slurm

pytest.importorskip("lsst.ctrl.bps")
pytestmark = [pytest.mark.slow, pytest.mark.slurm]


@pytest.fixture(scope="module")
def slurm_bps(session_home, tmp_path_factory):
    import bps_test_tasks

    from userbatch.cluster.slurm import apply_accounts

    st = _slurm()
    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p),
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "BPS_WMS_SERVICE_CLASS": SERVICE,
           "USERBATCH_USER": "tester"}
    config = CONFIG + f"runner: {{kind: slurm, slurm_conf: {st['conf']}, poll_s: 0.5}}\n"
    with module_facility(tmp_path_factory, "bps_slurm", config, env=env) as fx:
        os.chmod(fx.base, 0o755)
        apply_accounts(fx.config, st["conf"])
        repo = fx.base / "repo"
        bps_test_tasks.make_repo(str(repo))
        with fx.worker(poll_s=0.2):
            yield {"base": fx.base, "repo": repo, "fac": fx.fac("tester"), "st": st}


def _sacct(st, job_ids) -> dict[str, dict]:
    out = subprocess.run(["sacct", "-n", "-P", "-X", "-j", ",".join(job_ids), "-o",
                          "JobIDRaw,State,User,Account,CPUTimeRAW"], capture_output=True, text=True,
                         env={**os.environ, "SLURM_CONF": st["conf"]}, timeout=30).stdout
    return {r[0]: {"state": r[1].split()[0], "user": r[2], "account": r[3], "cpu": int(r[4] or 0)}
            for r in (ln.split("|") for ln in out.splitlines() if ln)}


def test_failing_workflow_on_slurm_retries_prunes_runs_final_and_restarts(slurm_bps):
    """One job per quantum, detector 1 failing: each job is an owner's Slurm job; the failed one is retried inside
    its job and then fails it; Slurm cancels its afterok descendant (PRUNED); the final job runs; the charge is
    Slurm's CPU time of the jobs; a restart submits only what did not succeed."""
    marker = slurm_bps["base"] / "fail_marker"
    marker.write_text("fail while I exist")
    yaml, submit_dir = _workflow(slurm_bps, "sfail", {"failDetectors": [1], "failIfExists": str(marker)},
                                 extra="numberOfRetries: 1\nretryUnlessExit: 2\nclusterAlgorithm: "
                                       "lsst.ctrl.bps.quantum_clustering_funcs.single_quantum_clustering\n")
    run_id = _submit(yaml)
    run = slurm_bps["fac"].wait(run_id, timeout_s=300)
    assert run["state"] == "failed", run
    assert "1 BPS job(s) failed" in run["error"] and "1 pruned" in run["error"]
    states = _states(_report(run_id))
    by_label = {(n.split("_")[-2] if "_step" in n else n, n.split("_")[-1]): s for n, s in states.items()}
    assert by_label[("step1", "1")] == "FAILED" and by_label[("step2", "1")] == "PRUNED"
    assert by_label[("step1", "0")] == by_label[("step2", "0")] == "SUCCEEDED"
    assert states["pipetaskInit"] == "SUCCEEDED" and states["finalJob"] == "SUCCEEDED"
    doc = json.loads((submit_dir / "userbatch_jobs.json").read_text())
    jobs = doc["jobs"]
    assert doc["placement"] == "slurm"
    failed = next(n for n, s in states.items() if s == "FAILED")
    assert jobs[failed]["attempts"] == 2 and jobs[failed]["exit_codes"] == [1, 1]
    assert "configured to fail" in (submit_dir / "jobs" / "step1" / f"{failed}.2.err").read_text()
    # every quantum job was a Slurm job of the owner under their account; the pruned one never ran
    slurm_ids = run["result"]["summary"]["slurm_jobs"]
    assert set(slurm_ids) == set(jobs) - {"finalJob"}  # the final job: the facility's, after them
    acct = _sacct(slurm_bps["st"], slurm_ids.values())
    assert {a["user"] for a in acct.values()} == {"ub_tester"} and {a["account"] for a in acct.values()} == \
        {"u_tester"}
    pruned = next(n for n, s in states.items() if s == "PRUNED")
    assert acct[slurm_ids[pruned]]["state"] == "CANCELLED" and acct[slurm_ids[pruned]]["cpu"] == 0
    assert acct[slurm_ids[failed]]["state"] == "FAILED"
    assert run["charged_core_hours"] == pytest.approx(sum(a["cpu"] for a in acct.values()) / 3600)
    assert _datasets(slurm_bps["repo"], "bt_in2", "u/tester/sfail/run") == {0: 2}
    p = _bps("report", "--id", run_id)
    assert "FAILED" in p.stdout and "PRUNED" in p.stdout

    marker.unlink()
    p = _bps("restart", "--id", submit_dir)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    new_id = re.search(r"Run Id: (\S+)", p.stdout).group(1)
    run2 = slurm_bps["fac"].wait(new_id, timeout_s=300)
    assert run2["state"] == "succeeded", run2["error"]
    assert set(_states(_report(new_id)).values()) == {"SUCCEEDED"}
    assert set(run2["result"]["summary"]["slurm_jobs"]) == {failed, pruned}
    assert _datasets(slurm_bps["repo"], "bt_in2", "u/tester/sfail/run") == {0: 2, 1: 12}


def test_clustered_on_slurm_same_outputs_as_unclustered(slurm_bps):
    """The bridge's default clustering (a cluster per detector chain: one run-qbb per Slurm job) writes the same
    datasets as one quantum per Slurm job."""
    plain_yaml, _ = _workflow(slurm_bps, "splain", extra="clusterAlgorithm: "
                              "lsst.ctrl.bps.quantum_clustering_funcs.single_quantum_clustering\n")
    clus_yaml, clus_dir = _workflow(slurm_bps, "sclus",
                                    extra="clusterAlgorithm: userbatch.images.bps_service.userbatch_clustering\n")
    ids = {"plain": _submit(plain_yaml), "clus": _submit(clus_yaml)}
    runs = {k: slurm_bps["fac"].wait(i, timeout_s=300) for k, i in ids.items()}
    assert runs["plain"]["state"] == runs["clus"]["state"] == "succeeded", runs
    assert len(runs["clus"]["result"]["summary"]["slurm_jobs"]) == 3  # pipetaskInit + 2 clusters
    assert len(runs["plain"]["result"]["summary"]["slurm_jobs"]) == 5  # pipetaskInit + 4 quanta
    for dataset_type in ("bt_in1", "bt_in2"):
        assert (_datasets(slurm_bps["repo"], dataset_type, "u/tester/sclus/run")
                == _datasets(slurm_bps["repo"], dataset_type, "u/tester/splain/run") != {})


def test_bps_cancel_on_slurm_leaves_nothing_in_squeue(slurm_bps):
    yaml, submit_dir = _workflow(slurm_bps, "sslow", {"sleepSeconds": 600.0})
    run_id = _submit(yaml)
    _wait_for_job(submit_dir, lambda j: j["state"] == "RUNNING" and j["label"] != "pipetaskInit", 180,
                  lambda: f"no quantum job started: {slurm_bps['fac'].status(run_id)}")
    time.sleep(2)
    p = _bps("cancel", "--id", run_id)
    assert p.returncode == 0 and "Successfully canceled" in p.stdout, p.stdout + p.stderr[-2000:]
    run = slurm_bps["fac"].wait(run_id, timeout_s=120)
    assert run["state"] == "cancelled"
    report = _report(run_id)
    assert report.state.name == "DELETED"
    ids = json.loads((submit_dir / "userbatch_jobs.json").read_text())["jobs"]
    slurm_ids = [j["slurm_job"] for j in ids.values() if j.get("slurm_job")]
    assert slurm_ids
    left = subprocess.run(["squeue", "-h", "-j", ",".join(slurm_ids)], capture_output=True, text=True,
                          env={**os.environ, "SLURM_CONF": slurm_bps["st"]["conf"]}).stdout.strip()
    assert left == ""
    time.sleep(1)
    assert _processes_mentioning(str(submit_dir)) == []


def test_single_user_facility_puts_the_final_job_on_slurm_afterany(slurm_bps, tmp_path):
    """Without separate OS accounts (single-user mode) nothing needs the facility's authority: the final job is a
    Slurm job too, after every other job (``--dependency=afterany``), and registers the outputs."""
    import bps_test_tasks
    from helpers import facility_under

    from userbatch.cluster.slurm import apply_accounts

    st = slurm_bps["st"]
    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p),
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "BPS_WMS_SERVICE_CLASS": SERVICE,
           "USERBATCH_USER": "tester"}
    config = (CONFIG + "identity: {mode: single-user}\n"
              + f"runner: {{kind: slurm, slurm_conf: {st['conf']}, poll_s: 0.5}}\n")
    os.chmod(tmp_path, 0o755)
    with facility_under(tmp_path, config, env=env) as fx:
        apply_accounts(fx.config, st["conf"])  # the facility's own account in every account it charges
        repo = fx.base / "repo"
        bps_test_tasks.make_repo(str(repo))
        local = {"base": fx.base, "repo": repo}
        yaml, submit_dir = _workflow(local, "single", extra="clusterAlgorithm: "
                                     "userbatch.images.bps_service.userbatch_clustering\n")
        with fx.worker(poll_s=0.2):
            run_id = _submit(yaml)
            run = fx.fac("tester").wait(run_id, timeout_s=300)
        assert run["state"] == "succeeded", run["error"]
        slurm_ids = run["result"]["summary"]["slurm_jobs"]
        assert "finalJob" in slurm_ids and len(slurm_ids) == 4  # init, 2 clusters, final
        acct = _sacct(st, slurm_ids.values())
        assert {a["state"] for a in acct.values()} == {"COMPLETED"} and {a["user"] for a in acct.values()} == {"root"}
        times = subprocess.run(["sacct", "-n", "-P", "-X", "-j", ",".join(slurm_ids.values()), "-o",
                                "JobIDRaw,Eligible,End"], capture_output=True, text=True,
                               env={**os.environ, "SLURM_CONF": st["conf"]}).stdout
        when = {r[0]: (r[1], r[2]) for r in (ln.split("|") for ln in times.splitlines() if ln)}
        others = [when[j][1] for n, j in slurm_ids.items() if n != "finalJob"]
        assert when[slurm_ids["finalJob"]][0] >= max(others)  # eligible only once every other job had ended
        assert set(_states(_report(run_id)).values()) == {"SUCCEEDED"}
        assert _datasets(repo, "bt_in2", "u/tester/single/run") == {0: 2, 1: 12}  # registered by the final job
