"""A user's own cross-match algorithm in a file of their own, run by the crossmatch template job (issue 18, item 4):
``algorithm: my_match:MyMatch`` found by path, in the working directory or next to the job file, on the local
engine and on the Spark engine (where the module must reach the executors: the Spark engine ships it with
``userbatch.user_code.ship``), by a direct library call, and by ``spark-submit --py-files``. Every result is
compared with a brute-force numpy oracle of the same rule computed here; a module that is nowhere gives one clear
error.

Small on purpose (about 1,500 x 1,300 rows): the engines' pair-by-pair equivalence is in
test_crossmatch_algorithms.py; the question here is only whether a user's file gets where it must.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import astropy.units as u
import numpy as np
import pandas as pd
import pytest
from astropy.coordinates import SkyCoord
from helpers import module_facility, sky_points

from userbatch.errors import UserbatchError

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")

ROOT = Path(__file__).resolve().parents[1]
RIGHT_ID0 = 1_000_000
BASE_ARCSEC, MAX_ARCSEC, REF_FLUX = 2.0, 6.0, 3000.0
MARGIN = 10.0  # arcsec, both tables: more than MAX_ARCSEC

#: The user's module: the nearest right row within a radius that grows with the left row's flux (brighter sources
#: have larger centroid wings and blends); written to a file with a different name by each test.
USER_MODULE = '''
import numpy as np
import pyarrow as pa

from userbatch.ops.crossmatch import CrossmatchAlgorithm


class FluxScaledNearest(CrossmatchAlgorithm):
    extra_columns = pa.schema([pa.field("_dist_arcsec", pa.float64()), pa.field("_radius_arcsec", pa.float64())])
    score_column = "_dist_arcsec"

    def __init__(self, base_arcsec, max_arcsec, ref_flux, flux="r_psfFlux"):
        self.base_arcsec, self.max_arcsec = float(base_arcsec), float(max_arcsec)
        self.ref_flux, self.flux = float(ref_flux), flux

    @property
    def radius_arcsec(self):
        return self.max_arcsec

    @property
    def required_left_columns(self):
        return [self.flux]

    def match(self, left, right):
        li, ri, dist = self.candidates(left, right, self.max_arcsec)  # sorted by (left, distance, right)
        flux = np.clip(left[self.flux][li], 0.0, None)
        radius = np.minimum(self.max_arcsec, self.base_arcsec * (flux / self.ref_flux) ** 0.25)
        keep = dist <= radius
        li, ri, dist, radius = li[keep], ri[keep], dist[keep], radius[keep]
        _, first = np.unique(li, return_index=True)  # the nearest of each left row
        return li[first], ri[first], {"_dist_arcsec": dist[first], "_radius_arcsec": radius[first]}
'''
PARAMS = {"base_arcsec": BASE_ARCSEC, "max_arcsec": MAX_ARCSEC, "ref_flux": REF_FLUX}


@pytest.fixture(scope="module")
def xu(spark, session_home, tmp_path_factory):
    """Left: sky_points (RA seam, polar caps, a clump) with a flux; right: 80% of them moved a few arcsec, plus
    unrelated points; partitioned differently, so tasks use margins."""
    from userbatch.tables.write import write_table

    with module_facility(tmp_path_factory, "xmuser") as fx:
        rng = np.random.default_rng(11)
        left = sky_points(1500, seed=11)[["objectId", "coord_ra", "coord_dec", "r_psfFlux"]]
        pick = rng.random(len(left)) < 0.8
        c = SkyCoord(left.coord_ra.to_numpy()[pick] * u.deg, left.coord_dec.to_numpy()[pick] * u.deg)
        moved = c.directional_offset_by(rng.uniform(0, 360, pick.sum()) * u.deg,
                                        rng.rayleigh(1.5, pick.sum()) * u.arcsec)
        extra = sky_points(100, seed=12)
        right = pd.DataFrame({"coord_ra": np.r_[moved.ra.deg % 360.0, extra.coord_ra.to_numpy()],
                              "coord_dec": np.r_[moved.dec.deg, extra.coord_dec.to_numpy()]})
        right.insert(0, "objectId", np.arange(RIGHT_ID0, RIGHT_ID0 + len(right), dtype=np.int64))
        write_table(spark.createDataFrame(left), "xu.left", pixel_threshold=500, margin_radius_arcsec=MARGIN)
        write_table(spark.createDataFrame(right), "xu.right", pixel_threshold=700, margin_radius_arcsec=MARGIN)
        yield SimpleNamespace(left=left, right=right, spark=spark, base=fx.base, oracle=_oracle(left, right))


def _oracle(left: pd.DataFrame, right: pd.DataFrame) -> tuple[set, set]:
    """(pairs, left ids too close to call): for every left row, the nearest right row within its radius, by the
    haversine separation of every left-right pair. A left row whose decision lies within 1e-6 arcsec of its radius
    or of a tie is left out of the comparison (never expected)."""
    ra1, dec1 = np.radians(left.coord_ra.to_numpy())[:, None], np.radians(left.coord_dec.to_numpy())[:, None]
    ra2, dec2 = np.radians(right.coord_ra.to_numpy())[None, :], np.radians(right.coord_dec.to_numpy())[None, :]
    h = np.sin((dec2 - dec1) / 2) ** 2 + np.cos(dec1) * np.cos(dec2) * np.sin((ra2 - ra1) / 2) ** 2
    sep = np.degrees(2 * np.arcsin(np.sqrt(np.clip(h, 0, 1)))) * 3600.0
    radius = np.minimum(MAX_ARCSEC, BASE_ARCSEC * (np.clip(left.r_psfFlux.to_numpy(), 0, None) / REF_FLUX) ** 0.25)
    pairs, unsure = set(), set()
    lid, rid = left.objectId.to_numpy(), right.objectId.to_numpy()
    for i in range(len(left)):
        d = np.sort(sep[i])
        if np.any(np.abs(d - radius[i]) < 1e-6) or (len(d) > 1 and d[1] - d[0] < 1e-6 and d[1] <= radius[i]):
            unsure.add(int(lid[i]))
        elif d[0] <= radius[i]:
            pairs.add((int(lid[i]), int(rid[np.argmin(sep[i])])))
    return pairs, unsure


def _assert_oracle(got: pd.DataFrame, oracle: tuple[set, set]) -> None:
    want, unsure = oracle
    assert len(want) > 500  # a real test: most left rows have a counterpart within their radius
    pairs = {(int(a), int(b)) for a, b in zip(got.objectId, got.objectId_right) if int(a) not in unsure}
    assert len(pairs) == len(got) - sum(int(a) in unsure for a in got.objectId)  # no left row twice
    assert pairs == {p for p in want if p[0] not in unsure}
    assert (got._dist_arcsec <= got._radius_arcsec).all() and (got._radius_arcsec <= MAX_ARCSEC).all()


@pytest.fixture
def clean_path(monkeypatch):
    """sys.path and the user modules as they were before the test (locate() puts directories on sys.path)."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith("ub_user_"):
            del sys.modules[name]


