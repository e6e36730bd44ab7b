"""Templated jobs: template checking, job files and overrides, and the cross-match job run in-process and by
spark-submit, its output compared with the library call and its provenance read back from the Delta log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import astropy.units as u
import numpy as np
import pandas as pd
import pytest
from astropy.coordinates import SkyCoord
from helpers import module_facility, sky_points

from userbatch.errors import TableNotFound, UserbatchError
from userbatch.facility.jobmain import job_main, resolve, run_template
from userbatch.facility.templates import TemplateError, load_template, parse_overrides, parse_template, read_job_file

ROOT = Path(__file__).resolve().parents[1]
BASE = {"left": "t.left", "right": "t.right", "output": "u.out"}


# ---------------------------------------------------------------- templates, without Spark


def test_every_shipped_template_loads_and_names_an_existing_script_and_function():
    names = [p.stem for p in (ROOT / "conf" / "templates").glob("*.yaml")]
    assert "crossmatch" in names
    for name in names:
        t = load_template(name)
        assert (ROOT / t.script).is_file(), t.script
        assert callable(t.function())


def test_resolve_fills_defaults_and_types_values():
    t = load_template("crossmatch")
    p = t.resolve({**BASE, "radius_arcsec": 2, "left_columns": "objectId, coord_ra,coord_dec"})
    assert p["radius_arcsec"] == 2.0 and isinstance(p["radius_arcsec"], float)
    assert p["left_columns"] == ["objectId", "coord_ra", "coord_dec"]
    assert p["mode"] == "nearest" and p["how"] == "inner" and p["one_to_one"] is False and p["k"] is None
    assert set(p) == set(t.params)


@pytest.mark.parametrize("values, message", [
    ({"left": "t.left", "right": "t.right"}, "needs parameter 'output'"),
    ({**BASE, "radius": 1}, "no parameter.*radius"),
    ({**BASE, "radius_arcsec": 0}, "must be > 0"),
    ({**BASE, "radius_arcsec": "wide"}, "finite number"),
    ({**BASE, "radius_arcsec": float("nan")}, "finite number"),
    ({**BASE, "k": 2.5}, "integer"),
    ({**BASE, "k": True}, "integer"),
    ({**BASE, "k": 0}, ">= 1"),
    ({**BASE, "mode": "closest"}, "one of nearest, k_nearest, all"),
    ({**BASE, "one_to_one": "yes"}, "true or false"),
    ({**BASE, "output": "../../etc/passwd"}, "namespace.name"),
    ({**BASE, "left": "t.Left"}, "lower-case"),
    ({**BASE, "motion": [1, 2]}, "mapping"),
    ({**BASE, "radius_arcsec": None}, "must not be null"),
])
def test_resolve_refuses_bad_values_naming_the_parameter(values, message):
    with pytest.raises(TemplateError, match=message):
        load_template("crossmatch").resolve(values)


def test_template_names_cannot_be_paths_and_unknown_ones_are_listed():
    for bad in ("../crossmatch", "/etc/passwd", "Crossmatch", "", "cross match"):
        with pytest.raises(TemplateError, match="identifier"):
            load_template(bad)
    with pytest.raises(TemplateError, match="no job template 'nothing'; known: .*crossmatch"):
        load_template("nothing")


def test_malformed_templates_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("USERBATCH_TEMPLATE_PATH", str(tmp_path))
    (tmp_path / "broken.yaml").write_text("name: broken\nparameters: {a: [unclosed\n")
    with pytest.raises(TemplateError, match="not valid YAML"):
        load_template("broken")
    good = {"name": "x", "entry": "m:f", "script": "jobs/x.py", "parameters": {"a": {"type": "integer"}}}
    parse_template(good)
    for doc, message in [
        ([1, 2], "must be a mapping"),
        ({**good, "entry": "nofunction"}, "module:function"),
        ({**good, "extra": 1}, "unknown key"),
        ({k: v for k, v in good.items() if k != "script"}, "lacks script"),
        ({**good, "parameters": {"a": {"type": "float"}}}, "type must be one of"),
        ({**good, "parameters": {"a": {"type": "integer", "default": "x"}}}, "default of 'a'"),
        ({**good, "parameters": {"a": {"type": "integer", "required": True, "default": 1}}}, "choose one"),
        ({**good, "parameters": {"a": {"type": "integer", "minimun": 1}}}, "unknown key.*minimun"),
        ({**good, "parameters": {"A b": {"type": "integer"}}}, "identifier"),
    ]:
        with pytest.raises(TemplateError, match=message):
            parse_template(doc)
    # a template whose file name and name disagree is refused rather than run under the wrong name
    (tmp_path / "alias.yaml").write_text("name: other\nentry: m:f\nscript: s.py\nparameters: {}\n")
    with pytest.raises(TemplateError, match="calls itself 'other'"):
        load_template("alias")


def test_overrides_and_job_files(tmp_path):
    assert parse_overrides(["a=1", "b=2.5", "c=true", "d=[x, y]", "e=hello world", "f=", "g=null", "h={x: 1}"]) == \
        {"a": 1, "b": 2.5, "c": True, "d": ["x", "y"], "e": "hello world", "f": "", "g": None, "h": {"x": 1}}
    assert parse_overrides(["s=[unclosed"]) == {"s": "[unclosed"}
    with pytest.raises(TemplateError, match="key=value"):
        parse_overrides(["novalue"])

    job = tmp_path / "job.yaml"
    job.write_text("template: crossmatch\nparameters:\n  left: t.left\n  right: t.right\n  output: u.out\n"
                   "  radius_arcsec: 3\n")
    _, p = resolve("crossmatch", str(job), ["radius_arcsec=4", "how=left"])
    assert p["radius_arcsec"] == 4.0 and p["how"] == "left" and p["left"] == "t.left"  # -p wins
    other = tmp_path / "other.yaml"
    other.write_text("template: lightcurves\nparameters: {}\n")
    with pytest.raises(TemplateError, match="for template 'lightcurves'"):
        resolve("crossmatch", str(other))
    for text, message in [("template: crossmatch\nparams: {}\n", "unknown key"),
                          ("- a\n- b\n", "must be a mapping"),
                          ("template: crossmatch\nparameters: [1]\n", "parameters must be a mapping"),
                          ("template: crossmatch\nparameters: {left: [\n", "not valid YAML")]:
        job.write_text(text)
        with pytest.raises(TemplateError, match=message):
            read_job_file(job, "crossmatch")
    with pytest.raises(TemplateError, match="cannot read"):
        read_job_file(tmp_path / "missing.yaml")


def test_job_main_reports_user_errors_in_one_line(capsys):
    assert job_main("crossmatch", ["-p", "left=t.left", "-p", "right=t.right"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "output" in err and "\n" not in err
    assert job_main("crossmatch", ["-p", "left=t.left", "-p", "right=t.right", "-p", "output=u.o", "--show"]) == 0
    assert json.loads(capsys.readouterr().out)["radius_arcsec"] == 1.0


# ---------------------------------------------------------------- the cross-match job on tables


@pytest.fixture(scope="module")
def tables(spark, session_home, tmp_path_factory):
    """One facility for the module's job runs (each writes its own output table), the inputs written once."""
    from userbatch.tables.write import write_table

    with module_facility(tmp_path_factory, "jobs"):
        left = sky_points(1500, seed=5)
        rng = np.random.default_rng(6)
        take = rng.choice(len(left), 1000, replace=False)
        moved = SkyCoord(left.coord_ra.to_numpy()[take] * u.deg, left.coord_dec.to_numpy()[take] * u.deg) \
            .directional_offset_by(rng.uniform(0, 360, 1000) * u.deg, rng.uniform(0, 3, 1000) * u.arcsec)
        right = pd.DataFrame({"objectId": np.arange(10_000, 11_000, dtype=np.int64),
                              "coord_ra": moved.ra.deg % 360, "coord_dec": moved.dec.deg,
                              "r_psfFlux": rng.lognormal(8, 1, 1000), "band": "r"})
        write_table(spark.createDataFrame(left), "t.left", pixel_threshold=300, margin_radius_arcsec=5)
        write_table(spark.createDataFrame(right), "t.right", pixel_threshold=200, margin_radius_arcsec=5)
        yield left, right


