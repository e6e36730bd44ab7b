"""The notebooks in notebooks/ are executed here, so a notebook that no longer runs fails the build.

One small demo catalog (simulated and ingested once per test run, by :func:`userbatch.notebook.open_demo` itself) is
shared by every notebook: each kernel gets its home through USERBATCH_HOME / USERBATCH_DB_URL / USERBATCH_WAREHOUSE,
so its ``open_demo()`` finds the tables instead of building them. Every ``notebooks/*.ipynb`` is picked up, new
ones included. A failing cell fails its test with the cell's number, source and error. Notebooks are stored without
outputs, so their diffs stay readable; a test checks that too. With USERBATCH_NOTEBOOK_OUT=<dir> the executed
notebooks, outputs and all, are written there.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
PATHS = sorted(NOTEBOOKS.glob("*.ipynb"))
ENV_KEYS = ("USERBATCH_HOME", "USERBATCH_DB_URL", "USERBATCH_WAREHOUSE")
#: objects in the shared demo catalog: enough for every notebook's plots and scores, small enough for 2 cores
N_OBJECTS = 3000
CELL_TIMEOUT_S = 600
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture(scope="module")
def notebook_env(spark, tmp_path_factory):
    """The environment of every notebook kernel: a demo catalog built once, in this process's Spark session
    (handed to open_demo as is, so the shared session's settings are not reconfigured for the other tests)."""
    import userbatch.spark
    from userbatch.notebook import DEMO_TABLES, open_demo
    from userbatch.tables.catalog import Catalog

    home = tmp_path_factory.mktemp("nbhome")
    mp = pytest.MonkeyPatch()
    mp.setattr(userbatch.spark, "session", lambda *args, **kwargs: spark)
    for key in ENV_KEYS:  # open_demo sets these in os.environ; restore them for the other test modules
        if key in os.environ:
            mp.setenv(key, os.environ[key])
        else:
            mp.delenv(key, raising=False)
    try:
        open_demo(n_objects=N_OBJECTS, home=home)
        assert all(Catalog().exists(t) for t in DEMO_TABLES)
        env = {key: os.environ[key] for key in ENV_KEYS}
    finally:
        mp.undo()
    env.update(USERBATCH_USER=os.environ.get("USERBATCH_USER", "tester"), USERBATCH_DRIVER_MEMORY="2g",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "python"), os.environ.get("PYTHONPATH")])))
    return env


def _failed_cell(nb) -> str:
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                return f"cell {i}"
    return "a cell"


@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
@pytest.mark.slow
def test_notebook_runs(path, notebook_env):
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    try:
        client.execute(env={**os.environ, **notebook_env})
    except (CellExecutionError, CellTimeoutError, DeadKernelError) as exc:
        pytest.fail(f"{path.name}: {_failed_cell(nb)} failed:\n{_ANSI.sub('', str(exc))}", pytrace=False)
    finally:
        if os.environ.get("USERBATCH_NOTEBOOK_OUT"):  # keep the executed notebooks (CI artifacts, reviewing)
            out = Path(os.environ["USERBATCH_NOTEBOOK_OUT"])
            out.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, out / path.name)


@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_notebook_stored_without_outputs(path):
    import nbformat

    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, c in enumerate(nb.cells)
             if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not dirty, (f"{path.name}: cells {dirty} have outputs; clear them before committing "
                       f"(e.g. 'jupyter nbconvert --clear-output --inplace {path.relative_to(ROOT)}')")
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"


@pytest.mark.heavy
def test_open_demo_reuses_and_refuses(notebook_env, spark, monkeypatch, tmp_path):
    """The module fixture showed open_demo building an absent catalog; here it reuses a present one without
    building, and refuses to build into a home that holds something else."""
    import userbatch.spark
    from userbatch import demo, notebook
    from userbatch.errors import UserbatchError
    from userbatch.tables.read import read_table

    def no_build(*args, **kwargs):
        raise AssertionError("open_demo rebuilt a catalog that was there")

    for key in ENV_KEYS:
        monkeypatch.setenv(key, "/nonexistent")  # an explicit home wins over the environment
    monkeypatch.setattr(demo, "build_catalog", no_build)
    monkeypatch.setattr(userbatch.spark, "session", lambda *args, **kwargs: spark)
    home = Path(notebook_env["USERBATCH_HOME"])
    assert notebook.open_demo(home=home) is spark
    assert os.environ["USERBATCH_DB_URL"] == notebook_env["USERBATCH_DB_URL"]
    assert read_table("dp1.object", spark=spark).count() == N_OBJECTS

    (tmp_path / "mine.txt").write_text("not a demo")
    with pytest.raises(UserbatchError, match="holds other data"):
        notebook.open_demo(home=tmp_path)
