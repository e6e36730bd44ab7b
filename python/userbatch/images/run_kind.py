"""The ``bps`` run kind: a BPS GenericWorkflow prepared by the userbatch WMS plugin, executed by the facility as its
owner. Registered with the facility through the ``userbatch.run_kinds`` entry point, so that ``facility/`` never
imports ``images/``."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import AccessDenied, UserbatchError
from ..facility.run_kinds import Prepared, RunKind


def _chown_tree(root: Path, uid: int, gid: int, only_uid: int) -> None:
    """Give ``root`` and everything below it that ``only_uid`` owns to uid:gid, never following a link."""
    for dirpath, dirs, files in os.walk(root, followlinks=False):
        for name in [".", *dirs, *files]:
            p = Path(dirpath) / name if name != "." else Path(dirpath)
            try:
                st = p.lstat()
                if st.st_uid == only_uid and not p.is_symlink():
                    os.chown(p, uid, gid, follow_symlinks=False)
            except OSError:
                continue


def _freeze_final(facility, submit: Path) -> dict | None:
    """The final job as the facility will run it, fixed at submit: a copy of the graph the facility keeps (its
    owner cannot change it afterwards), checked to write only the owner's collections (``u/<user>/...``)."""
    import shutil
    import uuid

    from ..config import settings
    from .bps_executor import graph_collections
    from .bps_service import read_plan

    plan = read_plan(submit)
    final = plan.get("final")
    if not final:
        return None
    graphs = [Path(g) for g in (plan.get("provenance") or {}).get("qgraph") or []]
    named = [g for g in graphs if str(g) in final.get("command", "")] or graphs
    if len(named) != 1 or not named[0].is_file() or named[0].is_symlink() or submit not in named[0].parents:
        raise UserbatchError(f"cannot tell the QuantumGraph of {submit}'s final job (found {len(named)})")
    keep = settings().home / "bps" / uuid.uuid4().hex[:12]
    keep.mkdir(parents=True, mode=0o700)
    copy = keep / named[0].name
    shutil.copyfile(named[0], copy, follow_symlinks=False)
    prefix = f"u/{facility.user}/"
    try:
        collections = graph_collections(copy)
    except Exception as e:  # noqa: BLE001 - an unreadable graph is refused, whatever the reason
        raise UserbatchError(f"cannot read the QuantumGraph {named[0]}: {e}") from None
    for c in collections:
        if c is not None and not str(c).startswith(prefix):
            raise AccessDenied(f"a BPS run of {facility.user} may write only collections under {prefix}; this "
                               f"workflow's graph writes {c}")
    if collections[0] is None:
        raise UserbatchError(f"the QuantumGraph {named[0]} names no output run")
    butler = (plan.get("provenance") or {}).get("butler")
    return {"name": final["name"], "label": final["label"], "when_run": final.get("when_run", "ALWAYS"),
            "qgraph": str(copy), "butler": str(butler), "log_dir": str(keep)}


def _user_dir(run_dir: Path, user: str) -> Path | None:
    """``<datastore>/u/<user>`` above an output run's datastore directory ``<datastore>/u/<user>/...``."""
    parts = run_dir.parts
    for i in range(len(parts) - 1):
        if parts[i] == "u" and parts[i + 1] == user:
            return Path(*parts[:i + 2])
    return None


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
        bps = dict(bps)
        if str(bps.get("placement") or "auto") not in ("auto", "spark", "slurm"):
            raise UserbatchError(f"userbatchPlacement is auto, spark or slurm, not {bps['placement']!r}")
        from ..facility.accounts import effective_mode

        if effective_mode(facility.config.identity) == "os":
            # quanta run as the owner (quantum-backed butler: datastore writes only); the final job, which writes
            # the registry, runs under the facility's authority after checking the collections are the owner's
            bps["final"] = _freeze_final(facility, path)
            bps["final_by_facility"] = bps["final"] is not None
        return Prepared(str(bps["name"])[:128], spec={"bps": bps})

    def before_launch(self, spec, creds, run_dir):
        """The submit directory and the output run's datastore directory become the owner's (the facility made
        them when it prepared the workflow in-process; a user's own ``bps submit`` made them theirs already)."""
        if creds is None:
            return
        from .bps_service import read_plan
        from .bps_executor import datastore_run_dir

        submit = Path(spec["bps"]["submit_path"])
        _chown_tree(submit, creds.uid, creds.gid, only_uid=os.geteuid())
        plan = read_plan(submit)
        target = datastore_run_dir(plan)
        if target is not None:
            user_dir = _user_dir(target, spec["user"])
            if user_dir is not None:
                user_dir.mkdir(parents=True, exist_ok=True)
                _chown_tree(user_dir, creds.uid, creds.gid, only_uid=os.geteuid())

    def launch(self, spec, runner, submit_spec, creds, run_dir):
        """On a Slurm facility the workflow's jobs become Slurm jobs (:mod:`.bps_slurm`) unless the submit YAML
        asks for ``userbatchPlacement: spark`` (one Slurm allocation running them as Spark tasks)."""
        placement = str(spec["bps"].get("placement") or "auto")
        if getattr(runner, "kind", None) != "slurm" or placement == "spark":
            return None
        from .bps_slurm import place

        return place(spec["bps"], runner, submit_spec, creds, run_dir)

    def after_run(self, spec, run_dir):
        if not spec["bps"].get("final_by_facility"):
            return None
        from .bps_executor import run_final

        return run_final(spec["bps"], run_dir)

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
