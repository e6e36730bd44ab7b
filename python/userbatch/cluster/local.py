"""The local runner: ``local[cores]`` on this machine, the embedded default (a run's Spark lives inside its own
PID and network namespaces, as its owner)."""

from __future__ import annotations

import logging

from .base import Runner

log = logging.getLogger(__name__)


class LocalRunner(Runner):
    """``local[cores]`` on this machine: the embedded default."""

    kind = "local"
    launchable = True
    isolates_network = True

    def master_args(self, spec):
        return ["--master", f"local[{spec.cores}]"]

    def environment(self, spec):
        env = super().environment(spec)
        env["SPARK_MASTER"] = f"local[{spec.cores}]"
        return env
