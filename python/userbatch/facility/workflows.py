"""Scheduled SQL workflows: named SQL steps over catalog tables, run in order, some written as catalog tables.

A workflow is a small YAML file::

    name: bright_variables
    description: objects brighter than 1000 nJy and how often they were measured
    schedule: "0 3 * * *"          # optional, 5-field cron, UTC
    steps:
      - name: bright
        sql: SELECT objectId, coord_ra, coord_dec, r_psfFlux FROM dp1.object WHERE r_psfFlux > 1000
      - name: result
        sql: SELECT b.objectId, count(*) AS n FROM bright b JOIN dp1.forced_source f ON b.objectId = f.objectId
             GROUP BY b.objectId
        output: u_alice.bright_counts
        mode: create                  # create | overwrite | append
        ra_column: null               # give ra_column/dec_column for a HEALPix-partitioned (spatial) output

Each step is ONE read-only query. It may read catalog tables (``namespace.name``, through the session's SQL
views) and the steps defined before it (by name); nothing else. That rule is what lets the facility run a user's
SQL on shared machines: a query that could write, change session state, read files by path (``parquet.`/x```),
call into the JVM (``reflect``) or run a program (``TRANSFORM ... USING``) is refused when the workflow is read,
by sqlglot, and again just before it runs, by Spark's own parser — the one that decides what actually executes.
Reading only catalog tables also means every input has a name and a Delta version, so :func:`pins_for` can pin a
run's inputs and provenance can say exactly what a result was made from.

Everything a user can get wrong raises :class:`WorkflowError` naming the step and the key; a catalog table the
user may not read raises the catalog's own ``TableNotFound`` / ``AccessDenied``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from ..errors import UserbatchError
from ..extras import require
from ..tables.names import parse_table_name

log = logging.getLogger(__name__)

MODES = ("create", "overwrite", "append")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_COLUMN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_WORKFLOW_KEYS = ("name", "description", "schedule", "steps")
_STEP_KEYS = ("name", "sql", "output", "mode", "ra_column", "dec_column")

#: Namespaces a two-part name may not use: Spark reads ``<data source>.`path``` as a file, ``global_temp`` holds
#: session-wide temporary views and the others are Spark's own; none of them is a catalog namespace.
RESERVED_NAMESPACES = frozenset({
    "parquet", "orc", "json", "csv", "text", "avro", "binaryfile", "delta", "xml", "jdbc", "libsvm", "image",
    "hive", "noop", "console", "rate", "socket", "kafka", "iceberg", "hudi", "memory", "foreach",
    "global_temp", "session", "system", "builtin",
})
#: Functions no step may call: they read files (``read_files``), call arbitrary JVM methods (``reflect`` and
#: friends) or build table names at run time (``identifier``), which would hide what a step reads.
FORBIDDEN_FUNCTIONS = frozenset({"read_files", "reflect", "java_method", "try_reflect", "identifier"})
#: Table-valued functions a step may read from: they generate rows and touch no storage.
ALLOWED_TABLE_FUNCTIONS = frozenset({
    "range", "explode", "explode_outer", "posexplode", "posexplode_outer", "inline", "inline_outer", "stack",
    "json_tuple",
})
#: Spark logical-plan classes that are not queries (writes, DDL, session state, scripts, external programs).
_NOT_A_QUERY_PLAN = re.compile(
    r"Command|Insert|Create|Drop|Alter|Delete|Update|Merge|Truncate|Cache|Refresh|Load|^Set|^Use|Execute|"
    r"Script|Describe|^Show|Explain|Variable|Compound|Statement|Repair|Rename|Comment|Analyze|^Call|^Add|"
    r"AppendData|Overwrite|Write"
)
#: Upper bound on plan and expression nodes checked per step; a query larger than this is refused, not skimmed.
_MAX_PLAN_NODES = 50_000


class WorkflowError(UserbatchError):
    """A workflow file, step or schedule that cannot be run as given."""


# ---------------------------------------------------------------- the SQL rules (sqlglot, when a workflow is read)


def _func_name(func) -> str:
    from sqlglot import exp

    if isinstance(func, exp.Anonymous):
        return str(func.name).lower()
    return func.sql_name().lower()


def _with_of(node):
    return node.args.get("with_") or node.args.get("with")


def _visible_ctes(table) -> set[str]:
    """CTE names a table reference can see: every CTE of each enclosing ``WITH``, except that inside a CTE
    definition only that CTE and those before it are visible (as Spark resolves them)."""
    from sqlglot import exp

    names: set[str] = set()
    child, node = table, table.parent
    while node is not None:
        if isinstance(node, exp.With):  # we are inside one of its CTE definitions
            ctes = list(node.expressions)
            upto = next((i + 1 for i, c in enumerate(ctes) if c is child), len(ctes))
            names.update(c.alias_or_name.lower() for c in ctes[:upto])
        else:
            w = _with_of(node)
            if w is not None and child is not w:  # we are in the body the WITH belongs to
                names.update(c.alias_or_name.lower() for c in w.expressions)
        child, node = node, node.parent
    return names


class _QuietFallback(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Falling back to parsing as a 'Command'" not in record.getMessage()


def check_sql(step: str, sql: str) -> tuple[str, ...]:
    """Check that ``sql`` is exactly one read-only query that reads only named tables, and return what it reads:
    two-part catalog names (``ns.name``) and single-part names that are not CTEs of the query (steps)."""
    sqlglot = require("sqlglot", "facility")
    from sqlglot import exp
    from sqlglot.errors import SqlglotError

    where = f"step {step!r}"
    if not isinstance(sql, str) or not sql.strip():
        raise WorkflowError(f"{where}: sql must be a non-empty SQL query")
    quiet = _QuietFallback()  # sqlglot warns when it falls back to a raw command; we refuse those ourselves
    logging.getLogger("sqlglot").addFilter(quiet)
    try:
        statements = [s for s in sqlglot.parse(sql, read="spark") if s is not None]
    except SqlglotError as exc:
        first = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise WorkflowError(f"{where}: the SQL does not parse ({first}); fix the query") from None
    finally:
        logging.getLogger("sqlglot").removeFilter(quiet)
    if len(statements) != 1:
        raise WorkflowError(f"{where}: sql must be exactly one query; found {len(statements)} statements "
                            "(split them into steps)")
    tree = statements[0]
    root = tree.unnest() if isinstance(tree, exp.Subquery) else tree
    if not isinstance(root, (exp.Select, exp.SetOperation)):
        kind = str(root.this).upper() if isinstance(root, exp.Command) else root.key.upper()
        raise WorkflowError(f"{where}: only read-only queries (SELECT, UNION, WITH ... SELECT) may run in a "
                            f"workflow; this is {kind}. Write results with the step's 'output' instead")
    forbidden_nodes = (exp.DDL, exp.DML, exp.Create, exp.Drop, exp.Alter, exp.Insert, exp.Delete, exp.Update,
                       exp.Merge, exp.Command, exp.Set, exp.Use, exp.Cache, exp.Uncache, exp.Refresh,
                       exp.LoadData, exp.TruncateTable, exp.Describe, exp.Transaction, exp.Commit, exp.Rollback)
    for node in tree.walk():
        if isinstance(node, forbidden_nodes):
            raise WorkflowError(f"{where}: {node.key.upper()} is not allowed inside a query; a step only reads")
        if isinstance(node, exp.QueryTransform):
            raise WorkflowError(f"{where}: TRANSFORM ... USING runs an external program and is not allowed")
        if isinstance(node, exp.Func) and _func_name(node) in FORBIDDEN_FUNCTIONS:
            raise WorkflowError(f"{where}: function {_func_name(node)}() is not allowed in a workflow (it reads "
                                "files, calls the JVM or hides a table name); read catalog tables by name")
    refs: list[str] = []
    for table in tree.find_all(exp.Table):
        target = table.this
        if isinstance(target, exp.Func):
            fname = _func_name(target)
            if fname not in ALLOWED_TABLE_FUNCTIONS:
                raise WorkflowError(f"{where}: table function {fname}() is not allowed; a step reads catalog "
                                    f"tables and earlier steps (generators allowed: "
                                    f"{', '.join(sorted(ALLOWED_TABLE_FUNCTIONS))})")
            continue
        if not isinstance(target, exp.Identifier):
            raise WorkflowError(f"{where}: cannot tell which table {table.sql(dialect='spark')!r} is; "
                                "name a catalog table as namespace.name or an earlier step by its name")
        parts = [p for p in (table.catalog, table.db, table.name) if p]
        shown = ".".join(parts)
        if len(parts) == 1:
            name = parts[0]
            if not _NAME.match(name.lower()):
                raise WorkflowError(f"{where}: {shown!r} is not a table this step may read (file paths and quoted "
                                    "names are not allowed); name a catalog table as namespace.name or an "
                                    "earlier step by its name")
            if name.lower() not in _visible_ctes(table):
                refs.append(name.lower())
            continue
        if len(parts) > 2:
            raise WorkflowError(f"{where}: {shown!r} has {len(parts)} parts; catalog tables are named "
                                "namespace.name (no Spark catalog prefix)")
        _check_catalog_name(where, shown, parts[0], parts[1])
        refs.append(shown)
    return tuple(dict.fromkeys(refs))


def _check_catalog_name(where: str, shown: str, namespace: str, name: str) -> None:
    if namespace.lower() in RESERVED_NAMESPACES:
        raise WorkflowError(f"{where}: {shown!r} is not a catalog table ({namespace!r} reads files or Spark's own "
                            "state); read registered tables as namespace.name")
    if not (_NAME.match(namespace) and _NAME.match(name)):
        raise WorkflowError(f"{where}: {shown!r} is not a catalog table name: namespace and name must each be a "
                            "lower-case identifier (file paths and quoted names are not allowed)")


# ---------------------------------------------------------------- the model


@dataclass(frozen=True)
class Step:
    """One named query. With ``output`` its rows are written as that catalog table (spatial when ``ra_column``
    and ``dec_column`` are given); without, it is only read by later steps."""

    name: str
    sql: str
    output: str | None = None
    mode: str = "create"
    ra_column: str | None = None
    dec_column: str | None = None
    #: what the SQL reads (catalog names and step names), worked out once when the step is made
    reads: tuple[str, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self):
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise WorkflowError(f"step name {self.name!r} must be a lower-case identifier (a-z, 0-9, _; starting "
                                "with a letter)")
        where = f"step {self.name!r}"
        if self.output is not None:
            if not isinstance(self.output, str):
                raise WorkflowError(f"{where}: output must be a table name namespace.name; got {self.output!r}")
            try:
                ns, _ = parse_table_name(self.output)
            except UserbatchError as exc:
                raise WorkflowError(f"{where}: output: {exc}") from None
            if ns in RESERVED_NAMESPACES:
                raise WorkflowError(f"{where}: output {self.output!r}: namespace {ns!r} is reserved by Spark; "
                                    "choose another")
        if self.mode not in MODES:
            raise WorkflowError(f"{where}: mode must be one of {', '.join(MODES)}; got {self.mode!r}")
        for key in ("ra_column", "dec_column"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, str) or not _COLUMN.match(value)):
                raise WorkflowError(f"{where}: {key} must be a column name; got {value!r}")
        if (self.ra_column is None) != (self.dec_column is None):
            raise WorkflowError(f"{where}: give both ra_column and dec_column for a spatial output, or neither")
        if self.output is None and (self.mode != "create" or self.ra_column is not None):
            raise WorkflowError(f"{where}: mode, ra_column and dec_column describe the output table; add "
                                "'output: namespace.name' or remove them")
        object.__setattr__(self, "reads", check_sql(self.name, self.sql))

    @property
    def spatial(self) -> bool:
        return self.ra_column is not None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "sql": self.sql}
        if self.output is not None:
            out.update(output=self.output, mode=self.mode)
            if self.spatial:
                out.update(ra_column=self.ra_column, dec_column=self.dec_column)
        return out


@dataclass(frozen=True)
class Workflow:
    """Steps run in order; a step reads catalog tables and the steps before it."""

    name: str
    steps: tuple[Step, ...]
    schedule: str | None = None
    description: str = ""

    def __post_init__(self):
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise WorkflowError(f"workflow name {self.name!r} must be a lower-case identifier (a-z, 0-9, _; "
                                "starting with a letter)")
        if not isinstance(self.description, str):
            raise WorkflowError(f"workflow {self.name!r}: description must be text")
        object.__setattr__(self, "steps", tuple(self.steps))
        if not self.steps:
            raise WorkflowError(f"workflow {self.name!r} has no steps; add at least one under 'steps'")
        if self.schedule is not None:
            check_schedule(self.schedule)
        names = [s.name for s in self.steps]
        outputs: dict[str, str] = {}
        for i, step in enumerate(self.steps):
            if step.name in names[:i]:
                raise WorkflowError(f"workflow {self.name!r}: two steps are named {step.name!r}; step names must be "
                                    "unique")
            for ref in step.reads:
                if "." in ref:
                    if ref in outputs:
                        raise WorkflowError(f"step {step.name!r} reads {ref}, which step {outputs[ref]!r} of this "
                                            f"workflow writes; read the step {outputs[ref]!r} by name instead")
                    continue
                if ref in names[:i]:
                    continue
                if ref in names[i:]:
                    raise WorkflowError(f"step {step.name!r} reads step {ref!r}, which is not defined before it; "
                                        "steps run in order, so move it earlier")
                raise WorkflowError(f"step {step.name!r} reads {ref!r}, which is neither an earlier step nor a "
                                    "catalog table (catalog tables are named namespace.name)")
            if step.output is not None:
                if step.output in outputs:
                    raise WorkflowError(f"steps {outputs[step.output]!r} and {step.name!r} both write "
                                        f"{step.output}; write each table from one step")
                outputs[step.output] = step.name
        for step in self.steps:  # a table written by a later step and read by an earlier one is just as ambiguous
            for ref in step.reads:
                if ref in outputs and outputs[ref] != step.name:
                    raise WorkflowError(f"step {step.name!r} reads {ref}, which step {outputs[ref]!r} of this "
                                        "workflow writes; a workflow may not read its own outputs")
                if ref == step.output:
                    raise WorkflowError(f"step {step.name!r} reads {ref} and writes it; write another table")

    def referenced_tables(self) -> list[str]:
        """The catalog tables (``ns.name``) any step reads, sorted; steps read by name are not included."""
        return sorted({ref for step in self.steps for ref in step.reads if "." in ref})

    def outputs(self) -> list[str]:
        return [s.output for s in self.steps if s.output is not None]

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.description:
            out["description"] = self.description
        if self.schedule is not None:
            out["schedule"] = self.schedule
        out["steps"] = [s.as_dict() for s in self.steps]
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.as_dict(), sort_keys=False, default_flow_style=False, width=120)


# ---------------------------------------------------------------- reading workflow files


def _load(source) -> tuple[Any, str]:
    """The YAML document of ``source`` (a path, YAML text or an already-loaded mapping) and how to name it."""
    if isinstance(source, dict):
        return source, "workflow"
    if isinstance(source, Path) or (isinstance(source, str) and "\n" not in source and (
            source.endswith((".yaml", ".yml")) or Path(source).is_file())):
        path = Path(source)
        try:
            text = path.read_text()
        except OSError as exc:
            raise WorkflowError(f"cannot read workflow file {path}: {exc.strerror}") from None
        where = f"workflow file {path}"
    elif isinstance(source, str):
        text, where = source, "workflow"
    else:
        raise WorkflowError(f"a workflow is a YAML file or YAML text; got {type(source).__name__}")
    try:
        return yaml.safe_load(text), where
    except yaml.YAMLError as exc:
        raise WorkflowError(f"{where} is not valid YAML: {str(exc).splitlines()[0]}") from None


def parse_workflow_text(text) -> Workflow:
    """A workflow from YAML *text* a client sent: never read as a path on the server (a one-line "text" naming a
    file would otherwise make the facility open that file with its own rights)."""
    if not isinstance(text, str):
        raise WorkflowError(f"a workflow is YAML text; got {type(text).__name__}")
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise WorkflowError(f"workflow is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(doc, dict):
        raise WorkflowError(f"a workflow must be a YAML mapping with keys {', '.join(_WORKFLOW_KEYS)} "
                            "(send the file's text, not its path)")
    return parse_workflow(doc)


def parse_workflow(source) -> Workflow:
    """Read and check a workflow: ``source`` is a path to a YAML file, the YAML text itself, or a mapping.

    Every mistake raises :class:`WorkflowError` naming the key or step; nothing runs and nothing is written."""
    doc, where = _load(source)
    if not isinstance(doc, dict):
        raise WorkflowError(f"{where} must be a mapping with keys {', '.join(_WORKFLOW_KEYS)}")
    unknown = sorted(map(str, set(doc) - set(_WORKFLOW_KEYS)))
    if unknown:
        raise WorkflowError(f"{where}: unknown key(s) {', '.join(unknown)}; a workflow has "
                            f"{', '.join(_WORKFLOW_KEYS)}")
    missing = [k for k in ("name", "steps") if k not in doc]
    if missing:
        raise WorkflowError(f"{where} lacks {' and '.join(missing)}")
    steps_doc = doc["steps"]
    if not isinstance(steps_doc, list):
        raise WorkflowError(f"{where}: steps must be a list of steps (each with name and sql)")
    schedule = doc.get("schedule")
    if schedule is not None and not isinstance(schedule, str):
        raise WorkflowError(f"{where}: schedule must be a quoted 5-field cron expression like \"0 3 * * *\"; "
                            f"got {schedule!r}")
    steps = []
    for i, s in enumerate(steps_doc, start=1):
        label = f"step {s.get('name')!r}" if isinstance(s, dict) and isinstance(s.get("name"), str) else f"step {i}"
        if not isinstance(s, dict):
            raise WorkflowError(f"{where}: {label} must be a mapping with keys {', '.join(_STEP_KEYS)}")
        bad = sorted(map(str, set(s) - set(_STEP_KEYS)))
        if bad:
            raise WorkflowError(f"{where}: {label} has unknown key(s) {', '.join(bad)}; a step has "
                                f"{', '.join(_STEP_KEYS)}")
        lacking = [k for k in ("name", "sql") if k not in s]
        if lacking:
            raise WorkflowError(f"{where}: {label} lacks {' and '.join(lacking)}")
        steps.append(Step(name=s["name"], sql=s["sql"], output=s.get("output"), mode=s.get("mode") or "create",
                          ra_column=s.get("ra_column"), dec_column=s.get("dec_column")))
    return Workflow(name=doc["name"], steps=tuple(steps), schedule=schedule, description=doc.get("description") or "")


# ---------------------------------------------------------------- schedules


def check_schedule(schedule: str) -> str:
    """A 5-field cron expression (minute hour day-of-month month day-of-week, in UTC), or WorkflowError."""
    croniter = require("croniter", "facility").croniter

    if not isinstance(schedule, str) or len(schedule.split()) != 5 or not croniter.is_valid(schedule):
        raise WorkflowError(f"schedule {schedule!r} is not a 5-field cron expression (minute hour day month "
                            "weekday, UTC), e.g. \"0 3 * * *\" for 03:00 every day")
    return schedule


def next_run(schedule: str, after: datetime) -> datetime:
    """The first time strictly after ``after`` that ``schedule`` fires, as an aware UTC datetime. A naive
    ``after`` is taken to be UTC (the facility keeps every time in UTC)."""
    croniter = require("croniter", "facility").croniter

    check_schedule(schedule)
    start = after.replace(tzinfo=UTC) if after.tzinfo is None else after.astimezone(UTC)
    return croniter(schedule, start).get_next(datetime).astimezone(UTC)


# ---------------------------------------------------------------- the catalog side


def check_tables(workflow: Workflow, catalog) -> list:
    """Every table the workflow reads exists and the catalog's user may read it (``Catalog.get`` raises
    ``TableNotFound`` / ``AccessDenied`` otherwise). Returns their entries."""
    return [catalog.get(name) for name in workflow.referenced_tables()]


def pins_for(workflow: Workflow, catalog) -> dict[str, int]:
    """The version of each Delta table the workflow reads: the latest one, or the one this run is already pinned
    to — what a scheduled run records so that it can be run again on exactly the same inputs. Tables without a
    history (plain Parquet, HATS) cannot be pinned and are left out."""
    from ..tables.read import resolve

    return {e.name: resolve(e, record=False).version for e in check_tables(workflow, catalog) if e.format == "delta"}


# ---------------------------------------------------------------- running


def check_outputs(workflow: Workflow, catalog) -> None:
    """Every output can be written as asked, checked before anything is: a ``create`` target does not exist yet,
    an ``append``/``overwrite`` target belongs to the user, and this run may write the namespace."""
    from ..errors import AccessDenied, TableExists
    from ..tables import runctx

    for step in workflow.steps:
        if step.output is None:
            continue
        name = runctx.output_name(step.output)
        runctx.check_writable(name)
        if not catalog.exists(name):
            continue
        if step.mode == "create":
            raise TableExists(f"step {step.name!r}: table {name} already exists; use mode 'append' or "
                              "'overwrite', or another output name")
        entry = catalog.get(name)
        if entry.owner != catalog.user:
            raise AccessDenied(f"step {step.name!r}: table {name} belongs to {entry.owner}; write your own table")


def _seq(scala_seq) -> list:
    return [scala_seq.apply(i) for i in range(scala_seq.size())]


def check_spark_sql(spark, step: Step, earlier: set[str]) -> None:
    """Defence in depth: parse the step with Spark's own parser — the one whose reading actually runs — and
    refuse anything but a query over named tables. sqlglot checked the same rules; a query the two parsers read
    differently must not slip through."""
    where = f"step {step.name!r}"
    parser = spark._jsparkSession.sessionState().sqlParser()
    try:
        plan = parser.parsePlan(step.sql)
    except Exception as exc:  # noqa: BLE001 - py4j wraps Spark's ParseException
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise WorkflowError(f"{where}: Spark cannot parse the SQL ({first})") from None
    jclass = spark._jvm.java.lang.Class.forName
    command = jclass("org.apache.spark.sql.catalyst.plans.logical.Command")
    logical = jclass("org.apache.spark.sql.catalyst.plans.logical.LogicalPlan")
    expression = jclass("org.apache.spark.sql.catalyst.expressions.Expression")
    if command.isInstance(plan):
        raise WorkflowError(f"{where}: Spark reads this SQL as a command ({plan.getClass().getSimpleName()}); "
                            "only queries may run")

    def typed(nodes):
        for n in nodes:
            if logical.isInstance(n):
                yield "plan", n
            elif expression.isInstance(n):
                yield "expr", n

    single: set[str] = set()  # one-part table names: must be earlier steps or CTEs of this query
    ctes: set[str] = set()
    stack, seen = [("plan", plan)], 0
    while stack:
        kind, node = stack.pop()
        seen += 1
        if seen > _MAX_PLAN_NODES:
            raise WorkflowError(f"{where}: the query is too large to check (over {_MAX_PLAN_NODES} nodes); "
                                "split it into steps")
        cls = node.getClass().getSimpleName()
        if kind == "plan":
            if _NOT_A_QUERY_PLAN.search(cls):
                raise WorkflowError(f"{where}: Spark reads this SQL as {cls}, which is not a read-only query")
            if cls == "UnresolvedRelation":
                parts = [str(p) for p in _seq(node.multipartIdentifier())]
                shown = ".".join(parts)
                if len(parts) == 1:
                    if not _NAME.match(parts[0].lower()):
                        raise WorkflowError(f"{where}: Spark reads {shown!r} as a table; only catalog tables "
                                            "and earlier steps may be read")
                    single.add(parts[0].lower())
                elif len(parts) == 2:
                    _check_catalog_name(where, shown, parts[0], parts[1])
                else:
                    raise WorkflowError(f"{where}: {shown!r} is not a catalog table name (namespace.name)")
            elif cls == "UnresolvedTableValuedFunction":
                fname = ".".join(str(p) for p in _seq(node.name())).lower()
                if fname not in ALLOWED_TABLE_FUNCTIONS:
                    raise WorkflowError(f"{where}: table function {fname}() is not allowed")
            elif cls == "UnresolvedWith":
                ctes.update(str(rel._1()).lower() for rel in _seq(node.cteRelations()))
            stack += typed(_seq(node.children()))
            stack += typed(_seq(node.innerChildren()))
            stack += typed(_seq(node.expressions()))
        else:
            if cls == "UnresolvedFunction":
                fname = str(_seq(node.nameParts())[-1]).lower()
                if fname in FORBIDDEN_FUNCTIONS:
                    raise WorkflowError(f"{where}: function {fname}() is not allowed in a workflow")
            stack += typed(_seq(node.children()))
    unknown = single - ctes - {e.lower() for e in earlier}
    if unknown:
        raise WorkflowError(f"{where}: Spark reads {', '.join(sorted(unknown))} as table(s), which are neither "
                            "earlier steps nor CTEs of the query")


def _view_text(spark, table: str) -> str | None:
    """The SQL text of the session's view of a catalog table, or None when the session has no such view."""
    try:
        rows = spark.sql(f"DESCRIBE TABLE EXTENDED {table}").collect()
    except Exception:  # noqa: BLE001 - AnalysisException: no view of that name in this session
        return None
    info = {r["col_name"]: r["data_type"] for r in rows}
    return info.get("View Original Text") or info.get("View Text")


