"""Slurm: the quota file as ``sacctmgr`` commands (accounts with ``GrpTRES``/``GrpTRESMins``) and an ``sbatch``
script that runs one job inside its own allocation, charged to the right account.

The home of a Slurm runner: the accounts and scripts here are what it will submit with.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import subprocess
import time
from decimal import Decimal
from pathlib import Path

from ..errors import UserbatchError
from ..facility.accounts import Credentials
from ..facility.config import FacilityConfig
from ..facility.isolation import wrap
from .base import RUN_UMASK, Runner, SubmitSpec, spark_submit
from .naming import slurm_account
from .quotas import banner, check_clashes, check_user, groups_of, share_cores, users_of

log = logging.getLogger(__name__)


#: Slurm parent account of every facility account.
SLURM_ROOT = "userbatch"


BPS_SERVICE = "userbatch.images.bps_service.UserbatchService"


TEMPLATE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


def _sq(value: str) -> str:
    return shlex.quote(value)


def slurm_commands(cfg: FacilityConfig, user_name=None) -> str:
    """A shell script of ``sacctmgr`` commands: account ``userbatch`` (the user share's cores and core-hours
    per period), under it ``g_<group>`` per group and ``u_<user>`` per named user with ``GrpTRES=cpu=<max_cores>``
    and ``GrpTRESMins=cpu=<core_hours x 60>``, and each user's associations with ``MaxTRES=cpu=<max_cores>``.

    ``GrpTRESMins`` is a budget over the usage Slurm remembers, so slurm.conf needs
    ``PriorityUsageResetPeriod`` matching the facility's period (and ``AccountingStorageEnforce`` with
    ``limits``) for it to renew like the ledger's allocations. Each account is added (which fails harmlessly when
    it exists) and then modified, so the script can be run again after the quota file changes. Each account's
    fair-share is its cores at once, so Slurm's priorities follow the same shares as the facility's.

    ``user_name`` maps a facility user to the name Slurm knows (the OS account its jobs run as, see
    :func:`slurm_user_name`); default: the facility name unchanged.
    """
    check_clashes(cfg)
    user_name = user_name or (lambda u: u)
    users, groups = users_of(cfg), groups_of(cfg)
    reset = {"month": "MONTHLY", "quarter": "QUARTERLY", "year": "YEARLY"}[cfg.period]
    lines = ["#!/bin/sh", f"# {banner(cfg)}",
             f"# slurm.conf: AccountingStorageEnforce=associations,limits,safe  PriorityUsageResetPeriod={reset}",
             "set -u", ""]

    def account(name: str, parent: str | None, desc: str, cores: int, core_hours: float) -> None:
        par = f" parent={parent}" if parent else ""
        lines.append(f"sacctmgr -i add account {name}{par} Description={_sq(desc)} Organization=userbatch"
                     " >/dev/null 2>&1 || true")
        lines.append(f"sacctmgr -i modify account where name={name} set GrpTRES=cpu={cores}"
                     f" GrpTRESMins=cpu={int(round(core_hours * 60))}")
        lines.append(f"sacctmgr -i modify account where name={name} set Fairshare={max(1, cores)}")

    def user(name: str, acct: str, cores: int, extra: str = "") -> None:
        name = user_name(name)
        lines.append(f"sacctmgr -i add user {_sq(name)} account={acct}{extra} >/dev/null 2>&1 || true")
        lines.append(f"sacctmgr -i modify user where name={_sq(name)} account={acct} set MaxTRES=cpu={cores}")

    account(SLURM_ROOT, None, "User Batch: the user-computing share", int(share_cores(cfg)),
            cfg.user_capacity_core_hours)
    for a in sorted(check_user(a) for a in cfg.admins):  # a coordinator must be a Slurm user first
        lines.append(f"sacctmgr -i add user {_sq(user_name(a))} account={SLURM_ROOT} >/dev/null 2>&1 || true")
        lines.append(f"sacctmgr -i add coordinator account={SLURM_ROOT} names={_sq(user_name(a))}")
    for g, (lim, members) in groups.items():
        lines.append("")
        lines.append(f"# group {g}: {lim.core_hours:g} core-hours per {cfg.period}, {lim.max_cores} cores at once")
        acct = slurm_account(None, g)
        account(acct, SLURM_ROOT, f"userbatch group {g}", lim.max_cores, lim.core_hours)
        for m in members:
            user(m, acct, min(users[m].max_cores, lim.max_cores))
    for u, lim in users.items():
        lines.append("")
        lines.append(f"# user {u}: {lim.core_hours:g} core-hours per {cfg.period}, {lim.max_cores} cores at once")
        acct = slurm_account(u, None)
        account(acct, SLURM_ROOT, f"userbatch user {u}", lim.max_cores, lim.core_hours)
        user(u, acct, lim.max_cores, f" DefaultAccount={acct}")
    return "\n".join(lines) + "\n"


def slurm_user_name(cfg: FacilityConfig):
    """The name Slurm must know a facility user by: the OS account their runs execute as (``ub_<user>`` unless
    mapped, :func:`~userbatch.facility.accounts.account_name`) in multi-user mode — Slurm checks the submitting
    uid's associations —, the facility's own account in single-user mode (every run is submitted as it)."""
    import getpass

    from ..facility.accounts import account_name

    if cfg.identity.mode == "single-user" or (cfg.identity.mode == "auto" and os.geteuid() != 0):
        me = getpass.getuser()
        return lambda user: me
    return lambda user: account_name(cfg.identity, user)


def apply_accounts(cfg: FacilityConfig, conf: str | None = None, create_os_accounts: bool = True) -> dict:
    """Apply the quota file to a running Slurm with ``sacctmgr`` (``userbatch deploy apply slurm``): the commands
    of :func:`slurm_commands` for the OS account names, each run and checked; safe to run again.

    Parameters
    ----------
    cfg : FacilityConfig
        The facility's quota file.
    conf : str, optional
        ``SLURM_CONF`` (default: the ``slurm_conf`` setting).
    create_os_accounts : bool
        In multi-user mode, make the users' OS accounts first (as a run would), so Slurm can resolve them.

    Returns
    -------
    dict
        ``commands`` (how many ran), ``failed`` (command -> Slurm's message), ``accounts`` and ``users`` as Slurm
        lists them afterwards.
    """
    from ..config import settings
    from ..facility.accounts import effective_mode, ensure_os_user

    conf = str(conf or settings().slurm_conf or "") or None
    name_of = slurm_user_name(cfg)
    if create_os_accounts and effective_mode(cfg.identity) == "os" and cfg.identity.create_accounts:
        for u in users_of(cfg):
            ensure_os_user(cfg.identity, u)
    ran, failed = 0, {}
    for line in slurm_commands(cfg, user_name=name_of).splitlines():
        if not line.startswith("sacctmgr "):
            continue
        quiet = line.endswith("|| true")
        argv = shlex.split(line.split(" >/dev/null")[0])
        done = slurm_client(conf, argv, timeout=30)
        ran += 1
        msg = (done.stderr or done.stdout).strip()
        if done.returncode != 0 and not quiet and "Nothing to" not in msg and "already" not in msg.lower():
            failed[" ".join(argv)] = msg[-300:]
    if failed:
        raise UserbatchError("sacctmgr refused: " + "; ".join(f"{k}: {v}" for k, v in list(failed.items())[:3]))
    listed = slurm_client(conf, ["sacctmgr", "-n", "-P", "show", "assoc", "format=account,user,grptresmins,maxtres"],
                          timeout=30).stdout.splitlines()
    accounts = sorted({ln.split("|")[0] for ln in listed if ln})
    users = sorted({ln.split("|")[1] for ln in listed if ln and ln.split("|")[1]})
    log.info("applied the quota file to Slurm: %d sacctmgr commands, %d accounts", ran, len(accounts))
    return {"commands": ran, "failed": failed, "accounts": accounts, "users": users, "conf": conf}


def sbatch_script(kind: str, *, template: str | None = None, params: list[str] | tuple = (),
                  bps_file: str | None = None, account: str, cores: int = 2, hours: float = 1.0,
                  memory_per_core_gb: float = 4.0, mode: str = "cli") -> str:
    """An ``sbatch`` script that runs one job inside its own allocation, charged to ``account``.

    ``kind="template"``: a templated job with ``-p key=value`` parameters, as ``userbatch jobs run`` (``mode="cli"``)
    or ``spark-submit jobs/<template>.py`` (``mode="spark-submit"``), on ``local[$SLURM_CPUS_PER_TASK]`` — Spark
    uses exactly the cores Slurm gave the job. ``kind="bps"``: ``bps submit`` of a submit YAML with the userbatch
    WMS plugin (overridable through ``BPS_WMS_SERVICE_CLASS``). Every value is shell-quoted; ``--time`` is the
    facility's wall-time limit, so cores x hours is what Slurm may charge.
    """
    if kind not in ("template", "bps"):
        raise UserbatchError(f"an sbatch script runs a 'template' or a 'bps' job, not {kind!r}")
    if mode not in ("cli", "spark-submit"):
        raise UserbatchError(f"mode is cli or spark-submit, not {mode!r}")
    if not isinstance(cores, int) or cores < 1:
        raise UserbatchError(f"cores must be a positive integer; got {cores!r}")
    if not hours > 0:
        raise UserbatchError(f"hours must be positive; got {hours!r}")
    if not re.match(r"^[a-z0-9_]{1,60}$", account or ""):
        raise UserbatchError(f"Slurm account {account!r} is not an account name (see slurm_account)")
    minutes = max(1, int(-(-Decimal(repr(hours)) * 60 // 1)))
    lines = ["#!/bin/bash"]
    if kind == "template":
        if not template or not TEMPLATE_NAME.match(template):
            raise UserbatchError(f"template name {template!r} is not a template (userbatch jobs list)")
        for p in params:
            if "=" not in p:
                raise UserbatchError(f"parameter {p!r} is not KEY=VALUE")
        job = f"userbatch-{template}"
        args = " ".join(f"-p {_sq(p)}" for p in params)
        if mode == "cli":
            run = f'userbatch --master "local[${{SLURM_CPUS_PER_TASK}}]" jobs run {template} {args}'.rstrip()
        else:
            run = (f'spark-submit --master "local[${{SLURM_CPUS_PER_TASK}}]" '
                   f'--driver-memory "$(( SLURM_CPUS_PER_TASK * {int(memory_per_core_gb * 1024)} / 2 ))m" '
                   f"jobs/{template}.py {args}").rstrip()
    else:
        if not bps_file:
            raise UserbatchError("a bps job needs its submit YAML (bps_file)")
        job = "userbatch-bps"
        run = f"bps submit {_sq(bps_file)}"
    lines += [f"#SBATCH --job-name={job}", f"#SBATCH --account={account}", "#SBATCH --ntasks=1",
              f"#SBATCH --cpus-per-task={cores}", f"#SBATCH --mem-per-cpu={int(memory_per_core_gb * 1024)}M",
              f"#SBATCH --time={minutes // 60:02d}:{minutes % 60:02d}:00", f"#SBATCH --output={job}-%j.out",
              "set -euo pipefail",
              'export PYSPARK_PYTHON="${PYSPARK_PYTHON:-$(command -v python3)}"']
    if kind == "bps":
        lines.append(f'export BPS_WMS_SERVICE_CLASS="${{BPS_WMS_SERVICE_CLASS:-{BPS_SERVICE}}}"')
    lines.append(run)
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ the runner
#: Pending reasons that never resolve by waiting: the account's budget (GrpTRESMins) or association forbids the
#: job. Slurm keeps such a job pending; the facility ends it and shows the reason as Slurm's refusal.
REFUSALS = ("AssocGrpCPUMinutesLimit", "AssocGrpCpuMinutes", "AssocGrpBillingMinutes", "AssocMaxCpuMinutesPerJobLimit",
            "QOSGrpCPUMinutesLimit", "InvalidAccount", "InvalidQOS",
            "AssocMaxWallDurationPerJobLimit", "PartitionTimeLimit", "AssocMaxCpuPerJobLimit")
#: Slurm's terminal job states.
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY",
            "BOOT_FAIL", "DEADLINE", "REVOKED"}


def _mb(size: str) -> int:
    """``2g`` / ``768m`` / ``1024`` (MiB) as MiB."""
    m = re.match(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)b?\s*$", str(size).lower())
    if not m:
        raise UserbatchError(f"{size!r} is not a memory size like 2g or 768m")
    scale = {"k": 1 / 1024, "": 1, "m": 1, "g": 1024, "t": 1024 * 1024}[m.group(2)]
    return max(1, int(float(m.group(1)) * scale))


def _slurm_minutes(hours: float) -> int:
    return max(1, int(-(-Decimal(repr(float(hours))) * 60 // 1)))


def slurm_client(conf: str | None, argv: list[str], timeout: float = 15.0) -> subprocess.CompletedProcess:
    """Run one Slurm client command against the Slurm of ``conf`` (None: Slurm's own default), bounded in time.

    Parameters
    ----------
    conf : str or None
        ``SLURM_CONF`` for the command.
    argv : list of str
        The command (``squeue ...``, ``sacct ...``, ``scancel ...``).
    timeout : float
        Seconds before it is given up (answers as exit status 124).

    Returns
    -------
    subprocess.CompletedProcess
    """
    env = dict(os.environ)
    if conf:
        env["SLURM_CONF"] = str(conf)
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(argv, 124, "", f"{argv[0]} did not answer within {timeout:g} s")
    except FileNotFoundError:
        return subprocess.CompletedProcess(argv, 127, "", f"{argv[0]} is not installed")


def sacct_job(conf: str | None, job_id: str) -> dict | None:
    """Slurm's accounting record of one job (the allocation, not its steps), or None while it has none.

    Parameters
    ----------
    conf : str or None
        ``SLURM_CONF``.
    job_id : str
        The Slurm job id.

    Returns
    -------
    dict or None
        ``state``, ``exit_code`` (the batch script's status; 128+signal when killed), ``cpu_seconds``
        (``CPUTimeRAW``: allocated CPUs x elapsed — what Slurm charges the account), ``alloc_cpus``,
        ``elapsed_s``, ``account``, ``user``, ``reason``.
    """
    fields = "JobIDRaw,State,ExitCode,CPUTimeRAW,AllocCPUS,ElapsedRaw,Account,User,Reason"
    done = slurm_client(conf, ["sacct", "-n", "-P", "-X", "-j", str(job_id), "-o", fields])
    line = next((ln for ln in done.stdout.splitlines() if ln.split("|")[0] == str(job_id)), None)
    if done.returncode != 0 or line is None:
        return None
    jid, state, code, cpu, alloc, elapsed, account, user, reason = (line.split("|") + [""] * 9)[:9]
    status, _, sig = code.partition(":")
    exit_code = 128 + int(sig) if sig.isdigit() and int(sig) else int(status) if status.isdigit() else None
    return {"job_id": jid, "state": state.split()[0] if state else "", "exit_code": exit_code,
            "cpu_seconds": int(cpu or 0), "alloc_cpus": int(alloc or 0), "elapsed_s": int(elapsed or 0),
            "account": account, "user": user, "reason": reason}


#: Said with Slurm's own refusal of an unknown account or association.
ACCOUNT_HINT = (" (Slurm knows accounts and users from the quota file: is the user or group in it, and was "
                "'userbatch deploy apply slurm' run since it changed?)")


class SlurmJob:
    """A facility run that is a Slurm job: what the worker watches instead of a local process (``poll``, ``wait``,
    ``cancel``), its state from ``squeue`` while Slurm holds it and from ``sacct`` once it ended.

    ``core_hours`` (Slurm's ``CPUTimeRAW`` / 3600 once ended) is what the facility charges; ``error`` says why it
    failed or was refused, in Slurm's words; ``stage`` is Slurm's view while it lasts (pending and why).
    """

    #: Slurm stops the job at its --time; the worker need not.
    enforces_time_limit = True

    def __init__(self, job_id: str, conf: str | None, poll_s: float = 2.0):
        self.batch_id = str(job_id)
        self.conf = conf
        self.pid = None
        self.returncode: int | None = None
        self.core_hours: float | None = None
        self.error = ""
        self.stage: str | None = "pending in Slurm"
        self.record: dict | None = None
        self._poll_s, self._polled, self._gone_since = poll_s, 0.0, None

    def poll(self) -> int | None:
        """The exit status once the job ended and Slurm's accounting has it; None before (asks at most every
        ``poll_s`` seconds)."""
        if self.returncode is not None or time.monotonic() - self._polled < self._poll_s:
            return self.returncode
        self._polled = time.monotonic()
        q = slurm_client(self.conf, ["squeue", "-h", "-j", self.batch_id, "-o", "%T|%r|%a"], timeout=10)
        state, reason, account = (q.stdout.strip().split("|") + ["", ""])[:3]
        if q.returncode == 0 and state and state not in TERMINAL and state != "COMPLETING":
            if state == "PENDING" and reason in REFUSALS:
                self._refuse(reason, account)
                return None
            self.stage = f"pending in Slurm ({reason})" if state == "PENDING" else f"{state.lower()} in Slurm"
            return None
        if q.returncode not in (0, 1) and "Invalid job id" not in q.stderr:
            return None  # Slurm did not answer: ask again later
        rec = sacct_job(self.conf, self.batch_id)
        if rec is None or rec["state"] in ("PENDING", "RUNNING", "REQUEUED", "SUSPENDED", ""):
            return None  # the end not yet in accounting
        self._ended(rec)
        return self.returncode

    def _ended(self, rec: dict) -> None:
        self.record = rec
        self.core_hours = rec["cpu_seconds"] / 3600.0
        self.stage = None
        code = rec["exit_code"]
        self.returncode = code if code is not None else 1
        if rec["state"] == "TIMEOUT":
            self.error = self.error or "Slurm stopped the job at its time limit (TIMEOUT)"
            self.returncode = self.returncode or 1
        elif rec["state"] == "CANCELLED" and not self.error:
            self.error = "the job was cancelled in Slurm"
            self.returncode = self.returncode or 1
        elif rec["state"] not in ("COMPLETED", "FAILED"):
            self.error = self.error or f"Slurm ended the job as {rec['state']}"
            self.returncode = self.returncode or 1

    def _refuse(self, reason: str, account: str) -> None:
        limits = slurm_client(self.conf, ["sacctmgr", "-n", "-P", "show", "assoc", f"where account={account}",
                                          "format=user,grptresmins,maxtres"], timeout=10).stdout.splitlines()
        budget = next((ln.split("|")[1] for ln in limits if ln and not ln.split("|")[0]), "")
        self.error = (f"refused by Slurm: {reason} — account {account or '?'}"
                      f"{f' (GrpTRESMins={budget})' if budget else ''} cannot start it: its budget or association "
                      "limits would be overrun ('sshare -a' shows its usage)")
        log.warning("Slurm job %s: %s", self.batch_id, self.error)
        self.cancel()

    def cancel(self, grace_s: float = 30.0) -> None:
        """``scancel`` (SIGTERM to the job's processes, SIGKILL after Slurm's KillWait) and wait until Slurm's
        accounting records the end."""
        slurm_client(self.conf, ["scancel", self.batch_id], timeout=15)
        deadline = time.monotonic() + grace_s + 30
        self._polled = 0.0
        while time.monotonic() < deadline:
            q = slurm_client(self.conf, ["squeue", "-h", "-j", self.batch_id, "-o", "%T"], timeout=10)
            if not q.stdout.strip() or q.stdout.strip() in TERMINAL:
                rec = sacct_job(self.conf, self.batch_id)
                if rec is not None and rec["state"] not in ("PENDING", "RUNNING", "REQUEUED", ""):
                    self._ended(rec)
                    return
            time.sleep(0.5)
        log.warning("Slurm job %s did not end within %.0f s of scancel", self.batch_id, grace_s + 30)
        self.error = self.error or f"Slurm job {self.batch_id} did not end after scancel"
        self.returncode = 1 if self.returncode is None else self.returncode

    def wait(self) -> int:
        while self.poll() is None:
            time.sleep(self._poll_s / 2)
        return self.returncode


def sync_os_groups(creds: Credentials) -> None:
    """Make the owner's supplementary OS groups exactly their facility groups (``usermod -G``) before a Slurm job:
    slurmd gives a job the groups the system lists for its user (initgroups), not the ones the facility passes,
    so the system's list must say what the facility decided. Only a local account root may change is changed."""
    import grp
    import pwd

    want = set(creds.groups) - {creds.gid}
    try:
        have = set(os.getgrouplist(creds.account, creds.gid)) - {creds.gid}
    except (KeyError, OSError):
        return
    if have == want or os.geteuid() != 0:
        return
    try:
        pwd.getpwnam(creds.account)
        names = ",".join(sorted(grp.getgrgid(g).gr_name for g in want))
    except KeyError:
        return
    done = subprocess.run(["usermod", "-G", names, creds.account], capture_output=True, text=True)
    if done.returncode != 0:
        log.warning("could not set %s's OS groups to %s: %s", creds.account, names or "none", done.stderr.strip())


class SlurmRunner(Runner):
    """A facility run as an ``sbatch`` job: submitted as its owner (Slurm's munge credential says who), under the
    owner's or group's Slurm account (:func:`~userbatch.cluster.naming.slurm_account`), asking for the run's cores
    and time limit — so Slurm's own limits (``GrpTRESMins``, ``MaxTRES``, fair-share) apply to it.

    One node: Spark ``local[cores]`` inside the allocation. ``nodes > 1`` (or ``spark_mode: standalone``): a Spark
    standalone master on the first node and one worker per node started with ``srun`` inside the allocation, the
    driver submitting to it — the usual HPC pattern; the executors are the owner's processes too.

    Parameters
    ----------
    slurm_conf : str, optional
        ``SLURM_CONF`` of the cluster (default: the ``slurm_conf`` setting, else Slurm's own default).
    partition : str, optional
        Partition to submit to (default: Slurm's default partition).
    nodes : int
        Nodes per run.
    spark_mode : str
        ``local`` (one node) or ``standalone``.
    memory_per_core_gb : float
        ``--mem-per-cpu``.
    poll_s : float
        How often the worker asks Slurm about a run.
    """

    kind = "slurm"
    launchable = True
    isolates_network = False  # the job's processes are slurmd's children, not ours
    runs_as_owner = True

    def __init__(self, slurm_conf: str | None = None, partition: str | None = None, nodes: int = 1,
                 spark_mode: str = "local", memory_per_core_gb: float = 2.0, poll_s: float = 2.0):
        from ..config import settings

        self.slurm_conf = str(slurm_conf or settings().slurm_conf or "") or None
        self.partition = partition
        if not isinstance(nodes, int) or nodes < 1:
            raise UserbatchError(f"the slurm runner's nodes must be a positive whole number; got {nodes!r}")
        if spark_mode not in ("local", "standalone"):
            raise UserbatchError(f"the slurm runner's spark_mode is local or standalone, not {spark_mode!r}")
        self.nodes, self.poll_s = nodes, float(poll_s)
        self.spark_mode = "standalone" if nodes > 1 else spark_mode
        self.memory_per_core_gb = float(memory_per_core_gb)

    def master_args(self, spec: SubmitSpec) -> list[str]:
        if self.spark_mode == "standalone":
            return ["--master", "${SPARK_MASTER_URL}", "--total-executor-cores", str(spec.cores),
                    "--executor-cores", str(spec.cores_per_executor), "--executor-memory", spec.executor_memory]
        return ["--master", f"local[{spec.cores}]"]

    def account(self, spec: SubmitSpec) -> str:
        return slurm_account(spec.user, spec.group)

    def sbatch_argv(self, spec: SubmitSpec, log_path: str | Path) -> list[str]:
        """The ``sbatch`` command line of a run (its script comes on standard input: :meth:`batch_script`)."""
        cpus = -(-spec.cores // self.nodes)
        argv = ["sbatch", "--parsable", f"--job-name={spec.app_name}", f"--account={self.account(spec)}",
                f"--nodes={self.nodes}", "--ntasks-per-node=1", f"--cpus-per-task={cpus}",
                f"--mem-per-cpu={int(self.memory_per_core_gb * 1024)}M",
                f"--time={_slurm_minutes(spec.max_hours or 1.0)}", f"--output={log_path}", "--open-mode=append",
                f"--chdir={spec.run_dir}", "--export=ALL", f"--comment=userbatch run {spec.run_id}"]
        if self.partition:
            argv.append(f"--partition={self.partition}")
        return argv

    def batch_script(self, spec: SubmitSpec) -> str:
        """The job's script: the run's spark-submit, inside the allocation (with a standalone Spark started there
        first in ``standalone`` mode)."""
        submit = " ".join(a if a.startswith("${") else _sq(a) for a in self.argv(spec, spark_submit()))
        submit = submit.replace("'${SPARK_MASTER_URL}'", '"${SPARK_MASTER_URL}"')
        head = ["#!/bin/bash", f"# userbatch run {spec.run_id} of {spec.user} (account {self.account(spec)})"]
        lines = ["set -uo pipefail", "umask 002", f"cd {_sq(spec.run_dir)}"]
        if self.spark_mode == "local":
            lines.append(f"exec {submit}")
            return "\n".join(head + self._contained(lines)) + "\n"
        spark_class = _sq(str(Path(spark_submit()).with_name("spark-class")))
        per_node = -(-spec.cores // self.nodes)
        executors = -(-per_node // spec.cores_per_executor)
        # a worker offers its share of the allocation, and at least what its executors ask for (else Spark waits)
        mem = max(int(self.memory_per_core_gb * 1024 * per_node), _mb(spec.executor_memory) * executors)
        lines += [
            'master_host=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)',
            "port=$(( 20000 + SLURM_JOB_ID % 20000 ))",
            'export SPARK_MASTER_URL="spark://${master_host}:${port}" SPARK_MASTER="spark://${master_host}:${port}"',
            'export SPARK_LOG_DIR="$PWD/tmp/spark-logs" SPARK_WORKER_DIR="$PWD/tmp/spark-work"',
            'mkdir -p "$SPARK_LOG_DIR" "$SPARK_WORKER_DIR"',
            f'{spark_class} org.apache.spark.deploy.master.Master --host "$master_host" --port "$port" '
            '--webui-port 0 > "$SPARK_LOG_DIR/master.log" 2>&1 &',
            "master_pid=$!",
            'for _ in $(seq 120); do grep -q "Starting Spark master" "$SPARK_LOG_DIR/master.log" && break; '
            "sleep 0.5; done",
            f'srun --overlap --nodes="$SLURM_JOB_NUM_NODES" --ntasks-per-node=1 {spark_class} '
            'org.apache.spark.deploy.worker.Worker --cores "$SLURM_CPUS_PER_TASK" '
            f'--memory {mem}m --webui-port 0 --work-dir "$SPARK_WORKER_DIR" "$SPARK_MASTER_URL" '
            '> "$SPARK_LOG_DIR/workers.log" 2>&1 &',
            "workers_pid=$!",
            'for _ in $(seq 240); do [ "$(grep -c "Successfully registered with master" '
            '"$SPARK_LOG_DIR/workers.log" 2>/dev/null)" -ge "$SLURM_JOB_NUM_NODES" ] && break; sleep 0.5; done',
            f"{submit}",
            "status=$?",
            'kill "$workers_pid" "$master_pid" 2>/dev/null; wait 2>/dev/null',
            'exit "$status"']
        return "\n".join(head + self._contained(lines)) + "\n"

    @staticmethod
    def _contained(lines: list[str]) -> list[str]:
        """The job's commands in a PID namespace of their own (an unprivileged user namespace mapping the owner to
        themselves): ``proctrack/linuxproc`` loses a process that double-forks away, but the namespace's end
        takes every process in it, so cancel and the time limit leave nothing behind — as the local runner's
        ``unshare`` does."""
        inner = "\n".join(lines)
        return ["exec unshare --user --map-current-user --pid --fork --kill-child --mount-proc -- "
                f"bash -c {_sq(inner)}"]

    def environment(self, spec: SubmitSpec) -> dict[str, str]:
        env = super().environment(spec)
        if self.slurm_conf:
            env["SLURM_CONF"] = self.slurm_conf
        if self.spark_mode == "local":  # the driver's session takes its master from here (as the local runner's)
            env["SPARK_MASTER"] = f"local[{spec.cores}]"
        return env

    def launch(self, spec: SubmitSpec, log_path: Path, creds: Credentials | None = None,
               network: bool = False) -> SlurmJob:
        """``sbatch`` the run as ``creds`` (None: as ourselves) with its script on standard input.

        Parameters
        ----------
        spec : SubmitSpec
            The run.
        log_path : Path
            The driver log (Slurm's ``--output``, written as the owner into the owner's run directory).
        creds : Credentials, optional
            The owner: ``sbatch`` runs as them, so Slurm sees their uid and applies their associations.
        network : bool
            Ignored: the job runs under slurmd, not in a namespace of ours.

        Returns
        -------
        SlurmJob
        """
        if creds is not None:
            sync_os_groups(creds)
        argv = wrap(self.sbatch_argv(spec, log_path), creds, False)
        log.info("run %s: %s", spec.run_id, " ".join(argv))
        try:
            done = subprocess.run(argv, input=self.batch_script(spec), capture_output=True, text=True,
                                  env=self.environment(spec), cwd=spec.run_dir, timeout=60, umask=RUN_UMASK)
        except subprocess.TimeoutExpired:
            raise UserbatchError("sbatch did not answer within 60 s: is slurmctld up?") from None
        except FileNotFoundError:
            raise UserbatchError("sbatch is not installed on this machine (the slurm runner needs Slurm's client "
                                 "commands)") from None
        job_id = done.stdout.strip().split(";")[0]
        if done.returncode != 0 or not job_id.isdigit():
            msg = (done.stderr.strip() or done.stdout.strip()).replace("sbatch: error: ", "")
            raise UserbatchError(f"Slurm refused the job: {msg[-500:]}" + (ACCOUNT_HINT if "account" in msg else ""))
        log.info("run %s is Slurm job %s (account %s)", spec.run_id, job_id, self.account(spec))
        return SlurmJob(job_id, self.slurm_conf, self.poll_s)

    def adopt(self, batch_id: str) -> SlurmJob:
        """The job of a run an earlier worker submitted (it lives on in Slurm whatever happened to that worker)."""
        return SlurmJob(batch_id, self.slurm_conf, self.poll_s)
