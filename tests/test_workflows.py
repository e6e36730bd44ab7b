"""SQL workflows: reading and checking workflow files (every refusal names the step and writes nothing), schedules
against croniter, and real runs on Spark whose outputs are compared with the same query done in pandas, with
inputs pinned to an older version and another user's private table refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest
import yaml
from croniter import croniter
from helpers import sky_points
from userbatch.errors import TableExists, TableNotFound
from userbatch.facility import workflows
from userbatch.facility.workflows import (
    Step,
    Workflow,
    WorkflowError,
    check_spark_sql,
    check_tables,
    next_run,
    parse_workflow,
    pins_for,
    run_workflow,
)
from userbatch.sky.healpix import SPATIAL_INDEX_COLUMN
from userbatch.tables import delta
from userbatch.tables.catalog import Catalog
from userbatch.tables.provenance import Provenance
from userbatch.tables.read import read_table
from userbatch.tables.views import register_catalog_views
from userbatch.tables.write import write_table

GOOD = """\
name: bright_variables
description: bright objects and their r-band forced photometry
schedule: "0 3 * * *"
steps:
  - name: bright
    sql: SELECT objectId, coord_ra, coord_dec, r_psfFlux FROM dp1.object WHERE r_psfFlux > 3000
  - name: counts
    sql: >-
      SELECT b.objectId, count(*) AS n, avg(f.psfFlux) AS mean_flux
      FROM bright b JOIN dp1.forced_source f ON b.objectId = f.objectId
      WHERE f.band = 'r' GROUP BY b.objectId
  - name: result
    sql: >-
      WITH c AS (SELECT * FROM counts WHERE n >= 2)
      SELECT b.objectId, b.coord_ra, b.coord_dec, c.n, c.mean_flux FROM bright b JOIN c ON b.objectId = c.objectId
    output: u_tester.bright_counts
    mode: create
    ra_column: coord_ra
    dec_column: coord_dec
  - name: histogram
    sql: SELECT n, count(*) AS objects FROM counts GROUP BY n
    output: u_tester.histogram