def view_version(spark, entry) -> int | None:
    """The version of ``entry`` that the session's SQL view reads (None for a table without history).

    The view names the files of one snapshot (:func:`userbatch.tables.views.view_sql`); matching its text against
    the table's versions, newest first (a pinned version before all), tells provenance what was really read — and
    refuses a view that reads no committed version of the table at all (stale, or not made by the catalog)."""
    from ..tables import delta, runctx
    from ..tables.views import view_sql

    text = _view_text(spark, entry.name)
    if text is None:
        raise WorkflowError(f"table {entry.name} has no SQL view in this Spark session; start the session with "
                            "userbatch.session() (or call register_catalog_views) before running the workflow")
    prefix = f"CREATE OR REPLACE VIEW {entry.name} AS "

    def matches(version):
        try:
            return view_sql(entry, version)[len(prefix):].strip() == text.strip()
        except UserbatchError:  # a version that no longer exists
            return False

    if entry.format != "delta":
        if matches(None):
            return None
        candidates = []
    else:
        latest = delta.latest_version(entry.location)
        pinned = runctx.pinned_version(entry.name)
        candidates = list(dict.fromkeys([v for v in (pinned, latest) if v is not None]
                                        + [h["version"] for h in delta.history(entry.location)]))
    for version in candidates:
        if matches(version):
            return version
    raise WorkflowError(f"the SQL view of {entry.name} in this session reads no committed version of the table; "
                        "register the catalog views again (register_catalog_views) and re-run")


