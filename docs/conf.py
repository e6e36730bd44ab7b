"""Sphinx configuration of the userbatch documentation site.

Build it with ``make docs`` (``python -m sphinx -W --keep-going -b html docs docs/_build/html``);
``tests/test_docs.py`` runs the same build in the test suite, with warnings as errors, and checks that every
public function and class of the package is in the API reference.

The API reference is generated, never kept by hand: ``api/index.rst`` holds one recursive autosummary over the
``userbatch`` package, and the templates in ``_templates/autosummary/`` turn each module into a page with its
docstring, a summary table and every public function and class defined in it. The module tree comes from the
source files (so a module added or renamed later is picked up, and directories without ``__init__.py`` are
walked too), and the page of the ``userbatch`` package itself documents whatever ``userbatch.__all__`` holds at
build time: the public API.
"""

from __future__ import annotations

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

import userbatch  # noqa: E402

# -- Project information -------------------------------------------------------------------------------------------

project = "userbatch"
author = "Rubin Observatory User Batch"
copyright = "Rubin Observatory"  # noqa: A001
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
templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "README.md"]

# ``single backticks`` in docstrings are code, as they are in the Markdown pages.
default_role = "code"

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# -- API reference -------------------------------------------------------------------------------------------------

autosummary_generate = True
autosummary_generate_overwrite = True
autosummary_imported_members = False
autosummary_ignore_module_all = True  # a module's __all__ does not hide public functions defined in it

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
autodoc_default_options = {"show-inheritance": True}

# numpydoc-style docstrings (``Parameters`` / ``Returns`` sections), rendered by napoleon.
napoleon_numpy_docstring = True
napoleon_google_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True


def _excluded(name: str) -> bool:
    return any(name == x or name.startswith(x + ".") for x in API_EXCLUDE)


def module_tree() -> dict[str, list[str]]:
    """Every documented module of the package, mapped to its direct submodules, from the source files.

    A directory counts as a package whether or not it has an ``__init__.py`` (``pkgutil``, which autosummary's
    own recursion uses, skips namespace packages). Private modules (a name starting with ``_``) and
    :data:`API_EXCLUDE` are left out.
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
            if _excluded(child) or not child.replace(".", "_").isidentifier():
                continue
            children.append(child)
            if path.is_dir():
                walk(path, child)
            else:
                tree[child] = []
        tree[name] = children

    walk(PACKAGE_DIR, "userbatch")
    return tree


def public_api() -> list[tuple[str, str]]:
    """``userbatch.__all__`` at build time, each name with the autodoc directive that documents it."""
    out = []
    for name in getattr(userbatch, "__all__", []):
        if name.startswith("_"):
            continue
        obj = getattr(userbatch, name)
        if inspect.isclass(obj):
            kind = "exception" if issubclass(obj, BaseException) else "class"
        elif inspect.ismodule(obj):
            kind = "module"
        elif callable(obj):
            kind = "function"
        else:
            kind = "data"
        out.append((name, kind))
    return out


autosummary_context = {
    "module_tree": module_tree(),
    "public_api": public_api(),
}

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


def setup(app):
    app.connect("autodoc-skip-member", _skip_framework_attributes)