"""


def _doc(sql="SELECT objectId FROM dp1.object", **step) -> dict:
    return {"name": "wf", "steps": [{"name": "a", "sql": sql, **step}]}


def _table_names() -> list[str]:
    return [e.name for e in Catalog().list()]


# ---------------------------------------------------------------- reading workflows, without Spark


def test_good_workflow_reads_round_trips_and_lists_tables(tmp_path):
    wf = parse_workflow(GOOD)
    assert wf.name == "bright_variables" and wf.schedule == "0 3 * * *"
    assert [s.name for s in wf.steps] == ["bright", "counts", "result", "histogram"]
    # step names and the CTE "c" are not catalog tables
    assert wf.referenced_tables() == ["dp1.forced_source", "dp1.object"]
    assert wf.outputs() == ["u_tester.bright_counts", "u_tester.histogram"]
    result = wf.steps[2]
    assert result.spatial and result.ra_column == "coord_ra" and result.mode == "create"
    assert wf.steps[3].mode == "create" and not wf.steps[3].spatial
    assert parse_workflow(wf.to_yaml()) == wf
    assert parse_workflow(wf.as_dict()) == wf
    path = tmp_path / "wf.yaml"
    path.write_text(GOOD)
    assert parse_workflow(path) == wf and parse_workflow(str(path)) == wf
    with pytest.raises(WorkflowError, match="cannot read workflow file"):
        parse_workflow(str(tmp_path / "missing.yaml"))


@pytest.mark.parametrize("sql", [
    "SELECT * FROM `dp1`.`object`",
    "SELECT objectId FROM dp1.object UNION ALL SELECT objectId FROM dp1.forced_source",
    "WITH a AS (SELECT 1 AS x), b AS (SELECT * FROM a) SELECT * FROM b",
    "(SELECT objectId FROM dp1.object)",
    "SELECT * FROM dp1.object WHERE objectId IN (SELECT objectId FROM dp1.forced_source)",
    "SELECT id FROM range(10)",
    "SELECT o.objectId, x FROM dp1.object o LATERAL VIEW explode(array(1, 2)) t AS x",
    "SELECT transform(array(1, 2), v -> v + 1) AS a",
])
def test_read_only_queries_are_accepted(sql):
    parse_workflow(_doc(sql))


def test_references_to_steps_and_ctes():
    doc = {"name": "wf", "steps": [
        {"name": "a", "sql": "SELECT * FROM dp1.object"},
        {"name": "b", "sql": "WITH a2 AS (SELECT * FROM a) SELECT * FROM a2 JOIN dp1.forced_source USING (objectId)"},
        {"name": "c", "sql": "SELECT * FROM B"},  # Spark names are case-insensitive; still the step b
    ]}
    wf = parse_workflow(doc)
    assert wf.referenced_tables() == ["dp1.forced_source", "dp1.object"]
    assert set(wf.steps[1].reads) == {"a", "dp1.forced_source"}


BAD_DOCS = [
    ("name: x\nsteps: [unclosed\n", "not valid YAML"),
    ("- a\n- b\n", "must be a mapping"),
    ("just words", "must be a mapping"),
    ({"steps": [{"name": "a", "sql": "SELECT 1"}]}, "lacks name"),
    ({"name": "wf"}, "lacks steps"),
    ({**_doc(), "extra": 1}, "unknown key.*extra"),
    ({"name": "wf", "steps": "SELECT 1"}, "steps must be a list"),
    ({"name": "wf", "steps": []}, "no steps"),
    ({"name": "wf", "steps": ["SELECT 1"]}, "step 1 must be a mapping"),
    ({"name": "wf", "steps": [{"name": "a", "query": "SELECT 1", "sql": "SELECT 1"}]},
     "step 'a' has unknown key.*query"),
    ({"name": "wf", "steps": [{"name": "a"}]}, "step 'a' lacks sql"),
    ({"name": "wf", "steps": [{"sql": "SELECT 1"}]}, "step 1 lacks name"),
    ({**_doc(), "name": "Bad-Name"}, "workflow name 'Bad-Name'"),
    ({**_doc(), "name": "../x"}, "workflow name"),
    ({"name": "wf", "steps": [{"name": "Step1", "sql": "SELECT 1"}]}, "step name 'Step1'"),
    ({"name": "wf", "steps": [{"name": "a", "sql": "SELECT 1"}, {"name": "a", "sql": "SELECT 2"}]},
     "two steps are named 'a'"),
    ({**_doc(), "schedule": "61 * * * *"}, "cron"),
    ({**_doc(), "schedule": "0 3 * *"}, "cron"),
    ({**_doc(), "schedule": "0 0 3 * * *"}, "cron"),
    ({**_doc(), "schedule": "every day"}, "cron"),
    ({**_doc(), "schedule": 5}, "cron"),
    (_doc(output="u_tester.x", mode="upsert"), "step 'a': mode must be one of create, overwrite, append"),
    (_doc(output="../etc.passwd"), "step 'a': output"),
    (_doc(output="u/x.y"), "step 'a': output"),
    (_doc(output="u_tester"), "step 'a': output"),
    (_doc(output="a.b.c"), "step 'a': output"),
    (_doc(output="U.x"), "step 'a': output"),
    (_doc(output="parquet.x"), "step 'a': output.*reserved"),
    (_doc(output=["u.x"]), "step 'a': output must be a table name"),
    (_doc(mode="append"), "step 'a'.*add 'output"),
    (_doc(output="u_tester.x", ra_column="coord_ra"), "step 'a': give both ra_column and dec_column"),
    (_doc(output="u_tester.x", ra_column="coord ra", dec_column="d"), "step 'a': ra_column must be a column name"),
    ({"name": "wf", "steps": [{"name": "a", "sql": "SELECT 1", "output": "u.x"},
                              {"name": "b", "sql": "SELECT 2", "output": "u.x"}]}, "both write u.x"),
    ({"name": "wf", "steps": [{"name": "a", "sql": "SELECT 1", "output": "u.x"},
                              {"name": "b", "sql": "SELECT * FROM u.x"}]}, "step 'b' reads u.x, which step 'a'"),
    ({"name": "wf", "steps": [{"name": "a", "sql": "SELECT * FROM u.x"},
                              {"name": "b", "sql": "SELECT 2", "output": "u.x"}]}, "may not read its own outputs"),
    (_doc("SELECT * FROM u.x", output="u.x"), "reads u.x and writes it"),
]


@pytest.mark.parametrize("doc, message", BAD_DOCS)
def test_bad_workflow_files_are_refused_naming_the_key(doc, message):
    with pytest.raises(WorkflowError, match=message):
        parse_workflow(doc)


NOT_ONE_QUERY = [
    ("INSERT INTO dp1.object SELECT * FROM dp1.object", "read-only queries.*INSERT"),
    ("INSERT OVERWRITE DIRECTORY '/tmp/out' SELECT * FROM dp1.object", "read-only queries"),
    ("WITH a AS (SELECT 1) INSERT INTO u.x SELECT * FROM a", "read-only queries.*INSERT"),
    ("CREATE TABLE u.x AS SELECT * FROM dp1.object", "read-only queries.*CREATE"),
    ("CREATE TEMPORARY VIEW v AS SELECT 1", "read-only queries.*CREATE"),
    ("DROP TABLE dp1.object", "read-only queries.*DROP"),
    ("ALTER TABLE dp1.object RENAME TO dp1.gone", "read-only queries.*ALTER"),
    ("DELETE FROM dp1.object WHERE objectId = 1", "read-only queries.*DELETE"),
    ("UPDATE dp1.object SET coord_ra = 0", "read-only queries.*UPDATE"),
    ("MERGE INTO dp1.object t USING u.x s ON t.objectId = s.objectId WHEN MATCHED THEN DELETE", "read-only.*MERGE"),
    ("TRUNCATE TABLE dp1.object", "read-only queries.*TRUNCATE"),
    ("SET spark.sql.ansi.enabled=false", "read-only queries.*SET"),
    ("CACHE TABLE dp1.object", "read-only queries.*CACHE"),
    ("UNCACHE TABLE dp1.object", "read-only queries"),
    ("ADD JAR /tmp/evil.jar", "read-only queries.*ADD JAR"),
    ("USE dp1", "read-only queries.*USE"),
    ("REFRESH TABLE dp1.object", "read-only queries.*REFRESH"),
    ("LOAD DATA INPATH '/tmp/x' INTO TABLE dp1.object", "read-only queries"),
    ("EXECUTE IMMEDIATE 'DROP TABLE dp1.object'", "read-only queries"),
    ("DESCRIBE dp1.object", "read-only queries"),
    ("SHOW TABLES", "read-only queries"),
    ("EXPLAIN SELECT 1", "read-only queries"),
    ("VALUES (1), (2)", "read-only queries"),
    ("SELECT 1; SELECT 2", "exactly one query; found 2"),
    ("SELECT objectId FROM dp1.object; DROP TABLE dp1.object", "exactly one query"),
    ("SELECT FROM WHERE", "does not parse"),
    ("SELECT (1", "does not parse"),
    ("", "non-empty"),
    ("   ", "non-empty"),
    (5, "non-empty"),
]

ESCAPES_THE_CATALOG = [
    ("SELECT * FROM parquet.`/tmp/x`", "'parquet./tmp/x' is not a catalog table"),
    ("SELECT * FROM parquet.`data`", "'parquet.data' is not a catalog table"),
    ("SELECT * FROM csv.`/etc/passwd`", "not a catalog table"),
    ("SELECT * FROM json.`/x.json`", "not a catalog table"),
    ("SELECT * FROM text.`/etc/passwd`", "not a catalog table"),
    ("SELECT * FROM orc.`/x`", "not a catalog table"),
    ("SELECT * FROM delta.`/x`", "not a catalog table"),
    ("SELECT * FROM binaryFile.`/x`", "binaryFile"),
    ("SELECT * FROM `/tmp/x.parquet`", "file paths and quoted names"),
    ("SELECT * FROM `dp1.object`", "file paths and quoted names"),
    ("SELECT * FROM dp1.object o JOIN `org.apache.spark.sql.parquet`.`/x` p ON true", "lower-case identifier"),
    ("SELECT * FROM read_files('/tmp/x')", "read_files"),
    ("SELECT * FROM read_files('/tmp/x') AS t(a)", "read_files"),
    ("SELECT reflect('java.lang.Runtime', 'getRuntime')", "reflect"),
    ("SELECT objectId, java_method('java.lang.System', 'exit', 1) FROM dp1.object", "java_method"),
    ("SELECT try_reflect('java.lang.Runtime', 'getRuntime')", "try_reflect"),
    ("SELECT * FROM dp1.object WHERE objectId IN (SELECT reflect('a', 'b'))", "reflect"),
    ("SELECT * FROM IDENTIFIER('dp1.object')", "identifier"),
    ("SELECT TRANSFORM(objectId) USING 'cat' AS (x) FROM dp1.object", "TRANSFORM"),
    ("SELECT * FROM spark_catalog.dp1.object", "has 3 parts"),
    ("SELECT * FROM global_temp.secrets", "not a catalog table"),
    ("SELECT * FROM nothing", "'nothing', which is neither an earlier step nor a catalog table"),
    ("SELECT * FROM a", "reads step 'a', which is not defined before it"),
    ("SELECT * FROM DP1.object", "lower-case"),
    ("SELECT * FROM (WITH c AS (SELECT 1) SELECT * FROM c) s JOIN c", "'c', which is neither"),
    ("WITH x AS (SELECT * FROM y), y AS (SELECT 1) SELECT * FROM x", "'y', which is neither"),
]


@pytest.mark.parametrize("sql, message", NOT_ONE_QUERY + ESCAPES_THE_CATALOG)
def test_sql_that_is_not_one_read_only_catalog_query_is_refused(sql, message):
    with pytest.raises(WorkflowError, match=f"(?s)step 'a'.*{message}"):
        parse_workflow(_doc(sql))
    # the same through YAML text, as a user writes it
    with pytest.raises(WorkflowError, match=message):
        parse_workflow(yaml.safe_dump(_doc(sql)))


def test_a_step_cannot_read_a_later_step():
    doc = {"name": "wf", "steps": [{"name": "first", "sql": "SELECT * FROM second"},
                                   {"name": "second", "sql": "SELECT * FROM dp1.object"}]}
    with pytest.raises(WorkflowError, match="step 'first' reads step 'second', which is not defined before it"):
        parse_workflow(doc)


# ---------------------------------------------------------------- schedules


@pytest.mark.parametrize("schedule", ["0 3 * * *", "*/15 * * * *", "0 0 1 * *", "30 12 * * 1", "0 0 29 2 *",
                                      "5 4 * * sun", "0 22 * * 1-5"])
def test_next_run_agrees_with_croniter(schedule):
    for after in (datetime(2026, 3, 14, 2, 59, tzinfo=UTC), datetime(2026, 12, 31, 23, 59, 59,
                                                                                 tzinfo=UTC)):
        got = next_run(schedule, after)
        assert got.tzinfo is not None and got.utcoffset() == timedelta(0)
        assert got == croniter(schedule, after).get_next(datetime)
        assert got > after


def test_next_run_fixed_dates():
    t = datetime(2026, 3, 14, 2, 59, tzinfo=UTC)  # a Saturday
    assert next_run("0 3 * * *", t) == datetime(2026, 3, 14, 3, 0, tzinfo=UTC)
    # strictly after: a run at exactly 03:00 schedules the next day's
    assert next_run("0 3 * * *", datetime(2026, 3, 14, 3, 0, tzinfo=UTC)) == \
        datetime(2026, 3, 15, 3, 0, tzinfo=UTC)
    assert next_run("30 12 * * 1", t) == datetime(2026, 3, 16, 12, 30, tzinfo=UTC)  # next Monday
    assert next_run("0 0 29 2 *", t) == datetime(2028, 2, 29, 0, 0, tzinfo=UTC)  # next leap day
    # other time zones are converted; naive times are UTC
    paris = timezone(timedelta(hours=2))
    assert next_run("0 3 * * *", datetime(2026, 3, 14, 4, 30, tzinfo=paris)) == \
        datetime(2026, 3, 14, 3, 0, tzinfo=UTC)
    assert next_run("0 3 * * *", datetime(2026, 3, 14, 2, 59)) == datetime(2026, 3, 14, 3, 0, tzinfo=UTC)
    with pytest.raises(WorkflowError, match="5-field cron"):
        next_run("0 3 * *", t)


# ---------------------------------------------------------------- runs on Spark


def _objects_and_forced(spark):
    obj = sky_points(600, seed=21)
    rng = np.random.default_rng(22)
    ids = np.repeat(obj.objectId.to_numpy(), rng.integers(0, 6, len(obj)))
    forced = pd.DataFrame({
        "objectId": ids,
        "visit": np.arange(len(ids), dtype=np.int64),
        "band": rng.choice(list("gri"), len(ids)),
        "psfFlux": rng.normal(3000, 300, len(ids)),
    })
    _put(spark, obj, "dp1.object")
    _put(spark, forced, "dp1.forced_source")
    return obj, forced


def _put(spark, pdf, name, mode="create", **options):
    """Inputs are written as plain (non-spatial) tables: a workflow reads them the same way, and the one
    HEALPix-partitioned write these tests need is a workflow's own output."""
    return write_table(spark.createDataFrame(pdf), name, mode, ra_column=None, dec_column=None, **options)


