"""Slurm: the quota file as ``sacctmgr`` commands (accounts with ``GrpTRES``/``GrpTRESMins``) and an ``sbatch``
script that runs one job inside its own allocation, charged to the right account.

The home of a Slurm runner: the accounts and scripts here are what it will submit with.
"""

from __future__ import annotations

import logging
import re
import shlex
from decimal import Decimal

from ..errors import UserbatchError
from ..facility.config import FacilityConfig
from .naming import slurm_account
from .quotas import banner, check_clashes, check_user, groups_of, share_cores, users_of

log = logging.getLogger(__name__)


#: Slurm parent account of every facility account.
SLURM_ROOT = "userbatch"


BPS_SERVICE = "userbatch.images.bps_service.UserbatchService"


TEMPLATE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


def _sq(value: str) -> str:
    return shlex.quote(value)


def slurm_commands(cfg: FacilityConfig) -> str:
    """A shell script of ``sacctmgr`` commands: account ``userbatch`` (the user share's cores and core-hours
    per period), under it ``g_<group>`` per group and ``u_<user>`` per named user with ``GrpTRES=cpu=<max_cores>``
    and ``GrpTRESMins=cpu=<core_hours x 60>``, and each user's associations with ``MaxTRES=cpu=<max_cores>``.

    ``GrpTRESMins`` is a budget over the usage Slurm remembers, so slurm.conf needs
    ``PriorityUsageResetPeriod`` matching the facility's period (and ``AccountingStorageEnforce`` with
    ``limits``) for it to renew like the ledger's allocations. Each account is added (which fails harmlessly when
    it exists) and then modified, so the script can be run again after the quota file changes.
    """
    check_clashes(cfg)
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

    def user(name: str, acct: str, cores: int, extra: str = "") -> None:
        lines.append(f"sacctmgr -i add user {_sq(name)} account={acct}{extra} >/dev/null 2>&1 || true")
        lines.append(f"sacctmgr -i modify user where name={_sq(name)} account={acct} set MaxTRES=cpu={cores}")

    account(SLURM_ROOT, None, "User Batch: the user-computing share", int(share_cores(cfg)),
            cfg.user_capacity_core_hours)
    for a in sorted(check_user(a) for a in cfg.admins):
        lines.append(f"sacctmgr -i add coordinator account={SLURM_ROOT} names={_sq(a)}")
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
