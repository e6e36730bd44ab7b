"""The facility on a real Slurm (issue 17): slurmctld, slurmd and slurmdbd on MariaDB, started by
``scripts/setup.sh --services`` (or here, when it is not up) under ``.services/slurm`` of the checkout.

Runs are ``sbatch`` jobs submitted as their owners under their Slurm accounts; the quota file is applied with
``sacctmgr``; Slurm itself refuses what would overrun an account's ``GrpTRESMins``; cancel leaves nothing in
``squeue`` and no process; the ledger's charge is Slurm's own ``sacct`` CPU time, and ``sshare`` agrees.
Where the daemons cannot start, every test here is skipped with the reason — never a silent pass.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from helpers import module_facility
from test_isolation import _processes_of, _uid, _wait_gone

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

ROOT = Path(__file__).resolve().parents[1]
SLURM_DIR = ROOT / ".services" / "slurm"

CONFIG = """
capacity: {{cores: 100, user_fraction: 0.10}}
admins: [sadmin]
defaults:
  user:  {{core_hours: 20, max_cores: 2, storage_gb: 5}}
  group: {{core_hours: 50, max_cores: 2, storage_gb: 50}}
users:
  sdave: {{core_hours: 30, max_cores: 1}}
groups:
  steam: {{members: [salice, scarol], quota: {{core_hours: 40, max_cores: 2}}}}
  spoor: {{members: [salice], quota: {{core_hours: 10, max_cores: 2}}}}
