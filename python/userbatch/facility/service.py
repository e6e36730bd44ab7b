"""The facility's operations, one method each, for one caller: what the CLI runs in-process and the REST API runs
per request.

:class:`Identity` is who asks (user, groups, admin); :class:`Facility` checks what they may do — their own runs,
tables they can read, namespaces they can write (``u_<user>``, ``g_<group>`` of their groups, and namespaces the
config gives them), admin-only quota changes — and then acts through the ledger and the worker. Every method
returns plain data (dicts and lists), so the CLI prints the same thing whether it talks to this class or to the
API (:mod:`.client`).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import secrets
import shlex
import tarfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from ..config import settings
from ..errors import AccessDenied, UserbatchError
from ..tables.db import engine_for, transaction
from ..tables.names import parse_table_name
from . import ledger, upkeep
from .config import FacilityConfig, load_config
from .history_server import history_url
from .models import (
    ACTIVE_STATES,
    FINAL_STATES,
    AuditRow,
    GroupRow,
    MembershipRow,
    QuotaRow,
    RunRow,
    TokenRow,
    UserRow,
    WorkflowRow,
)

log = logging.getLogger(__name__)

_USER = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
#: The shortest time limit a run may ask for: below it a run cannot even start Spark, and a flood of such runs
#: would only churn the queue.
MIN_MAX_HOURS = 1 / 60


class RunNotFound(UserbatchError):
    """No run with that id."""


class AuthError(UserbatchError):
    """A missing, unknown or revoked API token."""


def _check_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or not _USER.match(name):
        raise UserbatchError(f"{kind} name {name!r} must be a lower-case identifier (a-z, 0-9, _; at most 32)")
    return name


@dataclass(frozen=True)
class Identity:
    """Who asks. ``run_id`` is set for a run's delegated token: it acts as its owner, never as an admin, and may
    not mint tokens, submit runs or change quotas."""

    user: str
    groups: tuple[str, ...] = ()
    is_admin: bool = False
    run_id: str | None = None

    @classmethod
    def lookup(cls, user: str, engine: Engine, config: FacilityConfig | None = None) -> "Identity":
        """The identity of ``user`` as the database knows it (created on first sight with the config's quota)."""
        config = config or load_config()
        _check_name("user", user)
        with transaction(engine, lock=True) as s:
            row = ledger.ensure_user(s, config, user)
            if not row.active:
                raise AuthError(f"user {user} is disabled")
            return cls(user, tuple(ledger.groups_of(s, user)), bool(row.is_admin))

    @classmethod
    def from_token(cls, token: str | None, engine: Engine) -> "Identity":
        if not token:
            raise AuthError("this request needs a bearer token (Authorization: Bearer <token>); "
                            "an admin creates one with 'userbatch admin token create USER'")
        if not isinstance(token, str) or len(token) > 256:
            raise AuthError("unknown or revoked token")
        digest = hashlib.sha256(token.encode()).hexdigest()
        now = ledger.now()
        # read-only first: a write in the same (deferred) SQLite transaction would have to upgrade its lock, and
        # concurrent first requests would then fail with "database is locked" instead of queueing
        with transaction(engine) as s:
            row = s.scalars(select(TokenRow).where(TokenRow.digest == digest)).first()
            identity = cls.from_token_row(s, row, now)
            token_id, last = row.id, row.last_used_at
        if last is None or (now - ledger.aware(last)).total_seconds() > 60:
            with transaction(engine, lock=True) as s:  # at most a write a minute per token, not one per request
                row = s.get(TokenRow, token_id)
                if row is not None:
                    row.last_used_at = now
        return identity

    @classmethod
    def from_token_row(cls, s, row: TokenRow | None, now) -> "Identity":
        """Who a stored token (read in session ``s``) stands for at ``now``, or :class:`AuthError` when it no
        longer stands for anyone: revoked, expired, its run ended, or its user disabled. The API's bearer tokens
        and the web UI's sessions (which act with the token they signed in with) both pass here."""
        if row is None or row.revoked:
            raise AuthError("unknown or revoked token")
        if row.expires_at is not None and ledger.aware(row.expires_at) <= now:
            raise AuthError(f"token {row.id} expired at {ledger.aware(row.expires_at).isoformat()}; "
                            "create a new one")
        if row.run_id:
            run = s.get(RunRow, row.run_id)
            if run is None or run.state not in ("starting", "running"):
                raise AuthError(f"the token of run {row.run_id} ended with its run")
        user = s.get(UserRow, row.user)
        if user is None or not user.active:
            raise AuthError(f"user {row.user} is disabled")
        return cls(user.name, tuple(ledger.groups_of(s, user.name)), bool(user.is_admin) and not row.run_id,
                   row.run_id)


class Facility:
    def __init__(self, identity: Identity | None = None, db_url: str | None = None,
                 config: FacilityConfig | None = None, start_worker: bool = True):
        self.db_url = db_url or settings().db_url
        self.engine = engine_for(self.db_url)
        self.config = config or load_config()
        self.identity = identity or Identity.lookup(settings().user, self.engine, self.config)
        self.start_worker = start_worker

    @property
    def user(self) -> str:
        return self.identity.user

    # ------------------------------------------------------------------------------------------- helpers
    def _catalog(self):
        from ..tables.catalog import Catalog

        return Catalog(db_url=self.db_url, user=self.user, groups=self.identity.groups)

    def write_namespaces(self) -> list[str]:
        if self.identity.is_admin:
            return ["*"]
        spaces = [f"u_{self.user}"] + [f"g_{g}" for g in self.identity.groups]
        for ns, spec in self.config.namespaces.items():
            if (spec or {}).get("owner") == self.user or (spec or {}).get("group") in self.identity.groups:
                spaces.append(ns)
        return spaces

    def check_writable(self, table: str) -> None:
        ns, _ = parse_table_name(table)
        spaces = self.write_namespaces()
        if "*" not in spaces and ns not in spaces:
            raise AccessDenied(f"{self.user} may write tables only in {', '.join(spaces)}; {table} is in {ns} "
                               f"(write to u_{self.user}.<name>)")

    # ------------------------------------------------------------------------------------------- catalog
    #: Table fields a caller may change (the location, owner and format are the facility's).
    UPDATABLE = frozenset({"visibility", "group", "description", "properties", "margin_radius_arcsec"})

    def register_table(self, entry) -> Any:
        """Register ``entry`` for the caller, as the facility allows: in a namespace they may write, at the location
        the facility chooses, owned by them; the directory gets the owner and mode its visibility says.

        Parameters
        ----------
        entry : TableEntry
            What the caller asks for (its ``owner`` and ``location`` are replaced by the facility's).

        Returns
        -------
        TableEntry
            The registered entry.
        """
        from . import storage

        self.check_writable(entry.name)
        cat = self._catalog()
        expected = cat.default_location(entry.name)
        if entry.location and Path(entry.location).resolve() != Path(expected).resolve():
            raise AccessDenied(f"{entry.name} must live at {expected} (the facility places tables); "
                               f"got {entry.location}")
        if entry.group and entry.group not in self.identity.groups and not self.identity.is_admin:
            raise AccessDenied(f"{self.user} is not a member of group {entry.group}")
        entry = entry.replace(owner=self.user, location=expected)
        storage.ensure_namespace(self.config, cat.warehouse, entry.namespace)
        entry = cat.register(entry)
        storage.apply_table(self.config, entry)
        return entry

    def update_table(self, name: str, changes: dict) -> Any:
        """Change a table of the caller's (visibility, group, description, properties); a visibility change
        changes the directory's mode and group with it (:mod:`.storage`)."""
        from . import storage

        bad = sorted(set(changes) - self.UPDATABLE)
        if bad:
            raise UserbatchError(f"cannot change {', '.join(bad)} of a table; changeable: "
                                 f"{', '.join(sorted(self.UPDATABLE))}")
        group = changes.get("group")
        if group and group not in self.identity.groups and not self.identity.is_admin:
            raise AccessDenied(f"{self.user} is not a member of group {group}")
        entry = self._catalog().update(name, **changes)
        storage.apply_table(self.config, entry)
        return entry

    # ------------------------------------------------------------------------------------------- upkeep
    def vacuum(self, table: str | None = None, all_tables: bool = False, retain_days: float | None = None,
               dry_run: bool = False, min_age_hours: float | None = None) -> dict:
        """Delete what no version worth keeping reads (:mod:`.upkeep`); owners their tables, admins any.

        Parameters
        ----------
        table : str, optional
            One table; or ``all_tables`` for every table the caller owns (all, for an admin) and dropped tables'
            directories in the caller's namespaces.
        all_tables : bool
            See ``table``.
        retain_days : float, optional
            Versions committed within this many days stay readable (default 7).
        dry_run : bool
            Only report what would go.
        min_age_hours : float, optional
            Files no version reads are kept while younger than this (default 24: a write may be in progress).

        Returns
        -------
        dict
            ``{"tables": [report, ...], "total": {"tables", "files", "bytes", "log_files"}}``.
        """
        from ..tables.maintenance import DEFAULT_MIN_AGE_HOURS, DEFAULT_RETAIN_DAYS

        self._not_delegated("vacuum tables")
        return upkeep.vacuum(self, table, all_tables,
                             DEFAULT_RETAIN_DAYS if retain_days is None else float(retain_days), dry_run,
                             DEFAULT_MIN_AGE_HOURS if min_age_hours is None else float(min_age_hours))

    def optimize(self, table: str) -> dict:
        """Compact a table the caller owns (admins: any) into one file per partition, splitting partitions past
        the threshold; a new version with provenance ``optimize``."""
        self._not_delegated("optimize tables")
        return upkeep.optimize(self, table)

    def restore(self, table: str, version: int) -> dict:
        """Commit a new version of a table the caller owns (admins: any) equal to ``version``."""
        self._not_delegated("restore tables")
        return upkeep.restore(self, table, version)

    def fsck(self, repair: bool = False) -> list[dict]:
        """Where catalog and file system disagree (owner, group, mode of namespaces and tables); admins."""
        from ..tables.catalog import Catalog
        from . import storage

        self._require_admin("check the file system")
        cat = Catalog(db_url=self.db_url, user=self.user, groups=self.identity.groups)
        with transaction(self.engine) as s:
            from ..tables.catalog import _TableRow, _to_entry

            entries = [_to_entry(r) for r in s.scalars(select(_TableRow))]
        return storage.fsck(self.config, cat.warehouse, entries, repair=repair)

    def _require_admin(self, what: str) -> None:
        if not self.identity.is_admin:
            raise AccessDenied(f"only an admin may {what}")

    def _own_run(self, s, run_id: str) -> RunRow:
        if not isinstance(run_id, str) or not re.fullmatch(r"[0-9a-f]{4,16}", run_id):
            raise RunNotFound(f"{run_id!r} is not a run id ('userbatch runs' lists yours)")
        run = s.get(RunRow, run_id)
        if run is None:
            raise RunNotFound(f"no run {run_id}; 'userbatch runs' lists yours")
        if run.user != self.user and not self.identity.is_admin:
            raise AccessDenied(f"run {run_id} belongs to {run.user}")
        return run

    def _group_for(self, group: str | None) -> str | None:
        if group is None:
            return None
        if group not in self.identity.groups and not self.identity.is_admin:
            raise AccessDenied(f"{self.user} is not a member of group {group}; "
                               f"their groups: {', '.join(self.identity.groups) or 'none'}")
        return group

    # ------------------------------------------------------------------------------------------- submit
    def submit(self, template: str | None = None, params: dict | None = None, job_file: str | None = None,
               script: tuple[str, str] | None = None, script_args: list[str] | None = None,
               workflow: str | None = None, group: str | None = None, cores: int | None = None,
               max_hours: float | None = None, pins: dict | None = None, output_map: dict | None = None,
               rerun_of: str | None = None, workflow_id: str | None = None, spark_conf: dict | None = None,
               bps: dict | None = None) -> dict:
        """Queue a run and return it at once. Exactly one of ``template`` (with ``params``/``job_file``),
        ``script`` (file name, text), ``workflow`` (YAML text) or ``bps`` (a BPS GenericWorkflow prepared by the
        userbatch WMS plugin: ``{"name": ..., "submit_path": ...}``, executed by :mod:`userbatch.images`)."""
        self._not_delegated("submit runs")
        chosen = [x for x in (template or job_file, script, workflow, bps) if x]
        if len(chosen) != 1:
            raise UserbatchError("submit exactly one of: a template (with -p/--file), --script, or a workflow")
        cores = int(cores or self.config.default_cores)
        max_hours = float(max_hours or self.config.default_max_hours)
        if cores < 1 or not (MIN_MAX_HOURS <= max_hours <= 24 * 31):
            raise UserbatchError(f"cores must be >= 1 and max-hours in [{MIN_MAX_HOURS:g}, 744] "
                                 f"({MIN_MAX_HOURS * 60:g} minutes at least: a run needs time to start)")
        group = self._group_for(group)
        output_map = dict(output_map or {})
        spec: dict[str, Any] = {"pins": dict(pins or {}), "output_map": output_map,
                                "groups": list(self.identity.groups), "spark_conf": dict(spark_conf or {})}
        from . import run_kinds

        if template or job_file:
            kind, payload = "template", (template, params, job_file)
        elif bps:
            kind, payload = "bps", bps
        elif script:
            kind, payload = "script", script
        else:
            kind, payload = "workflow", workflow
        prepared = run_kinds.get(kind).prepare(self, payload, {"script_args": script_args})
        name, reads, writes = prepared.name, prepared.reads, prepared.writes
        spec.update({k: v for k, v in prepared.spec.items() if k != "pins"})
        spec["pins"] = {**prepared.spec.get("pins", {}), **spec["pins"]}  # the caller's pins win
        for table in writes:
            self.check_writable(output_map.get(table, table))
        for table in output_map.values():
            self.check_writable(table)
        catalog = self._catalog()
        for table in reads:
            catalog.get(table)  # TableNotFound / AccessDenied before anything is queued
        spec["write_namespaces"] = self.write_namespaces()
        run_id = uuid.uuid4().hex[:12]
        run_dir = settings().home / "runs" / run_id
        core_hours = cores * max_hours
        storage = ledger.storage_usage(self.engine, self.user, group)  # a walk of files: before the lock
        with transaction(self.engine, lock=True) as s:
            queued = s.scalar(select(func.count()).select_from(RunRow).where(
                RunRow.user == self.user, RunRow.state == "queued")) or 0
            if queued >= self.config.max_queued_runs:
                raise ledger.QuotaExceeded(f"{self.user} already has {queued} runs queued (at most "
                                           f"{self.config.max_queued_runs}); wait for some to start or cancel them")
            ledger.check_admission(s, self.config, self.user, group, cores, core_hours, storage=storage)
            run_dir.parent.mkdir(parents=True, exist_ok=True)
            run_dir.mkdir(mode=0o700)
            for fname, text in prepared.files.items():
                (run_dir / fname).write_text(text)
            spec.update(run_id=run_id, kind=kind, name=name, user=self.user, group=group)
            (run_dir / "spec.json").write_text(json.dumps(spec, indent=2, default=str))
            s.add(RunRow(id=run_id, user=self.user, group=group, kind=kind, name=name,
                         spec=json.dumps(spec, default=str), state="queued", stage="queued",
                         runner=self.config.runner.get("kind", "local"), cores=cores, max_hours=max_hours,
                         reserved_core_hours=core_hours, period=self.config.period_label(),
                         submitted_at=ledger.now(), run_dir=str(run_dir), rerun_of=rerun_of,
                         workflow_id=workflow_id, error="", result="{}", cancel_requested=False))
        log.info("run %s queued: %s %s for %s (%d cores, %.2f h)", run_id, kind, name, self.user, cores, max_hours)
        if self.start_worker:
            from .worker_lock import ensure_worker

            ensure_worker(self.db_url)
        return self.status(run_id)

    def check_own_directory(self, path: Path) -> None:
        """A run may name only a directory its submitter prepared (a ``bps`` run's submit directory): in multi-user
        mode it must belong to the submitter's OS account, or to the facility's own (prepared in-process), or the
        worker would run someone else's work as this user."""
        from .accounts import account_name, effective_mode

        if effective_mode(self.config.identity) != "os":
            return
        import os
        import pwd

        try:
            uid = path.stat().st_uid
            owner = pwd.getpwuid(uid).pw_name
        except (KeyError, OSError):
            uid, owner = -1, None
        # the submitter's own account, or the facility's (a workflow the facility prepared in-process)
        if owner != account_name(self.config.identity, self.user) and uid != os.geteuid():
            raise AccessDenied(f"{path} is not {self.user}'s submit directory (it belongs to {owner or 'nobody'})")

    def check_quota(self, cores: int, max_hours: float, group: str | None = None) -> None:
        """Would a run of ``cores`` x ``max_hours`` be admitted now? QuotaExceeded if not (nothing is reserved):
        for work that costs something to prepare (a QuantumGraph) before it is submitted."""
        group = self._group_for(group)
        storage = ledger.storage_usage(self.engine, self.user, group)
        with transaction(self.engine) as s:
            ledger.check_admission(s, self.config, self.user, group, int(cores), int(cores) * float(max_hours),
                                   storage=storage)

    # ------------------------------------------------------------------------------------------- runs
    def status(self, run_id: str) -> dict:
        """One run of the caller's (an admin: anyone's): its state, progress, spec, result and, once it has a Spark
        application id, ``history_url``, its page in the Spark History Server that ``userbatch serve`` runs."""
        with transaction(self.engine) as s:
            d = _run_dict(self._own_run(s, run_id))
        if d.get("app_id"):
            d["history_url"] = history_url(d["app_id"], self.config.history_port)
        return d

    def runs(self, user: str | None = None, state: str | None = None, all_users: bool = False,
             limit: int = 100) -> list[dict]:
        if (all_users or (user and user != self.user)) and not self.identity.is_admin:
            raise AccessDenied("only an admin may list other users' runs")
        stmt = select(RunRow).order_by(RunRow.submitted_at.desc()).limit(limit)
        if not all_users:
            stmt = stmt.where(RunRow.user == (user or self.user))
        if state:
            if state not in ("queued", "starting", "running", *FINAL_STATES, "active"):
                raise UserbatchError(f"unknown state {state!r}")
            stmt = stmt.where(RunRow.state.in_(ACTIVE_STATES) if state == "active" else RunRow.state == state)
        with transaction(self.engine) as s:
            return [_run_dict(r, brief=True) for r in s.scalars(stmt)]

    def logs(self, run_id: str, tail: int | None = 200) -> str:
        with transaction(self.engine) as s:
            run = self._own_run(s, run_id)
        from .runfiles import tail_lines

        return tail_lines(Path(run.run_dir) / "driver.log", tail)

    def cancel(self, run_id: str) -> dict:
        with transaction(self.engine, lock=True) as s:
            run = self._own_run(s, run_id)
            if run.state in FINAL_STATES:
                raise UserbatchError(f"run {run_id} already ended ({run.state})")
            run.cancel_requested = True
            if run.state == "queued":
                run.state, run.ended_at, run.stage = "cancelled", ledger.now(), "cancelled"
                ledger.charge(s, run, 0.0, 0.0, "never-started")
        if self.start_worker:
            from .worker_lock import ensure_worker

            ensure_worker(self.db_url)
        return self.status(run_id)

    def wait(self, run_id: str, timeout_s: float = 600, poll_s: float = 0.5) -> dict:
        return wait_for_run(self.status, run_id, timeout_s, poll_s)

    def results(self, run_id: str) -> dict:
        run = self.status(run_id)
        res = run.get("result") or {}
        out = {"id": run_id, "state": run["state"], "outputs": res.get("outputs", []),
               "inputs": res.get("inputs", [])}
        if res.get("mlflow"):
            out["mlflow"] = res["mlflow"]
        return out

    # ------------------------------------------------------------------------------------------- reproduce
    def rerun(self, run_id: str, output_map: dict | None = None, wait: bool = False) -> dict:
        """Submit the run again with every input pinned to the version it read; outputs go to
        ``<table>_rerun_<id>`` unless ``output_map`` says otherwise."""
        from . import run_kinds

        with transaction(self.engine) as s:
            run = self._own_run(s, run_id)
            spec, result = json.loads(run.spec), json.loads(run.result or "{}")
            spec.setdefault("script_text", None)
            if spec.get("kind") == "script" and not spec["script_text"]:  # a run queued before the text was kept
                spec["script_text"] = (Path(run.run_dir) / spec["script"]).read_text()
            run_kinds.get(spec["kind"]).rerun(spec)  # a kind that cannot be rerun says so first
            if run.state != "succeeded":
                raise UserbatchError(f"run {run_id} did not succeed ({run.state}); only a finished run has pinned "
                                     "inputs to rerun from")
            cores, max_hours, group = run.cores, run.max_hours, run.group
        pins = {**result.get("catalog_versions", {}), **{i["table"]: i["version"] for i in result.get("inputs", [])},
                **spec.get("pins", {})}
        tag = uuid.uuid4().hex[:6]
        outputs = [o["table"] for o in result.get("outputs", [])]
        original_names = {v: k for k, v in spec.get("output_map", {}).items()}
        mapping = {}
        for out in outputs:
            orig = original_names.get(out, out)
            ns, t = parse_table_name(out)
            mapping[orig] = f"{ns}.{t[:50]}_rerun_{tag}"
        mapping.update(output_map or {})
        for t in outputs:  # outputs are not inputs of the rerun, even if the original read them back
            pins.pop(t, None)
        common = dict(group=group, cores=cores, max_hours=max_hours, pins=pins, output_map=mapping,
                      rerun_of=run_id, spark_conf=spec.get("spark_conf"))
        new = self.submit(**run_kinds.get(spec["kind"]).rerun(spec), **common)
        return self.wait(new["id"]) if wait else new

    def export(self, run_id: str, dest: str | Path) -> Path:
        """A self-contained bundle (tar.gz) to run this job elsewhere: the job (template + entry script, or the
        user's script, or the workflow), resolved parameters, pinned input versions, and the submit command."""
        from . import run_kinds
        from ..cluster.base import SubmitSpec
        from ..cluster.local import LocalRunner

        with transaction(self.engine) as s:
            run = self._own_run(s, run_id)
            spec, result = json.loads(run.spec), json.loads(run.result or "{}")
            cores, rdir = run.cores, Path(run.run_dir)
        catalog = self._catalog()
        inputs = []
        for i in result.get("inputs", []):
            entry = catalog.get(i["table"])
            inputs.append({"table": i["table"], "version": i["version"], "location": entry.location,
                           "format": entry.format})
        pins = {i["table"]: i["version"] for i in inputs}
        bundle_spec = {**spec, "pins": {**spec.get("pins", {}), **pins}, "exported_from": run_id}
        files: dict[str, bytes] = {}
        files["spec.json"] = json.dumps(bundle_spec, indent=2, default=str).encode()
        files["inputs.json"] = json.dumps(inputs, indent=2).encode()
        files["result.json"] = json.dumps(result, indent=2, default=str).encode()
        if spec.get("kind") == "script" and not spec.get("script_text"):  # a run queued before the text was kept
            spec["script_text"] = (rdir / spec["script"]).read_text()
        files.update(run_kinds.get(spec["kind"]).export_files(spec))
        argv = LocalRunner().argv(SubmitSpec(run_id="$RUN_ID", run_dir="$BUNDLE", user=spec["user"], cores=cores))
        argv[-2] = "$(python -c 'import userbatch.facility.driver as d; print(d.__file__)')"
        env = {"USERBATCH_PINS": json.dumps(bundle_spec["pins"]), "USERBATCH_OUTPUT_MAP": json.dumps(
            spec.get("output_map", {})), "USERBATCH_RUN_ID": "$RUN_ID",
            "USERBATCH_JOB": f"{spec['kind']}:{spec['name']}"}
        lines = ["#!/usr/bin/env bash",
                 f"# Re-run userbatch run {run_id} ({spec['kind']} {_one_line(spec['name'])}) with its inputs pinned.",
                 "# Needs: the userbatch package, and the input tables (inputs.json: name, version, location)",
                 "# registered in this site's catalog under the same names.",
                 "set -euo pipefail", 'BUNDLE="$(cd "$(dirname "$0")" && pwd)"', 'RUN_ID="${RUN_ID:-export'
                 + run_id[:6] + '}"', 'export PYSPARK_PYTHON="${PYSPARK_PYTHON:-$(command -v python)}"',
                 'export USERBATCH_TEMPLATE_PATH="$BUNDLE/templates"']
        # only the bundle's own $RUN_ID expands; every other value is quoted whole (a table name or output-map key
        # holding "$(...)" or "`...`" stays text)
        lines += [f'export {k}="$RUN_ID"' if v == "$RUN_ID" else f"export {k}={shlex.quote(v)}"
                  for k, v in env.items()]
        lines.append(" ".join(a if a.startswith(("$", '"$')) else shlex.quote(a) for a in argv))
        files["submit.sh"] = ("\n".join(lines) + "\n").encode()
        files["README.md"] = (f"# userbatch run {run_id}\n\n{spec['kind']} `{spec['name']}` by {spec['user']}; "
                              f"inputs pinned in inputs.json; run `bash submit.sh` (or set SPARK_MASTER and "
                              "edit --master for a cluster).\n").encode()
        dest = Path(dest)
        if dest.is_dir():
            dest = dest / f"userbatch-run-{run_id}.tar.gz"
        with tarfile.open(dest, "w:gz") as tar:
            for name, data in files.items():
                info = tarfile.TarInfo(f"userbatch-run-{run_id}/{name}")
                info.size, info.mode = len(data), 0o755 if name.endswith(".sh") else 0o644
                tar.addfile(info, io.BytesIO(data))
        return dest

    def provenance(self, table: str, version: int | None = None, depth: int = 8) -> dict:
        """How a table version came to be, and recursively its inputs' (tables the caller can read)."""
        from ..tables import delta

        catalog = self._catalog()

        def walk(name: str, ver: int | None, level: int, seen: set) -> dict:
            entry = catalog.get(name)
            node: dict[str, Any] = {"table": name, "version": ver}
            if entry.format != "delta":
                node["note"] = f"{entry.format} table: no history"
                return node
            hist = delta.history(entry.location)
            if not hist:
                return node
            if ver is None:
                ver = hist[0]["version"]
                node["version"] = ver
            commit = next((h for h in hist if h["version"] == ver), None)
            if commit is None:
                raise UserbatchError(f"{name} has no version {ver}; "
                                     f"versions {hist[-1]['version']}..{hist[0]['version']}")
            p = commit["provenance"]
            node.update(run_id=p.get("run_id"), job=p.get("job"), user=p.get("user"), group=p.get("group"),
                        code_version=p.get("code_version"), timestamp=str(commit["timestamp"]),
                        parameters=p.get("parameters", {}), inputs=[])
            if (name, ver) in seen or level >= depth:
                return node
            seen.add((name, ver))
            for i in p.get("inputs", []):
                if i.get("table"):
                    try:
                        node["inputs"].append(walk(i["table"], i.get("version"), level + 1, seen))
                    except UserbatchError as e:
                        node["inputs"].append({"table": i["table"], "version": i.get("version"), "note": str(e)})
                else:
                    node["inputs"].append({k: v for k, v in i.items()})
            return node

        return walk(table, version, 0, set())

    # ------------------------------------------------------------------------------------------- quotas
    def quota_show(self, user: str | None = None) -> dict:
        user = user or self.user
        if user != self.user and not self.identity.is_admin:
            raise AccessDenied("only an admin may see another user's quota")
        with transaction(self.engine, lock=True) as s:
            ledger.ensure_user(s, self.config, _check_name("user", user))
            groups = ledger.groups_of(s, user)
            out = {"user": ledger.balance(s, self.config, "user", user).as_dict(),
                   "groups": [ledger.balance(s, self.config, "group", g).as_dict() for g in groups]}
            out["usage"] = [{"subject_kind": b["subject_kind"], "subject": b["subject"], "period": b["period"],
                             "allocation": b["core_hours"],
                             "points": ledger.usage_series(s, b["subject_kind"], b["subject"], b["period"])}
                            for b in [out["user"], *out["groups"]]]
        out["storage"] = upkeep.storage_view(self, user, groups)
        return out

    def quota_set(self, kind: str, subject: str, core_hours: float | None = None, max_cores: int | None = None,
                  storage_gb: float | None = None) -> dict:
        self._require_admin("change quotas")
        _check_name(kind, subject)
        with transaction(self.engine, lock=True) as s:
            if kind == "user":
                ledger.ensure_user(s, self.config, subject)
            elif kind == "group":
                ledger.ensure_group(s, self.config, subject)
            return ledger.set_quota(s, self.user, kind, subject, core_hours=core_hours, max_cores=max_cores,
                                    storage_gb=storage_gb)

    def quotas(self) -> list[dict]:
        """Every allocation's balance this period, users first (admins)."""
        self._require_admin("list quotas")
        with transaction(self.engine) as s:
            rows = list(s.scalars(select(QuotaRow).order_by(QuotaRow.subject_kind.desc(), QuotaRow.subject)))
            return [ledger.balance(s, self.config, q.subject_kind, q.subject).as_dict() for q in rows]

    def audit_log(self, limit: int = 50) -> list[dict]:
        self._require_admin("read the audit log")
        with transaction(self.engine) as s:
            rows = s.scalars(select(AuditRow).order_by(AuditRow.id.desc()).limit(limit))
            return [{"at": str(r.at), "actor": r.actor, "action": r.action, "subject": f"{r.subject_kind}:{r.subject}",
                     "before": json.loads(r.before), "after": json.loads(r.after)} for r in rows]

    def capacity(self) -> dict:
        cfg = self.config
        with transaction(self.engine) as s:
            quotas = list(s.scalars(select(QuotaRow)))
        users = sum(q.core_hours for q in quotas if q.subject_kind == "user")
        groups = sum(q.core_hours for q in quotas if q.subject_kind == "group")
        cap = cfg.user_capacity_core_hours
        allocated = users + groups
        warnings = []
        if allocated > cap:
            warnings.append(f"allocations ({allocated:,.0f} core-hours per {cfg.period}) exceed the user-computing "
                            f"capacity ({cap:,.0f} = {cfg.total_cores} cores x {cfg.user_fraction:.0%} x "
                            f"{cap / (cfg.total_cores * cfg.user_fraction):,.0f} h) by {allocated / cap - 1:.0%}")
        return {"total_cores": cfg.total_cores, "user_fraction": cfg.user_fraction, "period": cfg.period,
                "user_capacity_core_hours": cap, "allocated_user_core_hours": users,
                "allocated_group_core_hours": groups, "allocated_core_hours": allocated,
                "allocated_fraction": allocated / cap if cap else None,
                "user_max_cores_total": sum(q.max_cores for q in quotas if q.subject_kind == "user"),
                "warnings": warnings}

    # ------------------------------------------------------------------------------------------- admin
    def add_user(self, name: str, admin: bool = False, groups: list[str] | None = None) -> dict:
        self._require_admin("add users")
        _check_name("user", name)
        with transaction(self.engine, lock=True) as s:
            row = ledger.ensure_user(s, self.config, name)
            if admin and not row.is_admin:
                row.is_admin = True
            for g in groups or []:
                ledger.ensure_group(s, self.config, _check_name("group", g))
                if s.get(MembershipRow, (name, g)) is None:
                    s.add(MembershipRow(user=name, group=g))
            ledger.audit(s, self.user, "user.add", "user", name, None, {"admin": bool(row.is_admin),
                                                                         "groups": groups or []})
            out = {"user": name, "admin": bool(row.is_admin), "groups": ledger.groups_of(s, name)}
        return {**out, **self._os_identity(name, out["groups"])}

    def _os_identity(self, user: str | None, groups: list[str]) -> dict:
        """Create (root) or find the OS account and groups of a facility user / group; {} when single-user."""
        from .accounts import account_name, effective_mode, ensure_os_group, ensure_os_user, group_name

        if effective_mode(self.config.identity) != "os":
            return {}
        ident = self.config.identity
        out: dict[str, Any] = {"os_groups": {g: [group_name(ident, g), ensure_os_group(ident, g)] for g in groups}}
        if user:
            out["os_account"] = [account_name(ident, user), ensure_os_user(ident, user)[0]]
        return out

    def add_group(self, name: str, members: list[str] | None = None, description: str = "") -> dict:
        self._require_admin("add groups")
        _check_name("group", name)
        with transaction(self.engine, lock=True) as s:
            g = ledger.ensure_group(s, self.config, name)
            if description:
                g.description = description
            for m in members or []:
                ledger.ensure_user(s, self.config, _check_name("user", m))
                if s.get(MembershipRow, (m, name)) is None:
                    s.add(MembershipRow(user=m, group=name))
            ledger.audit(s, self.user, "group.add", "group", name, None, {"members": members or []})
            members_now = sorted(s.scalars(select(MembershipRow.user).where(MembershipRow.group == name)))
        for m in members_now:
            self._os_identity(m, [])
        return {"group": name, "members": members_now, **self._os_identity(None, [name])}

    def _not_delegated(self, what: str) -> None:
        if self.identity.run_id:
            raise AccessDenied(f"a run's token cannot {what}; it acts only as its owner on the catalog while the "
                               "run lives")

    def create_token(self, user: str | None = None, label: str = "", expires_days: float | None = None) -> dict:
        """A new API token for ``user`` (yourself, or anyone for an admin); the plaintext is returned once.

        Parameters
        ----------
        user : str, optional
            Whose token (default: the caller's).
        label : str
            A note to tell tokens apart in ``token list``.
        expires_days : float, optional
            Lifetime in days (default: the config's ``tokens.default_days``).
        """
        from datetime import timedelta

        self._not_delegated("create tokens")
        user = user or self.user
        if user != self.user:
            self._require_admin("create tokens for other users")
        days = self.config.token_days if expires_days is None else float(expires_days)
        if not 0 < days <= 3660:
            raise UserbatchError("a token lives between a moment and 10 years: --expires-days in (0, 3660]")
        token = "ub_" + secrets.token_urlsafe(32)
        tid = uuid.uuid4().hex[:12]
        expires = ledger.now() + timedelta(days=days)
        with transaction(self.engine, lock=True) as s:
            ledger.ensure_user(s, self.config, _check_name("user", user))
            s.add(TokenRow(id=tid, user=user, digest=hashlib.sha256(token.encode()).hexdigest(), label=label[:128],
                           created_at=ledger.now(), revoked=False, expires_at=expires, scope="user"))
            ledger.audit(s, self.user, "token.create", "user", user, None, {"token_id": tid, "label": label,
                                                                           "expires_at": expires.isoformat()})
        return {"id": tid, "user": user, "token": token, "expires_at": expires.isoformat()}

    def tokens(self, user: str | None = None) -> list[dict]:
        """Your tokens (anyone's for an admin): id, label, scope, expiry, last use; never the token itself."""
        user = user or self.user
        if user != self.user:
            self._require_admin("list other users' tokens")
        with transaction(self.engine) as s:
            rows = s.scalars(select(TokenRow).where(TokenRow.user == user).order_by(TokenRow.created_at))
            return [{"id": r.id, "user": r.user, "label": r.label, "scope": r.scope, "run_id": r.run_id,
                     "created_at": _iso(r.created_at), "expires_at": _iso(r.expires_at),
                     "last_used_at": _iso(r.last_used_at), "revoked": bool(r.revoked)} for r in rows]

    def revoke_token(self, token_id: str) -> dict:
        self._not_delegated("revoke tokens")
        with transaction(self.engine, lock=True) as s:
            row = s.get(TokenRow, token_id) if isinstance(token_id, str) else None
            if row is None or (row.user != self.user and not self.identity.is_admin):
                raise UserbatchError(f"no token {token_id} of yours")
            row.revoked = True
            ledger.audit(s, self.user, "token.revoke", "user", row.user, None, {"token_id": token_id})
        return {"id": token_id, "revoked": True}

    def revoke_all_tokens(self, user: str | None = None) -> dict:
        """Revoke every token of ``user`` (yourself, or anyone for an admin): a lost laptop, a leaked token."""
        self._not_delegated("revoke tokens")
        user = user or self.user
        if user != self.user:
            self._require_admin("revoke other users' tokens")
        with transaction(self.engine, lock=True) as s:
            rows = list(s.scalars(select(TokenRow).where(TokenRow.user == user, TokenRow.revoked.is_(False))))
            for r in rows:
                r.revoked = True
            ledger.audit(s, self.user, "token.revoke_all", "user", user, None, {"count": len(rows)})
        return {"user": user, "revoked": len(rows)}

    def set_admin(self, user: str, admin: bool) -> dict:
        """Make ``user`` an admin or demote them (admins; audited)."""
        self._require_admin("change who is an admin")
        with transaction(self.engine, lock=True) as s:
            row = ledger.ensure_user(s, self.config, _check_name("user", user))
            before = bool(row.is_admin)
            row.is_admin = bool(admin)
            ledger.audit(s, self.user, "user.admin", "user", user, {"admin": before}, {"admin": bool(admin)})
        return {"user": user, "admin": bool(admin)}

    def set_active(self, user: str, active: bool) -> dict:
        """Disable a user (admins; audited): their tokens stop working, their queued runs are refused and their
        running runs are stopped by the worker. ``active=True`` enables them again (tokens stay revoked)."""
        self._require_admin("disable or enable users")
        if user == self.user and not active:
            raise UserbatchError("an admin cannot disable themselves; ask another admin")
        stopped = refused = 0
        with transaction(self.engine, lock=True) as s:
            row = ledger.ensure_user(s, self.config, _check_name("user", user))
            row.active = bool(active)
            if not active:
                for t in s.scalars(select(TokenRow).where(TokenRow.user == user, TokenRow.revoked.is_(False))):
                    t.revoked = True
                for run in s.scalars(select(RunRow).where(RunRow.user == user, RunRow.state.in_(ACTIVE_STATES))):
                    run.cancel_requested = True
                    if run.state == "queued":
                        run.state, run.ended_at, run.stage = "cancelled", ledger.now(), "cancelled"
                        run.error = f"user {user} was disabled by {self.user}"
                        ledger.charge(s, run, 0.0, 0.0, "never-started")
                        refused += 1
                    else:
                        stopped += 1
            ledger.audit(s, self.user, "user.enable" if active else "user.disable", "user", user, None,
                         {"active": bool(active), "runs_refused": refused, "runs_stopped": stopped})
        return {"user": user, "active": bool(active), "runs_refused": refused, "runs_stopping": stopped}

    def users(self) -> list[dict]:
        self._require_admin("list users")
        with transaction(self.engine) as s:
            return [{"user": u.name, "admin": u.is_admin, "active": u.active, "groups": ledger.groups_of(s, u.name)}
                    for u in s.scalars(select(UserRow).order_by(UserRow.name))]

    def groups(self) -> list[dict]:
        with transaction(self.engine) as s:
            return [{"group": g.name, "description": g.description,
                     "members": sorted(s.scalars(select(MembershipRow.user).where(MembershipRow.group == g.name)))}
                    for g in s.scalars(select(GroupRow).order_by(GroupRow.name))
                    if self.identity.is_admin or g.name in self.identity.groups]

    # ------------------------------------------------------------------------------------------- workflows
    def add_workflow(self, text: str, group: str | None = None) -> dict:
        """Register (or replace) a workflow of yours; with a schedule, the scheduler submits it when due."""
        from .workflows import check_tables, next_run, parse_workflow_text

        wf = parse_workflow_text(text)
        check_tables(wf, self._catalog())
        for t in wf.outputs():
            self.check_writable(t)
        group = self._group_for(group)
        with transaction(self.engine, lock=True) as s:
            row = s.scalars(select(WorkflowRow).where(WorkflowRow.owner == self.user,
                                                      WorkflowRow.name == wf.name)).first()
            if row is None:
                row = WorkflowRow(id=uuid.uuid4().hex[:12], owner=self.user, name=wf.name, created_at=ledger.now(),
                                  enabled=True)
                s.add(row)
            row.group, row.spec, row.schedule = group, wf.to_yaml(), wf.schedule
            row.next_run_at = next_run(wf.schedule, ledger.now()) if wf.schedule else None
            return _workflow_dict(row)

    def workflows(self) -> list[dict]:
        with transaction(self.engine) as s:
            stmt = select(WorkflowRow).order_by(WorkflowRow.name)
            if not self.identity.is_admin:
                stmt = stmt.where(WorkflowRow.owner == self.user)
            return [_workflow_dict(w) for w in s.scalars(stmt)]

    def run_workflow(self, name_or_id: str, scheduled: bool = False) -> dict:
        with transaction(self.engine) as s:
            row = s.get(WorkflowRow, name_or_id) or s.scalars(select(WorkflowRow).where(
                WorkflowRow.owner == self.user, WorkflowRow.name == name_or_id)).first()
            if row is None or (row.owner != self.user and not self.identity.is_admin):
                raise UserbatchError(f"no workflow {name_or_id!r} of yours; 'userbatch workflow list' shows them")
            text, group, wid = row.spec, row.group, row.id
        run = self.submit(workflow=text, group=group, workflow_id=wid)
        with transaction(self.engine) as s:
            s.get(WorkflowRow, wid).last_run_id = run["id"]
        return run


def wait_for_run(status, run_id: str, timeout_s: float, poll_s: float) -> dict:
    """Poll ``status(run_id)`` until the run ends or ``timeout_s`` passes; the last status either way."""
    deadline = time.monotonic() + timeout_s
    while True:
        run = status(run_id)
        if run["state"] in FINAL_STATES or time.monotonic() > deadline:
            return run
        time.sleep(poll_s)


def _workflow_dict(w: WorkflowRow) -> dict:
    return {"id": w.id, "name": w.name, "owner": w.owner, "group": w.group, "schedule": w.schedule,
            "enabled": w.enabled, "next_run_at": str(w.next_run_at) if w.next_run_at else None,
            "last_run_id": w.last_run_id}


def _run_dict(r: RunRow, brief: bool = False) -> dict:
    d = {"id": r.id, "user": r.user, "group": r.group, "kind": r.kind, "name": r.name, "state": r.state,
         "stage": r.stage, "runner": r.runner, "cores": r.cores, "max_hours": r.max_hours,
         "reserved_core_hours": r.reserved_core_hours, "charged_core_hours": r.charged_core_hours,
         "period": r.period, "submitted_at": _iso(r.submitted_at), "started_at": _iso(r.started_at),
         "ended_at": _iso(r.ended_at), "error": r.error, "rerun_of": r.rerun_of, "app_id": r.app_id,
         "batch_id": r.batch_id}
    if brief:
        return d
    progress = {}
    if r.state in ("starting", "running"):
        from .runfiles import read_json

        progress = read_json(Path(r.run_dir) / "progress.json", limit=64 << 10)
        progress = progress if isinstance(progress, dict) else {}
    spec = json.loads(r.spec)
    d.update(progress=progress, pid=r.pid, exit_code=r.exit_code, result=json.loads(r.result or "{}"),
             params=spec.get("params"), pins=spec.get("pins", {}), output_map=spec.get("output_map", {}),
             run_dir=r.run_dir, cancel_requested=r.cancel_requested)
    return d


def _one_line(text: str) -> str:
    """``text`` safe inside a shell comment: no line breaks or other control characters."""
    return re.sub(r"[\x00-\x1f\x7f]+", " ", str(text))


def _iso(ts) -> str | None:
    return ts.isoformat() if ts else None


__all__ = ["AuthError", "Facility", "Identity", "RunNotFound", "wait_for_run"]