# where the user's module lives and how the job names it; each case writes a module of its own name (a Spark
# application cannot be given two different files of one name). A Spark case takes 7-15 s on 2 cores (more when
# it is the first to start Python workers), so one is in the fast tier and the other in the heavy one.
CASES = [pytest.param("local", "path", id="local-path"),
         pytest.param("spark", "job_file", id="spark-job_file"),
         pytest.param("spark", "cwd", id="spark-cwd", marks=pytest.mark.heavy)]


@pytest.mark.parametrize("engine,where", CASES)
def test_user_module_through_the_template(xu, tmp_path, monkeypatch, capsys, clean_path, engine, where):
    from userbatch.facility.jobmain import job_main, run_template
    from userbatch.tables.read import read_table

    name = f"ub_user_{engine}_{where}"
    mod_dir = tmp_path / "mine"
    mod_dir.mkdir()
    (mod_dir / f"{name}.py").write_text(USER_MODULE)
    params = {"left": "xu.left", "right": "xu.right", "output": f"u.{name}", "engine": engine,
              "left_columns": ["objectId", "coord_ra", "coord_dec"], "right_columns": ["objectId"],
              "algorithm_params": PARAMS}
    if where == "path":  # algorithm: path/to/file.py:Class, relative to the working directory
        monkeypatch.chdir(tmp_path)
        summary = run_template("crossmatch", {**params, "algorithm": f"mine/{name}.py:FluxScaledNearest"})
    elif where == "cwd":  # a module in the working directory, which is not on sys.path
        monkeypatch.chdir(mod_dir)
        summary = run_template("crossmatch", {**params, "algorithm": f"{name}:FluxScaledNearest"})
    else:  # spark-submit jobs/crossmatch.py --config mine/job.yaml, the module next to the job file
        job = mod_dir / "job.yaml"
        job.write_text(json.dumps({"template": "crossmatch",
                                   "parameters": {**params, "algorithm": f"{name}:FluxScaledNearest"}}))
        capsys.readouterr()
        assert job_main("crossmatch", ["--config", str(job)]) == 0, capsys.readouterr().err
        summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["plan"].endswith(f"engine {engine}")
    got = read_table(f"u.{name}").toPandas()
    assert summary["outputs"][0]["rows"] == len(got)
    _assert_oracle(got, xu.oracle)
    shipped = [f for f in xu.spark.sparkContext.listFiles if f.endswith(f"/{name}.py")]
    assert len(shipped) == (1 if engine == "spark" else 0)  # the executors got the file only where they need it


