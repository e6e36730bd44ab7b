"""The quota ledger: allocations, reservations and charges in core-hours, per user and per group.

A run is charged to (user, group). At submit its worst case — cores × max wall hours — is *reserved* against both
the user's and the group's allocation for the current period; when it ends the reservation is released and what
Spark actually used is *charged*. ``remaining = allocation − charged − reserved``. Every check-then-change runs in
:func:`userbatch.tables.db.transaction` with ``lock=True``, so concurrent submitters are serialised and the sum
of reservations can never pass an allocation.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import stat
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..errors import UserbatchError
from .config import FacilityConfig, Limits
from .models import ACTIVE_STATES, AuditRow, ChargeRow, GroupRow, MembershipRow, QuotaRow, RunRow, UserRow

log = logging.getLogger(__name__)


class QuotaExceeded(UserbatchError):
    """A run asks for more than the user's or group's allocation has left."""


def now() -> datetime:
    return datetime.now(timezone.utc)


def aware(ts: datetime) -> datetime:
    """``ts`` with a time zone: SQLite gives back naive datetimes for the UTC ones we store."""
    return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)


@dataclass
class Balance:
    """One allocation's state in a period, as ``userbatch quota show`` prints it."""

    subject_kind: str
    subject: str
    period: str
    core_hours: float
    used: float
    reserved: float
    max_cores: int
    running_cores: int
    storage_gb: float
    storage_used_gb: float

    @property
    def remaining(self) -> float:
        return self.core_hours - self.used - self.reserved

    def as_dict(self) -> dict:
        return {**asdict(self), "remaining": self.remaining}


def ensure_user(session: Session, cfg: FacilityConfig, name: str) -> UserRow:
    """The user's row, created on first sight with the quota the config gives (and its config groups)."""
    row = session.get(UserRow, name)
    if row is None:
        row = UserRow(name=name, is_admin=name in cfg.admins, active=True, created_at=now())
        session.add(row)
        session.flush()
        limits = cfg.users.get(name, cfg.user_defaults)
        _seed_quota(session, "user", name, limits)
        for g, spec in cfg.groups.items():
            if name in spec["members"]:
                ensure_group(session, cfg, g)
                if session.get(MembershipRow, (name, g)) is None:
                    session.add(MembershipRow(user=name, group=g))
        session.flush()
    return row


def ensure_group(session: Session, cfg: FacilityConfig, name: str) -> GroupRow:
    row = session.get(GroupRow, name)
    if row is None:
        spec = cfg.groups.get(name, {})
        row = GroupRow(name=name, description=spec.get("description", ""), created_at=now())
        session.add(row)
        session.flush()
        _seed_quota(session, "group", name, spec.get("limits") or cfg.group_defaults)
    return row


def _seed_quota(session: Session, kind: str, subject: str, limits: Limits) -> None:
    if session.get(QuotaRow, (kind, subject)) is None:
        session.add(QuotaRow(subject_kind=kind, subject=subject, core_hours=limits.core_hours,
                             max_cores=limits.max_cores, storage_gb=limits.storage_gb, updated_at=now(),
                             updated_by="config"))
        audit(session, "config", "quota.seed", kind, subject, None, asdict(limits))


def groups_of(session: Session, user: str) -> list[str]:
    return sorted(session.scalars(select(MembershipRow.group).where(MembershipRow.user == user)))


def audit(session: Session, actor: str, action: str, kind: str, subject: str, before, after) -> None:
    session.add(AuditRow(at=now(), actor=actor, action=action, subject_kind=kind, subject=subject,
                         before=json.dumps(before, sort_keys=True, default=str),
                         after=json.dumps(after, sort_keys=True, default=str)))