runs: {{max_concurrent: 3, default_cores: 1, default_max_hours: 0.5, max_queued: 5}}
runner: {{kind: slurm, slurm_conf: {conf}, poll_s: 0.5}}
"""

HELLO = r'''
import json, os, pwd, sys
import userbatch
if len(sys.argv) > 1:  # a directory only the group's members may write
    with open(os.path.join(sys.argv[1], "from-the-job"), "w") as fh:
        fh.write("written")
spark = userbatch.session()
n = spark.range(1000).selectExpr("sum(id) as s").collect()[0]["s"]
print("SUM", n, "AS", pwd.getpwuid(os.getuid()).pw_name, "JOB", os.environ.get("SLURM_JOB_ID"),
      "CPUS", os.environ.get("SLURM_CPUS_PER_TASK"), "GROUPS", sorted(os.getgroups()), flush=True)
'''

SLEEPER = r'''
import os, subprocess, time
import userbatch
subprocess.Popen(["sleep", "900"], start_new_session=True)
if os.fork() == 0:
    if os.fork() == 0:
        os.setsid()
        time.sleep(900)
        os._exit(0)
    os._exit(0)
print("SLEEPING", flush=True)
time.sleep(900)
'''


def _slurm():
    """The running local Slurm (started here when set-up did not), or a skip that says why not."""
    from userbatch.cluster import slurm_local
    from userbatch.errors import UserbatchError

    if os.geteuid() != 0:
        pytest.skip("a local Slurm runs its daemons as root; these tests run as root in CI")
    for tool in ("unshare", "setpriv"):
        if shutil.which(tool) is None:
            pytest.skip(f"runs as their owners need {tool} (util-linux)")
    st = slurm_local.status(SLURM_DIR)
    if not st["running"]:
        try:
            st = slurm_local.start(SLURM_DIR)
        except UserbatchError as e:
            pytest.skip(f"the local Slurm daemons cannot start here: {e}")
    return st


def _client(st, *argv, timeout=30):
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "SLURM_CONF": st["conf"]})


@pytest.fixture(scope="module")
def sl(tmp_path_factory):
    st = _slurm()
    from userbatch.cluster.slurm import apply_accounts

    with module_facility(tmp_path_factory, "slurm", CONFIG.format(conf=st["conf"])) as fx:
        os.chmod(fx.base, 0o755)
        applied = apply_accounts(fx.config, st["conf"])
        facs = {u: fx.fac(u) for u in ("salice", "scarol", "sdave", "sadmin")}
        with fx.worker(poll_s=0.2):
            yield {"st": st, "fx": fx, "facs": facs, "applied": applied}


def _assocs(st) -> dict:
    out = _client(st, "sacctmgr", "-n", "-P", "show", "assoc", "where", "cluster=userbatch",
                  "format=account,user,grptresmins,grptres,maxtres,fairshare").stdout
    return {(r[0], r[1]): r[2:] for r in (ln.split("|") for ln in out.splitlines() if ln)}


def test_cli_status_names_every_daemon(sl):
    from click.testing import CliRunner

    from userbatch.cli import main

    res = CliRunner().invoke(main, ["cluster", "slurm", "status", "--dir", str(SLURM_DIR), "--json"])
    assert res.exit_code == 0, res.output
    st = json.loads(res.output)
    assert set(st["daemons"]) == {"munged", "mariadb", "slurmdbd", "slurmctld", "slurmd"}
    assert all(st["daemons"].values()) and st["running"]
    # and nothing answers for a directory where no Slurm was started
    res = CliRunner().invoke(main, ["cluster", "slurm", "status", "--dir", str(sl["fx"].base / "none")])
    assert res.exit_code == 1 and "not running" in res.output


def test_apply_writes_the_quota_file_into_slurm_and_is_idempotent(sl):
    from userbatch.cluster.slurm import apply_accounts

    from click.testing import CliRunner

    from userbatch.cli import main

    st = sl["st"]
    first = _assocs(st)
    again = apply_accounts(sl["fx"].config, st["conf"])
    assert _assocs(st) == first and not again["failed"]
    res = CliRunner().invoke(main, ["deploy", "apply", "slurm", "--slurm-conf", st["conf"], "--json"])
    assert res.exit_code == 0, res.output
    assert {"g_steam", "g_spoor", "u_sdave", "userbatch"} <= set(json.loads(res.output)["accounts"])
    assert _assocs(st) == first
    # budgets in CPU-minutes, cores at once, per-user MaxTRES, fair-share = cores
    assert first[("g_steam", "")][:3] == ["cpu=2400", "cpu=2", ""] and first[("g_steam", "")][3] == "2"
    assert first[("g_spoor", "")][:2] == ["cpu=600", "cpu=2"]
    assert first[("u_sdave", "")][:2] == ["cpu=1800", "cpu=1"]
    assert first[("u_sdave", "ub_sdave")][2] == "cpu=1"
    assert {("g_steam", "ub_salice"), ("g_steam", "ub_scarol"), ("g_spoor", "ub_salice")} <= set(first)


def test_a_run_is_a_slurm_job_of_its_owner_charged_what_sacct_says(sl):
    from userbatch.cluster.slurm import sacct_job
    from userbatch.facility.accounts import IdentityConfig, ensure_os_group

    alice = sl["facs"]["salice"]
    shared = sl["fx"].base / "steam-only"
    shared.mkdir()
    # the team's OS group exists before its first run here (the facility makes it at a member's first submit)
    os.chown(shared, 0, ensure_os_group(IdentityConfig(), "steam"))
    os.chmod(shared, 0o770)
    run = alice.wait(alice.submit(script=("hello.py", HELLO), cores=2, group="steam",
                                  script_args=[str(shared)])["id"], timeout_s=300)
    log = alice.logs(run["id"])
    assert run["state"] == "succeeded", (run["error"], log[-3000:])
    assert run["batch_id"] and f"JOB {run['batch_id']}" in log
    assert "SUM 499500 AS ub_salice" in log and "CPUS 2" in log
    rec = sacct_job(sl["st"]["conf"], run["batch_id"])
    assert rec["user"] == "ub_salice" and rec["account"] == "g_steam" and rec["state"] == "COMPLETED"
    assert rec["alloc_cpus"] == 2 and rec["cpu_seconds"] == 2 * rec["elapsed_s"] > 0
    # the charge is Slurm's CPU time, and the worker's own measure (held from sbatch to the end) is not below it
    assert run["charged_core_hours"] == pytest.approx(rec["cpu_seconds"] / 3600)
    batch = run["result"]["batch"]
    assert batch["job_id"] == run["batch_id"]  # Slurm's elapsed is whole seconds: up to one more second per core
    assert batch["worker_wall_core_hours"] >= batch["charged_core_hours"] - rec["alloc_cpus"] / 3600
    # the member's facility groups are the job's OS groups (slurmd's initgroups): it wrote where only they may
    assert (shared / "from-the-job").read_text() == "written"
    assert (shared / "from-the-job").stat().st_uid == _uid("salice")


def test_cancel_leaves_nothing_in_squeue_and_no_process(sl):
    dave = sl["facs"]["sdave"]
    run = dave.submit(script=("sleeper.py", SLEEPER), cores=1)
    deadline = time.monotonic() + 240
    while "SLEEPING" not in dave.logs(run["id"]) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert "SLEEPING" in dave.logs(run["id"]), dave.status(run["id"])
    job = dave.status(run["id"])["batch_id"]
    assert len(_processes_of(_uid("sdave"))) >= 3
    dave.cancel(run["id"])
    done = dave.wait(run["id"], timeout_s=120)
    assert done["state"] == "cancelled"
    assert _client(sl["st"], "squeue", "-h", "-j", job).stdout.strip() == ""
    assert _wait_gone(_uid("sdave")) == []
    assert done["charged_core_hours"] > 0


def test_slurm_itself_refuses_a_run_past_the_accounts_grptresmins(sl):
    """The site's Slurm limit is tighter than the facility's (a site admin lowered it, or the account was used
    outside the facility): Slurm refuses to start the job and the facility shows Slurm's reason."""
    st = sl["st"]
    carol = sl["facs"]["scarol"]
    assert _client(st, "sacctmgr", "-i", "modify", "account", "where", "name=g_spoor", "set",
                   "GrpTRESMins=cpu=1").returncode == 0
    try:
        alice = sl["facs"]["salice"]
        run = alice.wait(alice.submit(script=("hello.py", HELLO), cores=2, max_hours=0.5, group="spoor")["id"],
                         timeout_s=120)
        assert run["state"] == "failed"
        assert "refused by Slurm: AssocGrpCPUMinutesLimit" in run["error"] and "g_spoor" in run["error"]
        assert run["charged_core_hours"] == 0
        assert _client(st, "squeue", "-h", "-j", run["batch_id"]).stdout.strip() == ""
    finally:
        from userbatch.cluster.slurm import apply_accounts

        apply_accounts(sl["fx"].config, st["conf"])  # the quota file's budget again
    assert carol  # the other members' runs are unaffected by the refusal (next test)


