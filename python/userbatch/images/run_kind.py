"""The ``bps`` run kind: a BPS GenericWorkflow prepared by the userbatch WMS plugin, executed by the facility as its
owner. Registered with the facility through the ``userbatch.run_kinds`` entry point, so that ``facility/`` never
imports ``images/``."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserbatchError
from ..facility.run_kinds import Prepared, RunKind


class BpsKind(RunKind):
    name = "bps"

    def prepare(self, facility, payload, options):
        bps = payload
        if not isinstance(bps, dict) or not bps.get("name") or not bps.get("submit_path"):
            raise UserbatchError("a bps run needs its workflow name and submit_path")
        path = Path(str(bps["submit_path"]))
        if not path.is_absolute() or not (path / "userbatch_plan.json").is_file():
            raise UserbatchError(f"{bps['submit_path']} is not a submit directory prepared by the userbatch BPS "
                                 "plugin (no userbatch_plan.json there)")
        facility.check_own_directory(path)
        return Prepared(str(bps["name"])[:128], spec={"bps": dict(bps)})

    def execute(self, spark, spec, run_dir, progress):
        from .bps_executor import execute
        from .bps_service import read_plan

        extra = {"bps": {"submit_path": spec["bps"]["submit_path"],
                         **read_plan(spec["bps"]["submit_path"]).get("provenance", {})}}
        return execute(spark, spec["bps"], run_dir, progress=progress), extra

    def export_files(self, spec):
        import json

        return {"bps.json": json.dumps(spec["bps"], indent=2, default=str).encode()}

    def rerun(self, spec):
        raise UserbatchError(f"run {spec['run_id']} is a BPS workflow: use 'bps restart' (unfinished jobs) or "
                             "'bps submit' again")
