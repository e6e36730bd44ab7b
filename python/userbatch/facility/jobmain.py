"""Running a templated job: resolve its parameters, open a provenance record, call its entry function.

The same path serves ``spark-submit jobs/<name>.py ...`` (:func:`job_main`) and ``userbatch jobs run``
(:func:`run_template`), so a job behaves the same however it was started.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import uuid
from typing import Any

from ..errors import UserbatchError
from ..tables.provenance import Provenance
from .templates import load_template, parse_overrides, read_job_file
from ..user_code import add_job_dir

log = logging.getLogger(__name__)


def resolve(name: str, config: str | None = None, overrides: list[str] | None = None) -> tuple[Any, dict]:
    """(template, parameters) from an optional job file and ``key=value`` overrides (which win)."""
    template = load_template(name)
    values: dict[str, Any] = {}
    if config:
        _, values = read_job_file(config, template=name)
        values = dict(values)
    values.update(parse_overrides(overrides or []))
    return template, template.resolve(values)


def run_template(name: str, params: dict, run_id: str | None = None) -> dict:
    """Run template ``name`` with resolved ``params``; returns the job's summary (outputs with versions)."""
    template = load_template(name)
    params = template.resolve(params)
    prov = Provenance(job=name, run_id=run_id or uuid.uuid4().hex[:12],
                      parameters={"template": name, "resolved": params})
    log.info("job %s run %s: %s", name, prov.run_id, json.dumps(params, default=str))
    summary = template.function()(params, prov)
    return {"template": name, "run_id": prov.run_id, **summary}


def job_main(name: str, argv: list[str] | None = None) -> int:
    """``spark-submit jobs/<name>.py [--config job.yaml] [-p key=value ...]``: prints a JSON summary; a user
    error prints one ``error:`` line and exits 2."""
    ap = argparse.ArgumentParser(prog=f"jobs/{name}.py", description=f"The {name!r} templated job.")
    ap.add_argument("--config", help="job file (YAML: template, parameters)")
    ap.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                    help="set one parameter (value read as YAML); repeatable; wins over --config")
    ap.add_argument("--run-id", help="facility run id to record in the provenance (default: a new one)")
    ap.add_argument("--show", action="store_true", help="print the resolved parameters and stop")
    ap.add_argument("--usage", action="store_true", help="list the template's parameters and stop")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="[%(name)s] %(message)s", stream=sys.stderr)
    logging.getLogger("userbatch").setLevel(logging.INFO)
    logging.getLogger("py4j").setLevel(logging.WARNING)
    try:
        if args.usage:
            print(load_template(name).usage())
            return 0
        template, params = resolve(name, args.config, args.param)
        if args.show:
            print(json.dumps(params, indent=2, default=str))
            return 0
        if args.config:  # a module next to the job file is importable, as one next to a script is
            add_job_dir(args.config)
        print(json.dumps(run_template(name, params, args.run_id), default=str))
        return 0
    except UserbatchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