def set_quota(session: Session, actor: str, kind: str, subject: str, **limits) -> dict:
    """Change an allocation (admins only; checked by the caller) and audit the change."""
    if kind not in ("user", "group"):
        raise UserbatchError(f"a quota belongs to a user or a group, not {kind!r}")
    row = session.get(QuotaRow, (kind, subject))
    if row is None:
        raise UserbatchError(f"no {kind} {subject!r}; add it first ('userbatch admin {kind} add {subject}')")
    changes = {k: v for k, v in limits.items() if v is not None}
    for k, v in changes.items():
        if k not in ("core_hours", "max_cores", "storage_gb"):
            raise UserbatchError(f"unknown quota field {k!r}; use core_hours, max_cores, storage_gb")
        if v < 0:
            raise UserbatchError(f"quota {k} cannot be negative")
    before = {"core_hours": row.core_hours, "max_cores": row.max_cores, "storage_gb": row.storage_gb}
    for k, v in changes.items():
        setattr(row, k, int(v) if k == "max_cores" else float(v))
    row.updated_at, row.updated_by = now(), actor
    after = {"core_hours": row.core_hours, "max_cores": row.max_cores, "storage_gb": row.storage_gb}
    audit(session, actor, "quota.set", kind, subject, before, after)
    return after


def _subject_filter(model, kind: str, subject: str):
    return (model.user == subject) if kind == "user" else (model.group == subject)


def usage_series(session: Session, kind: str, subject: str, period: str) -> list[tuple[str, float]]:
    """Core-hours charged to a user or group in ``period`` as it grew: ``(ISO time, cumulative)`` after each charge,
    in time order (the same charges whose sum is a balance's ``used``)."""
    rows = session.execute(select(ChargeRow.at, ChargeRow.core_hours).where(
        _subject_filter(ChargeRow, kind, subject), ChargeRow.period == period).order_by(ChargeRow.at, ChargeRow.id))
    total, out = 0.0, []
    for at, hours in rows:
        total += float(hours or 0.0)
        out.append((at.isoformat(), total))
    return out


def balance(session: Session, cfg: FacilityConfig, kind: str, subject: str, period: str | None = None,
            exclude_run: str | None = None, storage: bool = True) -> Balance:
    """``storage=False`` skips walking the subject's table directories (the worker's concurrency check)."""
    period = period or cfg.period_label()
    q = session.get(QuotaRow, (kind, subject))
    if q is None:
        raise UserbatchError(f"no quota for {kind} {subject!r}")
    used = session.scalar(select(func.coalesce(func.sum(ChargeRow.core_hours), 0.0)).where(
        _subject_filter(ChargeRow, kind, subject), ChargeRow.period == period)) or 0.0
    active = select(RunRow).where(_subject_filter(RunRow, kind, subject), RunRow.state.in_(ACTIVE_STATES))
    if exclude_run:
        active = active.where(RunRow.id != exclude_run)
    runs = list(session.scalars(active))
    reserved = sum(r.reserved_core_hours for r in runs)
    running = sum(r.cores for r in runs if r.state in ("starting", "running"))
    return Balance(kind, subject, period, q.core_hours, float(used), float(reserved), q.max_cores, running,
                   q.storage_gb, storage_used_gb(session, kind, subject) if storage else 0.0)


def storage_used_gb(session: Session, kind: str, subject: str) -> float:
    """Every byte a user or group holds on the facility's disks, in GB: for a user, their tables (wherever they
    live), everything in their namespace ``u_<user>`` (dropped tables not yet vacuumed, a killed writer's staging
    files) and their runs' directories; for a group, its namespace ``g_<group>`` and the tables named in it (matched
    exactly: ``_`` is a LIKE wildcard, so it is escaped). Files are counted once, by inode, without following
    links. This walks directories: call it outside a locked transaction (:func:`storage_usage`)."""
    from ..config import settings
    from ..tables.catalog import _TableRow

    s = settings()
    if kind == "user":
        roots = [Path(p) for p in session.scalars(select(_TableRow.location).where(_TableRow.owner == subject))]
        roots.append(s.warehouse / f"u_{subject}")
        roots += [Path(p) for p in session.scalars(select(RunRow.run_dir).where(RunRow.user == subject))]
    else:
        roots = [Path(p) for p in session.scalars(select(_TableRow.location).where(
            _TableRow.name.startswith(f"g_{subject}.", autoescape=True)))]
        roots.append(s.warehouse / f"g_{subject}")
    return _bytes_under(roots) / 1e9


