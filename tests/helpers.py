"""Test helpers: a facility for user X under a config (:func:`facility_under`, :func:`module_facility`, and the
``facility`` fixture of conftest.py), and small simulated catalogues (:func:`sky_points`: uniform sky plus the hard
places, the RA=0 seam, both poles and a dense clump)."""

import contextlib
import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest


@dataclass
class FacilityUnder:
    """A facility under a config (see :func:`facility_under`): its directory, database URL and parsed config.
    ``fac(user)`` is that user's :class:`Facility` (no worker thread; the user is created on first sight with the
    config's quota), ``worker()`` a worker thread for the duration of a ``with`` block."""

    db_url: str
    base: Path | None = None  #: None for a facility known only by its database URL

    @functools.cached_property
    def config(self):
        from userbatch.facility.config import load_config

        return load_config()

    @property
    def engine(self):
        from userbatch.tables.db import engine_for

        return engine_for(self.db_url)

    def fac(self, user: str):
        from userbatch.facility.service import Facility, Identity

        return Facility(Identity.lookup(user, self.engine, self.config), db_url=self.db_url, config=self.config,
                        start_worker=False)

    def worker(self, **kwargs):
        from userbatch.facility.worker import running_worker

        return running_worker(self.db_url, self.config, **kwargs)


@contextlib.contextmanager
def facility_under(base: Path, config: str | None = None, *, db_url: str | None = None,
                   env: dict[str, str | None] | None = None):
    """The one set-up of "a facility for user X under a config": ``base`` holds ``facility.yaml`` written from
    ``config`` (when None, the config is whichever the environment names: by default the packaged one) and, for a
    new facility, its SQLite database and warehouse. With
    ``db_url`` (e.g. the PostgreSQL one of the ``db_url`` fixture, or a module facility's) the database is that one
    and the warehouse stays where the environment has it. The environment points there — and at no API server or
    token, so clients talk to the facility in-process — until the block ends; ``env`` sets (or, with None,
    removes) more variables for the same span."""
    mp = pytest.MonkeyPatch()
    try:
        if db_url is None:
            db_url = f"sqlite:///{base / 'facility.db'}"
            mp.setenv("USERBATCH_WAREHOUSE", str(base / "warehouse"))
        mp.setenv("USERBATCH_DB_URL", db_url)
        if config is not None:
            (base / "facility.yaml").write_text(config)
            mp.setenv("USERBATCH_FACILITY_CONFIG", str(base / "facility.yaml"))
        for name in ("USERBATCH_API_URL", "USERBATCH_TOKEN"):
            mp.delenv(name, raising=False)
        for name, value in (env or {}).items():
            if value is None:
                mp.delenv(name, raising=False)
            else:
                mp.setenv(name, value)
        yield FacilityUnder(db_url, base)
    finally:
        mp.undo()


@contextlib.contextmanager
def module_facility(tmp_path_factory, name: str, config: str | None = None, **kwargs):
    """:func:`facility_under` a fresh directory, for a whole test module: a module-scoped fixture writes its tables
    once and every test of the module reads them."""
    with facility_under(tmp_path_factory.mktemp(name), config, **kwargs) as fx:
        yield fx


def sky_points(n: int, seed: int = 0, id_start: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ra = rng.uniform(0, 360, n)
    dec = np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    k = n // 8
    ra[:k] = rng.uniform(-1, 1, k) % 360  # the RA=0 seam
    dec[:k] = rng.uniform(-3, 3, k)
    ra[k:2 * k] = rng.uniform(0, 360, k)  # north polar cap
    dec[k:2 * k] = rng.uniform(88.5, 90, k)
    ra[2 * k:3 * k] = rng.uniform(0, 360, k)  # south polar cap
    dec[2 * k:3 * k] = rng.uniform(-90, -88.5, k)
    ra[3 * k:5 * k] = 150 + rng.normal(0, 0.05, 2 * k)  # a dense clump
    dec[3 * k:5 * k] = 30 + rng.normal(0, 0.05, 2 * k)
    return pd.DataFrame({
        "objectId": np.arange(id_start, id_start + n, dtype=np.int64),
        "coord_ra": ra % 360,
        "coord_dec": dec,
        "r_psfFlux": rng.lognormal(8, 1, n),
        "band": rng.choice(list("ugrizy"), n),
    })
