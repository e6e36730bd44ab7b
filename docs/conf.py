"""Sphinx configuration of the userbatch documentation site.

Build it with ``make docs`` (``python -m sphinx -W --keep-going -b html docs docs/_build/html``);
``tests/test_docs.py`` runs the same build in the test suite, with warnings as errors, and checks that every
public function and class of the package is in the API reference.

The API reference is generated, never kept by hand: when the build starts, :func:`write_api_pages` writes one
page per module of the source tree (so a module added or renamed later is picked up) with its docstring, summary
tables and every public function and class defined in it; the page of the ``userbatch`` package itself documents
whatever ``userbatch.__all__`` holds at build time: the public API.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
PACKAGE_DIR = ROOT / "python" / "userbatch"
sys.path.insert(0, str(ROOT / "python"))

#: Modules (and everything below them) left out of the API reference, with the reason. ``tests/test_docs.py``
#: reads this tuple (by parsing this file) so that the test and the reference agree on what is covered.
API_EXCLUDE = (
    "userbatch.migrations",  # Alembic's environment and revision scripts: they run against Alembic's context
)

userbatch = importlib.import_module("userbatch")  # from this checkout: python/ is first on the path

# -- Project information -------------------------------------------------------------------------------------------

project = "userbatch"
author = "Rubin Observatory User Batch"
copyright = "Rubin Observatory"
release = userbatch.__version__
version = ".".join(release.split(".")[:2])

# -- General configuration -----------------------------------------------------------------------------------------

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "README.md"]

# ``single backticks`` in docstrings are code, as they are in the Markdown pages.
default_role = "code"
add_module_names = False  # signatures read read_table(...), not userbatch.tables.read.read_table(...)

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# -- API reference -------------------------------------------------------------------------------------------------
#
# One page per module, written by write_api_pages() below when the build starts (into api/generated/, which git
# ignores): the module's docstring, summary tables (autosummary) and every public function and class defined in
# it (autodoc). The modules come from the source tree, so a module added, moved or renamed is picked up without
# editing anything here. Why not autosummary's own ``:recursive:`` generation: it finds subpackages with pkgutil,
# which skips directories without ``__init__.py``, and it resolves ``userbatch.ops.search`` to the *function*
# ``search`` that ``userbatch.ops`` re-exports, not to the module of that name.

autosummary_generate = False  # the pages are written by write_api_pages(); autosummary only draws the tables

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
autodoc_default_options = {"show-inheritance": True}

# numpydoc-style docstrings (``Parameters`` / ``Returns`` sections), rendered by napoleon.
napoleon_numpy_docstring = True
napoleon_google_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True

API_PAGES = DOCS / "api" / "generated"


def _excluded(name: str) -> bool:
    return any(name == x or name.startswith(x + ".") for x in API_EXCLUDE)


def module_tree() -> dict[str, list[str]]:
    """Every documented module of the package, mapped to its direct submodules, from the source files.

    A directory counts as a package whether or not it has an ``__init__.py``. Private modules (a name starting
    with ``_``) and :data:`API_EXCLUDE` are left out.
    """
    tree: dict[str, list[str]] = {}

    def walk(directory: Path, name: str) -> None:
        children = []
        for path in sorted(directory.iterdir()):
            if path.is_dir() and not path.name.startswith(("_", ".")) and any(path.rglob("*.py")):
                child = f"{name}.{path.name}"
            elif path.suffix == ".py" and not path.name.startswith("_"):
                child = f"{name}.{path.stem}"
            else:
                continue
            if _excluded(child) or not all(p.isidentifier() for p in child.split(".")):
                continue
            children.append(child)
            if path.is_dir():
                walk(path, child)
            else:
                tree[child] = []
        tree[name] = children

    walk(PACKAGE_DIR, "userbatch")
    return tree


def public_members(module) -> tuple[list[str], list[str]]:
    """The public functions and classes *defined* in a module (not imported into it), in source order."""
    functions, classes = [], []
    for attr, obj in vars(module).items():
        if attr.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isclass(obj):
            classes.append(attr)
        elif inspect.isroutine(obj) or inspect.isfunction(getattr(obj, "py_func", None)):  # numba: a dispatcher
            functions.append(attr)
    return functions, classes


def _kind(obj) -> str:
    if inspect.isclass(obj):
        return "class"
    if inspect.ismodule(obj):
        return "module"
    if callable(obj):
        return "function"
    return "data"


def _summary(module) -> str:
    """The first paragraph of a module's docstring, on one line."""
    doc = inspect.getdoc(module) or ""
    return " ".join(doc.split("\n\n", 1)[0].split())


def _title(text: str) -> list[str]:
    return [text, "=" * len(text), ""]


