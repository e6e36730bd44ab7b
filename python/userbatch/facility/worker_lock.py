"""One worker per facility database: the lock file that says whether one runs, and starting one in the background.

Kept apart from :mod:`.worker` so that the service (which starts a worker on submit) does not import the worker,
which imports the service to act for users (scheduled workflows, output checks).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import sys
from pathlib import Path

from ..config import settings


def lock_path(db_url: str) -> Path:
    key = hashlib.sha256(db_url.encode()).hexdigest()[:16]
    d = settings().home / "workers"
    d.mkdir(parents=True, exist_ok=True)
    return d / f"{key}.lock"


def ensure_worker(db_url: str) -> bool:
    """Start a background worker for ``db_url`` unless one holds its lock; returns whether one was started."""
    path = lock_path(db_url)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(fh, fcntl.LOCK_UN)
    logf = open(path.with_suffix(".log"), "ab")  # noqa: SIM115 - handed to the child
    env = dict(os.environ, USERBATCH_DB_URL=db_url)
    subprocess.Popen([sys.executable, "-m", "userbatch.facility.worker", "--until-idle"], stdout=logf,
                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    logf.close()
    return True
