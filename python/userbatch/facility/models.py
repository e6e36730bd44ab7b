"""The facility's tables: users, groups, quotas and their audit trail, tokens, runs, charges, workflows.

ORM rows only; the rules (who may do what, what a quota allows) live in :mod:`.ledger`, :mod:`.authz` and
:mod:`.service`. Every change here needs a migration in ``userbatch/migrations/versions`` (a test compares the two).
JSON payloads are stored as text so that SQLite and PostgreSQL hold exactly the same thing.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ..tables.db import Base

#: Run states, in the order a run moves through them; the last three are final.
STATES = ("queued", "starting", "running", "succeeded", "failed", "cancelled")
ACTIVE_STATES = ("queued", "starting", "running")
FINAL_STATES = ("succeeded", "failed", "cancelled")


class UserRow(Base):
    __tablename__ = "ub_users"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class GroupRow(Base):
    __tablename__ = "ub_groups"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class MembershipRow(Base):
    __tablename__ = "ub_memberships"
    user: Mapped[str] = mapped_column(String(64), ForeignKey("ub_users.name", ondelete="CASCADE"), primary_key=True)
    group: Mapped[str] = mapped_column(String(64), ForeignKey("ub_groups.name", ondelete="CASCADE"),
                                       primary_key=True)


class QuotaRow(Base):
    """An allocation: core-hours per accounting period, concurrent cores, storage; for a user or a group."""

    __tablename__ = "ub_quotas"
    subject_kind: Mapped[str] = mapped_column(String(8), primary_key=True)  # user | group
    subject: Mapped[str] = mapped_column(String(64), primary_key=True)
    core_hours: Mapped[float] = mapped_column(Float)
    max_cores: Mapped[int] = mapped_column(Integer)
    storage_gb: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_by: Mapped[str] = mapped_column(String(64))


class AuditRow(Base):
    """Who changed what: every quota, user, group and token change, with the values before and after."""

    __tablename__ = "ub_audit"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    subject_kind: Mapped[str] = mapped_column(String(16))
    subject: Mapped[str] = mapped_column(String(128))
    before: Mapped[str] = mapped_column(Text, default="null")
    after: Mapped[str] = mapped_column(Text, default="null")


class TokenRow(Base):
    """An API bearer token; only its SHA-256 digest is stored (tokens are 256-bit random, so no salt is needed)."""

    __tablename__ = "ub_tokens"
    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    user: Mapped[str] = mapped_column(String(64), ForeignKey("ub_users.name", ondelete="CASCADE"))
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    #: the run a delegated token belongs to (scope "run": acts as its owner while the run lives, nothing more)
    run_id: Mapped[str | None] = mapped_column(String(16), nullable=True)
    scope: Mapped[str] = mapped_column(String(16), default="user", server_default="user")


class RunRow(Base):
    """One submitted run: what it is, its reservation and charge, and where it stands."""

    __tablename__ = "ub_runs"
    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    user: Mapped[str] = mapped_column(String(64), index=True)
    group: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    kind: Mapped[str] = mapped_column(String(16))  # template | script | workflow
    name: Mapped[str] = mapped_column(String(128))
    spec: Mapped[str] = mapped_column(Text)  # JSON: template + resolved parameters, script file, workflow, pins
    state: Mapped[str] = mapped_column(String(16), index=True)
    stage: Mapped[str] = mapped_column(Text, default="")
    runner: Mapped[str] = mapped_column(String(16))
    cores: Mapped[int] = mapped_column(Integer)
    max_hours: Mapped[float] = mapped_column(Float)
    reserved_core_hours: Mapped[float] = mapped_column(Float, default=0.0)
    charged_core_hours: Mapped[float | None] = mapped_column(Float, nullable=True)
    period: Mapped[str] = mapped_column(String(16))
    submitted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    host: Mapped[str | None] = mapped_column(String(128), nullable=True)
    app_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str] = mapped_column(Text, default="")
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    run_dir: Mapped[str] = mapped_column(Text)
    result: Mapped[str] = mapped_column(Text, default="{}")  # JSON: outputs, inputs, spark conf, code version
    rerun_of: Mapped[str | None] = mapped_column(String(16), nullable=True)
    workflow_id: Mapped[str | None] = mapped_column(String(16), nullable=True)
    #: the worker that runs it renews this while it lives; a run whose lease lapsed is reconciled by any worker
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    worker_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    #: the batch system's id of the run (a Slurm job id); the run lives there whatever happens to the worker
    batch_id: Mapped[str | None] = mapped_column(String(64), nullable=True)


class ChargeRow(Base):
    """What a finished run cost, from its Spark event log; the sum over a period is the 'used' of a quota."""

    __tablename__ = "ub_charges"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(16), index=True)
    user: Mapped[str] = mapped_column(String(64), index=True)
    group: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    period: Mapped[str] = mapped_column(String(16), index=True)
    core_hours: Mapped[float] = mapped_column(Float)
    cpu_hours: Mapped[float] = mapped_column(Float, default=0.0)
    #: what the run's own event log says its executors held: shown beside the charge, never the charge
    used_core_hours: Mapped[float | None] = mapped_column(Float, nullable=True)
    source: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class WorkflowRow(Base):
    """A registered SQL workflow; with a schedule, the facility scheduler submits it when due."""

    __tablename__ = "ub_workflows"
    __table_args__ = (UniqueConstraint("owner", "name", name="uq_workflow_owner_name"),)
    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64))
    group: Mapped[str | None] = mapped_column(String(64), nullable=True)
    name: Mapped[str] = mapped_column(String(64))
    spec: Mapped[str] = mapped_column(Text)  # the workflow YAML
    schedule: Mapped[str | None] = mapped_column(String(64), nullable=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    next_run_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_run_id: Mapped[str | None] = mapped_column(String(16), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class WebSessionRow(Base):
    """A web UI sign-in: the browser holds a random secret in an HttpOnly cookie, the facility its SHA-256 digest.
    It acts with the token it was opened with, so revoking that token (or disabling the user) ends it too."""

    __tablename__ = "ub_web_sessions"
    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    user: Mapped[str] = mapped_column(String(64), ForeignKey("ub_users.name", ondelete="CASCADE"))
    token_id: Mapped[str] = mapped_column(String(16), ForeignKey("ub_tokens.id", ondelete="CASCADE"))
    #: the session's CSRF token: every form carries it, every POST is checked against it
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
