"""Where the facility keeps its state: one home directory and one database URL.

Everything embedded (the SQLite catalog, the table warehouse, Spark's scratch and warehouse directories) lives
below ``USERBATCH_HOME`` so that a demo, a test run and a user never step on each other's state; a deployment
points ``USERBATCH_DB_URL`` at PostgreSQL and ``USERBATCH_WAREHOUSE`` at shared storage.
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
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

    @property
    def in_run(self) -> bool:
        return bool(self.api_socket and self.run_token)

    @property
    def spark_dir(self) -> Path:
        return self.home / "spark"


def settings() -> Settings:
    """Read the settings from the environment each call (tests change it between cases)."""
    home = Path(os.environ.get("USERBATCH_HOME", Path.home() / ".userbatch")).expanduser().resolve()
    db_url = os.environ.get("USERBATCH_DB_URL", f"sqlite:///{home / 'facility.db'}")
    warehouse = Path(os.environ.get("USERBATCH_WAREHOUSE", home / "warehouse")).expanduser().resolve()
    user = os.environ.get("USERBATCH_USER") or getpass.getuser()
    groups = tuple(g for g in os.environ.get("USERBATCH_GROUPS", "").split(",") if g)
    return Settings(home=home, db_url=db_url, warehouse=warehouse, user=user, groups=groups,
                    api_socket=os.environ.get("USERBATCH_API_SOCKET") or None,
                    run_token=os.environ.get("USERBATCH_RUN_TOKEN") or None,
                    mlflow_via_api=bool(os.environ.get("USERBATCH_MLFLOW_VIA_API")))