def _pairs(df):
    return sorted(zip(df.objectId.astype(int), df.objectId_right.astype(int)))


@pytest.mark.heavy  # its tables and a cross-match
def test_crossmatch_job_in_process_equals_library_and_records_provenance(tables):
    from userbatch.ops.crossmatch import crossmatch
    from userbatch.tables.catalog import Catalog
    from userbatch.tables.delta import history
    from userbatch.tables.read import read_table

    summary = run_template("crossmatch", {**BASE, "radius_arcsec": 2.0, "mode": "all", "how": "left",
                                          "left_columns": ["objectId", "coord_ra", "coord_dec"],
                                          "right_columns": ["objectId", "band"], "pixel_threshold": 500})
    got = read_table("u.out").toPandas()
    want = crossmatch("t.left", "t.right", 2.0, mode="all", how="left",
                      left_columns=["objectId", "coord_ra", "coord_dec"], right_columns=["objectId", "band"],
                      engine="local").to_pandas()
    assert len(got) == len(want) == summary["outputs"][0]["rows"]
    assert got.objectId_right.isna().sum() == want.objectId_right.isna().sum() > 0
    assert _pairs(got.dropna(subset=["objectId_right"])) == _pairs(want.dropna(subset=["objectId_right"]))
    np.testing.assert_allclose(np.sort(got._dist_arcsec.dropna()), np.sort(want._dist_arcsec.dropna()), atol=1e-9)

    prov = history(Catalog().get("u.out").location)[0]["provenance"]
    assert prov["job"] == "crossmatch" and prov["run_id"] == summary["run_id"]
    assert sorted(prov["inputs"], key=lambda d: d["table"]) == [{"table": "t.left", "version": 0},
                                                               {"table": "t.right", "version": 0}]
    resolved = prov["parameters"]["resolved"]
    assert resolved == load_template("crossmatch").resolve({**BASE, "radius_arcsec": 2.0, "mode": "all",
                                                            "how": "left",
                                                            "left_columns": ["objectId", "coord_ra", "coord_dec"],
                                                            "right_columns": ["objectId", "band"],
                                                            "pixel_threshold": 500})
    assert prov["parameters"]["crossmatch"]["left_version"] == 0

    # re-running from the recorded parameters alone reproduces the rows
    run_template("crossmatch", {**resolved, "output": "u.again"})
    assert _pairs(read_table("u.again").toPandas().dropna(subset=["objectId_right"])) == \
        _pairs(got.dropna(subset=["objectId_right"]))

    # errors that need the data are still clear, and nothing is written
    with pytest.raises(TableNotFound):
        run_template("crossmatch", {**BASE, "right": "t.nothing", "output": "u.never"})
    with pytest.raises(UserbatchError, match="motion takes"):
        run_template("crossmatch", {**BASE, "output": "u.never", "motion": {"epoch": 2025.0, "pm_ra": "x"}})
    with pytest.raises(UserbatchError, match="keep the left coordinates"):
        run_template("crossmatch", {**BASE, "output": "u.never", "left_columns": ["objectId"]})
    with pytest.raises(TableNotFound):
        read_table("u.never")


