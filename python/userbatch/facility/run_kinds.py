"""Run kinds: what a facility run *is* (a templated job, a user script, a SQL workflow, a BPS workflow), behind one
small interface registered by name — the shape of ctrl_bps' ``BaseWmsService``.

Every kind is launched the same way (as its owner, by the worker); a kind decides only

* :meth:`RunKind.prepare` — at submit, in the facility: check the payload, fill the run's spec, name the tables it
  reads and writes (checked before anything is queued), and the files to put in the run directory;
* :meth:`RunKind.execute` — in the run's driver, as the owner: do the work on the Spark session;
* :meth:`RunKind.export_files` — the payload's files in an export bundle;
* :meth:`RunKind.rerun` — the ``submit`` arguments that run it again (or a clear refusal).

The four kinds here are ``template``, ``script`` and ``workflow``; ``images`` registers ``bps`` through the
``userbatch.run_kinds`` entry point, so the facility never imports the image side-car. A new kind touches one file
and one entry point.
"""

from __future__ import annotations

import re
import runpy
import sys
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Callable

from ..errors import UserbatchError

_SCRIPT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}\.py$")


@dataclass
class Prepared:
    """What :meth:`RunKind.prepare` decided: the run's display name, tables it reads and writes, files for its
    directory; ``spec`` entries are added to the run's spec."""

    name: str
    spec: dict[str, Any] = field(default_factory=dict)
    reads: list[str] = field(default_factory=list)
    writes: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)


class RunKind:
    """One kind of run. Subclasses set :attr:`name` and implement the four steps."""

    name = "base"

    def prepare(self, facility, payload: Any, options: dict) -> Prepared:
        """Check ``payload`` for ``facility``'s caller and describe the run (no side effects)."""
        raise NotImplementedError

    def execute(self, spark, spec: dict, run_dir: Path, progress: Callable[[str], None]) -> tuple[Any, dict]:
        """Run it (in the driver, as the owner); returns the summary and extra result fields."""
        raise NotImplementedError

    def export_files(self, spec: dict) -> dict[str, bytes]:
        """The payload's files in an export bundle."""
        raise NotImplementedError

    def rerun(self, spec: dict) -> dict:
        """``submit`` keyword arguments that run the same payload again."""
        raise NotImplementedError

    def before_launch(self, spec: dict, creds, run_dir: Path) -> None:
        """In the worker, with the facility's authority, before the run starts as ``creds`` (None: not as its
        owner): hand the run what it must own. Default: nothing."""

    def launch(self, spec: dict, runner, submit_spec, creds, run_dir: Path):
        """In the worker, with the facility's authority: place the run on the runner's batch system in a shape
        of the kind's own (a BPS workflow as one Slurm job per quantum cluster) and return what the worker
        watches (``poll``/``wait``/``cancel`` like a process); None (the default) for the usual one application
        through :meth:`~userbatch.cluster.base.Runner.launch`."""
        return None

    def after_run(self, spec: dict, run_dir: Path) -> dict:
        """In the worker, with the facility's authority, after the run's processes ended (not cancelled or
        stopped): steps that write shared state the owner may not touch. Returns ``{"error": ...}`` to fail the run
        and/or ``{"summary": {...}}`` to update its summary; ``{}`` for nothing."""
        return {}


class TemplateKind(RunKind):
    name = "template"

    def prepare(self, facility, payload, options):
        from .templates import load_template, read_job_file

        template, params, job_file = payload
        values = dict(params or {})
        if job_file:
            name, file_values = read_job_file(job_file, template=template)
            values = {**file_values, **values}
            template = name
        t = load_template(template)
        resolved = t.resolve(values)
        out = Prepared(template, spec={"params": resolved})
        for pname, p in t.params.items():
            if p.type == "table" and resolved.get(pname):
                (out.writes if pname.startswith("output") else out.reads).append(resolved[pname])
        return out

    def execute(self, spark, spec, run_dir, progress):
        from .jobmain import run_template

        return run_template(spec["name"], spec["params"], run_id=spec["run_id"]), {}

    def export_files(self, spec):
        from .templates import load_template

        t = load_template(spec["name"])
        job = {"template": t.name, "parameters": spec["params"]}
        import yaml

        return {f"templates/{t.name}.yaml": t.path.read_bytes(),
                "job.yaml": yaml.safe_dump(job, sort_keys=False).encode()}

    def rerun(self, spec):
        return {"template": spec["name"], "params": spec["params"]}


