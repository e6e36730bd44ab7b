"""The optional parts of userbatch and the error that names the one missing.

The base install reads and writes catalog tables, searches, cross-matches and computes light curves. Everything
else is an extra (``pyproject.toml``): ``facility`` (the REST API, its client, schedules), ``images`` (the BPS
plugin over the Rubin middleware), ``ml`` (classifiers tracked in MLflow), ``notebooks`` (running the notebooks);
``all`` is all of them. Code that needs an optional package imports it through :func:`require` (or turns the
``ModuleNotFoundError`` of a module-level import into :func:`missing`), so a user without the extra reads::

    userbatch.ml.tracking needs the 'ml' extra: pip install 'userbatch[ml]' (No module named 'mlflow')

Standard library only: importable in any install, from any layer.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType

from .errors import MissingExtra

#: extra -> what it adds (for messages and the docs); keep in step with [project.optional-dependencies]
EXTRAS = {
    "facility": "the facility's REST API, its client and scheduled workflows (FastAPI, uvicorn, httpx, croniter, "
                "sqlglot, Swagger UI's files)",
    "images": "image processing through BPS (the Rubin middleware: daf_butler, pipe_base, ctrl_mpexec, ctrl_bps)",
    "ml": "classifiers tracked in MLflow (mlflow, scikit-learn)",
    "notebooks": "running the notebooks (nbformat, nbclient, ipykernel)",
}


def missing(extra: str, exc: BaseException | None = None, *, what: str | None = None) -> MissingExtra:
    """The error for ``what`` (default: the calling module) used without ``extra``; ``exc`` is the import error."""
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; known: {', '.join(EXTRAS)}")
    if what is None:
        what = sys._getframe(1).f_globals.get("__name__", "userbatch")
    cause = f" ({exc})" if exc is not None else ""
    err = MissingExtra(f"{what} needs the {extra!r} extra: pip install 'userbatch[{extra}]'{cause}")
    err.name = getattr(exc, "name", None)
    return err


def require(module: str, extra: str, *, what: str | None = None, load: bool = True) -> ModuleType | None:
    """``import module``, or :class:`~userbatch.errors.MissingExtra` naming ``extra`` when it is not installed.

    Only a *missing* package becomes MissingExtra: an installed package that fails while importing keeps its own
    error. With ``load=False`` the package is only looked up (no import; returns None) — for a program that runs it
    in another process, such as ``mlflow server``.
    """
    if what is None:
        what = sys._getframe(1).f_globals.get("__name__", "userbatch")
    if not load:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError) as exc:  # a parent package missing, or a module set to None
            raise missing(extra, exc, what=what) from None
        if not found:
            raise missing(extra, ModuleNotFoundError(f"No module named {module!r}", name=module), what=what)
        return None
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and not _is_part_of(exc.name, module):
            raise  # the package is there but one of *its* imports is broken: not a missing extra
        raise missing(extra, exc, what=what) from exc


def _is_part_of(name: str, module: str) -> bool:
    """Whether ``name`` (what could not be found) is ``module`` or one of its parent packages."""
    return module == name or module.startswith(name + ".")