def _temp_views(spark) -> set[str]:
    return {t.name for t in spark.catalog.listTables() if t.isTemporary}


def test_workflow_runs_and_equals_pandas(spark, ub_env):
    obj, forced = _objects_and_forced(spark)
    register_catalog_views(spark)
    wf = parse_workflow(GOOD)
    prov = Provenance(job="workflow-test")
    out = run_workflow(wf, spark, prov, Catalog())

    # the same query, independently, in pandas
    bright = obj[obj.r_psfFlux > 3000][["objectId", "coord_ra", "coord_dec", "r_psfFlux"]]
    f = forced[forced.band == "r"].merge(bright[["objectId"]], on="objectId")
    counts = f.groupby("objectId").psfFlux.agg(n="size", mean_flux="mean").reset_index()
    expected = (bright.merge(counts[counts.n >= 2], on="objectId")[["objectId", "coord_ra", "coord_dec", "n",
                                                                   "mean_flux"]]
                .sort_values("objectId").reset_index(drop=True))
    hist = counts.groupby("n").size().rename("objects").reset_index().sort_values("n").reset_index(drop=True)
    assert 50 < len(expected) < len(obj)  # the cuts select something, not everything

    got = read_table("u_tester.bright_counts").toPandas()
    assert SPATIAL_INDEX_COLUMN in got.columns  # written as a HEALPix-partitioned table
    got = got.drop(columns=[SPATIAL_INDEX_COLUMN]).sort_values("objectId").reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected, check_dtype=False, check_exact=False, rtol=1e-12)
    got_hist = read_table("u_tester.histogram").toPandas().sort_values("n").reset_index(drop=True)
    pd.testing.assert_frame_equal(got_hist, hist, check_dtype=False)

    assert out["outputs"] == [{"table": "u_tester.bright_counts", "version": 0, "rows": len(expected)},
                              {"table": "u_tester.histogram", "version": 0, "rows": len(hist)}]
    assert out["steps"] == [{"name": "bright", "output": None}, {"name": "counts", "output": None},
                            {"name": "result", "output": "u_tester.bright_counts"},
                            {"name": "histogram", "output": "u_tester.histogram"}]
    assert sorted(out["inputs"], key=lambda i: i["table"]) == [{"table": "dp1.forced_source", "version": 0},
                                                                {"table": "dp1.object", "version": 0}]
    cat = Catalog()
    assert cat.get("u_tester.bright_counts").spatial and not cat.get("u_tester.histogram").spatial
    # the commit says what the rows were made from, and how
    (h,) = delta.history(cat.get("u_tester.bright_counts").location)
    assert h["provenance"]["job"] == "workflow-test"
    assert {i["table"]: i["version"] for i in h["provenance"]["inputs"]} == {"dp1.object": 0, "dp1.forced_source": 0}
    assert parse_workflow(h["provenance"]["parameters"]["workflow"]) == wf
    # step views do not outlive the run
    assert not _temp_views(spark) & {"bright", "counts", "result", "histogram"}

    # a later step's 'create' of an existing table is refused before the first output is written
    again = parse_workflow({"name": "again", "steps": [
        {"name": "fresh", "sql": "SELECT * FROM dp1.object", "output": "u_tester.fresh"},
        {"name": "histogram", "sql": "SELECT 1 AS n", "output": "u_tester.histogram"}]})
    before = _table_names()
    with pytest.raises(TableExists, match="step 'histogram': table u_tester.histogram already exists"):
        run_workflow(again, spark, Provenance(), cat)
    assert _table_names() == before and not cat.exists("u_tester.fresh")
    assert delta.latest_version(cat.get("u_tester.histogram").location) == 0


