"""Every setting of userbatch in one typed object, read in one place: the environment over an optional file.

Everything embedded (the SQLite catalog, the table warehouse, Spark's scratch and warehouse directories) lives
below ``USERBATCH_HOME`` so that a demo, a test run and a user never step on each other's state; a deployment
points ``USERBATCH_DB_URL`` at PostgreSQL and ``USERBATCH_WAREHOUSE`` at shared storage.

Why one object: a setting read in the module that uses it is invisible to everyone else (there were 30 of them in
17 modules, some frozen at import). Here each one has a name, a type, a default and a line of documentation, and
library code asks :func:`settings` for it. Sources, strongest first:

1. the environment (``USERBATCH_*``, and Spark's own ``SPARK_MASTER``/``SPARK_REMOTE``);
2. a settings file: ``USERBATCH_SETTINGS``, else ``<home>/settings.toml`` when it exists — the same names in lower
   case without the prefix, e.g. ``db_url = "postgresql://..."`` or ``[tuning] rows_per_task = 300000``;
3. the defaults below.

The object is built once per distinct environment and then reused: a process that changes its environment (a
test, the demo choosing its home) gets a fresh one on its next call, and nothing is read at import time.

Inside a facility run the worker sets the run's part (:class:`RunContext`): its id, pinned input versions, output
renames and the namespaces it may write; the run API's socket and the run's delegated token replace the database.
"""

from __future__ import annotations

import getpass
import json
import os
import threading
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from .errors import UserbatchError

#: The environment variables that feed :class:`Settings` start with one of these (the cache key).
_PREFIXES = ("USERBATCH_", "SPARK_MASTER", "SPARK_REMOTE", "PYSPARK_GATEWAY_PORT", "MLFLOW_TRACKING_URI")

#: Every environment variable the settings are read from (a deployment's manifests are checked against it).
ENV_NAMES = (
    "USERBATCH_HOME", "USERBATCH_SETTINGS", "USERBATCH_DB_URL", "USERBATCH_WAREHOUSE", "USERBATCH_USER",
    "USERBATCH_GROUPS", "USERBATCH_API_SOCKET", "USERBATCH_RUN_TOKEN", "USERBATCH_MLFLOW_VIA_API",
    "USERBATCH_RUN_ID", "USERBATCH_JOB", "USERBATCH_PINS", "USERBATCH_OUTPUT_MAP", "USERBATCH_WRITE_NAMESPACES",
    "USERBATCH_FACILITY_CONFIG", "USERBATCH_TEMPLATE_PATH", "USERBATCH_API_URL", "USERBATCH_TOKEN",
    "USERBATCH_API_TIMEOUT", "USERBATCH_MLFLOW_ARTIFACTS", "MLFLOW_TRACKING_URI",
    "SPARK_MASTER", "SPARK_REMOTE", "PYSPARK_GATEWAY_PORT", "USERBATCH_SPARK_MASTER", "USERBATCH_SPARK_UI",
    "USERBATCH_DRIVER_MEMORY", "USERBATCH_CONNECT_DRIVER_MEMORY", "USERBATCH_SPARK_LOG_LEVEL",
    "USERBATCH_ROWS_PER_TASK", "USERBATCH_DRIVER_HISTOGRAM_MAX_ROWS", "USERBATCH_TASKS_PER_CORE",
    "USERBATCH_XMATCH_TASKS_PER_CORE", "USERBATCH_XMATCH_DRIVER_PAIRS", "USERBATCH_XMATCH_LOCAL_MAX_ROWS",
    "USERBATCH_LIGHT_PATH_MAX_ROWS", "USERBATCH_SLURM_CONF",
)


@dataclass(frozen=True)
class Tuning:
    """Sizes that choose between code paths; each has been measured (see ``bench/``), none changes results."""

    #: rows per write task when a table is (re)partitioned (``USERBATCH_ROWS_PER_TASK``)
    rows_per_task: int = 600_000
    #: inputs up to this many rows get their HEALPix histogram in the driver, without a Spark job
    driver_histogram_max_rows: int = 200_000_000
    #: per-partition work (light curves, periodograms): tasks planned per core (``USERBATCH_TASKS_PER_CORE``)
    tasks_per_core: int = 4
    #: cross-match tasks per core on the Spark engine (``USERBATCH_XMATCH_TASKS_PER_CORE``)
    xmatch_tasks_per_core: int = 4
    #: the Spark cross-match finishes in the driver once at most this many candidate pairs remain
    xmatch_driver_pairs: int = 5_000_000
    #: ``engine="auto"`` cross-matches in one process up to this many rows in total
    xmatch_local_max_rows: int = 50_000_000
    #: a search reads the pruned files with pyarrow (no Spark job) up to this many rows
    light_path_max_rows: int = 5_000_000


