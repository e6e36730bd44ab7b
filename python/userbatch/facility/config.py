"""The facility configuration: capacity, the user-computing fraction, accounting period, default and seeded
quotas, admins, namespace owners and the runner — one YAML file (``conf/facility.yaml``, or
``USERBATCH_FACILITY_CONFIG``).

The database holds the live quotas (admins change them there, audited); this file seeds them — a user or group
first seen gets the quota the file gives it — and declares what the database cannot: how big the facility is.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from ..config import settings
from ..errors import UserbatchError
from ..resources import conf
from .accounts import IdentityConfig

DEFAULT_PATH = conf("facility.yaml")  # the repository's conf/ in a checkout, else the packaged copy
PERIODS = ("month", "quarter", "year")
HOURS_PER_PERIOD = {"month": 730.0, "quarter": 2190.0, "year": 8760.0}


class ConfigError(UserbatchError):
    """The facility configuration file cannot be used as written."""


_QUEUE_SEGMENT = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def queue_segment(name: str) -> str:
    """``name`` as one segment of a scheduler queue path (YARN, YuniKorn): ``[A-Za-z0-9_-]``, at most 64.

    A ``.`` would split the path into more levels and YuniKorn accepts no other characters, so any other name gets
    its offending characters replaced by ``_`` and ``_`` plus 8 hex digits of the name's SHA-256 appended (the
    convention of ``userbatch.cluster.naming.dns_label``): deterministic, and two names differing only in what was
    replaced keep distinct queues. Valid names are unchanged. This is the one place queue names are made.
    """
    if _QUEUE_SEGMENT.match(name):
        return name
    head = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_")[:55]
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{head}_{digest}" if head else f"x{digest}"


@dataclass(frozen=True)
class Limits:
    core_hours: float
    max_cores: int
    storage_gb: float

    @classmethod
    def parse(cls, doc: Any, where: str) -> "Limits":
        if not isinstance(doc, dict) or set(doc) - {"core_hours", "max_cores", "storage_gb"}:
            raise ConfigError(f"{where} must be a mapping of core_hours, max_cores, storage_gb; got {doc!r}")
        try:
            lim = cls(float(doc.get("core_hours", 0)), int(doc.get("max_cores", 0)), float(doc.get("storage_gb", 0)))
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: core_hours, max_cores and storage_gb must be numbers") from None
        if lim.core_hours < 0 or lim.max_cores < 0 or lim.storage_gb < 0:
            raise ConfigError(f"{where}: limits cannot be negative")
        return lim


@dataclass(frozen=True)
class FacilityConfig:
    total_cores: int = 64
    user_fraction: float = 0.10
    period: str = "month"
    user_defaults: Limits = Limits(100.0, 4, 50.0)
    group_defaults: Limits = Limits(1000.0, 16, 500.0)
    admins: tuple[str, ...] = ()
    users: dict[str, Limits] = field(default_factory=dict)
    groups: dict[str, dict] = field(default_factory=dict)  # name -> {"members": [...], "limits": Limits}
    namespaces: dict[str, dict] = field(default_factory=dict)  # name -> {"owner": user} or {"group": g}
    runner: dict = field(default_factory=lambda: {"kind": "local"})
    max_concurrent_runs: int = 2
    default_cores: int = 2
    default_max_hours: float = 1.0
    queue_prefix: str = "root.users"
    mlflow: dict = field(default_factory=dict)  # tracking_uri, artifact_root (userbatch.ml.tracking)
    memory_per_core_gb: float = 4.0  # scheduler: memory a core comes with on the clusters (userbatch.cluster)
    identity: IdentityConfig = IdentityConfig()  # OS accounts runs execute as (facility.accounts)
    max_queued_runs: int = 20  # per user: a user cannot flood the queue
    token_days: float = 90.0  # default lifetime of an API token
    history_port: int = 18080  # the Spark History Server 'userbatch serve' starts (facility.history_server)
    path: str | None = None

    @property
    def user_capacity_core_hours(self) -> float:
        """Core-hours per period the facility gives to user computing (total × fraction × hours)."""
        return self.total_cores * self.user_fraction * HOURS_PER_PERIOD[self.period]

    def period_label(self, when: datetime | None = None) -> str:
        when = when or datetime.now(timezone.utc)
        if self.period == "month":
            return f"{when.year}-{when.month:02d}"
        if self.period == "quarter":
            return f"{when.year}Q{(when.month - 1) // 3 + 1}"
        return str(when.year)

    def mlflow_tracking_uri(self) -> str:
        """Where MLflow keeps experiments and models: ``MLFLOW_TRACKING_URI``, else ``mlflow.tracking_uri``, else
        SQLite in the facility home (one place for the rule; :mod:`userbatch.ml.tracking` and the worker ask here)."""
        s = settings()
        return s.mlflow_tracking_uri or self.mlflow.get("tracking_uri") or f"sqlite:///{s.home / 'mlflow.db'}"

    def mlflow_artifact_root(self) -> str:
        """Where new experiments keep their artifacts: ``USERBATCH_MLFLOW_ARTIFACTS``, ``mlflow.artifact_root``, or
        the facility home."""
        s = settings()
        return str(s.mlflow_artifacts or self.mlflow.get("artifact_root") or (s.home / "mlartifacts"))

    def mlflow_ui_url(self) -> str | None:
        """Where people open MLflow's UI (``mlflow.ui_url``; ``userbatch mlflow ui`` serves it over the facility's
        store): the web UI links a classifier run to its MLflow run and model version there. None: no links."""
        url = self.mlflow.get("ui_url")
        return str(url).rstrip("/") if isinstance(url, str) and url.startswith(("http://", "https://")) else None

    @property
    def mlflow_remote(self) -> bool:
        """A shared tracking server (runs talk to it) rather than the facility's own store (closed to runs)."""
        return self.mlflow_tracking_uri().startswith(("http://", "https://", "databricks"))

    def queue_for(self, user: str, group: str | None) -> str:
        """The scheduler queue of a run: its group's, else the user's own (names made safe by queue_segment)."""
        return f"{self.queue_prefix}.{queue_segment(group or user)}"


