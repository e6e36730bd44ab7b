"""What a facility run asks of the tables layer, read once from the environment the facility sets.

* ``USERBATCH_PINS`` (JSON ``{table: version}``): a table read without an explicit version reads the pinned one —
  how ``userbatch rerun`` reproduces a run from exactly the inputs it read.
* ``USERBATCH_OUTPUT_MAP`` (JSON ``{table: table}``): writes to a table go to another name — how a rerun writes
  beside the original instead of over it.
* ``USERBATCH_WRITE_NAMESPACES`` (comma list): the namespaces this run may write (the user's and their groups');
  unset outside facility runs, where the catalog's owner rules alone apply.
* ``USERBATCH_RUN_ID`` / ``USERBATCH_JOB``: stamped on the provenance of every commit the run makes.

It also records what the process read and wrote (table, version), which the facility driver stores as the run's
inputs and outputs.
"""

from __future__ import annotations

import json
import os
import threading

from ..errors import AccessDenied, UserbatchError

_lock = threading.Lock()
_reads: dict[str, int] = {}
_writes: list[dict] = []


def _json_env(name: str) -> dict:
    raw = os.environ.get(name)
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        raise UserbatchError(f"{name} is not valid JSON") from None
    if not isinstance(value, dict):
        raise UserbatchError(f"{name} must be a JSON object")
    return value


def run_id() -> str | None:
    return os.environ.get("USERBATCH_RUN_ID") or None


def job_name() -> str | None:
    return os.environ.get("USERBATCH_JOB") or None


def pins() -> dict[str, int]:
    return {k: int(v) for k, v in _json_env("USERBATCH_PINS").items()}


def pinned_version(table: str) -> int | None:
    """The version a run must read ``table`` at, unless the run itself has written it since."""
    with _lock:
        if any(w["table"] == table for w in _writes):
            return None
    return pins().get(table)


def output_name(table: str) -> str:
    return _json_env("USERBATCH_OUTPUT_MAP").get(table, table)


def check_writable(table: str) -> None:
    allowed = os.environ.get("USERBATCH_WRITE_NAMESPACES")
    if allowed is None:
        return
    ns = table.split(".")[0]
    spaces = [s for s in allowed.split(",") if s]
    if "*" not in spaces and ns not in spaces:
        raise AccessDenied(f"this run may write only in namespace(s) {', '.join(spaces) or '(none)'}; "
                           f"{table} is in {ns}")


def record_read(table: str, version: int | None) -> None:
    if version is None or version < 0:
        return
    with _lock:
        _reads.setdefault(table, version)


def record_write(table: str, version: int, rows: int) -> None:
    with _lock:
        _writes.append({"table": table, "version": version, "rows": rows})


def reads() -> dict[str, int]:
    with _lock:
        return dict(_reads)


def writes() -> list[dict]:
    with _lock:
        return list(_writes)