class ScriptKind(RunKind):
    name = "script"

    def prepare(self, facility, payload, options):
        fname, text = payload
        fname = Path(fname).name
        if not _SCRIPT.match(fname):
            fname = "script.py"
        try:
            compile(text, fname, "exec")
        except SyntaxError as e:
            raise UserbatchError(f"script {fname} has a syntax error at line {e.lineno}: {e.msg}") from None
        # the text is kept in the database too: the run owns its directory and may change the file there
        return Prepared(fname, spec={"script": fname, "args": list(options.get("script_args") or []),
                                     "script_text": text}, files={fname: text})

    def execute(self, spark, spec, run_dir, progress):
        script = run_dir / spec["script"]
        sys.argv = [str(script), *spec.get("args", [])]
        sys.path.insert(0, str(run_dir))
        try:
            runpy.run_path(str(script), run_name="__main__")
        except SystemExit as e:
            if e.code not in (None, 0):
                raise RuntimeError(f"the script exited with status {e.code}") from None
        return {}, {}

    def export_files(self, spec):
        return {spec["script"]: spec["script_text"].encode()}

    def rerun(self, spec):
        return {"script": (spec["script"], spec["script_text"]), "script_args": spec.get("args")}


class WorkflowKind(RunKind):
    name = "workflow"

    def prepare(self, facility, payload, options):
        from .workflows import check_tables, parse_workflow_text, pins_for

        wf = parse_workflow_text(payload)
        catalog = facility._catalog()
        check_tables(wf, catalog)
        return Prepared(wf.name, spec={"workflow": wf.to_yaml(), "pins": pins_for(wf, catalog)},
                        writes=list(wf.outputs()))

    def execute(self, spark, spec, run_dir, progress):
        from ..tables.provenance import Provenance
        from .workflows import parse_workflow, run_workflow

        wf = parse_workflow(spec["workflow"])
        return run_workflow(wf, spark, Provenance(job=f"workflow:{wf.name}", run_id=spec["run_id"],
                                                  parameters={"workflow": wf.as_dict()})), {}

    def export_files(self, spec):
        return {"workflow.yaml": spec["workflow"].encode()}

    def rerun(self, spec):
        return {"workflow": spec["workflow"]}


_KINDS: dict[str, RunKind] = {k.name: k for k in (TemplateKind(), ScriptKind(), WorkflowKind())}
_LOADED = False


def register(kind: RunKind) -> RunKind:
    """Add a run kind (a plug-in's ``userbatch.run_kinds`` entry point does this by naming its class)."""
    _KINDS[kind.name] = kind
    return kind


def get(name: str) -> RunKind:
    """The run kind ``name``; plug-ins are loaded from their entry points on first need."""
    global _LOADED
    if name not in _KINDS and not _LOADED:
        _LOADED = True
        for ep in entry_points(group="userbatch.run_kinds"):
            try:
                cls = ep.load()
            except ImportError as exc:  # an optional side-car that is not installed: its kind is unavailable
                raise UserbatchError(f"run kind {ep.name!r} needs {ep.value}, which cannot be imported: "
                                     f"{exc}") from None
            _KINDS.setdefault(ep.name, cls() if isinstance(cls, type) else cls)
    try:
        return _KINDS[name]
    except KeyError:
        raise UserbatchError(f"unknown run kind {name!r}; known: {', '.join(sorted(_KINDS))}") from None


__all__ = ["Prepared", "RunKind", "get", "register"]
