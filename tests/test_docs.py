"""The documentation site builds with warnings as errors, and its API reference covers the whole public API.

One Sphinx build (``python -m sphinx -W --keep-going -E -b html docs <tmp>``, as ``make docs`` runs it), then the
objects inventory it writes (``objects.inv``) is checked against the package itself: every name in
``userbatch.__all__`` is documented as ``userbatch.<name>``, and every public function and class defined in a module
the reference covers is documented under that module. Which modules the reference covers is decided by
``docs/conf.py`` (``API_EXCLUDE``), read here by parsing that file, so the two cannot disagree.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import re
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

#: the fast tier (make check) leaves this out: a whole Sphinx build (every module imported)
pytestmark = pytest.mark.heavy

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PACKAGE_DIR = ROOT / "python" / "userbatch"


def _api_exclude() -> tuple[str, ...]:
    tree = ast.parse((DOCS / "conf.py").read_text())
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        if any(isinstance(t, ast.Name) and t.id == "API_EXCLUDE" for t in targets):
            return tuple(ast.literal_eval(node.value))
    raise AssertionError("docs/conf.py defines no API_EXCLUDE")


def _modules() -> list[str]:
    """Every module of the package the reference covers: each .py file (and each package directory, with or
    without ``__init__.py``), except private ones and those under API_EXCLUDE."""
    exclude = _api_exclude()
    out = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if any(p.startswith("_") for p in parts) or "__pycache__" in parts:
            continue
        name = ".".join(parts)
        if any(name == x or name.startswith(x + ".") for x in exclude):
            continue
        if not all(p.isidentifier() for p in parts):
            continue
        out.append(name)
        # a package directory without __init__.py is a module of the reference too
        for i in range(2, len(parts)):
            pkg = ".".join(parts[:i])
            if pkg not in out:
                out.append(pkg)
    return sorted(set(out))


def _is_public_function_or_class(obj, module: str) -> bool:
    if getattr(obj, "__module__", None) != module:
        return False
    # numba-compiled functions are dispatcher objects holding the Python function
    return inspect.isclass(obj) or inspect.isroutine(obj) or inspect.isfunction(getattr(obj, "py_func", None))


def _inventory(path: Path) -> dict[str, str]:
    """Sphinx's objects.inv: four header lines, then zlib'd lines ``name domain:role priority uri dispname``."""
    raw = path.read_bytes()
    header, _, body = raw.partition(b"\n")
    assert header.startswith(b"# Sphinx inventory version 2"), header
    for _ in range(3):
        _, _, body = body.partition(b"\n")
    out = {}
    for line in zlib.decompress(body).decode().splitlines():
        name, role = line.split(" ", 2)[:2]
        out.setdefault(name, role)
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("docs")
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-E", "-q", "-b", "html",
           "-d", str(out / "doctrees"), str(DOCS), str(out / "html")]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    t0 = time.monotonic()
    proc = subprocess.run(cmd, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    print(f"sphinx-build: {time.monotonic() - t0:.1f} s")
    assert proc.returncode == 0, (
        f"docs build failed (warnings are errors): {' '.join(cmd)}\n{proc.stdout[-5000:]}\n{proc.stderr[-10000:]}"
    )
    return out / "html"


def test_docs_build_and_pages(built):
    for page in ["index.html", "getting-started.html", "api/index.html", "api/generated/userbatch.html",
                 "genindex.html", "py-modindex.html"]:
        assert (built / page).is_file(), page


def test_every_public_name_in_the_api_reference(built):
    import userbatch

    documented = _inventory(built / "objects.inv")
    missing = [f"userbatch.{n}" for n in userbatch.__all__
               if not n.startswith("_") and f"userbatch.{n}" not in documented]
    assert not missing, f"in userbatch.__all__ but not in the API reference: {missing}"

    missing = []
    modules = _modules()
    assert "userbatch.tables.read" in modules or "userbatch.sky.regions" in modules, modules
    for name in modules:
        assert name in documented, f"module {name} has no page in the API reference"
        module = importlib.import_module(name)
        for attr, obj in vars(module).items():
            public = not attr.startswith("_") and _is_public_function_or_class(obj, name)
            if public and f"{name}.{attr}" not in documented:
                missing.append(f"{name}.{attr}")
    assert not missing, f"public functions and classes not in the API reference: {missing}"


def test_readme_is_what_a_newcomer_needs_first():
    """At most 8 KB, and every page it links to exists (the rest of what it used to hold is in docs/)."""
    readme = ROOT / "README.md"
    assert readme.stat().st_size <= 8 * 1024, f"README.md is {readme.stat().st_size} bytes; move detail to docs/"
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme.read_text()):
        if "://" not in target:
            assert (ROOT / target).exists(), f"README.md links to {target}, which does not exist"