def _spark_message(exc) -> str:
    text = getattr(exc, "getMessage", None)
    text = text() if callable(text) else str(exc)
    return (text.strip().splitlines() or [exc.__class__.__name__])[0][:400]


def run_workflow(workflow: Workflow, spark, provenance, catalog=None) -> dict:
    """Run the steps in order on ``spark``, whose catalog views are already registered (at the pinned versions
    for a scheduled run), and write the steps that have an ``output``.

    Everything that can be checked is checked before anything is written: the tables exist and the catalog's user
    may read them, the outputs may be written, the views read committed versions, Spark parses every step as a
    query and can analyse it (columns exist, types fit). So a refused workflow writes nothing; only an error while
    rows are computed can stop a run after an earlier step's output was committed. Each step is a temporary view
    named after it while the workflow runs (dropped at the end); each table read is recorded once in
    ``provenance`` with the version read, and the workflow itself in its parameters.

    Returns ``{"outputs": [{table, version, rows}], "steps": [{name, output}], "inputs": provenance.inputs}``.
    """
    from pyspark.errors import (
        AnalysisException,
        ArithmeticException,
        ArrayIndexOutOfBoundsException,
        DateTimeException,
        NumberFormatException,
    )

    from ..tables import runctx
    from ..tables.catalog import Catalog
    from ..tables.write import write_table

    catalog = catalog or Catalog()
    entries = check_tables(workflow, catalog)
    check_outputs(workflow, catalog)
    versions = {e.name: view_version(spark, e) for e in entries}
    earlier: set[str] = set()
    for step in workflow.steps:
        check_spark_sql(spark, step, earlier)
        earlier.add(step.name)
    read_later = {ref for step in workflow.steps for ref in step.reads}
    frames = {}
    try:
        # analysis pass: Spark resolves every step (eagerly, no rows computed) before the first write
        for step in workflow.steps:
            try:
                frames[step.name] = spark.sql(step.sql)
            except AnalysisException as exc:
                raise WorkflowError(f"step {step.name!r}: Spark cannot run the SQL: {_spark_message(exc)}") from None
            frames[step.name].createOrReplaceTempView(step.name)
            if step.output is None and step.name not in read_later:
                log.warning("workflow %s: step %s has no output and no later step reads it; it does nothing",
                            workflow.name, step.name)
        recorded = {i.get("table") for i in provenance.inputs}
        for name, version in versions.items():
            if name not in recorded:
                provenance.add_input(name, version)
            runctx.record_read(name, version)
        provenance.parameters.setdefault("workflow", workflow.as_dict())
        outputs = []
        for step in workflow.steps:
            if step.output is None:
                continue
            log.info("workflow %s: step %s -> %s (%s)", workflow.name, step.name, step.output, step.mode)
            # the write reads a spatial input twice (pixel histogram, then rows): keep one result of the query,
            # so it is computed once and a non-deterministic query cannot change between the two reads
            df = frames[step.name].persist() if step.spatial else frames[step.name]
            try:
                result = write_table(df, step.output, step.mode, catalog=catalog, ra_column=step.ra_column,
                                     dec_column=step.dec_column, provenance=provenance)
            except (ArithmeticException, ArrayIndexOutOfBoundsException, DateTimeException,
                    NumberFormatException) as exc:
                done = ", ".join(f"{o['table']} v{o['version']}" for o in outputs) or "none"
                raise WorkflowError(f"step {step.name!r} failed on the data: {_spark_message(exc)} (outputs "
                                    f"already written: {done}); fix the query (try_cast, try_divide ...)") from None
            finally:
                if step.spatial:
                    df.unpersist()
            log.info("workflow %s: step %s wrote %s version %d (%d rows)", workflow.name, step.name, result.table,
                     result.version, result.rows)
            outputs.append({"table": result.table, "version": result.version, "rows": result.rows})
    finally:
        for name in frames:
            spark.catalog.dropTempView(name)
    return {"outputs": outputs, "steps": [{"name": s.name, "output": s.output} for s in workflow.steps],
            "inputs": provenance.inputs}