@dataclass(frozen=True)
class SparkSettings:
    """How the session factory talks to Spark."""

    #: ``SPARK_MASTER``: the master of a classic session (``local[*]`` when unset)
    master: str | None = None
    #: ``SPARK_REMOTE``: a Spark Connect URL (``sc://host:port``)
    remote: str | None = None
    #: ``USERBATCH_SPARK_MASTER``: the standalone cluster the facility's ``standalone`` runner submits to
    standalone_master: str = ""
    #: ``USERBATCH_SPARK_UI``: serve Spark's web UI from the driver
    ui: bool = False
    #: ``USERBATCH_DRIVER_MEMORY``: the embedded session's driver memory (the driver is the executor in local mode)
    driver_memory: str = "6g"
    #: ``USERBATCH_CONNECT_DRIVER_MEMORY``: driver memory of the Spark Connect server ``userbatch connect`` starts
    connect_driver_memory: str = "1g"
    #: ``USERBATCH_SPARK_LOG_LEVEL``
    log_level: str = "ERROR"
    #: launched by spark-submit (``PYSPARK_GATEWAY_PORT`` set): the JVM's own configuration stands
    submitted: bool = False


@dataclass(frozen=True)
class RunContext:
    """What a facility run asks of the library, set by the worker in the run's environment.

    Empty outside facility runs. ``pins`` (``USERBATCH_PINS``, JSON ``{table: version}``): a table read without an
    explicit version reads the pinned one — how ``userbatch rerun`` reproduces a run. ``output_map``
    (``USERBATCH_OUTPUT_MAP``): writes to a table go to another name (a rerun writes beside the original).
    ``write_namespaces`` (``USERBATCH_WRITE_NAMESPACES``, comma list; None outside runs): where the run may write.
    """

    run_id: str | None = None
    job: str | None = None
    pins: dict = field(default_factory=dict)
    output_map: dict = field(default_factory=dict)
    write_namespaces: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Settings:
    """All of userbatch's settings; get it with :func:`settings`."""

    home: Path
    db_url: str
    warehouse: Path
    user: str
    groups: tuple[str, ...]
    #: inside a facility run: the facility's run API (a Unix socket) and the run's delegated token. The run has no
    #: database URL; its catalog calls go through the API as its owner.
    api_socket: str | None = None
    run_token: str | None = None
    #: the facility's MLflow store is behind the run API (a run's MLflow calls are piped to it by the driver)
    mlflow_via_api: bool = False
    run: RunContext = field(default_factory=RunContext)
    spark: SparkSettings = field(default_factory=SparkSettings)
    tuning: Tuning = field(default_factory=Tuning)
    #: ``USERBATCH_FACILITY_CONFIG``: the facility's quota file (None: the packaged default or ``conf/``)
    facility_config: Path | None = None
    #: ``USERBATCH_TEMPLATE_PATH``: extra directories of job templates, searched before the shipped ones
    template_path: tuple[Path, ...] = ()
    #: the REST client: ``USERBATCH_API_URL``, ``USERBATCH_TOKEN``, ``USERBATCH_API_TIMEOUT`` (seconds)
    api_url: str = ""
    api_token: str = ""
    api_timeout: float = 30.0
    #: ``MLFLOW_TRACKING_URI`` / ``USERBATCH_MLFLOW_ARTIFACTS`` (None: the facility's store under the home)
    mlflow_tracking_uri: str | None = None
    mlflow_artifacts: str | None = None
    #: ``USERBATCH_SLURM_CONF``: the ``slurm.conf`` of the Slurm the slurm runner submits to (default: the local
    #: Slurm's under the home, when one was started there; else Slurm's own default)
    slurm_conf: Path | None = None
    #: the names set explicitly (``home``, ``db_url``, ``warehouse`` ...; environment or file), not defaulted
    given: frozenset = frozenset()

    @property
    def in_run(self) -> bool:
        """True inside a facility run (the catalog is reached through the run API, not a database)."""
        return bool(self.api_socket and self.run_token)

    @property
    def spark_dir(self) -> Path:
        """Spark's scratch and warehouse directories of the embedded session."""
        return self.home / "spark"


_cache: dict[tuple, Settings] = {}
_lock = threading.Lock()


def settings() -> Settings:
    """The settings of this process: built from the environment and the settings file once, then reused.

    Returns
    -------
    Settings
        The same object on every call until the process changes a ``USERBATCH_*`` (or Spark/MLflow) variable.
    """
    key = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(_PREFIXES)))
    found = _cache.get(key)
    if found is None:
        found = _build(dict(key))
        with _lock:
            if len(_cache) > 64:  # a long test session changes its environment often; keep the cache small
                _cache.clear()
            _cache[key] = found
    return found


def reload_settings() -> Settings:
    """Forget what was read (the settings file may have changed) and read again."""
    with _lock:
        _cache.clear()
    return settings()


