"""HATS in and out: export to lsdb (with margin, time travel, cross-match), register and import HATS catalogs.

Data are small (a few thousand rows) but put rows on the RA = 0 seam and around the north pole, where partition
and margin edges are most distorted, and use a low pixel threshold so the tables have many partitions at several
orders.
"""

from __future__ import annotations

from types import SimpleNamespace

import astropy.units as u
import numpy as np
import pandas as pd
import pytest
from astropy.coordinates import SkyCoord, search_around_sky
from click.testing import CliRunner
from helpers import module_facility
from userbatch.cli import main as cli_main
from userbatch.errors import TableNotFound, UserbatchError
from userbatch.tables.catalog import Catalog
from userbatch.tables.hats_io import (
    export_hats,
    hats_snapshot,
    import_hats,
    register_hats,
)
from userbatch.tables.read import read_table, resolve

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")

MARGIN_ARCSEC = 10.0


def make_rows(n: int, seed: int, id0: int = 0) -> pd.DataFrame:
    """All-sky rows plus a cluster straddling RA = 0 and one around the north pole."""
    rng = np.random.default_rng(seed)
    n_sky, n_seam = n // 2, n // 4
    n_pole = n - n_sky - n_seam
    ra = np.concatenate([
        rng.uniform(0, 360, n_sky),
        np.mod(rng.uniform(-0.5, 0.5, n_seam), 360.0),
        rng.uniform(0, 360, n_pole),
    ])
    dec = np.concatenate([
        np.degrees(np.arcsin(rng.uniform(-1, 1, n_sky))),
        rng.uniform(-0.5, 0.5, n_seam),
        rng.uniform(89.3, 90.0, n_pole),
    ])
    flux = rng.lognormal(3, 1, n)
    flux[rng.random(n) < 0.05] = np.nan
    return pd.DataFrame({
        "objectId": np.arange(id0, id0 + n, dtype=np.int64),
        "coord_ra": ra,
        "coord_dec": dec,
        "psfFlux": flux,
        "band": rng.choice(["g", "r", "i"], n),
        "nVisits": rng.integers(0, 100, n).astype(np.int32),
    })


def write(spark, pdf: pd.DataFrame, name: str, mode: str = "create", **options):
    from userbatch.tables.write import write_table

    options.setdefault("pixel_threshold", 250)
    options.setdefault("margin_radius_arcsec", MARGIN_ARCSEC)
    return write_table(spark.createDataFrame(pdf), name, mode, **options)


def sorted_frame(df: pd.DataFrame, columns) -> pd.DataFrame:
    return df[list(columns)].sort_values("objectId").reset_index(drop=True)


def assert_same_rows(lsdb_frame, expected: pd.DataFrame) -> None:
    got = pd.DataFrame(lsdb_frame)
    got = got.reset_index(drop=got.index.name != "_healpix_29")  # lsdb puts _healpix_29 in the index
    assert sorted(got.columns) == sorted(expected.columns)
    pd.testing.assert_frame_equal(sorted_frame(got, expected.columns), sorted_frame(expected, expected.columns),
                                  check_dtype=False)