def _bytes_under(roots: list[Path]) -> int:
    seen: set[tuple[int, int]] = set()
    total = 0
    for root in roots:
        for dirpath, _dirs, files in os.walk(root, followlinks=False):
            for name in files:
                try:
                    st = os.lstat(os.path.join(dirpath, name))
                except OSError:
                    continue
                key = (st.st_dev, st.st_ino)
                if stat.S_ISREG(st.st_mode) and key not in seen:
                    seen.add(key)
                    total += st.st_size
    return total


def storage_usage(engine, user: str, group: str | None) -> dict[tuple[str, str], float]:
    """GB held by ``user`` and ``group``, measured in a read-only transaction before admission takes its lock (a
    walk of many files must not hold the ledger's write lock)."""
    from ..tables.db import transaction

    subjects = [("user", user)] + ([("group", group)] if group else [])
    with transaction(engine) as s:
        return {(k, n): storage_used_gb(s, k, n) for k, n in subjects}


def check_admission(session: Session, cfg: FacilityConfig, user: str, group: str | None, cores: int,
                    core_hours: float, exclude_run: str | None = None,
                    storage: dict[tuple[str, str], float] | None = None) -> None:
    """Raise QuotaExceeded unless both the user's and the group's allocation can take ``core_hours`` more and
    ``cores`` fits their concurrency limit at all; the message says how much is left. ``storage``: GB used per
    (kind, subject), measured beforehand by :func:`storage_usage` (None: storage is not checked)."""
    subjects = [("user", user)] + ([("group", group)] if group else [])
    for kind, subject in subjects:
        b = balance(session, cfg, kind, subject, exclude_run=exclude_run, storage=False)
        if storage is not None:
            b = dataclasses.replace(b, storage_used_gb=storage.get((kind, subject), 0.0))
        if cores > b.max_cores:
            raise QuotaExceeded(f"{kind} {subject} may use at most {b.max_cores} cores at once; this run asks for "
                                f"{cores} (ask for fewer cores)")
        if core_hours > b.remaining + 1e-9:
            raise QuotaExceeded(
                f"{kind} {subject} has {max(b.remaining, 0):.2f} core-hours left of {b.core_hours:.2f} in "
                f"{b.period} (used {b.used:.2f}, reserved by active runs {b.reserved:.2f}); this run reserves "
                f"{core_hours:.2f} ({cores} cores x {core_hours / max(cores, 1):.2f} h): ask for fewer cores or "
                f"a shorter --max-hours, or wait for running jobs to finish")
        if b.storage_gb and b.storage_used_gb >= b.storage_gb:
            raise QuotaExceeded(f"{kind} {subject} uses {b.storage_used_gb:.2f} GB of its {b.storage_gb:.2f} GB "
                                "storage quota; drop tables before writing more")


def fits_concurrency(session: Session, cfg: FacilityConfig, run: RunRow) -> bool:
    """Whether starting ``run`` now keeps the user's and group's running cores within their limits."""
    for kind, subject in [("user", run.user)] + ([("group", run.group)] if run.group else []):
        b = balance(session, cfg, kind, subject, exclude_run=run.id, storage=False)
        if b.running_cores + run.cores > b.max_cores:
            return False
    return True


def charge(session: Session, run: RunRow, core_hours: float, cpu_hours: float, source: str,
           used_core_hours: float | None = None) -> None:
    """Release the run's reservation and charge it, in one transaction with its final state.

    Parameters
    ----------
    core_hours : float
        The charge: reserved cores x wall time held, measured by the worker (Slurm's TRES-minutes model). Nothing
        the run writes changes it.
    cpu_hours : float
        Task CPU time from the run's event log (shown, not charged).
    source : str
        How ``core_hours`` was measured (``wall-clock``, ``never-started``).
    used_core_hours : float, optional
        Executor core-time from the run's event log: what the run says it used, shown beside the charge.
    """
    run.reserved_core_hours = 0.0
    run.charged_core_hours = core_hours
    session.add(ChargeRow(run_id=run.id, user=run.user, group=run.group, period=run.period,
                          core_hours=core_hours, cpu_hours=cpu_hours, used_core_hours=used_core_hours,
                          source=source, at=now()))