@pytest.mark.heavy
def test_a_library_call_on_spark_ships_the_users_module(xu, tmp_path, clean_path):
    """Not only the template: ``crossmatch(..., algorithm="my_module:Class", engine="spark")`` from a user's own
    code, the module on the driver's ``sys.path`` only, reaches the executors (the Spark engine ships it)."""
    from userbatch.ops.crossmatch import crossmatch

    name = "ub_user_library_spark"
    (tmp_path / f"{name}.py").write_text(USER_MODULE)
    sys.path.insert(0, str(tmp_path))  # the driver's path only: the executors' Python workers do not see it
    xm = crossmatch("xu.left", "xu.right", algorithm=f"{name}:FluxScaledNearest", algorithm_params=PARAMS,
                    left_columns=["objectId", "coord_ra", "coord_dec"], right_columns=["objectId"], engine="spark")
    _assert_oracle(xm.to_pandas(), xu.oracle)
    assert [f for f in xu.spark.sparkContext.listFiles if f.endswith(f"/{name}.py")]


def test_a_module_that_is_nowhere_is_named_with_where_it_looked(session_home, tmp_path, monkeypatch, clean_path):
    """Refused before any table is read or Spark is started."""
    from userbatch.facility.jobmain import run_template

    monkeypatch.chdir(tmp_path)
    params = {"left": "xu.left", "right": "xu.right", "output": "u.never", "engine": "spark",
              "algorithm_params": PARAMS}
    with pytest.raises(UserbatchError) as e:
        run_template("crossmatch", {**params, "algorithm": "ub_user_nowhere:FluxScaledNearest"})
    msg = str(e.value)
    assert "cannot import module 'ub_user_nowhere'" in msg and str(tmp_path.resolve()) in msg and "--py-files" in msg
    with pytest.raises(UserbatchError, match=r"no file nowhere/ub_user_x\.py"):
        run_template("crossmatch", {**params, "algorithm": "nowhere/ub_user_x.py:FluxScaledNearest"})
    (tmp_path / "json.py").write_text(USER_MODULE)  # a file given by path that another module's name shadows
    with pytest.raises(UserbatchError, match=r"module 'json' is imported from .*; rename json\.py"):
        run_template("crossmatch", {**params, "algorithm": "json.py:FluxScaledNearest"})


@pytest.mark.slow
def test_spark_submit_with_py_files(xu, tmp_path):
    """The way a Spark user hands over a module, in its own JVM: ``--py-files my_match.py``, run from another
    directory (a module next to the job file or in the working directory, and one the Spark engine ships itself,
    are the in-process tests above)."""
    from userbatch.tables.read import read_table

    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYTHONPATH": str(ROOT / "python")}
    spark_submit = Path(sys.executable).parent / "spark-submit"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    common = ["-p", "left=xu.left", "-p", "right=xu.right", "-p", "engine=spark",
              "-p", "left_columns=[objectId, coord_ra, coord_dec]", "-p", "right_columns=[objectId]",
              "-p", "algorithm_params=" + json.dumps(PARAMS)]

    py_files = tmp_path / "mods" / "ub_user_pyfiles.py"
    py_files.parent.mkdir()
    py_files.write_text(USER_MODULE)
    runs = {"u.pyfiles": ["--py-files", str(py_files), str(ROOT / "jobs" / "crossmatch.py"),
                          "-p", "algorithm=ub_user_pyfiles:FluxScaledNearest"]}
    for output, args in runs.items():
        proc = subprocess.run([str(spark_submit), "--master", "local[2]", "--driver-memory", "1g", *args,
                               *common, "-p", f"output={output}"],
                              cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        summary = json.loads(proc.stdout.strip().splitlines()[-1])
        assert summary["plan"].endswith("engine spark")
        _assert_oracle(read_table(output).toPandas(), xu.oracle)