def _build(env: dict[str, str]) -> Settings:
    home = Path(env.get("USERBATCH_HOME") or Path.home() / ".userbatch").expanduser().resolve()
    file_path = env.get("USERBATCH_SETTINGS")
    conf = _read_file(Path(file_path).expanduser() if file_path else home / "settings.toml", required=bool(file_path))

    def get(name: str, default=None, section: dict | None = None, env_name: str | None = None):
        value = env.get(env_name or f"USERBATCH_{name.upper()}")
        if value not in (None, ""):
            return value
        return (conf if section is None else section).get(name, default)

    def number(kind, name, default, section, env_name=None):
        raw = get(name, default, section, env_name)
        try:
            return kind(raw)
        except (TypeError, ValueError):
            raise UserbatchError(f"setting {env_name or 'USERBATCH_' + name.upper()} must be a number; "
                                 f"got {raw!r}") from None

    tuning_conf = conf.get("tuning", {})
    tuning = Tuning(**{f.name: number(int, f.name, f.default, tuning_conf) for f in fields(Tuning)})
    spark_conf = conf.get("spark", {})
    spark = SparkSettings(
        master=env.get("SPARK_MASTER") or spark_conf.get("master") or None,
        remote=env.get("SPARK_REMOTE") or spark_conf.get("remote") or None,
        standalone_master=str(get("standalone_master", "", spark_conf, "USERBATCH_SPARK_MASTER")),
        ui=_flag(get("ui", False, spark_conf, "USERBATCH_SPARK_UI")),
        driver_memory=str(get("driver_memory", SparkSettings.driver_memory, spark_conf)),
        connect_driver_memory=str(get("connect_driver_memory", SparkSettings.connect_driver_memory, spark_conf)),
        log_level=str(get("log_level", SparkSettings.log_level, spark_conf, "USERBATCH_SPARK_LOG_LEVEL")),
        submitted=bool(env.get("PYSPARK_GATEWAY_PORT")),
    )
    namespaces = env.get("USERBATCH_WRITE_NAMESPACES")
    run = RunContext(
        run_id=env.get("USERBATCH_RUN_ID") or None,
        job=env.get("USERBATCH_JOB") or None,
        pins={k: int(v) for k, v in _json_object(env, "USERBATCH_PINS").items()},
        output_map=_json_object(env, "USERBATCH_OUTPUT_MAP"),
        write_namespaces=None if namespaces is None else tuple(s for s in namespaces.split(",") if s),
    )
    groups = get("groups", "")
    facility_config = get("facility_config")
    template_path = get("template_path", "")
    slurm_conf = get("slurm_conf")
    if not slurm_conf and (home / "slurm" / "etc" / "slurm.conf").is_file():
        slurm_conf = home / "slurm" / "etc" / "slurm.conf"
    return Settings(
        home=home,
        db_url=str(get("db_url") or f"sqlite:///{home / 'facility.db'}"),
        warehouse=Path(get("warehouse") or home / "warehouse").expanduser().resolve(),
        user=str(get("user") or getpass.getuser()),
        groups=tuple(g for g in (groups.split(",") if isinstance(groups, str) else groups) if g),
        api_socket=env.get("USERBATCH_API_SOCKET") or None,
        run_token=env.get("USERBATCH_RUN_TOKEN") or None,
        mlflow_via_api=_flag(env.get("USERBATCH_MLFLOW_VIA_API")),
        run=run,
        spark=spark,
        tuning=tuning,
        facility_config=Path(facility_config).expanduser() if facility_config else None,
        slurm_conf=Path(slurm_conf).expanduser() if slurm_conf else None,
        template_path=tuple(Path(p) for p in (template_path.split(os.pathsep) if isinstance(template_path, str)
                                              else template_path) if p),
        api_url=str(get("api_url", "")).strip(),
        api_token=str(env.get("USERBATCH_TOKEN", "")).strip(),
        api_timeout=number(float, "api_timeout", 30.0, None),
        mlflow_tracking_uri=env.get("MLFLOW_TRACKING_URI") or None,
        mlflow_artifacts=get("mlflow_artifacts"),
        given=frozenset({k[len("USERBATCH_"):].lower() for k, v in env.items() if k.startswith("USERBATCH_") and v}
                        | {k for k, v in conf.items() if not isinstance(v, dict)}),
    )


def _flag(value) -> bool:
    if isinstance(value, bool):
        return value
    return str(value or "").strip().lower() in ("1", "true", "yes", "on")


def _read_file(path: Path, required: bool) -> dict:
    if not path.is_file():
        if required:
            raise UserbatchError(f"USERBATCH_SETTINGS names {path}, which is not a file")
        return {}
    try:
        return tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UserbatchError(f"the settings file {path} cannot be read: {exc}") from exc


def _json_object(env: dict, name: str) -> dict:
    raw = env.get(name)
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        raise UserbatchError(f"{name} is not valid JSON") from None
    if not isinstance(value, dict):
        raise UserbatchError(f"{name} must be a JSON object")
    return value