def test_errors_found_by_spark_write_nothing(spark, ub_env):
    _put(spark, sky_points(200, seed=23), "dp1.object")
    register_catalog_views(spark)
    before = _table_names()
    wf = parse_workflow({"name": "wf", "steps": [
        {"name": "a", "sql": "SELECT * FROM dp1.object", "output": "u_tester.first"},
        {"name": "b", "sql": "SELECT no_such_column FROM a", "output": "u_tester.second"},
    ]})
    with pytest.raises(WorkflowError, match="step 'b': Spark cannot run the SQL.*no_such_column"):
        run_workflow(wf, spark, Provenance(), Catalog())
    assert _table_names() == before
    assert not _temp_views(spark) & {"a", "b"}
    # a table the catalog does not have is refused before anything runs
    wf = parse_workflow(_doc("SELECT * FROM dp1.nothing", output="u_tester.x"))
    with pytest.raises(TableNotFound):
        run_workflow(wf, spark, Provenance(), Catalog())
    assert _table_names() == before


def test_spark_parser_refuses_what_sqlglot_might_miss(spark, monkeypatch):
    """Defence in depth: with the sqlglot check switched off, Spark's own parser still refuses each escape."""
    monkeypatch.setattr(workflows, "check_sql", lambda name, sql: ())
    for sql in ["INSERT INTO dp1.object SELECT * FROM dp1.object", "CACHE TABLE dp1.object", "SET a=b",
                "ADD JAR /tmp/x.jar", "EXECUTE IMMEDIATE 'DROP TABLE dp1.object'", "DROP TABLE dp1.object",
                "SELECT * FROM parquet.`/tmp/x`", "SELECT * FROM `/tmp/x`", "SELECT * FROM spark_catalog.dp1.object",
                "SELECT * FROM IDENTIFIER('parquet.`/tmp/x`')", "SELECT * FROM read_files('/tmp/x')",
                "SELECT 1 AS x WHERE 1 IN (SELECT reflect('java.lang.Thread', 'sleep', 1000L))",
                "WITH c AS (SELECT java_method('java.lang.System', 'exit', 1)) SELECT * FROM c",
                "SELECT TRANSFORM(objectId) USING 'cat' AS (x) FROM dp1.object",
                "SELECT 1; SELECT 2", "DECLARE VARIABLE v INT", "SELECT * FROM someones_temp_view"]:
        with pytest.raises(WorkflowError, match="step 'a'"):
            check_spark_sql(spark, Step("a", sql), set())
    check_spark_sql(spark, Step("a", "WITH c AS (SELECT * FROM dp1.object) SELECT * FROM c JOIN prev USING (x) "
                                     "WHERE x IN (SELECT y FROM dp1.other)"), {"prev"})


