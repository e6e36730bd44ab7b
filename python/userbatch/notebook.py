"""One call to start a notebook: ``spark = open_demo()``.

The notebooks in ``notebooks/`` explore the demo's tables (dp1.object, dp1.visit, dp1.forced_source, ref.gaia).
:func:`open_demo` points the facility settings at a home that has them — the one ``make demo`` wrote, or one the
environment names (CI prepares one for all notebooks) — and, where the tables are missing, simulates and ingests a
small survey there itself, so a notebook runs from a fresh clone without ``make demo`` first. It never wipes
anything: unlike the demo, a notebook must be safe to re-run against tables you have been working on.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .config import settings
from .errors import UserbatchError
from .resources import repo_root

log = logging.getLogger(__name__)

#: the tables the notebooks read; all present means the home is ready
DEMO_TABLES = ("dp1.object", "dp1.visit", "dp1.forced_source", "ref.gaia")

#: the repository root when running from a checkout (``make demo`` writes ``demo_output`` there); None for an
#: installed package, whose notebooks use ``demo_output`` in the current directory, as ``userbatch demo`` does
REPO_ROOT = repo_root()


def _choose_home(home) -> tuple[Path, bool]:
    """The home and whether it came from USERBATCH_HOME (then a database/warehouse already set there is kept)."""
    if home is not None:
        return Path(home).expanduser().resolve(), False
    s = settings()
    if "home" in s.given:
        return s.home, True
    return (REPO_ROOT or Path.cwd()) / "demo_output", False


def open_demo(n_objects: int = 5000, home=None):
    """Return a SparkSession whose SQL views are the demo catalog's tables, building that catalog if needed.

    The home is ``home``, else ``$USERBATCH_HOME``, else ``<repo>/demo_output`` (what ``make demo`` writes;
    ``./demo_output`` for an installed package). USERBATCH_HOME, USERBATCH_DB_URL (SQLite in the home) and
    USERBATCH_WAREHOUSE are set as the demo sets them, so the library, the CLI run from ``!userbatch ...`` cells
    and facility runs all see the same catalog; when the home came from the environment, a database URL or
    warehouse already set there is respected (a deployment's PostgreSQL, CI's prepared catalog). If the catalog
    lacks the demo tables, ``n_objects`` simulated objects are ingested (about a minute for 5000 on a laptop); a
    home holding other data is never written into.

    Parameters
    ----------
    n_objects : int
        How many objects to simulate when the demo tables have to be built; unused when they are there.
    home : str or pathlib.Path, optional
        The facility home holding the demo catalog; by default ``$USERBATCH_HOME``, else ``demo_output``.

    Returns
    -------
    pyspark.sql.SparkSession
        A session (:func:`userbatch.session`) with every readable table, the demo's among them, as a SQL view.
    """
    from . import demo
    from .spark import session
    from .tables.catalog import Catalog

    home, from_env = _choose_home(home)
    given = settings().given if from_env else frozenset()
    os.environ.update(USERBATCH_HOME=str(home))
    if "db_url" not in given:
        os.environ.update(USERBATCH_DB_URL=f"sqlite:///{home / 'facility.db'}")
    if "warehouse" not in given:
        os.environ.update(USERBATCH_WAREHOUSE=str(home / "warehouse"))

    marker = home / demo._MARKER
    # decided before the catalog is opened: opening a SQLite catalog creates its database file in the home
    buildable = not home.exists() or marker.exists() or not any(home.iterdir())
    home.mkdir(parents=True, exist_ok=True)
    catalog = Catalog()
    present = [t for t in DEMO_TABLES if catalog.exists(t)]
    if len(present) == len(DEMO_TABLES):
        log.info("demo catalog found in %s", home)
        return session()
    if present:
        raise UserbatchError(f"{home} has {', '.join(present)} but not all of {', '.join(DEMO_TABLES)}; "
                             "run 'make demo' to rebuild demo_output, or pass open_demo(home=...) an empty directory")
    if not buildable:
        raise UserbatchError(f"{home} holds other data and no demo tables; open_demo builds its tables only in an "
                             "empty or demo directory: pass open_demo(home=...) another one")
    marker.touch()  # 'make demo' may wipe and rebuild this home later
    log.info("no demo tables in %s: simulating and ingesting %d objects (once; later calls reuse them)",
             home, n_objects)
    demo.build_catalog(home, n_objects, session(), echo=log.info)
    return session()  # registers the new tables as SQL views
