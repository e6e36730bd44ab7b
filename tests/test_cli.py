"""The command line: every user error is one line and exit code 2; the happy paths print what they did."""

import re

import pytest
from click.testing import CliRunner
from helpers import module_facility, sky_points

from userbatch.cli import main


def run(*args, ok=True):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def _ingest(base):
    path = base / "obj.parquet"
    sky_points(1500, seed=41).to_parquet(path)
    out = run("ingest", path, "--table", "dp1.object", "--threshold", "300", "--margin", "10").output
    assert re.search(r"dp1.object: version 0, 1,500 rows in \d+ partition", out), out
    return path


@pytest.fixture
def table(spark, ub_env):
    """dp1.object in the test's own facility (for a test that changes it)."""
    return _ingest(ub_env)


@pytest.fixture(scope="module")
def shared_table(spark, session_home, tmp_path_factory):
    """dp1.object ingested once, for the tests that only read it."""
    with module_facility(tmp_path_factory, "cli") as fx:
        yield _ingest(fx.base)


def test_help_everywhere():
    for cmd in ([], ["ingest"], ["tables"], ["tables", "show"], ["search", "cone"], ["search", "polygon"], ["sql"],
                ["simulate"], ["demo"]):
        assert "Usage" in run(*cmd, "--help").output


def test_tables_commands(table, tmp_path):
    assert "dp1.object" in run("tables", "list").output
    out = run("tables", "show", "dp1.object", "--plot", tmp_path / "sky.png").output
    assert "rows:              1500" in out and "margin:            10.0 arcsec" in out
    assert (tmp_path / "sky.png").stat().st_size > 10_000
    run("ingest", table, "--table", "dp1.object", "--mode", "append")
    hist = run("tables", "history", "dp1.object").output.splitlines()
    assert hist[0].startswith("v1") and "append" in hist[0] and hist[1].startswith("v0") and "job=ingest" in hist[1]


def test_search_and_sql(shared_table, tmp_path):
    out = run("search", "cone", "dp1.object", 150.0, 30.0, 600, "--output", tmp_path / "c.csv")
    assert "partitions" in out.output and "wrote" in out.output
    assert "partitions" in run("search", "box", "dp1.object", 350, 10, -3, 3, "--explain").output
    assert "row(s)" in run("search", "polygon", "dp1.object", "149,29", "151,29", "151,31", "149,31").output
    out = run("sql", "SELECT count(*) AS n FROM dp1.object").output
    assert "1500" in out


@pytest.mark.parametrize("args,msg", [
    (["search", "cone", "dp1.object", 10, 95, 10], "Dec in [-90, 90]"),
    (["search", "cone", "dp1.object", 10, 0, -5], "radius"),
    (["search", "cone", "dp1.nothing", 10, 0, 5], "no table named dp1.nothing"),
    (["search", "cone", "../etc.passwd", 10, 0, 5], "namespace.name"),
    (["search", "polygon", "dp1.object", "1,1", "2,x", "3,3"], "RA,DEC pairs"),
    (["sql", "SELEC nonsense FROM"], "error:"),
    (["sql", "SELECT * FROM dp1.nothing"], "error:"),
    (["sql", "SELECT nope FROM dp1.object"], "error:"),
    (["tables", "show", "dp1.nothing"], "no table named"),
    (["ingest", "/nonexistent.parquet", "--table", "dp1.x"], "does not exist"),
    (["sql", "SELECT 1", "--pin", "dp1.object=x"], "NAME=VERSION"),
])
def test_user_errors_are_one_line(shared_table, args, msg):
    result = run(*args, ok=False)
    assert result.exit_code == 2, result.output
    assert msg in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


def test_simulate(tmp_path):
    out = run("simulate", tmp_path / "sim", "--objects", 300, "--visits", 20).output
    assert "forced_source" in out and (tmp_path / "sim").is_dir()
