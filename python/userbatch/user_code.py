"""A user's own class named by a job (``algorithm: my_match:MyMatch``): found on the driver, shipped to the executors.

Why this exists. A template job names a class as ``module:Class`` and the library imports it with ``importlib``. On
the driver that works when the module is on ``sys.path``; but the Spark engine pickles the instance into its tasks,
and a class pickles *by reference* (module and name), so each executor's Python worker must import the module too.
Spark makes a module importable there only when it was shipped: ``spark-submit --py-files my_match.py`` or
``SparkContext.addPyFile``. A module that sits next to the user's job script or job file, or in the working
directory, is on no executor's path (on a cluster the executors run elsewhere; even in local mode their workers
start from the JVM's directory). So a job does what a Spark user expects from a file next to their job:

* :func:`locate` finds the module — on ``sys.path`` (installed packages, ``PYTHONPATH``, ``--py-files``, the job
  script's directory and, for ``--config job.yaml``, the job file's directory: :func:`add_job_dir`), else in the
  working directory, or at a path given as ``path/to/my_match.py:MyMatch`` — and says where it looked when it is
  nowhere;
* :func:`ship` hands a module found in a user's file (not an installed package, not the facility's own, not already
  in ``--py-files``) to the executors with ``addPyFile`` (a package as a zip), once per Spark application, before
  any Spark task needs it.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import site
import sys
import sysconfig
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .engine import is_remote
from .errors import UserbatchError

log = logging.getLogger(__name__)

#: The facility's own top-level package: deployed on every executor, never shipped.
_OWN_PACKAGE = __name__.split(".")[0]
#: (Spark application id, shipped file) pairs already added, so a second job in the same session adds nothing.
_SHIPPED: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class UserClass:
    """Where a ``module:Class`` comes from.

    Attributes
    ----------
    spec : str
        ``module:Class`` to import (a ``path/to/file.py:Class`` spec becomes ``file:Class``).
    module : str
        The top-level module or package that holds the class.
    source : pathlib.Path or None
        The file (``my_match.py``) or package directory to ship to the executors; None when the module is installed,
        the facility's own, or not a file at all (whether ``--py-files`` already holds it is :func:`ship`'s
        question).
    """

    spec: str
    module: str
    source: Path | None


def add_job_dir(job_file: str | os.PathLike) -> Path:
    """Put the directory of a job file on ``sys.path`` (first), as Python does for a script's directory: a module
    next to ``job.yaml`` is then importable by ``--config job.yaml``.

    Parameters
    ----------
    job_file : str or path-like
        The job file (``--config``).

    Returns
    -------
    pathlib.Path
        The directory added.
    """
    d = Path(job_file).expanduser().resolve().parent
    if str(d) not in sys.path:
        sys.path.insert(0, str(d))
        importlib.invalidate_caches()
    return d


def _installed_roots() -> list[Path]:
    paths = sysconfig.get_paths()
    roots = {paths.get(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    roots.update(site.getsitepackages() if hasattr(site, "getsitepackages") else [])
    roots.add(site.getusersitepackages() if hasattr(site, "getusersitepackages") else None)
    return [Path(r).resolve() for r in roots if r]


def _under(path: Path, roots: list[Path]) -> bool:
    return any(path == r or r in path.parents for r in roots)


def _find_spec(top: str):
    try:
        return importlib.util.find_spec(top)
    except (ImportError, ValueError):  # a broken parent or a module in sys.modules without a spec: not found
        return None


def _source(spec) -> Path | None:
    """The file or package directory a module is imported from, or None (built-in, frozen, namespace package)."""
    if spec is None or not spec.has_location or not spec.origin:
        return None
    if spec.submodule_search_locations is not None:  # a package: its directory
        return Path(spec.origin).resolve().parent if spec.origin.endswith("__init__.py") else None
    return Path(spec.origin).resolve() if spec.origin.endswith(".py") else None


def _in_dir(top: str, d: Path) -> bool:
    return (d / f"{top}.py").is_file() or (d / top / "__init__.py").is_file()


def locate(spec: str, search_dirs: list[Path] | None = None, what: str = "class") -> UserClass:
    """Find the module of a ``module:Class`` (or ``path/to/file.py:Class``) spec on the driver; make it importable.

    A module not on ``sys.path`` but found in one of ``search_dirs`` (default: the working directory) has that
    directory put on ``sys.path``. Nothing is imported here: the caller imports the class and reports its errors.

    Parameters
    ----------
    spec : str
        ``package.module:ClassName`` or ``path/to/file.py:ClassName``.
    search_dirs : list of pathlib.Path, optional
        Directories to look in when the module is not on ``sys.path``; default ``[Path.cwd()]``.
    what : str
        What the class is, for messages (``"algorithm"``).

    Returns
    -------
    UserClass
        The spec to import and the file to ship (None when there is nothing to ship).

    Raises
    ------
    UserbatchError
        The module is nowhere (the message names it and every place looked in), or a file given by path is
        shadowed by another module of its name.
    """
    module, _, attr = spec.rpartition(":")
    label = f"{what} {spec!r}"
    path = None
    if not module or not attr:
        raise UserbatchError(f"{label}: expected 'package.module:ClassName' or 'path/to/file.py:ClassName'")
    if module.endswith(".py"):  # a path: the file's directory goes on sys.path, the file's stem is the module
        path = Path(module).expanduser()
        if not path.is_file():
            raise UserbatchError(f"{label}: no file {path} (relative paths are read from {Path.cwd()})")
        path = path.resolve()
        if not path.stem.isidentifier():
            raise UserbatchError(f"{label}: {path.name} cannot be imported as a module (its name must be a Python "
                                 "identifier)")
        if str(path.parent) not in sys.path:
            sys.path.insert(0, str(path.parent))
            importlib.invalidate_caches()
        module = path.stem
        spec = f"{module}:{attr}"
    top = module.split(".")[0]
    found = _find_spec(top)
    if found is None:
        dirs = [Path(d).resolve() for d in (search_dirs if search_dirs is not None else [Path.cwd()])]
        where = next((d for d in dirs if _in_dir(top, d)), None)
        if where is None:
            looked = ", ".join(str(d) for d in dirs) or "no directory"
            raise UserbatchError(
                f"{label}: cannot import module {module!r}: it is not installed or on the Python path (the job "
                f"script's and job file's directories, --py-files, PYTHONPATH), and there is no {top}.py or {top}/ "
                f"package in {looked}. Put {top}.py next to the job file or in the working directory, pass it with "
                f"spark-submit --py-files {top}.py, or give its path: path/to/{top}.py:{attr}")
        sys.path.insert(0, str(where))
        importlib.invalidate_caches()
        found = _find_spec(top)
    if path is not None and _source(found) != path:
        raise UserbatchError(f"{label}: module {top!r} is imported from {_source(found) or found.origin}, not from "
                             f"{path}; rename {path.name}")
    return UserClass(spec=spec, module=top, source=_to_ship(top, _source(found)))


def _to_ship(top: str, source: Path | None) -> Path | None:
    """``source`` when it is a user's file the executors lack; None for what they have already."""
    if source is None or top == _OWN_PACKAGE or _under(source, _installed_roots()):
        return None
    return source


