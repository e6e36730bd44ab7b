"""Small simulated catalogues for tests: uniform sky plus the hard places (RA=0 seam, both poles, a dense clump)."""

import contextlib

import numpy as np
import pandas as pd
import pytest


@contextlib.contextmanager
def module_facility(tmp_path_factory, name: str):
    """A facility (its own SQLite catalog and warehouse) for a whole test module, so a module-scoped fixture writes
    its tables once and every test of the module reads them."""
    base = tmp_path_factory.mktemp(name)
    mp = pytest.MonkeyPatch()
    mp.setenv("USERBATCH_DB_URL", f"sqlite:///{base / 'facility.db'}")
    mp.setenv("USERBATCH_WAREHOUSE", str(base / "warehouse"))
    try:
        yield base
    finally:
        mp.undo()


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
