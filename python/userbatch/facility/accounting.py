"""Accounting from what Spark actually used: executor core-time read from the run's event log.

A run is charged for the cores its executors *held* — from each executor's ``ExecutorAdded`` to its
``ExecutorRemoved`` (or the application's end), times its cores — because on a shared facility a held core is a
core nobody else gets, busy or not. Task CPU time is recorded beside it (what the work itself burnt). A run that
was killed has no ``ApplicationEnd``: its executors are charged up to the moment the facility stopped it (or the
last event in the log).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Usage:
    app_id: str | None
    executor_core_seconds: float
    task_cpu_seconds: float
    task_run_seconds: float
    tasks: int
    complete: bool  # the log has its ApplicationEnd

    @property
    def core_hours(self) -> float:
        return self.executor_core_seconds / 3600.0

    @property
    def cpu_hours(self) -> float:
        return self.task_cpu_seconds / 3600.0


def event_logs(run_dir: str | Path) -> list[Path]:
    d = Path(run_dir) / "eventlog"
    return sorted(p for p in d.glob("*") if p.is_file() and not p.name.startswith(".")) if d.is_dir() else []


def usage_from_event_log(path: str | Path, end_ms: float | None = None) -> Usage:
    """Executor core-seconds and task times from one uncompressed, non-rolling event log file."""
    added: dict[str, tuple[float, int]] = {}
    removed: dict[str, float] = {}
    app_id, app_end, last_ts = None, None, None
    cpu_ns = run_ms = 0.0
    tasks = 0
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            try:
                e = json.loads(line)
            except json.JSONDecodeError:  # the last line of a killed application's log may be cut
                continue
            ev = e.get("Event")
            ts = e.get("Timestamp")
            if ts is not None:
                last_ts = max(last_ts or ts, ts)
            if ev == "SparkListenerExecutorAdded":
                added[e["Executor ID"]] = (e["Timestamp"], int(e["Executor Info"]["Total Cores"]))
            elif ev == "SparkListenerExecutorRemoved":
                removed[e["Executor ID"]] = e["Timestamp"]
            elif ev == "SparkListenerApplicationStart":
                app_id = e.get("App ID")
            elif ev == "SparkListenerApplicationEnd":
                app_end = e["Timestamp"]
            elif ev == "SparkListenerTaskEnd":
                tasks += 1
                info = e.get("Task Info", {})
                if info.get("Finish Time"):
                    last_ts = max(last_ts or 0, info["Finish Time"])
                m = e.get("Task Metrics") or {}
                cpu_ns += m.get("Executor CPU Time", 0) or 0
                run_ms += m.get("Executor Run Time", 0) or 0
    stop = app_end or end_ms or last_ts
    core_ms = 0.0
    for exec_id, (start, cores) in added.items():
        end = removed.get(exec_id, stop)
        if end is not None and end > start:
            core_ms += (end - start) * cores
    return Usage(app_id, core_ms / 1000.0, cpu_ns / 1e9, run_ms / 1000.0, tasks, app_end is not None)


def usage_of_run(run_dir: str | Path, end_ms: float | None = None) -> Usage:
    """The sum over the run's event logs (one per Spark application the run started)."""
    logs = event_logs(run_dir)
    if not logs:
        return Usage(None, 0.0, 0.0, 0.0, 0, False)
    parts = [usage_from_event_log(p, end_ms) for p in logs]
    return Usage(parts[0].app_id, sum(u.executor_core_seconds for u in parts), sum(u.task_cpu_seconds for u in parts),
                 sum(u.task_run_seconds for u in parts), sum(u.tasks for u in parts), all(u.complete for u in parts))