def test_ledger_and_slurm_accounting_agree(sl):
    """Every Slurm-run charge in the ledger equals sacct's CPU time of its job, and per account the ledger's sum
    is what Slurm's own usage (sshare RawUsage, CPU-seconds, no decay) counts for the facility's jobs."""
    from userbatch.cluster.slurm import sacct_job
    from userbatch.facility.models import ChargeRow, RunRow
    from userbatch.tables.db import transaction

    st = sl["st"]

    def charged():
        with transaction(sl["fx"].engine) as s:
            return [(r.batch_id, r.group, c.core_hours, c.source) for r, c in s.query(RunRow, ChargeRow)
                    .filter(RunRow.id == ChargeRow.run_id, RunRow.batch_id.is_not(None), ChargeRow.core_hours > 0)]

    if not charged():  # run alone: the module's earlier tests left no charged Slurm run
        carol = sl["facs"]["scarol"]
        run = carol.wait(carol.submit(script=("hello.py", HELLO), cores=1, group="steam")["id"], timeout_s=300)
        assert run["state"] == "succeeded", run["error"]
    rows = charged()
    assert rows
    ledger: dict[str, float] = {}
    for job, group, charged, source in rows:
        rec = sacct_job(st["conf"], job)
        assert source == "slurm-sacct" and charged == pytest.approx(rec["cpu_seconds"] / 3600), job
        ledger[rec["account"]] = ledger.get(rec["account"], 0.0) + charged
    # sacct summed per account over every job Slurm ran there this month (what sshare's usage counts)
    month = time.strftime("%Y-%m-01T00:00:00")
    jobs = _client(st, "sacct", "-n", "-P", "-X", "-a", "-A", ",".join(ledger), "-S", month, "-E", "now", "-o",
                   "Account,CPUTimeRAW").stdout.splitlines()
    slurm: dict[str, float] = {}
    for line in jobs:
        acct, cpu = line.split("|")
        slurm[acct] = slurm.get(acct, 0.0) + int(cpu) / 3600
    for acct, hours in ledger.items():
        assert slurm[acct] >= hours - 1e-9
    # sshare's raw usage (updated by the priority thread every PriorityCalcPeriod) catches up with sacct
    deadline = time.monotonic() + 90
    while True:
        share = _client(st, "sshare", "-n", "-P", "-a", "-o", "Account,User,RawUsage").stdout.splitlines()
        raw = {r[0].strip(): int(r[2] or 0) for r in (ln.split("|") for ln in share) if not r[1]}
        if all(raw.get(a, 0) >= round(slurm[a] * 3600) for a in ledger) or time.monotonic() > deadline:
            break
        time.sleep(3)
    for acct in ledger:
        assert raw.get(acct, 0) == pytest.approx(slurm[acct] * 3600, abs=2), (acct, raw, slurm)


