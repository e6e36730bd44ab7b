"""The optional parts: a part used without its extra raises MissingExtra naming the extra (and how to install it);
the extras in pyproject.toml match what the code names; shipped files are found in the checkout.

tests/test_wheel.py runs the same checks in a real base install (a fresh venv with only the base dependencies);
here the optional packages are hidden from a subprocess (``sys.modules[name] = None``), which is quick.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from userbatch import resources
from userbatch.errors import MissingExtra, UserbatchError
from userbatch.extras import EXTRAS, missing, require

ROOT = Path(__file__).resolve().parents[1]

#: the top-level modules of each extra's packages (what a base install lacks)
HIDDEN = {
    "facility": ["fastapi", "starlette", "uvicorn", "httpx", "croniter", "sqlglot", "swagger_ui_bundle"],
    "images": ["lsst.daf", "lsst.pipe", "lsst.ctrl", "lsst.pex", "lsst.resources"],
    "ml": ["mlflow", "sklearn", "skops"],
    "notebooks": ["nbformat", "nbclient", "ipykernel"],
}

PROBE = textwrap.dedent('''
    import json, sys
    for name in sys.argv[1].split(","):
        sys.modules[name] = None  # import raises ModuleNotFoundError, as when the package is not installed
    import importlib
    from click.testing import CliRunner
    from userbatch.errors import MissingExtra, UserbatchError

    out = {}
    def attempt(key, call):
        try:
            call()
            out[key] = ["ok", ""]
        except MissingExtra as exc:
            out[key] = ["MissingExtra", str(exc), isinstance(exc, ImportError)]
        except UserbatchError as exc:
            out[key] = ["UserbatchError", str(exc)]
        except Exception as exc:
            out[key] = [type(exc).__name__, str(exc)]

    attempt("facility.api", lambda: importlib.import_module("userbatch.facility.api"))
    attempt("facility.runapi", lambda: importlib.import_module("userbatch.facility.runapi"))
    attempt("facility.client", lambda: importlib.import_module("userbatch.facility.client"))
    attempt("schedule", lambda: importlib.import_module("userbatch.facility.workflows").check_schedule("0 3 * * *"))
    attempt("images", lambda: importlib.import_module("userbatch.images.bridge"))
    attempt("bps_kind", lambda: importlib.import_module("userbatch.facility.run_kinds").get("bps"))
    attempt("ml.configure", lambda: importlib.import_module("userbatch.ml.tracking").configure())
    attempt("ml.load", lambda: importlib.import_module("userbatch.ml.registry").load("m"))
    # what the base install must still do without any extra: import the library, its core modules, the CLI
    for m in ("userbatch", "userbatch.tables.read", "userbatch.tables.write", "userbatch.ops.search",
              "userbatch.ops.crossmatch", "userbatch.ops.lightcurves", "userbatch.ops.periodogram",
              "userbatch.facility.service", "userbatch.facility.worker", "userbatch.ml.tracking", "userbatch.cli"):
        attempt("import " + m, lambda m=m: importlib.import_module(m))
    from userbatch.cli import main
    r = CliRunner().invoke(main, ["models", "list"])
    out["cli models list"] = [r.exit_code, r.output]
    json.dump(out, sys.stdout)
    ''')


@pytest.fixture(scope="module")
def without_extras(tmp_path_factory):
    hidden = ",".join(m for mods in HIDDEN.values() for m in mods)
    home = tmp_path_factory.mktemp("noextras")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "USERBATCH_HOME": str(home), "USERBATCH_USER": "tester",
           "PYTHONPATH": str(ROOT / "python")}
    r = subprocess.run([sys.executable, "-c", PROBE, hidden], capture_output=True, text=True, env=env, cwd=home,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-4000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("key,extra,package", [
    ("facility.api", "facility", "fastapi"),
    ("facility.runapi", "facility", "fastapi"),
    ("facility.client", "facility", "httpx"),
    ("schedule", "facility", "croniter"),
    ("images", "images", "lsst.daf"),
    ("ml.configure", "ml", "mlflow"),
    ("ml.load", "ml", "mlflow"),
])
def test_a_part_without_its_extra_names_the_extra(without_extras, key, extra, package):
    kind, message, *rest = without_extras[key]
    assert kind == "MissingExtra", (key, kind, message)
    assert f"needs the {extra!r} extra: pip install 'userbatch[{extra}]'" in message
    assert package in message  # the import that failed, for whoever debugs it
    assert rest == [True]  # also an ImportError: `except ImportError` probes keep working


def test_the_bps_run_kind_without_images_says_which_extra(without_extras):
    kind, message = without_extras["bps_kind"]
    assert kind == "UserbatchError" and "run kind 'bps'" in message and "userbatch[images]" in message, message


def test_the_core_library_imports_without_any_extra(without_extras):
    failed = {k: v for k, v in without_extras.items() if k.startswith("import ") and v[0] != "ok"}
    assert not failed


def test_the_cli_prints_the_missing_extra_as_one_line(without_extras):
    code, output = without_extras["cli models list"]
    assert code == 2, output
    assert output.strip().startswith("error: ") and "pip install 'userbatch[ml]'" in output
    assert "Traceback" not in output


def test_require(tmp_path, monkeypatch):
    assert require("json", "ml") is sys.modules["json"]
    with pytest.raises(MissingExtra, match=r"tests\.x needs the 'ml' extra: pip install 'userbatch\[ml\]' "
                                           r"\(No module named 'surely_not_installed_ub'\)"):
        require("surely_not_installed_ub.sub", "ml", what="tests.x")
    with pytest.raises(MissingExtra, match="test_extras needs the 'facility' extra"):
        require("surely_not_installed_ub", "facility", load=False)  # `what` defaults to the calling module
    # a package that is installed but broken keeps its own error: that is not a missing extra
    (tmp_path / "ub_broken_pkg").mkdir()
    (tmp_path / "ub_broken_pkg" / "__init__.py").write_text("import ub_dependency_it_lacks\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError) as info:
        require("ub_broken_pkg", "ml")
    assert not isinstance(info.value, MissingExtra) and info.value.name == "ub_dependency_it_lacks"
    with pytest.raises(ValueError, match="unknown extra"):
        missing("gpu")
    err = missing("images", ModuleNotFoundError("No module named 'lsst'", name="lsst"), what="x")
    assert isinstance(err, UserbatchError) and isinstance(err, ImportError) and err.name == "lsst"


def test_the_extras_in_pyproject_are_the_ones_the_code_names():
    opt = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    parts = set(opt) - {"all", "test", "bench", "docs"}
    assert parts == set(EXTRAS) == set(HIDDEN)
    assert opt["all"] == [f"userbatch[{','.join(sorted(parts))}]"]
    deps = " ".join(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
    for name in ("fastapi", "uvicorn", "httpx", "croniter", "sqlglot", "lsst-daf-butler", "lsst-ctrl-bps", "mlflow",
                 "scikit-learn", "nbclient", "ipykernel"):
        assert name not in deps, f"{name} is an extra's, not a base dependency"


def test_shipped_files_come_from_the_checkout():
    assert resources.repo_root() == ROOT
    assert resources.conf("facility.yaml") == ROOT / "conf" / "facility.yaml"
    assert resources.conf("templates") == ROOT / "conf" / "templates"
    assert resources.path("pipelines", "stamps.yaml") == ROOT / "pipelines" / "stamps.yaml"
    # a file the checkout lacks: the shipped copy's place (none in a checkout), so errors name a real location
    assert resources.conf("nope.yaml") == ROOT / "conf" / "nope.yaml"
    assert resources.packaged("conf", "facility.yaml") == ROOT / "python" / "userbatch" / "conf" / "facility.yaml"
    for bad in [(), ("jobs", "x.py"), ("conf", "..", "pyproject.toml"), ("conf", "templates/x.yaml"), ("conf", "")]:
        with pytest.raises(ValueError):
            resources.path(*bad)
