"""The command line: every user error is one line and exit code 2; the happy paths print what they did."""

import re

import numpy as np
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


# ---------------------------------------------------------------- ingest: coordinate columns, errors that name flags

def _gaia_like(path, n=800, seed=43, **renames):
    """A Parquet file like a Gaia extract: positions in ra/dec (or the names given), no coord_ra/coord_dec."""
    pdf = sky_points(n, seed=seed).rename(columns={"coord_ra": "ra", "coord_dec": "dec"}).rename(columns=renames)
    pdf.to_parquet(path)
    return pdf


def test_ingest_finds_ra_dec_without_flags(spark, ub_env):
    from userbatch.tables.catalog import Catalog
    from userbatch.tables.read import read_table

    pdf = _gaia_like(ub_env / "gaia.parquet")
    out = run("ingest", ub_env / "gaia.parquet", "--table", "ref.gaia", "--threshold", 200).output
    assert "ref.gaia: version 0, 800 rows" in out
    assert "using columns ra/dec for positions (give --ra-column/--dec-column to choose)" in out
    entry = Catalog().get("ref.gaia")
    assert (entry.ra_column, entry.dec_column) == ("ra", "dec")
    got = read_table("ref.gaia").toPandas().set_index("objectId").loc[pdf.objectId]
    np.testing.assert_array_equal(got.ra.to_numpy(), pdf.ra.to_numpy())
    np.testing.assert_array_equal(got.dec.to_numpy(), pdf.dec.to_numpy())
    assert list(got.band) == list(pdf.band)
    # the order-29 index is that of the input's ra/dec, as hats computes it (an independent oracle)
    from hats.pixel_math.spatial_index import compute_spatial_index

    want = compute_spatial_index(pdf.ra.to_numpy(), pdf.dec.to_numpy())
    np.testing.assert_array_equal(got["_healpix_29"].to_numpy(), want)
    # an append keeps the table's columns and says nothing about choosing them
    out = run("ingest", ub_env / "gaia.parquet", "--table", "ref.gaia", "--mode", "append").output
    assert "version 1, 800 rows" in out and "using columns" not in out
    # ... and refuses rows without them, or other columns named
    sky_points(10).to_parquet(ub_env / "rubin.parquet")
    out = run("ingest", ub_env / "rubin.parquet", "--table", "ref.gaia", "--mode", "append", ok=False).output
    assert "ref.gaia keeps its positions in ra/dec, but the rows have no ra, dec" in out
    out = run("ingest", ub_env / "rubin.parquet", "--table", "ref.gaia", "--mode", "append", "--ra-column",
              "coord_ra", ok=False).output
    assert "an append cannot change them (--ra-column='coord_ra'); leave --ra-column out" in out
    assert Catalog().get("ref.gaia").ra_column == "ra"


@pytest.mark.parametrize("renames,args,msg", [
    ({}, ["--ra-column", "nosuch"], "spatial column(s) nosuch not in the data"),
    ({}, ["--dec-column", "nosuch"], "spatial column(s) nosuch not in the data"),
    ({"objectId": "coord_ra", "r_psfFlux": "coord_dec"}, [], "several pairs of coordinate columns (coord_ra/coord_dec,"
                                                              " ra/dec); choose one with --ra-column/--dec-column"),
    ({"ra": "x", "dec": "y"}, [], "found no coordinate columns"),
    ({}, ["--order", 30], "--order must be a HEALPix order in 0..20; got 30"),
    ({}, ["--highest-order", -1], "--highest-order must be a HEALPix order"),
    ({}, ["--threshold", 0], "--threshold must be at least 1 row"),
    ({}, ["--margin", -2], "--margin must be a finite number of arcsec, 0 or more"),
    ({}, ["--no-spatial", "--ra-column", "ra"], "leave out --ra-column/--dec-column"),
])
def test_ingest_errors_name_flags(spark, ub_env, renames, args, msg):
    from userbatch.tables.catalog import Catalog

    path = ub_env / "in.parquet"
    _gaia_like(path, n=50, **renames)
    result = run("ingest", path, "--table", "ref.bad", *args, ok=False)
    assert result.exit_code == 2, result.output
    assert msg in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    for param in ("ra_column", "dec_column", "partition_order", "pixel_threshold", "highest_order",
                  "margin_radius_arcsec", "on_bad_coords"):
        assert param not in result.output
    assert not Catalog().exists("ref.bad")


def test_ingest_no_coordinate_columns_suggests_flags(spark, ub_env):
    path = ub_env / "in.parquet"
    _gaia_like(path, n=20, ra="x", dec="y")
    out = run("ingest", path, "--table", "ref.bad", ok=False).output
    assert "columns: objectId, x, y, r_psfFlux, band)" in out
    assert "name them with --ra-column/--dec-column, or write a table without positions with --no-spatial" in out
    run("ingest", path, "--table", "ref.plain", "--no-spatial")  # which works


def test_bad_coordinates_error_names_the_flag(spark, ub_env):
    pdf = sky_points(60, seed=44)
    pdf.loc[3, "coord_dec"] = 95.0
    pdf.to_parquet(ub_env / "bad.parquet")
    out = run("ingest", ub_env / "bad.parquet", "--table", "ref.bad", "--bad-coords", "error", ok=False).output
    assert "1 row(s) have NaN or out-of-range coord_ra/coord_dec; fix them, or write with " \
           "--bad-coords='reject' or 'quarantine'" in out


def test_user_errors_are_renamed_by_one_mapping():
    from userbatch.cli import EXPORT_HATS_FLAGS, INGEST_FLAGS
    from userbatch.errors import BadCoordinates, UserbatchError

    exc = BadCoordinates("order_column and partition_order: set partition_order=3", params=("partition_order",))
    renamed = exc.renamed(INGEST_FLAGS)
    assert type(renamed) is BadCoordinates and renamed.params == ("--order",)
    assert str(renamed) == "order_column and --order: set --order=3"  # whole names only
    plain = UserbatchError("mode ra_column", params=())
    assert plain.renamed(INGEST_FLAGS) is plain  # only the names the error lists
    assert str(UserbatchError("catalog_name 'x'", params=("catalog_name",)).renamed(EXPORT_HATS_FLAGS)) == "--name 'x'"
    # every flag named exists on its command
    from userbatch.cli import main as cli

    for command, flags in ((cli.commands["ingest"], INGEST_FLAGS),
                           (cli.commands["tables"].commands["export-hats"], EXPORT_HATS_FLAGS)):
        options = {o for p in command.params for o in p.opts}
        assert set(flags.values()) <= options, set(flags.values()) - options