def load_config(path: str | Path | None = None) -> FacilityConfig:
    path = Path(path or settings().facility_config or DEFAULT_PATH)
    if not path.is_file():
        raise ConfigError(f"facility config {path} not found; set USERBATCH_FACILITY_CONFIG")
    try:
        doc = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"facility config {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    return parse_config(doc, str(path))


def parse_config(doc: Any, path: str | None = None) -> FacilityConfig:
    where = f"facility config {path or ''}".strip()
    if not isinstance(doc, dict):
        raise ConfigError(f"{where} must be a mapping")
    known = {"capacity", "period", "defaults", "admins", "users", "groups", "namespaces", "runner", "runs", "mlflow",
             "scheduler", "identity", "tokens", "history"}
    extra = sorted(set(doc) - known)
    if extra:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(extra)}; known: {', '.join(sorted(known))}")
    cap = doc.get("capacity") or {}
    period = doc.get("period", "month")
    if period not in PERIODS:
        raise ConfigError(f"{where}: period must be one of {', '.join(PERIODS)}")
    defaults = doc.get("defaults") or {}
    users = {u: Limits.parse(v, f"{where}: users.{u}") for u, v in (doc.get("users") or {}).items()}
    groups = {}
    for g, spec in (doc.get("groups") or {}).items():
        spec = spec or {}
        groups[g] = {"members": list(spec.get("members", [])),
                     "limits": Limits.parse(spec["quota"], f"{where}: groups.{g}.quota") if "quota" in spec
                     else None,
                     "description": str(spec.get("description", ""))}
    runs = doc.get("runs") or {}
    mlflow = doc.get("mlflow") or {}
    if not isinstance(mlflow, dict) or set(mlflow) - {"tracking_uri", "artifact_root", "ui_url"}:
        raise ConfigError(f"{where}: mlflow takes tracking_uri, artifact_root and ui_url; got {mlflow!r}")
    if "ui_url" in mlflow and not (isinstance(mlflow["ui_url"], str)
                                   and mlflow["ui_url"].startswith(("http://", "https://"))):
        raise ConfigError(f"{where}: mlflow.ui_url must be an http(s) URL; got {mlflow['ui_url']!r}")
    sched = doc.get("scheduler") or {}
    if not isinstance(sched, dict) or set(sched) - {"memory_per_core_gb"}:
        raise ConfigError(f"{where}: scheduler takes memory_per_core_gb; got {sched!r}")
    mem = sched.get("memory_per_core_gb", 4)
    if isinstance(mem, bool) or not isinstance(mem, (int, float)) or not mem > 0:
        raise ConfigError(f"{where}: scheduler.memory_per_core_gb must be a positive number of GB; got {mem!r}")
    try:
        identity = IdentityConfig.parse(doc.get("identity"), where)
    except UserbatchError as e:
        raise ConfigError(str(e)) from None
    tokens = doc.get("tokens") or {}
    if not isinstance(tokens, dict) or set(tokens) - {"default_days"}:
        raise ConfigError(f"{where}: tokens takes default_days; got {tokens!r}")
    history = doc.get("history") or {}
    port = history.get("port", 18080) if isinstance(history, dict) else None
    if not isinstance(history, dict) or set(history) - {"port"} or isinstance(port, bool) \
            or not isinstance(port, int) or not 1024 <= port <= 65535:
        raise ConfigError(f"{where}: history takes port, an integer in 1024..65535; got {history!r}")
    try:
        cfg = FacilityConfig(
            total_cores=int(cap.get("cores", 64)),
            user_fraction=float(cap.get("user_fraction", 0.10)),
            period=period,
            user_defaults=Limits.parse(defaults.get("user", {"core_hours": 100, "max_cores": 4, "storage_gb": 50}),
                                       f"{where}: defaults.user"),
            group_defaults=Limits.parse(defaults.get("group", {"core_hours": 1000, "max_cores": 16,
                                                               "storage_gb": 500}), f"{where}: defaults.group"),
            admins=tuple(doc.get("admins") or ()),
            users=users,
            groups=groups,
            namespaces=dict(doc.get("namespaces") or {}),
            runner=dict(doc.get("runner") or {"kind": "local"}),
            max_concurrent_runs=int(runs.get("max_concurrent", 2)),
            default_cores=int(runs.get("default_cores", 2)),
            default_max_hours=float(runs.get("default_max_hours", 1.0)),
            queue_prefix=str(runs.get("queue_prefix", "root.users")),
            mlflow={k: str(v) for k, v in mlflow.items() if v},
            memory_per_core_gb=float(mem),
            identity=identity,
            max_queued_runs=int(runs.get("max_queued", 20)),
            token_days=float(tokens.get("default_days", 90)),
            history_port=port,
            path=path,
        )
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from None
    if cfg.total_cores < 1:
        raise ConfigError(f"{where}: capacity.cores must be at least 1")
    if not 0 < cfg.user_fraction <= 1:
        raise ConfigError(f"{where}: capacity.user_fraction must be in (0, 1]")
    return cfg
