"""A BPS workflow placed on Slurm: one ``sbatch`` job per GenericWorkflow job (a quantum, or a cluster of quanta
run by one ``pipetask run-qbb`` process), ``--dependency=afterok`` along the graph — the quantum-to-batch mapping
DMTN-202 asks of a batch system.

The facility's worker places the workflow (:func:`place`, called by the ``bps`` run kind when the facility's
runner is Slurm and the submit YAML does not ask for ``userbatchPlacement: spark``):

* every job is submitted *as its owner* (so Slurm checks the owner's associations) under the run's Slurm account
  (the owner's ``u_<user>``, or ``g_<group>`` for a group run), with its ``request_cpus``, ``request_memory`` and
  the run's time limit, its processes in a PID namespace of their own (cancel leaves nothing);
* inside the job, :func:`job_main` runs the job's command line with its retries (``numberOfRetries``, not for an
  exit code in ``retryUnlessExit``), logging to ``<submit>/jobs/<label>/<job>.<attempt>.{out,err}`` as the Spark
  placement does, so a job that finally fails fails its Slurm job and only then its ``afterok`` descendants;
* ``--kill-on-invalid-dep=yes``: Slurm itself cancels the descendants of a failed job (they are PRUNED in
  ``bps report``); the final job (``finalJob``) follows with ``--dependency=afterany`` on every other job — or,
  when the facility runs it under its own authority (multi-user mode: it writes the shared registry), the
  facility runs it after the Slurm jobs end, as in the Spark placement;
* :class:`SlurmWorkflow` is what the worker watches: the jobs' states from ``sacct``, written to the submit
  directory's state file (what ``bps report`` reads), ``scancel`` of every job on cancel, and the charge — the
  sum of Slurm's CPU time over the workflow's jobs.

A restart (``bps restart``) is a new facility run on the same submit directory: jobs that succeeded are kept and
only the others are submitted again, with dependencies only on those.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from ..cluster.slurm import ACCOUNT_HINT, TERMINAL, slurm_client
from ..errors import UserbatchError
from ..facility.isolation import wrap
from .bps_executor import PLAN_NAME, STATE_NAME, _copy_into, _write_state, initial_state, run_job

log = logging.getLogger(__name__)

#: Slurm job state -> the state file's job state.
STATES = {"PENDING": "PENDING", "REQUEUED": "PENDING", "RUNNING": "RUNNING", "COMPLETING": "RUNNING",
          "SUSPENDED": "RUNNING", "COMPLETED": "SUCCEEDED"}
SUMMARY_NAME = "slurm.json"


def _minutes(hours: float) -> int:
    return max(1, int(-(-float(hours) * 60 // 1)))


def _logs(submit: Path, job: dict, attempt: int) -> tuple[str, str]:
    base = submit / "jobs" / job["label"] / f"{job['name']}.{attempt}"
    return f"{base}.out", f"{base}.err"


def job_main(argv: list[str] | None = None) -> int:
    """Inside a Slurm job: run one BPS job's command line with its retries; exit with its final status.

    Parameters
    ----------
    argv : list of str, optional
        ``[payload_json]`` (default ``sys.argv[1:]``): the job's command, environment, retries and first attempt
        number, as :func:`place` wrote them into the job's script.

    Returns
    -------
    int
        0 when an attempt succeeded, else the last attempt's exit status (1 when it could not start).
    """
    payload = json.loads((argv or sys.argv[1:])[0])
    submit = Path(payload["cwd"])
    results = []
    for i in range(int(payload.get("number_of_retries", 0)) + 1):
        attempt = int(payload["attempt"]) + i
        out, err = _logs(submit, payload, attempt)
        res = run_job({**payload, "attempt": attempt, "stdout": out, "stderr": err})
        results.append(res)
        if res["exit_code"] == 0 or res["exit_code"] in payload.get("retry_unless_exit", []):
            break
    summary = {"attempts": [r["attempt"] for r in results], "exit_codes": [r["exit_code"] for r in results],
               "seconds": round(sum(r["seconds"] for r in results), 3), "error": results[-1]["error"][-2000:],
               "host": results[-1]["host"]}
    path = submit / "jobs" / payload["label"] / f"{payload['name']}.{SUMMARY_NAME}"
    path.write_text(json.dumps(summary))
    code = results[-1]["exit_code"]
    return 0 if code == 0 else (code if 0 < code < 256 else 1)


def _script(payload: dict) -> str:
    """The job's batch script: :func:`job_main` in a PID namespace of its own (as the slurm runner's runs)."""
    inner = (f"exec {shlex.quote(sys.executable)} -c "
             f"{shlex.quote('import sys; from userbatch.images.bps_slurm import job_main; sys.exit(job_main())')} "
             f"{shlex.quote(json.dumps(payload))}")
    return ("#!/bin/bash\n"
            f"# userbatch BPS job {payload['name']} (label {payload['label']})\n"
            "exec unshare --user --map-current-user --pid --fork --kill-child --mount-proc -- "
            f"bash -c {shlex.quote(inner)}\n")


def _sbatch(argv: list[str], script: str, env: dict, cwd: Path, creds) -> str:
    cmd = wrap(argv, creds, False)
    try:
        done = subprocess.run(cmd, input=script, capture_output=True, text=True, env=env, cwd=cwd, timeout=60)
    except subprocess.TimeoutExpired:
        raise UserbatchError("sbatch did not answer within 60 s: is slurmctld up?") from None
    job_id = done.stdout.strip().split(";")[0]
    if done.returncode != 0 or not job_id.isdigit():
        msg = (done.stderr.strip() or done.stdout.strip()).replace("sbatch: error: ", "")
        raise UserbatchError(f"Slurm refused a job of the workflow: {msg[-500:]}"
                             + (ACCOUNT_HINT if "account" in msg else ""))
    return job_id


def place(bps_spec: dict, runner, submit_spec, creds, run_dir: Path) -> SlurmWorkflow:
    """Submit the workflow's jobs to Slurm (see the module docstring) and return what the worker watches.

    Parameters
    ----------
    bps_spec : dict
        The facility run's ``bps`` spec (``submit_path``, ``final_by_facility``, ``final``).
    runner : userbatch.cluster.slurm.SlurmRunner
        The facility's Slurm runner: its ``SLURM_CONF``, partition and account rule.
    submit_spec : userbatch.cluster.base.SubmitSpec
        The facility run (owner, group, cores, time limit, environment).
    creds : Credentials or None
        The owner (None: single-user mode, submitted as ourselves).
    run_dir : Path
        The facility run's directory.

    Returns
    -------
    SlurmWorkflow
    """
    submit = Path(bps_spec["submit_path"])
    plan = json.loads((submit / PLAN_NAME).read_text())
    try:
        previous = json.loads((submit / STATE_NAME).read_text())
    except (OSError, ValueError):
        previous = {}
    state = initial_state(plan, previous, Path(run_dir).name)
    state["placement"] = "slurm"
    recs = state["jobs"]
    env = runner.environment(submit_spec)
    account = runner.account(submit_spec)
    cap = max(1, int(submit_spec.cores))
    common = [f"--account={account}", "--ntasks=1", f"--time={_minutes(submit_spec.max_hours or 1.0)}",
              f"--chdir={submit}", "--export=ALL", "--kill-on-invalid-dep=yes", "--parsable"]
    if runner.partition:
        common.append(f"--partition={runner.partition}")
    ids: dict[str, str] = {}
    for job in plan["jobs"]:
        if recs[job["name"]]["state"] == "SUCCEEDED":
            continue
        (submit / "jobs" / job["label"]).mkdir(parents=True, exist_ok=True)
        if creds is not None:
            os.chown(submit / "jobs" / job["label"], creds.uid, creds.gid)
        payload = {"name": job["name"], "label": job["label"], "command": job["command"], "env": job["env"],
                   "cwd": str(submit), "attempt": int(recs[job["name"]].get("attempts", 0)) + 1,
                   "number_of_retries": job.get("number_of_retries", 0),
                   "retry_unless_exit": job.get("retry_unless_exit", [])}
        argv = ["sbatch", f"--job-name={plan['name'][:40]}.{job['name'][:80]}",
                f"--cpus-per-task={min(cap, max(1, int(job.get('request_cpus') or 1)))}",
                f"--output={submit / 'jobs' / job['label'] / (job['name'] + '.slurm.out')}",
                f"--comment=userbatch run {submit_spec.run_id} bps {job['name'][:100]}", *common]
        if job.get("request_memory"):
            argv.append(f"--mem={int(job['request_memory'])}M")
        deps = [ids[p] for p in job["parents"] if p in ids]
        if deps:
            argv.append("--dependency=afterok:" + ":".join(deps))
        ids[job["name"]] = _sbatch(argv, _script(payload), env, submit, creds)
        recs[job["name"]].update(state="PENDING", run_id=Path(run_dir).name, slurm_job=ids[job["name"]])
    final = plan.get("final")
    if final is not None and not bps_spec.get("final_by_facility") and ids:
        # the final job after every other job, whatever their outcome (whenRun: ALWAYS); ON_SUCCESS is afterok
        rule = "afterany" if final.get("when_run", "ALWAYS") == "ALWAYS" else "afterok"
        payload = {"name": final["name"], "label": final["label"], "command": final["command"],
                   "env": final.get("env", {}), "cwd": str(submit),
                   "attempt": int(recs[final["name"]].get("attempts", 0)) + 1, "number_of_retries": 0,
                   "retry_unless_exit": []}
        (submit / "jobs" / final["label"]).mkdir(parents=True, exist_ok=True)
        if creds is not None:
            os.chown(submit / "jobs" / final["label"], creds.uid, creds.gid)
        argv = ["sbatch", f"--job-name={plan['name'][:40]}.{final['name']}", "--cpus-per-task=1",
                f"--output={submit / 'jobs' / final['label'] / (final['name'] + '.slurm.out')}",
                f"--comment=userbatch run {submit_spec.run_id} bps {final['name']}", *common,
                f"--dependency={rule}:" + ":".join(ids.values())]
        ids[final["name"]] = _sbatch(argv, _script(payload), env, submit, creds)
        recs[final["name"]].update(state="PENDING", run_id=Path(run_dir).name, slurm_job=ids[final["name"]])
    _write_state(submit / STATE_NAME, state, run_dir)
    log.info("BPS workflow %s: %d Slurm jobs (%s)", plan["name"], len(ids),
             ", ".join(f"{n}={i}" for n, i in list(ids.items())[:6]))
    return SlurmWorkflow(plan, state, ids, submit, Path(run_dir), runner.slurm_conf, runner.poll_s,
                         final_left=bool(final is not None and bps_spec.get("final_by_facility")))


class SlurmWorkflow:
    """The facility run of a BPS workflow placed on Slurm, as the worker watches a run (``poll``, ``wait``,
    ``cancel``, ``core_hours``, ``error``, ``stage``)."""

    enforces_time_limit = True

    def __init__(self, plan: dict, state: dict, ids: dict[str, str], submit: Path, run_dir: Path,
                 conf: str | None, poll_s: float = 2.0, final_left: bool = False):
        self.plan, self.state, self.ids, self.submit, self.run_dir = plan, state, ids, submit, run_dir
        self.conf, self.final_left = conf, final_left
        self.pid = None
        last = list(ids.values())[-1] if ids else None
        self.batch_id = last
        self.returncode: int | None = None if ids else 0
        self.core_hours: float | None = None if ids else 0.0
        self.error = ""
        self.stage: str | None = f"bps: {len(ids)} Slurm job(s) submitted"
        self.record = {"jobs": dict(ids)}
        self._poll_s, self._polled = poll_s, 0.0
        self._children: dict[str, list[str]] = {}
        for j in plan["jobs"]:
            for p in j["parents"]:
                self._children.setdefault(p, []).append(j["name"])
        if not ids:
            self._conclude()

    def _sacct(self) -> dict[str, dict]:
        done = slurm_client(self.conf, ["sacct", "-n", "-P", "-X", "-j", ",".join(self.ids.values()), "-o",
                                        "JobIDRaw,State,ExitCode,CPUTimeRAW,Reason"], timeout=20)
        by_id = {}
        for line in done.stdout.splitlines():
            jid, state, code, cpu, reason = (line.split("|") + [""] * 5)[:5]
            by_id[jid] = {"state": state.split()[0] if state else "", "exit": code, "cpu": int(cpu or 0),
                          "reason": reason}
        return by_id

    def _update(self, by_id: dict[str, dict], cancelling: bool = False) -> bool:
        """Bring the job records up to date; True when every job has ended. While the workflow is being
        cancelled, a job Slurm cancelled keeps its last state (``bps report`` shows it DELETED)."""
        recs = self.state["jobs"]
        ended = True
        for name, jid in self.ids.items():
            row = by_id.get(jid)
            rec = recs[name]
            if row is None or row["state"] in ("", "PENDING", "REQUEUED"):
                ended = False
                rec["state"] = "PENDING"
                continue
            if row["state"] not in TERMINAL:
                ended = False
                rec["state"] = STATES.get(row["state"], "RUNNING")
                continue
            if cancelling and row["state"] == "CANCELLED":
                continue
            summary = self._job_summary(name)
            if summary:
                rec["attempts"] = max(summary["attempts"])
                rec["tries"] = len(summary["attempts"])
                rec["exit_codes"] = list(rec.get("exit_codes", []))[:0] + summary["exit_codes"]
                rec["seconds"] = summary["seconds"]
            if row["state"] == "COMPLETED":
                rec["state"] = "SUCCEEDED"
            elif row["state"] == "CANCELLED" and not summary and self._parent_failed(name):
                rec["state"] = "PRUNED"  # Slurm cancelled it: a dependency can never be satisfied
            else:
                rec["state"] = "FAILED"
                rec["error"] = (summary or {}).get("error") or f"Slurm ended job {jid} as {row['state']}"
            rec["cpu_seconds"] = row["cpu"]
        return ended

    def _parent_failed(self, name: str) -> bool:
        recs = self.state["jobs"]
        parents = next((j["parents"] for j in self.plan["jobs"] if j["name"] == name), None)
        if parents is None:  # the final job
            return False
        return any(recs[p]["state"] in ("FAILED", "PRUNED") for p in parents)

    def _job_summary(self, name: str) -> dict | None:
        job = next((j for j in self.plan["jobs"] if j["name"] == name), self.plan.get("final"))
        path = self.submit / "jobs" / job["label"] / f"{name}.{SUMMARY_NAME}"
        try:
            with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb") as fh:
                doc = json.loads(fh.read(1 << 20))
            return doc if isinstance(doc.get("attempts"), list) and doc["attempts"] else None
        except (OSError, ValueError, AttributeError):
            return None

    def poll(self) -> int | None:
        """The run's exit status once every job ended in Slurm (0: none failed); None before."""
        if self.returncode is not None or time.monotonic() - self._polled < self._poll_s:
            return self.returncode
        self._polled = time.monotonic()
        by_id = self._sacct()
        ended = self._update(by_id)
        counts: dict[str, int] = {}
        for rec in self.state["jobs"].values():
            counts[rec["state"]] = counts.get(rec["state"], 0) + 1
        self.stage = "bps on Slurm: " + ", ".join(f"{k.lower()} {v}" for k, v in sorted(counts.items()))
        _write_state(self.submit / STATE_NAME, self.state, self.run_dir)
        if ended:
            self.core_hours = sum(by_id[j]["cpu"] for j in self.ids.values() if j in by_id) / 3600.0
            self._conclude()
        return self.returncode

    def _conclude(self) -> None:
        recs = self.state["jobs"]
        final = self.plan.get("final")
        for name, rec in recs.items():  # never submitted: a parent of theirs never succeeded
            if rec["state"] == "PENDING" and name not in self.ids and not (final and name == final["name"]
                                                                            and self.final_left):
                rec["state"] = "PRUNED"
        self.state["ended"] = time.time()
        _write_state(self.submit / STATE_NAME, self.state, self.run_dir)
        counts: dict[str, int] = {}
        for rec in recs.values():
            counts[rec["state"]] = counts.get(rec["state"], 0) + 1
        failed = sorted(n for n, r in recs.items() if r["state"] == "FAILED")
        pruned = sorted(n for n, r in recs.items() if r["state"] == "PRUNED")
        summary = {"workflow": self.plan["name"], "submit_path": str(self.submit), "placement": "slurm",
                   "slurm_jobs": dict(self.ids), "jobs": counts, "failed": failed, "pruned": pruned}
        if failed:
            first = recs[failed[0]].get("error", "").strip().splitlines()
            self.error = (f"{len(failed)} BPS job(s) failed ({', '.join(failed[:5])}"
                          f"{', ...' if len(failed) > 5 else ''}); {len(pruned)} pruned"
                          f"{': ' + first[-1] if first else ''} (logs under {self.submit / 'jobs'})")
            self.returncode = 1
            _copy_into(self.run_dir, [], "error.json", json.dumps({"error": self.error}).encode())
        else:
            self.returncode = 0
        result = {"run_id": self.run_dir.name, "summary": summary, "outputs": [],
                  "bps": {"submit_path": str(self.submit), **self.plan.get("provenance", {})}}
        _copy_into(self.run_dir, [], "result.json", json.dumps(result, default=str).encode())
        self.stage = None

    def cancel(self, grace_s: float = 30.0) -> None:
        """``scancel`` every job of the workflow; wait until Slurm's accounting has them all ended."""
        if self.ids:
            slurm_client(self.conf, ["scancel", *self.ids.values()], timeout=20)
        deadline = time.monotonic() + grace_s + 30
        while self.ids and time.monotonic() < deadline:
            by_id = self._sacct()
            held = slurm_client(self.conf, ["squeue", "-h", "-j", ",".join(self.ids.values()), "-o", "%T"],
                                timeout=10)
            if held.returncode == 0 and held.stdout.strip():  # still completing: processes not yet gone
                time.sleep(0.5)
                continue
            if all(by_id.get(j, {}).get("state") in TERMINAL for j in self.ids.values()):
                self._update(by_id, cancelling=True)
                self.core_hours = sum(by_id[j]["cpu"] for j in self.ids.values()) / 3600.0
                break
            time.sleep(0.5)
        self.state["ended"] = time.time()
        _write_state(self.submit / STATE_NAME, self.state, self.run_dir)
        self.returncode = 1 if self.returncode is None else self.returncode
        self.stage = None

    def wait(self) -> int:
        while self.poll() is None:
            time.sleep(self._poll_s / 2)
        return self.returncode
