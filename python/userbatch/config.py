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
    return Settings(home=home, db_url=db_url, warehouse=warehouse, user=user, groups=groups)
