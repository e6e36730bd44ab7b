"""Where the files userbatch ships live: ``conf/`` (the facility defaults, job templates, BPS defaults) and
``pipelines/`` (the image pipelines).

Each lives once in git, at the top of the repository. A wheel carries a copy inside the package
(``userbatch/conf/...``, ``userbatch/pipelines/...``: ``setup.py`` copies them at build time), so a plain
``pip install`` finds its own defaults. Which copy is used:

* running from a checkout (this package is ``<repo>/python/userbatch``, editable install or ``PYTHONPATH``), the
  repository's file — edit ``conf/facility.yaml`` and the next process sees it, no reinstall;
* otherwise (an installed wheel), the copy shipped in the package.

The repository wins file by file: a checkout missing one file falls back to the shipped copy where there is one.
Settings that name another file (``USERBATCH_FACILITY_CONFIG``, ``USERBATCH_TEMPLATE_PATH``) are applied by the
callers, before these defaults.

Standard library only, and nothing from userbatch: any layer may import it.
"""

from __future__ import annotations

import atexit
import contextlib
from importlib import resources as _res
from pathlib import Path

#: the top-level directories of the repository that the wheel ships inside the package
SHIPPED = ("conf", "pipelines")

_PACKAGE_DIR = Path(__file__).resolve().parent
_extracted = contextlib.ExitStack()
atexit.register(_extracted.close)


def repo_root() -> Path | None:
    """The repository this package runs from (``<root>/python/userbatch``), or None for an installed package."""
    root = _PACKAGE_DIR.parents[1]
    if _PACKAGE_DIR.parent.name == "python" and (root / "pyproject.toml").is_file() and (root / "conf").is_dir():
        return root
    return None


def packaged(*parts: str) -> Path:
    """The copy shipped inside the installed package (it may not exist: a checkout has none)."""
    _check(parts)
    item = _res.files(__package__).joinpath(*parts)
    if isinstance(item, Path):
        return item
    # a package imported from a zip file: extract the resource once, for the life of the process
    return _extracted.enter_context(_res.as_file(item))  # pragma: no cover - wheels are installed unpacked


def path(*parts: str) -> Path:
    """The file or directory ``parts`` (``"conf", "facility.yaml"``; ``"conf", "templates"``): the repository's
    when this package runs from a checkout and it exists there, else the shipped copy. If neither exists, the path
    that was looked for first, so that an error message names a place the user knows."""
    _check(parts)
    root = repo_root()
    candidates = ([root.joinpath(*parts)] if root else []) + [packaged(*parts)]
    for c in candidates:
        if c.exists():
            return c
    return candidates[0]


def conf(*parts: str) -> Path:
    """``path("conf", *parts)``: a default configuration file or directory (``conf("templates")``)."""
    return path("conf", *parts)


def _check(parts: tuple[str, ...]) -> None:
    if not parts or parts[0] not in SHIPPED or any(p in ("", ".", "..") or "/" in p for p in parts):
        raise ValueError(f"a shipped file is one of {', '.join(SHIPPED)} followed by plain names; got {parts!r}")


__all__ = ["SHIPPED", "conf", "packaged", "path", "repo_root"]