@pytest.mark.slow
def test_crossmatch_job_by_spark_submit(tables, tmp_path):
    """The documented command line, in its own JVM: what a user's spark-submit runs."""
    from userbatch.tables.read import read_table

    job = tmp_path / "job.yaml"
    job.write_text("template: crossmatch\nparameters:\n  left: t.left\n  right: t.right\n  output: u.sub\n"
                   "  one_to_one: true\n")
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYTHONPATH": str(ROOT / "python")}
    spark_submit = Path(sys.executable).parent / "spark-submit"
    proc = subprocess.run([str(spark_submit), "--master", "local[1]", "--driver-memory", "1g",
                           str(ROOT / "jobs" / "crossmatch.py"), "--config", str(job), "-p", "radius_arcsec=2.5"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    got = read_table("u.sub").toPandas()
    assert summary["outputs"][0] == {"table": "u.sub", "version": 0, "rows": len(got)}
    assert not got.objectId.duplicated().any() and not got.objectId_right.duplicated().any()
    from userbatch.ops.crossmatch import crossmatch

    want = crossmatch("t.left", "t.right", 2.5, one_to_one=True, engine="local").to_pandas()
    assert _pairs(got) == _pairs(want)

    bad = subprocess.run([sys.executable, str(ROOT / "jobs" / "crossmatch.py"), "-p", "left=t.left",
                          "-p", "right=t.right", "-p", "output=u.x", "-p", "mode=closest"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: parameter 'mode'")