def _members_rst(functions: list[str], classes: list[str], data: tuple[str, ...] = ()) -> list[str]:
    lines: list[str] = []
    for heading, names in (("Functions", functions), ("Classes", classes)):
        if names:
            lines += [f".. rubric:: {heading}", "", ".. autosummary::", ""]
            lines += [f"   {n}" for n in names] + [""]
    for n in functions:
        lines += [f".. autofunction:: {n}", ""]
    for n in classes:
        lines += [f".. autoclass:: {n}", "   :members:", ""]
    for n in data:
        lines += [f".. autodata:: {n}", "   :no-value:", ""]
    return lines


def module_page(name: str, submodules: list[str]) -> str:
    """The reST of one module's page."""
    from sphinx.util import logging

    try:
        module = importlib.import_module(name)
    except ImportError as exc:  # a missing extra, say: autodoc would say it less clearly; -W fails the build
        logging.getLogger(__name__).warning(f"API reference: cannot import {name}: {exc!r}")
        return "\n".join(_title(name) + [f".. automodule:: {name}", ""])
    functions, classes = public_members(module)
    if name == "userbatch":
        # The public API: userbatch.__all__ at build time (lazy attributes included), as userbatch.<name>.
        lines = _title("userbatch: the public API") + [f".. automodule:: {name}", "", f".. currentmodule:: {name}", ""]
        lines += ["Everything in ``userbatch.__all__``, importable as ``userbatch.<name>``; the deep module paths",
                  "below keep working.", ""]
        kinds = {n: _kind(getattr(module, n)) for n in getattr(module, "__all__", []) if not n.startswith("_")}
        api_functions = [n for n, k in kinds.items() if k == "function"]
        api_classes = [n for n, k in kinds.items() if k == "class"]
        api_data = tuple(n for n, k in kinds.items() if k == "data")
        lines += _members_rst(api_functions + [f for f in functions if f not in kinds],
                              api_classes + [c for c in classes if c not in kinds], api_data)
    else:
        lines = _title(name) + [f".. automodule:: {name}", "", f".. currentmodule:: {name}", ""]
        lines += _members_rst(functions, classes)
    if submodules:
        lines += [".. rubric:: Modules", "", ".. toctree::", "   :hidden:", ""]
        lines += [f"   {sub}" for sub in submodules] + [""]
        for sub in submodules:
            try:
                summary = _summary(importlib.import_module(sub))
            except ImportError:  # its own page says why
                summary = ""
            lines += [f"* :mod:`{sub}`" + (f" — {summary}" if summary else "")]
        lines += [""]
    return "\n".join(lines)


def write_api_pages(app=None) -> None:
    """Write api/generated/<module>.rst for every module, rewriting only what changed and removing pages of
    modules that are gone."""
    API_PAGES.mkdir(parents=True, exist_ok=True)
    tree = module_tree()
    wanted = set()
    for name, submodules in tree.items():
        path = API_PAGES / f"{name}.rst"
        wanted.add(path)
        text = module_page(name, submodules)
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
    for path in API_PAGES.glob("*.rst"):
        if path not in wanted:
            path.unlink()


# -- HTML output ---------------------------------------------------------------------------------------------------

html_theme = "pydata_sphinx_theme"
html_title = "userbatch"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
}
html_static_path: list[str] = []
html_show_sourcelink = False


def _skip_framework_attributes(app, what, name, obj, skip, options):
    """Leave out what a framework puts on our classes: SQLAlchemy's ``metadata`` and ``registry`` on every
    declarative class (documented, with SQLAlchemy's own cross-references, by SQLAlchemy)."""
    from sqlalchemy import MetaData
    from sqlalchemy.orm import registry

    if isinstance(obj, (MetaData, registry)):
        return True
    return None


def _public_api_as_aliases(app, env):
    """Make the public page's ``userbatch.<name>`` entries aliases of the objects' own documentation.

    The public API page documents a class or function a second time under its short name. A cross-reference that
    Sphinx resolves by suffix (``Catalog`` in a type annotation it could not evaluate) would then find two
    targets; marking the short names as aliases (what ``:canonical:`` does for the other direction) lets the
    Python domain prefer the object's own page, while ``userbatch.<name>`` stays a valid target and stays in the
    inventory.
    """
    py = env.domains["py"]
    short = {}
    for name in getattr(userbatch, "__all__", []):
        obj = getattr(userbatch, name, None)
        canonical = f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', '')}"
        if not name.startswith("_") and canonical != f"userbatch.{name}" and canonical in py.objects:
            short[f"userbatch.{name}"] = canonical
    for refname, entry in list(py.objects.items()):
        if any(refname == s or refname.startswith(s + ".") for s in short) and not entry.aliased:
            py.objects[refname] = entry._replace(aliased=True)


def setup(app):
    app.connect("builder-inited", write_api_pages)
    app.connect("env-updated", _public_api_as_aliases)
    app.connect("autodoc-skip-member", _skip_framework_attributes)