def _py_files(sc) -> set[str]:
    """Names of the files ``spark-submit --py-files`` (``spark.submit.pyFiles``) already gave the executors."""
    value = sc.getConf().get("spark.submit.pyFiles", "") or ""
    return {Path(v.split("#")[0]).name for v in value.split(",") if v.strip()}


def _zip_package(package_dir: Path) -> Path:
    """``package_dir`` as ``<tmp>/<name>.zip`` with the package at its root (what ``addPyFile`` puts on the path)."""
    out = Path(tempfile.mkdtemp(prefix="userbatch-pyfiles-")) / f"{package_dir.name}.zip"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(package_dir.rglob("*")):
            if f.is_file() and "__pycache__" not in f.parts and f.suffix not in (".pyc", ".pyo"):
                zf.write(f, Path(package_dir.name) / f.relative_to(package_dir))
    return out


def user_class(cls: type) -> UserClass | None:
    """Where an imported class comes from, for :func:`ship`; None when it needs no shipping because it travels by
    value (defined in ``__main__``: a script's or a notebook's own class is pickled whole by cloudpickle).

    Parameters
    ----------
    cls : type
        The class (a cross-match algorithm's, say) whose instances Spark tasks will unpickle.
    """
    module = getattr(cls, "__module__", "") or ""
    top = module.split(".")[0]
    if not top or top == "__main__" or top not in sys.modules:
        return None
    return UserClass(f"{module}:{cls.__qualname__}", top, _to_ship(top, _source(_find_spec(top))))


def ship(spark, user: UserClass | None) -> Path | None:
    """Make ``user``'s module importable on ``spark``'s executors: ``addPyFile`` its file (a package as a zip).

    Nothing is added when the module needs no shipping (:attr:`UserClass.source` is None), when ``--py-files``
    already holds a file of that name, or when this Spark application got it before.

    Parameters
    ----------
    spark : pyspark.sql.SparkSession
        The session whose executors will run the tasks (classic or Spark Connect).
    user : UserClass or None
        What :func:`locate` or :func:`user_class` found (None: nothing to do).

    Returns
    -------
    pathlib.Path or None
        The file added, or None when nothing was.
    """
    if user is None or user.source is None:
        return None
    path = _zip_package(user.source) if user.source.is_dir() else user.source
    if is_remote(spark):  # Spark Connect: no SparkContext; the session uploads it as a Python artifact
        key = (str(getattr(spark, "session_id", id(spark))), str(user.source))
        if key in _SHIPPED:
            return None
        spark.addArtifacts(str(path), pyfile=True)
        _SHIPPED.add(key)
        return path
    sc = spark.sparkContext
    if path.name in _py_files(sc):
        log.info("%s: already shipped with --py-files", path.name)
        return None
    key = (sc.applicationId, str(user.source))
    if key in _SHIPPED:
        return None
    sc.addPyFile(str(path))
    _SHIPPED.add(key)
    log.info("shipped %s to the executors (addPyFile) for %s", path, user.spec)
    return path
