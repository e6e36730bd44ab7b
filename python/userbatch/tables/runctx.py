"""What a facility run asks of the tables layer (:class:`~userbatch.config.RunContext`, set by the worker).

* pins: a table read without an explicit version reads the pinned one — how ``userbatch rerun`` reproduces a run
  from exactly the inputs it read;
* output map: writes to a table go to another name — how a rerun writes beside the original instead of over it;
* write namespaces: the namespaces this run may write (the user's and their groups'); unset outside facility runs,
  where the catalog's owner rules alone apply;
* run id / job: stamped on the provenance of every commit the run makes.

It also records what the process read and wrote (table, version), which the facility driver stores as the run's
inputs and outputs.
"""

from __future__ import annotations

import threading

from ..config import settings
from ..errors import AccessDenied

_lock = threading.Lock()
_reads: dict[str, int] = {}
_writes: list[dict] = []


def run_id() -> str | None:
    """The facility run this process belongs to (None outside runs)."""
    return settings().run.run_id


def job_name() -> str | None:
    """``kind:name`` of the facility run this process belongs to (None outside runs)."""
    return settings().run.job


def pins() -> dict[str, int]:
    """``{table: version}`` this run reads tables at."""
    return dict(settings().run.pins)


def pinned_version(table: str) -> int | None:
    """The version a run must read ``table`` at, unless the run itself has written it since."""
    with _lock:
        if any(w["table"] == table for w in _writes):
            return None
    return pins().get(table)


def output_name(table: str) -> str:
    """The name a write to ``table`` goes to in this run (a rerun writes beside the original)."""
    return settings().run.output_map.get(table, table)


def check_writable(table: str) -> None:
    """Raise :class:`~userbatch.errors.AccessDenied` when this run may not write ``table``'s namespace."""
    spaces = settings().run.write_namespaces
    if spaces is None:
        return
    ns = table.split(".")[0]
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