def test_another_users_private_table_is_refused(spark, ub_env):
    other = Catalog(user="other")
    _put(spark, sky_points(100, seed=24), "other_ns.secret", catalog=other, visibility="private")
    _put(spark, sky_points(100, seed=25), "dp1.object")
    register_catalog_views(spark, catalog=other)  # the session even has a view of it: the catalog still says no
    wf = parse_workflow({"name": "peek", "steps": [
        {"name": "mine", "sql": "SELECT * FROM dp1.object"},
        {"name": "theirs", "sql": "SELECT s.* FROM other_ns.secret s JOIN mine USING (objectId)",
         "output": "u_tester.stolen"},
    ]})
    me = Catalog()
    # answered as a table that does not exist: saying it belongs to someone would tell who has what
    with pytest.raises(TableNotFound, match="no table named other_ns.secret"):
        check_tables(wf, me)
    with pytest.raises(TableNotFound):
        pins_for(wf, me)
    with pytest.raises(TableNotFound):
        run_workflow(wf, spark, Provenance(), me)
    assert not me.exists("u_tester.stolen")
    assert _table_names() == ["dp1.object"]


def test_pinned_inputs_read_the_old_version(spark, ub_env):
    v0 = sky_points(300, seed=26)
    _put(spark, v0, "dp1.object")
    _put(spark, sky_points(100, seed=27, id_start=10_000), "dp1.object", "append")
    wf = parse_workflow(_doc("SELECT count(*) AS n, sum(objectId) AS ids FROM dp1.object", output="u_tester.n",
                             mode="overwrite"))
    cat = Catalog()
    assert pins_for(wf, cat) == {"dp1.object": 1}

    register_catalog_views(spark, pins={"dp1.object": 0})
    out = run_workflow(wf, spark, Provenance(), cat)
    assert out["inputs"] == [{"table": "dp1.object", "version": 0}]
    assert read_table("u_tester.n").collect()[0].asDict() == {"n": 300, "ids": int(v0.objectId.sum())}

    register_catalog_views(spark)  # latest
    out = run_workflow(wf, spark, Provenance(), cat)
    assert out["inputs"] == [{"table": "dp1.object", "version": 1}]
    assert out["outputs"] == [{"table": "u_tester.n", "version": 1, "rows": 1}]
    assert read_table("u_tester.n").collect()[0]["n"] == 400

    # a view that reads no committed version of the table (stale, or made by hand) is refused
    spark.sql("CREATE OR REPLACE VIEW dp1.object AS SELECT 1 AS objectId")
    with pytest.raises(WorkflowError, match="reads no committed version"):
        run_workflow(wf, spark, Provenance(), cat)
    assert delta.latest_version(cat.get("u_tester.n").location) == 1
    spark.sql("DROP VIEW dp1.object")
    with pytest.raises(WorkflowError, match="no SQL view"):
        run_workflow(wf, spark, Provenance(), cat)


def test_check_tables_and_workflow_objects(ub_env):
    wf = Workflow("wf", (Step("a", "SELECT * FROM dp1.object"),))
    with pytest.raises(TableNotFound):
        check_tables(wf, Catalog())
    with pytest.raises(WorkflowError, match="step 'b' reads step 'c'"):
        Workflow("wf", (Step("b", "SELECT * FROM c"), Step("c", "SELECT 1")))
    with pytest.raises(WorkflowError, match="no steps"):
        Workflow("wf", ())