def hats_import_catalog(tmp_path, pdf: pd.DataFrame, name: str = "foreign"):
    """A catalog written by hats-import itself (threads only: no worker processes)."""
    from dask.distributed import Client
    from hats_import.catalog.arguments import ImportArguments
    from hats_import.pipeline import pipeline_with_client

    src = tmp_path / f"{name}.parquet"
    pdf.to_parquet(src)
    args = ImportArguments(
        output_artifact_name=name, input_file_list=[str(src)], file_reader="parquet", ra_column="ra",
        dec_column="dec", pixel_threshold=300, highest_healpix_order=7, output_path=str(tmp_path),
        tmp_dir=str(tmp_path / "hats_tmp"), progress_bar=False,
    )
    with Client(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as client:
        pipeline_with_client(args, client)
    return tmp_path / name


def brute_cone(ra, dec, ra0, dec0, radius_arcsec) -> np.ndarray:
    sep = SkyCoord(ra * u.deg, dec * u.deg).separation(SkyCoord(ra0 * u.deg, dec0 * u.deg)).arcsec
    return sep <= radius_arcsec


# ---------------------------------------------------------------- export

@pytest.mark.heavy  # two exports and LSDB
def test_export_to_lsdb_margin_time_travel_crossmatch(spark, ub_env):
    import lsdb

    first, second = make_rows(2000, seed=1), make_rows(1000, seed=2, id0=10_000)
    write(spark, first, "ex.obj")
    r1 = write(spark, second, "ex.obj", "append")
    assert r1.version == 1
    snap = resolve(Catalog().get("ex.obj"))
    pixels = [p.split("/part-")[0] for p in snap.files.column("path").to_pylist()]
    assert len(pixels) > len(set(pixels)), "the append should leave pixels with several files (merge path)"

    out = export_hats("ex.obj", ub_env / "export" / "latest")
    from hats.io.validation import is_valid_catalog

    assert is_valid_catalog(out, strict=True)  # properties, partition_info, _metadata and files agree
    cat = lsdb.open_catalog(out)
    expected = read_table("ex.obj").toPandas()
    assert len(expected) == 3000
    assert_same_rows(cat.compute(), expected)
    assert cat.hc_structure.catalog_info.total_rows == 3000
    assert len(cat.get_healpix_pixels()) == len(set(pixels))
    assert cat.hc_structure.catalog_info.healpix_column == "_healpix_29"

    # the margin came along: same rows as the margin cache at that version, threshold = the table's radius
    assert cat.margin is not None
    assert cat.margin.hc_structure.catalog_info.margin_threshold == MARGIN_ARCSEC
    from userbatch.tables import delta

    margin_rows = cat.margin.compute()
    assert 0 < len(margin_rows) == delta.snapshot(Catalog().get("ex.obj").margin_location).num_rows

    # time travel: version 0 exports its own rows and its own margin
    old = lsdb.open_catalog(export_hats("ex.obj", ub_env / "export" / "v0", version=0, catalog_name="v0"))
    assert_same_rows(old.compute(), read_table("ex.obj", version=0).toPandas())
    assert len(old.compute()) == 2000
    assert old.margin is not None and len(old.margin.compute()) < len(margin_rows)

    from userbatch.errors import VersionNotFound

    with pytest.raises(VersionNotFound):
        export_hats("ex.obj", ub_env / "export" / "v7", version=7)
    assert not (ub_env / "export" / "v7").exists()

    # the plain-catalog layout: margin next to it, opened with margin_cache=
    flat = export_hats("ex.obj", ub_env / "export" / "flat", as_collection=False)
    flat_cat = lsdb.open_catalog(flat, margin_cache=f"{flat}_margin")
    assert_same_rows(flat_cat.compute(), expected)
    assert len(flat_cat.margin.compute()) == len(margin_rows)

    # files are hard links where a pixel had one file
    old_files = list((ub_env / "export" / "v0" / "v0" / "dataset").rglob("Npix=*.parquet"))
    assert old_files and all(p.stat().st_nlink > 1 for p in old_files)

    # lsdb cross-matches it against another exported table, with the right side's margin, like astropy does
    check_crossmatch(spark, ub_env, pd.concat([first, second], ignore_index=True), cat)

    # and the export registers back as a HATS table that reads and searches like the original
    from userbatch.ops.search import cone_search

    entry = register_hats(out, "ex.back")
    assert entry.location == str((out / "ex_obj").resolve())
    assert entry.properties["hats"]["margin_threshold_arcsec"] == MARGIN_ARCSEC
    assert entry.properties["hats"]["margin"].endswith("ex_obj_10arcs")
    with pytest.raises(UserbatchError, match="HATS margin catalog; only object or source"):
        register_hats(out / "ex_obj_10arcs", "ex.margin")
    assert_same_rows(read_table("ex.back").toPandas(), expected)
    rows = pd.concat([first, second])
    want = set(rows.objectId[brute_cone(rows.coord_ra.to_numpy(), rows.coord_dec.to_numpy(), 0.1, 89.9, 2000)])
    assert want and set(cone_search("ex.back", 0.1, 89.9, 2000).to_pandas().objectId) == want


def check_crossmatch(spark, ub_env, left: pd.DataFrame, left_catalog) -> None:
    """lsdb cross-match of an exported table against another exported table = astropy's nearest match."""
    import lsdb

    rng = np.random.default_rng(4)
    # the right catalog: a jittered copy of some left rows (so matches exist across partition edges) plus others
    pick = rng.choice(len(left), 1200, replace=False)
    jitter = rng.normal(0, 0.8, (2, len(pick))) / 3600.0
    lra, ldec = left.coord_ra.to_numpy()[pick], left.coord_dec.to_numpy()[pick]
    near = pd.DataFrame({
        "objectId": np.arange(100_000, 100_000 + len(pick)),
        "coord_ra": np.mod(lra + jitter[0] / np.cos(np.radians(ldec)), 360),
        "coord_dec": np.clip(ldec + jitter[1], -90, 90),
        "psfFlux": 1.0, "band": "r", "nVisits": np.int32(1),
    })
    right = pd.concat([make_rows(800, seed=5, id0=50_000), near], ignore_index=True)
    write(spark, right, "xm.right", pixel_threshold=400)
    b = lsdb.open_catalog(export_hats("xm.right", ub_env / "xm_right"))
    assert b.margin is not None
    radius = 3.0
    got = left_catalog.crossmatch(b, radius_arcsec=radius, n_neighbors=1, suffixes=("_a", "_b")).compute()

    ca = SkyCoord(left.coord_ra.to_numpy() * u.deg, left.coord_dec.to_numpy() * u.deg)
    cb = SkyCoord(right.coord_ra.to_numpy() * u.deg, right.coord_dec.to_numpy() * u.deg)
    ia, ib, sep, _ = search_around_sky(ca, cb, radius * u.arcsec)
    pairs = pd.DataFrame({"a": ia, "b": ib, "sep": sep.arcsec}).sort_values("sep").drop_duplicates("a")
    want = set(zip(left.objectId.to_numpy()[pairs.a], right.objectId.to_numpy()[pairs.b]))
    assert len(want) > 1000
    assert set(zip(got["objectId_a"], got["objectId_b"])) == want
    np.testing.assert_allclose(np.sort(got["_dist_arcsec"].to_numpy()), np.sort(pairs.sep.to_numpy()), rtol=1e-6)


# ---------------------------------------------------------------- register and import

def foreign_rows(n: int = 3000) -> pd.DataFrame:
    rows = make_rows(n, seed=7).rename(columns={"coord_ra": "ra", "coord_dec": "dec"})
    rows["u16"] = np.random.default_rng(8).integers(0, 60_000, n).astype(np.uint16)
    return rows


def test_register_hats_import_catalog_then_cone_search(spark, ub_env):
    from userbatch.ops.search import cone_search

    rows = foreign_rows()
    path = hats_import_catalog(ub_env, rows)
    entry = register_hats(path, "ext.foreign", description="made by hats-import")
    assert entry.format == "hats" and (entry.ra_column, entry.dec_column) == ("ra", "dec")
    assert entry.properties["hats"]["total_rows"] == len(rows)
    assert entry.properties["hats"]["partitions"] > 4

    snap = hats_snapshot(path)
    assert snap.version == -1 and snap.num_rows == len(rows)
    assert "u16" in snap.schema.names and not {"Norder", "Dir", "Npix"} & set(snap.schema.names)

    df = read_table("ext.foreign")
    assert df.count() == len(rows)
    full = df.toPandas()
    assert set(full.objectId) == set(rows.objectId)
    merged = full.set_index("objectId").loc[rows.objectId]
    np.testing.assert_array_equal(merged.u16.to_numpy(), rows.u16.to_numpy())

    ra, dec = rows.ra.to_numpy(), rows.dec.to_numpy()
    for ra0, dec0, radius in [(0.0, 0.0, 1800.0), (359.9, 0.2, 600.0), (30.0, 89.8, 1500.0), (200.0, -20.0, 36000.0)]:
        want = set(rows.objectId[brute_cone(ra, dec, ra0, dec0, radius)])
        search = cone_search("ext.foreign", ra0, dec0, radius)
        assert search.plan.files_selected <= search.plan.files_total
        assert set(search.to_pandas(engine="arrow").objectId) == want
        assert set(search.to_pandas(engine="spark").objectId) == want
    assert want, "the last cone should hold rows"

    from userbatch.tables.views import register_view

    register_view(spark, entry)
    assert spark.sql("SELECT count(*) AS n, max(u16) AS m FROM ext.foreign").first().asDict() == {
        "n": len(rows), "m": int(rows.u16.max())}


@pytest.mark.heavy  # the fast tier reads HATS in place (register_hats) above
def test_import_hats_round_trip(spark, ub_env):
    import pyarrow.parquet as pq

    rows = foreign_rows(2500)
    path = hats_import_catalog(ub_env, rows)
    result = import_hats(path, "imp.foreign", spark=spark, pixel_threshold=400, margin_radius_arcsec=5.0)
    assert result.rows == len(rows) and result.margin_rows is not None
    entry = Catalog().get("imp.foreign")
    assert entry.format == "delta" and (entry.ra_column, entry.dec_column) == ("ra", "dec")
    got = read_table("imp.foreign").toPandas()
    assert not {"Norder", "Dir", "Npix"} & set(got.columns)
    expected = rows.assign(u16=rows.u16.astype(np.int32))
    pd.testing.assert_frame_equal(sorted_frame(got, expected.columns), sorted_frame(expected, expected.columns),
                                  check_dtype=False)
    # our _healpix_29 is HATS' _healpix_29
    theirs = pd.concat(pq.read_table(f).to_pandas() for f in (path / "dataset").rglob("Npix=*.parquet"))
    ours = got.set_index("objectId")["_healpix_29"]
    np.testing.assert_array_equal(ours.loc[theirs.objectId].to_numpy(), theirs["_healpix_29"].to_numpy())
    from userbatch.tables.delta import history

    prov = history(entry.location)[0]["provenance"]
    assert prov["job"] == "import_hats" and prov["inputs"][0]["format"] == "hats"


# ---------------------------------------------------------------- bad inputs

def test_bad_inputs_raise_clear_errors(spark, ub_env):
    not_hats = ub_env / "not_hats"
    not_hats.mkdir()
    (not_hats / "data.parquet").write_bytes(b"PAR1")
    with pytest.raises(UserbatchError, match="not a HATS catalog"):
        register_hats(not_hats, "bad.one")
    with pytest.raises(UserbatchError, match="not a directory"):
        register_hats(ub_env / "missing", "bad.two")
    with pytest.raises(UserbatchError, match="not a HATS catalog"):
        import_hats(not_hats, "bad.three", spark=spark)
    broken = ub_env / "broken"
    broken.mkdir()
    (broken / "hats.properties").write_text("obs_collection=x\ndataproduct_type=object\n")
    with pytest.raises(UserbatchError, match="not a readable HATS catalog"):
        register_hats(broken, "bad.four")
    assert not Catalog().exists("bad.one") and not Catalog().exists("bad.four")

    with pytest.raises(TableNotFound, match="no table named nope.nothing"):
        export_hats("nope.nothing", ub_env / "out")

    rows = foreign_rows(400)
    register_hats(hats_import_catalog(ub_env, rows), "bad.tab")
    location = Catalog().get("bad.tab").location
    with pytest.raises(UserbatchError, match="inside the table's own location"):
        export_hats("bad.tab", f"{location}/hats")
    with pytest.raises(UserbatchError, match="inside the table's own location"):
        export_hats("bad.tab", location)
    busy = ub_env / "busy"
    busy.mkdir()
    (busy / "something.txt").write_text("x")
    with pytest.raises(UserbatchError, match="not empty"):
        export_hats("bad.tab", busy)
    with pytest.raises(UserbatchError, match="must be letters"):
        export_hats("bad.tab", ub_env / "out", catalog_name="../evil")
    with pytest.raises(UserbatchError, match="keeps no history"):
        export_hats("bad.tab", ub_env / "out", version=0)
    assert not (ub_env / "out").exists()
    assert [p.name for p in ub_env.iterdir() if p.name.startswith(".out")] == []

    # an empty, existing out_dir is fine; a table without margin exports as a collection without one (here a
    # registered HATS table: its files are linked again, unsigned columns and all)
    import lsdb

    empty = ub_env / "empty"
    empty.mkdir()
    cat = lsdb.open_catalog(export_hats("bad.tab", empty))
    assert cat.margin is None
    got = pd.DataFrame(cat.compute()).reset_index()
    assert len(got) == 400 and str(got.u16.dtype).startswith("uint16")
    np.testing.assert_array_equal(got.set_index("objectId").u16.loc[rows.objectId].to_numpy(), rows.u16.to_numpy())
    with pytest.raises(UserbatchError, match="already exists"):
        register_hats(empty, "bad.tab")


# ---------------------------------------------------------------- the command line

def cli(*args, ok: bool = True):
    result = CliRunner().invoke(cli_main, [str(a) for a in args], catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def cli_error(*args) -> str:
    """The one-line error a command gives (exit code 2)."""
    result = cli(*args, ok=False)
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output, result.output
    return result.output


@pytest.fixture(scope="module")
def cli_export(spark, session_home, tmp_path_factory):
    """dp.hx ingested from Parquet and exported as HATS with the command line, once for the module's CLI tests."""
    with module_facility(tmp_path_factory, "hats_cli") as fx:
        rows = make_rows(1500, seed=11)
        rows.to_parquet(fx.base / "rows.parquet")
        cli("ingest", fx.base / "rows.parquet", "--table", "dp.hx", "--threshold", 250, "--margin", MARGIN_ARCSEC)
        out = fx.base / "export"
        text = cli("tables", "export-hats", "dp.hx", out).output
        yield SimpleNamespace(base=fx.base, rows=rows, out=out, text=text, table=read_table("dp.hx").toPandas())


def test_cli_export_hats_opens_in_lsdb_with_the_same_rows(cli_export):
    import lsdb

    partitions = len({p.split("/part-")[0] for p in
                      resolve(Catalog().get("dp.hx")).files.column("path").to_pylist()})
    assert f"dp.hx@v0 -> {cli_export.out}: 1,500 rows in {partitions} partition(s), margin dp_hx_10arcs" \
        in cli_export.text
    assert f"lsdb.open_catalog('{cli_export.out}')" in cli_export.text
    cat = lsdb.open_catalog(cli_export.out)
    assert_same_rows(cat.compute(), cli_export.table)
    rows = cli_export.rows  # and the table holds the input's rows
    pd.testing.assert_frame_equal(sorted_frame(cli_export.table, rows.columns), sorted_frame(rows, rows.columns),
                                  check_dtype=False)
    assert cat.margin is not None and cat.margin.hc_structure.catalog_info.margin_threshold == MARGIN_ARCSEC


def test_cli_export_hats_version_name_and_no_margin(cli_export, tmp_path):
    import lsdb

    out = cli("tables", "export-hats", "dp.hx", tmp_path / "v0", "--version", 0, "--name", "hx0", "--no-margin")
    assert f"dp.hx@v0 -> {tmp_path / 'v0'}: 1,500 rows" in out.output and "margin" not in out.output
    cat = lsdb.open_catalog(tmp_path / "v0")
    assert cat.name == "hx0" and cat.margin is None
    assert_same_rows(cat.compute(), cli_export.table)


def test_cli_register_hats_reads_the_same_rows(cli_export, tmp_path):
    out = cli("tables", "register-hats", cli_export.out, "--table", "ext.hx", "--description", "exported").output
    assert out.startswith("registered ext.hx: HATS catalog dp_hx at ") and "1,500 rows" in out
    assert "positions coord_ra/coord_dec" in out
    entry = Catalog().get("ext.hx")
    assert entry.format == "hats" and entry.description == "exported"
    assert_same_rows(read_table("ext.hx").toPandas(), cli_export.table)
    # and it searches like the original: a cone over the pole, against astropy
    rows = cli_export.rows
    want = set(rows.objectId[brute_cone(rows.coord_ra.to_numpy(), rows.coord_dec.to_numpy(), 0.1, 89.9, 2000)])
    cli("search", "cone", "ext.hx", 0.1, 89.9, 2000, "--output", tmp_path / "cone.parquet")
    assert want and set(pd.read_parquet(tmp_path / "cone.parquet").objectId) == want


def test_cli_ingest_hats_copies_it_into_delta(cli_export):
    out = cli("ingest", "--hats", cli_export.out, "--table", "imp.hx", "--threshold", 400).output
    assert "imp.hx: version 0, 1,500 rows" in out
    assert "using the HATS catalog's columns coord_ra/coord_dec for positions" in out
    entry = Catalog().get("imp.hx")
    assert entry.format == "delta" and entry.pixel_threshold == 400
    got = read_table("imp.hx").toPandas()
    assert not {"Norder", "Dir", "Npix"} & set(got.columns)
    expected = cli_export.table
    pd.testing.assert_frame_equal(sorted_frame(got, expected.columns), sorted_frame(expected, expected.columns))
    from userbatch.tables.delta import history

    assert history(entry.location)[0]["provenance"]["inputs"][0]["format"] == "hats"


def test_cli_hats_errors(cli_export, tmp_path):
    not_hats = tmp_path / "not_hats"
    not_hats.mkdir()
    (not_hats / "data.parquet").write_bytes(b"PAR1")
    assert "is not a HATS catalog" in cli_error("tables", "register-hats", not_hats, "--table", "bad.one")
    assert "is not a directory" in cli_error("tables", "register-hats", tmp_path / "missing", "--table", "bad.one")
    assert "HATS margin catalog" in cli_error("tables", "register-hats", cli_export.out / "dp_hx_10arcs",
                                              "--table", "bad.one")
    assert "is not a HATS catalog" in cli_error("ingest", "--hats", not_hats, "--table", "bad.two")
    assert not Catalog().exists("bad.one") and not Catalog().exists("bad.two")

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("x")
    assert "the directory is not empty" in cli_error("tables", "export-hats", "dp.hx", busy)
    assert "version 7 does not exist" in cli_error("tables", "export-hats", "dp.hx", tmp_path / "v7", "--version", 7)
    msg = cli_error("tables", "export-hats", "dp.hx", tmp_path / "evil", "--name", "../evil")
    assert "--name '../evil' must be letters" in msg and "catalog_name" not in msg
    assert "no table named nope.nothing" in cli_error("tables", "export-hats", "nope.nothing", tmp_path / "n")
    assert not {"v7", "evil", "n"} & {p.name for p in tmp_path.iterdir()}

    assert "one or the other" in cli_error("ingest", cli_export.base / "rows.parquet", "--hats", cli_export.out,
                                           "--table", "bad.three")
    assert "one or the other" in cli_error("ingest", "--table", "bad.three")
    assert "do not apply to --hats" in cli_error("ingest", "--hats", cli_export.out, "--table", "bad.three",
                                                 "--format", "parquet")
    for cmd in (["tables", "export-hats"], ["tables", "register-hats"]):
        assert "Usage" in cli(*cmd, "--help").output
