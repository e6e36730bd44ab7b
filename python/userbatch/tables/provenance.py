"""What every commit records about how its rows came to be: who, which run, which inputs at which versions,
which code, which parameters. Stored as Delta commit metadata so it travels with the table."""

from __future__ import annotations

import functools
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..config import settings
from ..version import __version__
from . import runctx


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """Package version plus the git commit of the source tree when running from a checkout."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
            text=True, timeout=5,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=Path(__file__).parent,
            capture_output=True, text=True, timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha, dirty = "", ""
    return f"{__version__}+g{sha}{'.dirty' if dirty else ''}" if sha else __version__


@dataclass
class Provenance:
    job: str = field(default_factory=lambda: runctx.job_name() or "interactive")
    run_id: str | None = field(default_factory=runctx.run_id)
    user: str = field(default_factory=lambda: settings().user)
    group: str | None = None
    inputs: list[dict] = field(default_factory=list)  # [{"table": name, "version": int}] or {"path": ...}
    parameters: dict = field(default_factory=dict)
    code_version: str = field(default_factory=code_version)

    def add_input(self, table: str, version: int | None = None, **extra) -> "Provenance":
        self.inputs.append({"table": table, "version": version, **extra})
        return self

    def as_dict(self) -> dict:
        return asdict(self)