def test_a_run_with_spark_standalone_inside_its_allocation(sl, tmp_path):
    """``spark_mode: standalone`` (what ``nodes > 1`` uses): a master and a worker per node started inside the
    allocation with srun, the driver submitting to them; the executors are the owner's processes too."""
    from helpers import facility_under

    config = CONFIG.format(conf=sl["st"]["conf"]).replace(
        "poll_s: 0.5}", "poll_s: 0.5, spark_mode: standalone, memory_per_core_gb: 1}")
    os.chmod(tmp_path, 0o755)
    with facility_under(tmp_path, config) as fx:
        fac = fx.fac("sdave")
        with fx.worker(poll_s=0.2):
            run = fac.wait(fac.submit(script=("hello.py", HELLO), cores=1)["id"], timeout_s=300)
        log = fac.logs(run["id"])
        assert run["state"] == "succeeded", (run["error"], log[-3000:])
        assert "SUM 499500 AS ub_sdave" in log
        assert "spark://" in run["result"]["spark_conf"].get("spark.master", ""), run["result"]["spark_conf"]
        workers = (Path(run["run_dir"]) / "tmp" / "spark-logs" / "workers.log").read_text()
        assert "Successfully registered with master" in workers


def test_a_new_worker_adopts_the_slurm_job_of_one_that_died(sl, tmp_path):
    """The run lives in Slurm, not in the worker: a worker that stops without cleaning up (a crash) leaves the job
    running; the next worker finds it by its job id, watches it to the end and charges what sacct says."""
    from helpers import facility_under

    from userbatch.cluster.slurm import sacct_job
    from userbatch.facility.worker import Worker

    script = "import time\nprint('WAITING', flush=True)\ntime.sleep(6)\nprint('DONE', flush=True)\n"
    os.chmod(tmp_path, 0o755)
    with facility_under(tmp_path, CONFIG.format(conf=sl["st"]["conf"])) as fx:
        fac = fx.fac("sdave")
        run_id = fac.submit(script=("wait.py", script), cores=1)["id"]
        first = Worker(fx.db_url, fx.config)
        assert first.acquire()
        deadline = time.monotonic() + 60
        while fac.status(run_id)["state"] != "running" and time.monotonic() < deadline:
            first.step()
            time.sleep(0.2)
        job = fac.status(run_id)["batch_id"]
        assert job
        first.procs.clear()  # it dies: no shutdown, no cancel
        first.release()
        second = Worker(fx.db_url, fx.config)
        assert second.acquire()  # reconcile adopts the Slurm job
        try:
            assert run_id in second.procs and second.procs[run_id].batch_id == job
            deadline = time.monotonic() + 240
            while fac.status(run_id)["state"] == "running" and time.monotonic() < deadline:
                second.step()
                time.sleep(0.3)
        finally:
            second.shutdown()
            second.release()
        run = fac.status(run_id)
        assert run["state"] == "succeeded", (run["error"], fac.logs(run_id)[-2000:])
        assert "DONE" in fac.logs(run_id)
        assert run["charged_core_hours"] == pytest.approx(sacct_job(sl["st"]["conf"], job)["cpu_seconds"] / 3600)
