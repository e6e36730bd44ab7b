"""Where MLflow keeps experiments, runs and registered models for userbatch, decided in one place.

The embedded default is MLflow's SQLite backend in the facility home (``<home>/mlflow.db``) with artifacts under
``<home>/mlartifacts``; a deployment sets a shared tracking server (``mlflow.tracking_uri`` in the facility config,
or ``MLFLOW_TRACKING_URI`` for one process). Every experiment is created with an explicit artifact location: with a
database backend MLflow would otherwise put artifacts in ``./mlruns`` of whatever directory the process started
in — a facility run's scratch directory — and lose them.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path

from ..errors import UserbatchError
from ..extras import require
from ..facility.config import FacilityConfig, load_config

log = logging.getLogger(__name__)

_EXPERIMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-/]{0,127}$")


def _config(config=None) -> FacilityConfig:
    if config is not None:
        return config
    try:
        return load_config()
    except UserbatchError:  # no facility config: the embedded defaults apply
        return FacilityConfig()


def tracking_uri(config=None) -> str:
    """``MLFLOW_TRACKING_URI``, else the facility config's ``mlflow.tracking_uri``, else SQLite in the home.

    Parameters
    ----------
    config : FacilityConfig, optional
        The facility config (default: the one in effect, or the embedded defaults without one).
    """
    return _config(config).mlflow_tracking_uri()


def artifact_root(config=None) -> str:
    """Where new experiments keep their artifacts (models, plots): config ``mlflow.artifact_root`` or the home.

    Parameters
    ----------
    config : FacilityConfig, optional
        The facility config (default: the one in effect).
    """
    return _config(config).mlflow_artifact_root()


def run_environment(config) -> dict[str, str]:
    """The environment a facility run needs for MLflow: the worker calls this through the entry point
    ``userbatch.run_environment`` (the facility does not import ``ml``).

    A shared tracking server: the run talks to it directly. The facility's own store (closed to runs): the driver
    reaches it through the run API, which the worker serves.

    Parameters
    ----------
    config : FacilityConfig
        The facility config the worker runs under.

    Returns
    -------
    dict of str to str
    """
    if config.mlflow_remote:
        return {"MLFLOW_TRACKING_URI": config.mlflow_tracking_uri(),
                "USERBATCH_MLFLOW_ARTIFACTS": config.mlflow_artifact_root()}
    return {"USERBATCH_MLFLOW_VIA_API": "1"}


def configure():
    """Point the ``mlflow`` module at the facility's store and return a client for it."""
    mlflow = require("mlflow", "ml")
    from mlflow.tracking import MlflowClient

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no progress bars in job logs
    for name in ("mlflow", "alembic"):  # MLflow's first use of a SQLite store logs every migration at INFO
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger(name).level))
    uri = tracking_uri()
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def experiment_id(name: str) -> str:
    """The id of experiment ``name``, created (with an artifact location under :func:`artifact_root`) if new."""
    if not isinstance(name, str) or not _EXPERIMENT.match(name) or ".." in name:
        raise UserbatchError(f"experiment name {name!r} must be 1-128 letters, digits, '_', '.', '-', '/'")
    client = configure()
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            raise UserbatchError(f"experiment {name!r} was deleted; restore it in MLflow or choose another name")
        return exp.experiment_id
    location = Path(artifact_root()) / name.replace("/", "__")
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", artifact_root()):  # a URI (s3://, mlflow-artifacts:/ ...)
        location = f"{artifact_root().rstrip('/')}/{name.replace('/', '__')}"
    else:
        Path(location).mkdir(parents=True, exist_ok=True)
        location = Path(location).resolve().as_uri()
    try:
        return client.create_experiment(name, artifact_location=None if artifact_root() == "mlflow-artifacts:"
                                        else str(location))
    except Exception:  # noqa: BLE001 - a concurrent creator won; use theirs
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def ui_argv(host: str = "127.0.0.1", port: int = 5000) -> list[str]:
    """The command that serves MLflow's tracking UI over this store (``userbatch mlflow ui`` runs it)."""
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    return [str(mlflow_bin) if mlflow_bin.exists() else "mlflow", "ui", "--backend-store-uri", tracking_uri(),
            "--default-artifact-root", artifact_root(), "--host", host, "--port", str(port)]
