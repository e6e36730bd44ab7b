"""The ``userbatch`` command line. Thin: parse, call the library, print.

User errors (a :class:`UserbatchError`, malformed SQL, unknown tables) become one line on stderr and exit code 2,
never a traceback. Long operations log their stages as they finish.
"""

from __future__ import annotations

import functools
import getpass
import json
import logging
import os
import sys
from pathlib import Path

import click

from .errors import UserbatchError

log = logging.getLogger("userbatch.cli")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="[%(name)s] %(message)s",
                        stream=sys.stderr)
    # stage timings are the progress report of long operations: show them unless asked to be quiet
    logging.getLogger("userbatch.tables.write").setLevel(logging.INFO)
    logging.getLogger("py4j").setLevel(logging.WARNING)
    # PySpark logs every failed query as a JSON blob with the JVM stack; the CLI reports the error in one line
    logging.getLogger("SQLQueryContextLogger").setLevel(logging.CRITICAL)


def _spark(ctx, pins=None):
    from .spark import session

    obj = ctx.ensure_object(dict)
    conf = {"spark.ui.showConsoleProgress": "true"} if sys.stderr.isatty() else {}
    return session(master=obj.get("master"), conf=conf, pins=pins)


class _Group(click.Group):
    """Turns user errors into one line and a non-zero exit."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UserbatchError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(2)
        except Exception as exc:  # Spark's analysis/parse errors are user errors too
            name = type(exc).__name__
            if name in ("AnalysisException", "ParseException", "IllegalArgumentException", "SparkRuntimeException"):
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else name
                click.echo(f"error: {first}", err=True)
                ctx.exit(2)
            raise


#: The library's parameters as the ingest command spells them, so its errors name flags
#: (:meth:`~userbatch.errors.UserbatchError.renamed`). A whole setting (``ra_column=None, dec_column=None``) is
#: one entry.
INGEST_FLAGS = {
    "ra_column": "--ra-column", "dec_column": "--dec-column", "ra_column=None, dec_column=None": "--no-spatial",
    "partition_order": "--order", "pixel_threshold": "--threshold", "highest_order": "--highest-order",
    "margin_radius_arcsec": "--margin", "on_bad_coords": "--bad-coords", "fmt": "--format", "mode": "--mode",
    "visibility": "--visibility", "group": "--group", "description": "--description",
}
#: The same for ``tables export-hats``.
EXPORT_HATS_FLAGS = {"catalog_name": "--name", "version": "--version", "include_margin": "--no-margin"}


def _flag_names(names: dict[str, str]):
    """Decorator of a command: a user error it raises names the command's flags where the library's message names
    Python parameters (``--ra-column`` for ``ra_column``)."""
    def wrap(f):
        @functools.wraps(f)
        def command(*args, **kwargs):
            try:
                return f(*args, **kwargs)
            except UserbatchError as exc:
                renamed = exc.renamed(names)
                if renamed is exc:
                    raise
                raise renamed from exc
        return command
    return wrap


def _print_table(pdf, limit: int | None = None) -> None:
    import pandas as pd

    with pd.option_context("display.max_columns", 30, "display.width", 200):
        click.echo(pdf.head(limit).to_string(index=False) if limit else pdf.to_string(index=False))
    if limit and len(pdf) > limit:
        click.echo(f"... {len(pdf) - limit} more row(s); use --output to save them all")


def _save(pdf, output: str | None) -> None:
    if not output:
        return
    out = Path(output)
    if out.suffix == ".csv":
        pdf.to_csv(out, index=False)
    elif out.suffix in (".parquet", ".pq"):
        pdf.to_parquet(out, index=False)
    else:
        raise UserbatchError(f"--output {output}: use a .csv or .parquet file name")
    click.echo(f"wrote {len(pdf)} row(s) to {out}")


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--master", envvar="SPARK_MASTER", help="Spark master URL (default local[*]).")
@click.option("-v", "--verbose", is_flag=True, help="Log more.")
@click.version_option(package_name="userbatch")
@click.pass_context
def main(ctx, master, verbose):
    """userbatch: bulk catalog work over HEALPix-partitioned Delta tables on Spark."""
    _setup_logging(verbose)
    ctx.ensure_object(dict)["master"] = master


# ------------------------------------------------------------------------------------------------ ingest

@main.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--table", "-t", required=True, help="Target table, namespace.name.")
@click.option("--hats", "hats_path", type=click.Path(),
              help="Copy this HATS catalog (or collection) into the table instead of reading files.")
@click.option("--format", "fmt", type=click.Choice(["parquet", "csv", "fits"]),
              help="Input format (default: from the file name).")
@click.option("--mode", type=click.Choice(["create", "append", "overwrite"]), default="create", show_default=True)
@click.option("--merge-schema", is_flag=True, help="With --mode append: add the input's new columns to the table "
              "(older rows read them as null); columns it lacks read as null; a changed type is still refused.")
@click.option("--ra-column", help="RA column (deg) of a new table (default: the input's one pair of common "
              "coordinate names, e.g. coord_ra/coord_dec, ra/dec, RAJ2000/DEJ2000; with --hats, the catalog's).")
@click.option("--dec-column", help="Dec column (deg) of a new table (default: found with the RA column).")
@click.option("--no-spatial", is_flag=True, help="A table without sky positions (no HEALPix partitioning).")
@click.option("--order", type=int, help="Fixed partition order (default: adaptive).")
@click.option("--threshold", type=int, help="Adaptive partitioning: at most this many rows per pixel.")
@click.option("--highest-order", type=int, help="Adaptive partitioning: finest order considered.")
@click.option("--margin", "margin_arcsec", type=float, help="Build a margin cache this many arcsec wide.")
@click.option("--bad-coords", type=click.Choice(["reject", "quarantine", "error"]), default="reject", show_default=True,
              help="Rows with NaN/out-of-range coordinates: drop and count, keep in <table>_quarantine, or fail.")
@click.option("--visibility", type=click.Choice(["public", "group", "private"]), default="public", show_default=True)
@click.option("--group", help="Owning group (for --visibility group).")
@click.option("--description", default="")
@click.option("--parent", help="Director table: place each row in this table's partition of its parent (e.g. "
              "dp1.object); positions come from the parent.")
@click.option("--key", default="objectId", show_default=True, help="With --parent: the column joining child to parent.")
@click.option("--visits", help="With --parent: a Visit table whose time column is joined on 'visit' once, at ingest.")
@click.option("--time-column", default="expMidptMJD", show_default=True, help="With --visits: the time column.")
@click.pass_context
@_flag_names(INGEST_FLAGS)
def ingest(ctx, paths, table, hats_path, fmt, mode, merge_schema, ra_column, dec_column, no_spatial, order,
           threshold, highest_order, margin_arcsec, bad_coords, visibility, group, description, parent, key, visits,
           time_column):
    """Ingest Parquet, CSV or FITS files (or a HATS catalog, --hats) into a HEALPix-partitioned Delta table.

    Without --ra-column/--dec-column a new table's positions are the one pair of common coordinate column names
    in the input (coord_ra/coord_dec, ra/dec, RA/DEC, RAJ2000/DEJ2000, ra_deg/dec_deg, RA_ICRS/DE_ICRS ...,
    in any case); none or several is an error that says what to give. With --hats they are the catalog's own
    (hats_col_ra/hats_col_dec). An append keeps the columns its table declares.
    """
    from .tables.catalog import Catalog

    if bool(paths) == bool(hats_path):
        raise UserbatchError("give the files to ingest, or --hats PATH for a HATS catalog (one or the other)")
    if hats_path and (parent or fmt or no_spatial):
        raise UserbatchError("--format, --parent and --no-spatial do not apply to --hats (a HATS catalog has "
                             "positions and one format)")
    if merge_schema and mode != "append":
        raise UserbatchError("--merge-schema applies to --mode append (create and overwrite take the input's columns)")
    if no_spatial and (ra_column or dec_column):
        raise UserbatchError("--no-spatial makes a table without positions; leave out --ra-column/--dec-column")
    coords = {"ra_column": None, "dec_column": None} if no_spatial else {
        k: v for k, v in (("ra_column", ra_column), ("dec_column", dec_column)) if v is not None}
    spark = _spark(ctx)
    if parent:
        from .tables.director import VisitTimes, write_child_table
        from .tables.ingest import read_input

        df, _ = read_input(spark, list(paths), fmt)
        res = write_child_table(df, table, parent=parent, key=key, mode=mode, visibility=visibility, group=group,
                                description=description,
                                times=VisitTimes(visits, column=time_column) if visits else None)
        click.echo(f"{res.table}: version {res.version}, {res.rows:,} rows in {res.partitions} partition(s) of "
                   f"{parent}" + (f"; refused {res.rejected:,} row(s) without a parent or visit" if res.rejected
                                  else ""))
        return
    found_columns = not coords and not Catalog().exists(table)  # a new table whose positions ingest chooses
    options = dict(mode=mode, spark=spark, partition_order=order, pixel_threshold=threshold,
                   highest_order=highest_order, margin_radius_arcsec=margin_arcsec, on_bad_coords=bad_coords,
                   visibility=visibility, group=group, description=description, **coords)
    if merge_schema:
        options["merge_schema"] = True
    if hats_path:
        from .tables.hats_io import import_hats

        res = import_hats(hats_path, table, **options)
    else:
        from .tables.ingest import ingest as do_ingest

        res = do_ingest(list(paths), table, fmt=fmt, **options)
    click.echo(f"{res.table}: version {res.version}, {res.rows:,} rows in {res.partitions} partition(s)")
    if found_columns:
        entry = Catalog().get(res.table)
        source = "the HATS catalog's columns" if hats_path else "columns"
        click.echo(f"  using {source} {entry.ra_column}/{entry.dec_column} for positions (give "
                   "--ra-column/--dec-column to choose)")
    if res.rejected:
        click.echo(f"  rejected {res.rejected:,} row(s) with NaN or out-of-range coordinates")
    if res.quarantined:
        click.echo(f"  quarantined {res.quarantined:,} row(s) in {res.table}_quarantine")
    if res.margin_rows is not None:
        click.echo(f"  margin cache: {res.margin_rows:,} row(s)")


# ------------------------------------------------------------------------------------------------ tables

@main.group()
def tables():
    """List and inspect tables; move them in and out as HATS."""


@tables.command("list")
@click.option("--namespace", help="Only this namespace.")
def tables_list(namespace):
    """Tables you can read, with their latest version."""
    from .tables.catalog import Catalog
    from .tables.read import resolve

    entries = Catalog().list(namespace)
    if not entries:
        click.echo("no tables yet: 'userbatch ingest' or 'userbatch demo' makes some")
    for e in entries:
        try:
            snap = resolve(e)
            version = f"v{snap.version}" if snap.version >= 0 else e.format
            click.echo(f"{e.name:32s} {version:>6s} {snap.num_rows:>12,} rows  {e.visibility:8s} {e.owner}")
        except UserbatchError as exc:
            click.echo(f"{e.name:32s} (unreadable: {exc})")


@tables.command("show")
@click.argument("name")
@click.option("--version", type=int, help="Show this version.")
@click.option("--plot", "plot_path", type=click.Path(), help="Also write a sky density/coverage map (PNG).")
@click.option("--plot-order", type=int, default=6, show_default=True, help="HEALPix order of the density map.")
@click.pass_context
def tables_show(ctx, name, version, plot_path, plot_order):
    """Catalog entry, size, partitioning and schema of a table."""
    from .tables.catalog import Catalog
    from .tables.info import describe

    entry = Catalog().get(name)
    info = describe(entry, version)
    for key, value in info.items():
        if key == "schema":
            click.echo("schema:")
            for line in value:
                click.echo(f"  {line}")
        else:
            click.echo(f"{key + ':':18s} {value}")
    if plot_path:
        from .viz import plot_sky

        out = plot_sky(entry, plot_path, order=plot_order, version=version, spark=_spark(ctx))
        click.echo(f"sky map written to {out}")


@tables.command("history")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Full provenance as JSON.")
def tables_history(name, as_json):
    """Versions of a table, newest first, with who wrote them and how."""
    from .tables import delta
    from .tables.catalog import Catalog

    entry = Catalog().get(name)
    if entry.format != "delta":
        raise UserbatchError(f"{name} is a {entry.format} table and keeps no history")
    hist = delta.history(entry.location)
    if as_json:
        click.echo(json.dumps(hist, default=str, indent=2))
        return
    for h in hist:
        p = h["provenance"]
        inputs = ", ".join(
            f"{i['table']}@v{i.get('version')}" if i.get("table") else Path(i.get("path", "?")).name
            for i in p.get("inputs", [])
        )
        click.echo(f"v{h['version']:<4d} {h['timestamp']:%Y-%m-%d %H:%M:%S} {h['mode'] or h['operation']:10s} "
                   f"by {p.get('user', '?'):10s} job={p.get('job', '?')} inputs=[{inputs}] "
                   f"code={p.get('code_version', '?')}")


@tables.command("drop")
@click.argument("name")
@click.confirmation_option(prompt="Unregister this table?")
def tables_drop(name):
    """Unregister a table you own (its files stay until 'userbatch tables vacuum --all' reclaims them)."""
    from .tables.catalog import Catalog

    Catalog().drop(name)
    click.echo(f"dropped {name}")


def _vacuum_line(r: dict) -> str:
    kept = ", ".join(f"v{v}" for v in r["kept_versions"])
    verb = "would remove" if r["dry_run"] else "removed"
    extra = f", {r['log_files']} log file(s)" if r.get("log_files") else ""
    held = (f"; live {_bytes(r['live_bytes'])}, time travel {_bytes(r['time_travel_bytes'])}"
            if r["kept_versions"] else "")
    return (f"{r['table']:32s} kept [{kept}] {verb} {len(r['files'])} file(s), {_bytes(r['bytes'])}{extra}{held}")


def _bytes(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


@tables.command("vacuum")
@click.argument("name", required=False)
@click.option("--all", "all_tables", is_flag=True, help="Every table you own (admins: every table), and the "
              "directories of your dropped tables.")
@click.option("--retain", "retain_days", type=float, help="Keep every version committed within this many days "
              "[default: 7].")
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
@click.option("--min-age-hours", type=float, help="Never remove a file younger than this: a write may be about "
              "to commit it [default: 24].")
@click.option("--json", "as_json", is_flag=True)
def tables_vacuum(name, all_tables, retain_days, dry_run, min_age_hours, as_json):
    """Delete files no version worth keeping reads.

    Kept: the latest version, every version within --retain days, and every version a run on record read,
    wrote or is pinned to (so a rerun after a vacuum gives identical rows). Also removes killed writers' staging
    files, margins of versions no longer kept and, with --all, dropped tables' directories.
    """
    if bool(name) == bool(all_tables):
        raise UserbatchError("name a table, or give --all (every table you own)")
    out = _facility().vacuum(name, all_tables=all_tables, retain_days=retain_days, dry_run=dry_run,
                             min_age_hours=min_age_hours)
    if as_json:
        _echo_json(out)
        return
    for r in out["tables"]:
        click.echo(_vacuum_line(r))
    t = out["total"]
    click.echo(f"{'would free' if dry_run else 'freed'} {_bytes(t['bytes'])} in {t['files']} file(s) over "
               f"{t['tables']} table(s)")


@tables.command("optimize")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
def tables_optimize(name, as_json):
    """Compact each partition into one file (rows in _healpix_29 order, margin in step) and split partitions that
    appends pushed past the table's threshold; committed as a new version."""
    r = _facility().optimize(name)
    if as_json:
        _echo_json(r)
        return
    if r["version"] is None:
        click.echo(f"{name}: nothing to do ({r['files_before']} file(s) in {r['partitions_before']} partition(s))")
        return
    split = f"; split {len(r['split'])} partition(s)" if r["split"] else ""
    click.echo(f"{name}: version {r['version']}, {r['files_before']} -> {r['files_after']} file(s), "
               f"{r['partitions_before']} -> {r['partitions_after']} partition(s), {r['rows']:,} rows{split}")


@tables.command("restore")
@click.argument("target", metavar="TABLE@VERSION")
def tables_restore(target):
    """Commit a new version equal to an earlier one (e.g. u_alice.stars@3)."""
    name, sep, ver = target.partition("@")
    ver = ver.removeprefix("v")
    if not sep or not ver.isdigit():
        raise UserbatchError(f"give the table and version as TABLE@VERSION (e.g. {name or 'u_me.t'}@3); got {target!r}")
    r = _facility().restore(name, int(ver))
    click.echo(f"{name}: version {r['version']} restores version {r['restored_version']}")


@tables.command("export-hats")
@click.argument("name")
@click.argument("out", type=click.Path())
@click.option("--version", type=int, help="Export this Delta version (default: the latest).")
@click.option("--name", "catalog_name", help="HATS catalog name (default: the table name with '.' as '_').")
@click.option("--no-margin", is_flag=True, help="Leave the table's margin cache out.")
@_flag_names(EXPORT_HATS_FLAGS)
def tables_export_hats(name, out, version, catalog_name, no_margin):
    """Write table NAME as a HATS collection at OUT (new or empty), for lsdb.open_catalog and hats tools."""
    from .tables.hats_io import export_hats, open_hats

    path = export_hats(name, out, version=version, catalog_name=catalog_name, include_margin=not no_margin)
    hc, collection = open_hats(path)
    info = hc.catalog_info
    exported = info.extra_dict().get("userbatch_version")
    line = (f"{name}@v{exported} -> {path}: {info.total_rows:,} rows in {len(hc.get_healpix_pixels())} "
            f"partition(s)")
    if collection is not None and collection.default_margin:
        line += f", margin {collection.default_margin}"
    click.echo(line)
    click.echo(f"  open it with lsdb.open_catalog({str(path)!r})")


@tables.command("register-hats")
@click.argument("path", type=click.Path())
@click.option("--table", "-t", "name", required=True, help="Table name to register it as, namespace.name.")
@click.option("--visibility", type=click.Choice(["public", "group", "private"]), default="public", show_default=True)
@click.option("--group", help="Owning group (for --visibility group).")
@click.option("--description", default="")
def tables_register_hats(path, name, visibility, group, description):
    """Register the HATS catalog (or collection) at PATH as a table, read in place: nothing is copied.

    It keeps no history (no versions); 'userbatch ingest --hats PATH' copies it into a Delta table instead."""
    from .tables.hats_io import register_hats

    entry = register_hats(path, name, visibility=visibility, group=group, description=description)
    meta = entry.properties["hats"]
    click.echo(f"registered {entry.name}: HATS catalog {meta['catalog_name']} at {entry.location}, "
               f"{meta['total_rows'] or 0:,} rows in {meta['partitions']} partition(s), positions "
               f"{entry.ra_column}/{entry.dec_column}")


# ------------------------------------------------------------------------------------------------ search

def _run_search(ctx, s, explain_only, limit, output, engine):
    click.echo(s.explain(), err=True)
    if explain_only:
        return
    if engine != "arrow" and not (engine == "auto" and s.plan.rows_selected_files <= _light_max()):
        _spark(ctx)
    pdf = s.to_pandas(engine=engine)
    click.echo(f"{len(pdf):,} row(s)", err=True)
    _print_table(pdf, limit)
    _save(pdf, output)


def _light_max():
    from .config import settings

    return settings().tuning.light_path_max_rows


def _search_options(f):
    for opt in reversed([
        click.option("--version", type=int, help="Search this version of the table."),
        click.option("--columns", help="Comma-separated columns to return."),
        click.option("--limit", type=int, default=20, show_default=True, help="Rows to print."),
        click.option("--output", type=click.Path(), help="Save all matching rows (.csv or .parquet)."),
        click.option("--explain", "explain_only", is_flag=True, help="Only show the plan (partitions/files read)."),
        click.option("--engine", type=click.Choice(["auto", "spark", "arrow"]), default="auto", show_default=True),
    ]):
        f = opt(f)
    return f


#: Let "-30.5" be a Dec argument instead of an unknown option.
_NEGATIVE_NUMBERS_OK = {"ignore_unknown_options": True}


@main.group()
def search():
    """Cone, box and polygon searches over a table."""


@search.command("cone", context_settings=_NEGATIVE_NUMBERS_OK)
@click.argument("table")
@click.argument("ra", type=float)
@click.argument("dec", type=float)
@click.argument("radius_arcsec", type=float)
@_search_options
@click.pass_context
def search_cone(ctx, table, ra, dec, radius_arcsec, version, columns, limit, output, explain_only, engine):
    """Rows within RADIUS_ARCSEC of (RA, DEC) degrees."""
    from .ops.search import cone_search

    s = cone_search(table, ra, dec, radius_arcsec, version=version, columns=columns.split(",") if columns else None)
    _run_search(ctx, s, explain_only, limit, output, engine)


@search.command("box", context_settings=_NEGATIVE_NUMBERS_OK)
@click.argument("table")
@click.argument("ra_min", type=float)
@click.argument("ra_max", type=float)
@click.argument("dec_min", type=float)
@click.argument("dec_max", type=float)
@_search_options
@click.pass_context
def search_box(ctx, table, ra_min, ra_max, dec_min, dec_max, version, columns, limit, output, explain_only, engine):
    """Rows in an RA/Dec box (RA_MIN > RA_MAX wraps through RA=0)."""
    from .ops.search import box_search

    s = box_search(table, ra_min, ra_max, dec_min, dec_max, version=version,
                   columns=columns.split(",") if columns else None)
    _run_search(ctx, s, explain_only, limit, output, engine)


@search.command("polygon", context_settings=_NEGATIVE_NUMBERS_OK)
@click.argument("table")
@click.argument("vertices", nargs=-1, required=True)
@_search_options
@click.pass_context
def search_polygon(ctx, table, vertices, version, columns, limit, output, explain_only, engine):
    """Rows inside a convex polygon given as RA,DEC vertices (degrees), e.g. 10,0 20,0 20,10 10,10."""
    from .ops.search import polygon_search

    try:
        verts = [tuple(float(x) for x in v.split(",")) for v in vertices]
    except ValueError:
        raise UserbatchError("polygon vertices must be RA,DEC pairs of numbers, e.g. 10,0 20,0 15,8") from None
    if any(len(v) != 2 for v in verts):
        raise UserbatchError("each polygon vertex must be exactly RA,DEC")
    s = polygon_search(table, verts, version=version, columns=columns.split(",") if columns else None)
    _run_search(ctx, s, explain_only, limit, output, engine)


# ------------------------------------------------------------------------------------------------ sql

@main.command()
@click.argument("query")
@click.option("--pin", multiple=True, help="Read a table at a version: --pin dp1.object=3 (repeatable).")
@click.option("--limit", type=int, default=50, show_default=True, help="Rows to print.")
@click.option("--output", type=click.Path(), help="Save all result rows (.csv or .parquet).")
@click.pass_context
def sql(ctx, query, pin, limit, output):
    """Run Spark SQL over the catalog's tables (namespace.name), e.g. "SELECT count(*) FROM dp1.object"."""
    pins = {}
    for p in pin:
        name, _, ver = p.partition("=")
        if not ver.isdigit():
            raise UserbatchError(f"--pin {p}: use NAME=VERSION with a whole-number version")
        pins[name] = int(ver)
    spark = _spark(ctx, pins=pins)
    pdf = spark.sql(query).toPandas()
    _print_table(pdf, limit)
    _save(pdf, output)


# ------------------------------------------------------------------------------------------------ jobs

@main.group()
def jobs():
    """Templated jobs (conf/templates/*.yaml): list them, show one's parameters, run one here."""


@jobs.command("list")
def jobs_list():
    from .facility.templates import list_templates, load_template

    for name in list_templates():
        t = load_template(name)
        click.echo(f"{name:16s} {t.script:24s} {' '.join(t.description.split())[:90]}")


@jobs.command("show")
@click.argument("template")
def jobs_show(template):
    """The parameters TEMPLATE takes, with types, defaults and help."""
    from .facility.templates import load_template

    click.echo(load_template(template).usage())


@jobs.command("run")
@click.argument("template")
@click.option("--config", "config", type=click.Path(), help="Job file (YAML: template, parameters).")
@click.option("-p", "--param", "params", multiple=True, metavar="KEY=VALUE",
              help="Set a parameter (value read as YAML); repeatable; wins over --config.")
@click.option("--show", is_flag=True, help="Print the resolved parameters and stop.")
@click.pass_context
def jobs_run(ctx, template, config, params, show):
    """Run TEMPLATE in this process (the same code spark-submit jobs/TEMPLATE.py runs) and print its summary."""
    from .facility.jobmain import resolve, run_template
    from .user_code import add_job_dir

    _, resolved = resolve(template, config, list(params))
    if show:
        click.echo(json.dumps(resolved, indent=2, default=str))
        return
    if config:  # a module next to the job file is importable, as one next to a script is
        add_job_dir(config)
    _spark(ctx)
    click.echo(json.dumps(run_template(template, resolved), indent=2, default=str))


# ------------------------------------------------------------------------------------------------ facility

def _facility():
    """The facility API when USERBATCH_API_URL is set, else the facility in this process."""
    from .facility.client import client_from_env

    remote = client_from_env()
    if remote is not None:
        return remote
    from .facility.service import Facility

    return Facility()


def _echo_json(data) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def _run_line(r: dict) -> str:
    charge = r.get("charged_core_hours")
    money = f"charged {charge:.4f} core-h" if charge is not None else f"reserved {r['reserved_core_hours']:.2f} core-h"
    return (f"{r['id']}  {r['state']:9s} {r['kind']:8s} {r['name'][:24]:24s} {r['user']:10s} "
            f"{(r.get('group') or '-'):10s} {r['cores']:>2d} cores  {money}  {r['submitted_at'][:19]}")


def _show_run(r: dict) -> None:
    click.echo(_run_line(r))
    p = r.get("progress") or {}
    if p:
        click.echo(f"  stage: {p.get('stage')}  tasks {p.get('tasks_done')}/{p.get('tasks_total')}")
    elif r.get("stage") and r["stage"] != r["state"]:
        click.echo(f"  stage: {r['stage']}")
    if r.get("error"):
        click.echo(f"  error: {r['error']}")
    for o in (r.get("result") or {}).get("outputs", []):
        click.echo(f"  output: {o['table']}@v{o['version']} ({o['rows']:,} rows)")


@main.command(context_settings={"ignore_unknown_options": False})
@click.argument("template", required=False)
@click.option("-p", "--param", "params", multiple=True, metavar="KEY=VALUE", help="Template parameter (repeatable).")
@click.option("--file", "job_file", type=click.Path(), help="Job file (YAML: template, parameters).")
@click.option("--script", type=click.Path(exists=True, dir_okay=False), help="A PySpark script to run instead.")
@click.option("--arg", "script_args", multiple=True, help="Argument passed to --script (repeatable).")
@click.option("--workflow", type=click.Path(exists=True, dir_okay=False), help="A SQL workflow YAML to run once.")
@click.option("--group", help="Charge this group's allocation (you must be a member).")
@click.option("--cores", type=int, help="Cores to run on (default from the facility config).")
@click.option("--max-hours", type=float, help="Wall-time limit; cores x hours is reserved from your quota.")
@click.option("--wait", is_flag=True, help="Wait for the run to end and print its charge.")
@click.option("--json", "as_json", is_flag=True)
def submit(template, params, job_file, script, script_args, workflow, group, cores, max_hours, wait, as_json):
    """Submit a run and return its id at once: a TEMPLATE with -p/--file, a --script, or a --workflow."""
    from .facility.templates import parse_overrides

    fac = _facility()
    kwargs = dict(group=group, cores=cores, max_hours=max_hours)
    if script:
        run = fac.submit(script=(Path(script).name, Path(script).read_text()), script_args=list(script_args),
                         **kwargs)
    elif workflow:
        run = fac.submit(workflow=Path(workflow).read_text(), **kwargs)
    else:
        if not template and not job_file:
            raise UserbatchError("name a TEMPLATE ('userbatch jobs list'), or give --file, --script or --workflow")
        run = fac.submit(template=template, params=parse_overrides(list(params)), job_file=job_file, **kwargs)
    if wait:
        run = fac.wait(run["id"])
    if as_json:
        _echo_json(run)
    elif wait:
        _show_run(run)
    else:
        click.echo(run["id"])


@main.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True)
def status(run_id, as_json):
    """A run's state, stage and Spark progress (tasks done/total)."""
    r = _facility().status(run_id)
    _echo_json(r) if as_json else _show_run(r)


@main.command()
@click.argument("run_id")
@click.option("--tail", type=int, default=200, show_default=True, help="Last lines (0 for all).")
def logs(run_id, tail):
    """The driver log of a run."""
    click.echo(_facility().logs(run_id, tail or None))


@main.command()
@click.argument("run_id")
def cancel(run_id):
    """Cancel a queued or running run (its Spark application is stopped; used time is charged)."""
    r = _facility().cancel(run_id)
    click.echo(f"{r['id']}: {r['state']}" + (" (stopping)" if r["state"] not in ("cancelled",) else ""))


@main.command()
@click.option("--user", help="Another user's runs (admins).")
@click.option("--state", help="queued, running, succeeded, failed, cancelled, or active.")
@click.option("--all", "all_users", is_flag=True, help="Everyone's runs (admins).")
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def runs(user, state, all_users, limit, as_json):
    """Your runs, newest first."""
    rows = _facility().runs(user=user, state=state, all_users=all_users, limit=limit)
    if as_json:
        _echo_json(rows)
        return
    if not rows:
        click.echo("no runs")
    for r in rows:
        click.echo(_run_line(r))


@main.command()
@click.argument("run_id")
def results(run_id):
    """The tables a run wrote (with versions) and the inputs it read."""
    res = _facility().results(run_id)
    click.echo(f"{res['id']}: {res['state']}")
    for o in res["outputs"]:
        click.echo(f"  output {o['table']}@v{o['version']}  {o['rows']:,} rows")
    for i in res["inputs"]:
        click.echo(f"  input  {i['table']}@v{i['version']}")
    if res.get("mlflow"):
        m = res["mlflow"]
        click.echo(f"  MLflow run {m['run_id']} (experiment {m['experiment']})"
                   + (f"  model {m['registered_model']} v{m['model_version']}" if m.get("registered_model") else ""))


@main.command()
@click.argument("run_id")
@click.option("--output-map", multiple=True, metavar="OLD=NEW",
              help="Write output OLD as NEW (default OLD_rerun_<id>).")
@click.option("--wait", is_flag=True)
def rerun(run_id, output_map, wait):
    """Run RUN_ID again from exactly the input versions it read."""
    mapping = dict(m.split("=", 1) for m in output_map if "=" in m)
    r = _facility().rerun(run_id, output_map=mapping, wait=wait)
    _show_run(r) if wait else click.echo(r["id"])


@main.command()
@click.argument("run_id")
@click.option("--output", "-o", type=click.Path(), default=".", show_default=True, help="Directory or .tar.gz.")
def export(run_id, output):
    """A self-contained bundle of a run (job, resolved config, input versions, submit command)."""
    click.echo(str(_facility().export(run_id, output)))


@main.command()
@click.argument("table")
@click.option("--json", "as_json", is_flag=True)
def provenance(table, as_json):
    """How TABLE[@VERSION] came to be: its run, parameters and inputs, walked back."""
    name, _, ver = table.partition("@")
    if ver and not ver.lstrip("v").isdigit():
        raise UserbatchError(f"{table}: use NAME or NAME@VERSION")
    tree = _facility().provenance(name, int(ver.lstrip("v")) if ver else None)
    if as_json:
        _echo_json(tree)
        return

    def show(node, indent=0):
        pad = "  " * indent
        what = f"{node['table']}@v{node.get('version')}" if node.get("table") else node.get("path", "?")
        extra = " ".join(f"{k}={node[k]}" for k in ("job", "run_id", "user", "code_version") if node.get(k))
        click.echo(f"{pad}{what}  {extra}{('  ' + node['note']) if node.get('note') else ''}")
        for child in node.get("inputs", []):
            show(child, indent + 1)

    show(tree)


@main.group()
def quota():
    """Allocations: show yours, change them (admins)."""


@quota.command("show")
@click.option("--user", help="Another user's (admins).")
@click.option("--json", "as_json", is_flag=True)
def quota_show(user, as_json):
    q = _facility().quota_show(user)
    if as_json:
        _echo_json(q)
        return
    click.echo(f"{'':24s} {'allocation':>10s} {'used':>10s} {'reserved':>10s} {'remaining':>10s}  "
               "cores      storage GB")
    for b in [q["user"], *q["groups"]]:
        click.echo(f"{b['subject_kind'] + ' ' + b['subject']:24s} {b['core_hours']:>10.2f} {b['used']:>10.4f} "
                   f"{b['reserved']:>10.2f} {b['remaining']:>10.2f}  {b['running_cores']}/{b['max_cores']:<8d} "
                   f"{b['storage_used_gb']:.3f}/{b['storage_gb']:.0f}   ({b['period']})")
    if q.get("storage"):
        click.echo(f"\n{'namespace':24s} {'tables':>6s} {'live':>10s} {'time travel':>12s} {'reclaimable':>12s}")
        for n in q["storage"]:
            click.echo(f"{n['namespace']:24s} {n['tables']:>6d} {_bytes(n['live_bytes']):>10s} "
                       f"{_bytes(n['time_travel_bytes']):>12s} {_bytes(n['reclaimable_bytes']):>12s}")
        click.echo("(time travel: held only for older versions kept; reclaimable: what 'userbatch tables vacuum "
                   "--all' frees now)")


@quota.command("set")
@click.option("--user")
@click.option("--group")
@click.option("--core-hours", type=float)
@click.option("--max-cores", type=int)
@click.option("--storage-gb", type=float)
def quota_set(user, group, core_hours, max_cores, storage_gb):
    """Change a user's or group's allocation (admins; audited)."""
    if bool(user) == bool(group):
        raise UserbatchError("give exactly one of --user or --group")
    after = _facility().quota_set("user" if user else "group", user or group, core_hours=core_hours,
                                  max_cores=max_cores, storage_gb=storage_gb)
    click.echo(f"{'user' if user else 'group'} {user or group}: {after}")


@quota.command("audit")
@click.option("--limit", type=int, default=50, show_default=True)
def quota_audit(limit):
    """Recent quota, user, group and token changes (admins)."""
    for a in _facility().audit_log(limit):
        click.echo(f"{a['at'][:19]} {a['actor']:10s} {a['action']:14s} {a['subject']:20s} "
                   f"{a['before']} -> {a['after']}")


@main.command()
@click.option("--json", "as_json", is_flag=True)
def capacity(as_json):
    """Allocations against the facility's user-computing capacity."""
    c = _facility().capacity()
    if as_json:
        _echo_json(c)
        return
    click.echo(f"capacity: {c['total_cores']} cores x {c['user_fraction']:.0%} for users = "
               f"{c['user_capacity_core_hours']:,.0f} core-hours per {c['period']}")
    click.echo(f"allocated: {c['allocated_core_hours']:,.0f} core-hours ({c['allocated_fraction']:.1%}): users "
               f"{c['allocated_user_core_hours']:,.0f}, groups {c['allocated_group_core_hours']:,.0f}")
    for w in c["warnings"]:
        click.echo(f"warning: {w}")


@main.group()
def workflow():
    """Scheduled SQL workflows (YAML files of named SQL steps)."""


@workflow.command("run")
@click.argument("source")
@click.option("--group")
@click.option("--wait", is_flag=True)
def workflow_run(source, group, wait):
    """Run a workflow once: a YAML file, or the name of one you registered."""
    fac = _facility()
    r = fac.submit(workflow=Path(source).read_text(), group=group) if Path(source).is_file() \
        else fac.run_workflow(source)
    if wait:
        r = fac.wait(r["id"])
        _show_run(r)
    else:
        click.echo(r["id"])


@workflow.command("add")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--group")
def workflow_add(path, group):
    """Register a workflow; with a 'schedule:' (cron) the facility runs it when due."""
    w = _facility().add_workflow(Path(path).read_text(), group=group)
    click.echo(f"workflow {w['name']} ({w['id']}) schedule={w['schedule'] or 'none'} next={w['next_run_at']}")


@workflow.command("list")
def workflow_list():
    for w in _facility().workflows():
        click.echo(f"{w['name']:24s} {w['owner']:10s} {w['schedule'] or '-':16s} next={w['next_run_at']} "
                   f"last={w['last_run_id']}")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8765, show_default=True)
@click.option("--no-worker", is_flag=True, help="Only the API (another process runs the worker).")
@click.option("--no-history-server", is_flag=True, help="Do not start the Spark History Server.")
@click.option("--history-port", type=int, help="The Spark History Server's port (default: the facility config's "
              "history.port, 18080).")
def serve(host, port, no_worker, no_history_server, history_port):
    """Start the REST API (OpenAPI docs at /docs), the worker that launches queued runs and the Spark History
    Server over the runs' event logs (on 127.0.0.1)."""
    from .facility.api import serve as run_server

    logging.getLogger("userbatch").setLevel(logging.INFO)  # the worker's run lines are the server's log
    run_server(host=host, port=port, with_worker=not no_worker, history_port=history_port,
               with_history=not no_history_server)


@main.command()
@click.option("--until-idle", is_flag=True, help="Exit once nothing is queued or running.")
def worker(until_idle):
    """Run the facility worker in the foreground."""
    from .facility.worker import main as worker_main

    sys.exit(worker_main(["--until-idle"] if until_idle else []))


@main.group()
def admin():
    """Users, groups and API tokens (admins)."""


@admin.command("user")
@click.argument("name")
@click.option("--admin", "is_admin", is_flag=True, help="Make the user an admin.")
@click.option("--demote", is_flag=True, help="Take admin rights away.")
@click.option("--disable", is_flag=True, help="Disable: tokens revoked, queued runs refused, running runs stopped.")
@click.option("--enable", is_flag=True, help="Enable a disabled user again.")
@click.option("--group", "groups", multiple=True)
def admin_user(name, is_admin, demote, disable, enable, groups):
    """Add a user (or add them to groups); as root this also creates their OS account (ub_NAME) that their runs
    execute as. --demote / --disable / --enable change an existing user (audited)."""
    fac = _facility()
    if demote or disable or enable:
        if (demote and is_admin) or (disable and enable):
            raise UserbatchError("choose one of --admin/--demote and one of --disable/--enable")
        out = {"user": name}
        if demote:
            out.update(fac.set_admin(name, False))
        if disable or enable:
            out.update(fac.set_active(name, bool(enable)))
        click.echo(json.dumps(out))
        return
    click.echo(json.dumps(fac.add_user(name, admin=is_admin, groups=list(groups))))


@admin.command("group")
@click.argument("name")
@click.option("--member", "members", multiple=True)
@click.option("--description", default="")
def admin_group(name, members, description):
    """Add a group (or members to it); as root this also creates its OS group (ubg_NAME)."""
    click.echo(json.dumps(_facility().add_group(name, members=list(members), description=description)))


@admin.command("token")
@click.argument("user", required=False)
@click.option("--label", default="")
@click.option("--expires-days", type=float, help="Lifetime in days (default: the facility's tokens.default_days).")
@click.option("--revoke", metavar="TOKEN_ID", help="Revoke this token instead.")
@click.option("--revoke-all", is_flag=True, help="Revoke every token of USER (default yourself).")
@click.option("--list", "list_", is_flag=True, help="List the tokens of USER (default yourself).")
def admin_token(user, label, expires_days, revoke, revoke_all, list_):
    """Create an API token for USER (default yourself); it is shown once and stored hashed."""
    fac = _facility()
    if revoke:
        click.echo(json.dumps(fac.revoke_token(revoke)))
        return
    if revoke_all:
        click.echo(json.dumps(fac.revoke_all_tokens(user)))
        return
    if list_:
        for t in fac.tokens(user):
            state = "revoked" if t["revoked"] else f"expires {str(t['expires_at'])[:19]}"
            click.echo(f"{t['id']}  {t['scope']:5s} {state:28s} {t['label']}")
        return
    t = fac.create_token(user, label=label, expires_days=expires_days)
    click.echo(f"token for {t['user']} (id {t['id']}, expires {t['expires_at'][:19]}): {t['token']}")


@admin.command("fsck")
@click.option("--repair", is_flag=True, help="Fix what disagrees (owner, group, mode).")
def admin_fsck(repair):
    """Report where the file system disagrees with the catalog: namespace and table directories' owners,
    groups and modes (a private table readable by others, a group table closed to its group ...)."""
    findings = _facility().fsck(repair=repair)
    for f in findings:
        click.echo(f"{'repaired' if f['repaired'] else 'MISMATCH'}  {f['path']}  {f['what']}: "
                   f"expected {f['expected']}, found {f['found']}")
    click.echo(f"{len(findings)} finding(s)" + (" repaired" if repair and findings else ""))
    if findings and not repair:
        sys.exit(1)


@admin.command("users")
def admin_users():
    for u in _facility().users():
        click.echo(f"{u['user']:16s} admin={u['admin']} groups={','.join(u['groups'])}")


# ------------------------------------------------------------------------------------------------ images

@main.group()
def images():
    """Image pipelines through BPS under your quota (the userbatch WMS plugin)."""


@images.command("submit")
@click.argument("request", type=click.Path(exists=True, dir_okay=False))
@click.option("--wait", is_flag=True, help="Wait for the run to end and print its charge.")
def images_submit(request, wait):
    """Submit REQUEST.yaml (pipeline, butler, inputs, query, config, name, cores, max_hours, group)."""
    from .facility.service import Facility
    from .images.bridge import submit as submit_request

    fac = Facility()
    run = submit_request(request, facility=fac)
    if wait:
        _show_run(fac.wait(run["id"]))
    else:
        click.echo(run["id"])


@images.command("stamps")
@click.option("--table", "-t", required=True, help="Catalog table whose rows to cut out (objectId, coord_ra/dec).")
@click.option("--where", help="Spark SQL condition on the table, e.g. \"r_psfFlux > 1e5\".")
@click.option("--butler", "butler", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--inputs", "-i", multiple=True, required=True, help="Input collection (repeatable).")
@click.option("--name", required=True, help="Names the output collections u/<you>/<name>.")
@click.option("--size", "stamp_size", type=int, help="Stamp size in pixels.")
@click.option("--cores", type=int, default=2, show_default=True)
@click.option("--max-hours", type=float, default=1.0, show_default=True)
@click.option("--group")
@click.option("--wait", is_flag=True)
@click.pass_context
def images_stamps(ctx, table, where, butler, inputs, name, stamp_size, cores, max_hours, group, wait):
    """Postage stamps around the objects a catalog query selects."""
    from .facility.service import Facility
    from .images.bridge import stamps

    fac = Facility()
    run = stamps(table, where, butler, list(inputs), name, facility=fac, cores=cores, max_hours=max_hours,
                 group=group, stamp_size=stamp_size)
    click.echo(f"{run['targets']} object(s) -> {run['targets_collection']}", err=True)
    if wait:
        _show_run(fac.wait(run["id"]))
    else:
        click.echo(run["id"])


# ------------------------------------------------------------------------------------------------ models / MLflow

@main.group()
def models():
    """Registered classifiers (MLflow model registry)."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True)
def models_list(as_json):
    from .ml.registry import list_models

    rows = list_models()
    if as_json:
        return _echo_json(rows)
    for m in rows:
        aliases = ", ".join(f"@{a}=v{v}" for a, v in sorted(m["aliases"].items()))
        click.echo(f"{m['name']:28s} v{m['latest_version']:<4} {m['versions']:>3d} versions  owner={m['owner']}  "
                   f"{aliases}")


@models.command("show")
@click.argument("name")
@click.option("--version", "version", type=int, help="Model version (default the latest).")
@click.option("--alias", help="Model alias, e.g. champion.")
@click.option("--json", "as_json", is_flag=True)
def models_show(name, version, alias, as_json):
    """A model version: its MLflow run, facility run, metrics and the table versions it was trained on."""
    from .ml.registry import describe

    d = describe(name, version=version, alias=alias)
    if as_json:
        return _echo_json(d)
    click.echo(f"{d['name']} v{d['version']}  {d['algorithm']} ({', '.join(d['flavors'])})  "
               f"MLflow run {d['mlflow_run_id']}  facility run {d['facility_run_id'] or '-'}")
    click.echo(f"classes: {', '.join(d['classes'] or [])}; {len(d['feature_columns'] or [])} features")
    click.echo("trained on: " + ", ".join(f"{i['table']}@v{i['version']}" for i in d["training_inputs"]))
    for k in sorted(d["metrics"]):
        if k.startswith("val_") and not k.startswith("val_support"):
            click.echo(f"  {k:32s} {d['metrics'][k]:.4f}")


@models.command("alias")
@click.argument("name")
@click.argument("alias")
@click.argument("version", type=int)
def models_alias(name, alias, version):
    """Point ALIAS of model NAME at VERSION (the model's owner only)."""
    from .config import settings
    from .ml.registry import set_alias
    from .ml.tracking import configure

    set_alias(configure(), name, alias, version, settings().user)
    click.echo(f"{name}@{alias} -> v{version}")


@main.group("mlflow")
def mlflow_group():
    """The MLflow tracking store userbatch logs to."""


@mlflow_group.command("uri")
def mlflow_uri():
    """Print the tracking URI and artifact root (set MLFLOW_TRACKING_URI to this to use MLflow directly)."""
    from .ml.tracking import artifact_root, tracking_uri

    click.echo(f"tracking_uri  {tracking_uri()}")
    click.echo(f"artifact_root {artifact_root()}")


@mlflow_group.command("ui")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=5000, show_default=True)
@click.option("--print", "print_only", is_flag=True, help="Print the command instead of running it.")
def mlflow_ui(host, port, print_only):
    """Serve MLflow's tracking UI over the facility's store (experiments, runs, models, datasets)."""
    import shlex

    from .ml.tracking import configure, ui_argv

    argv = ui_argv(host, port)
    if print_only:
        return click.echo(shlex.join(argv))
    configure()  # creates the store's directory so the UI starts on a fresh home too
    click.echo(f"MLflow UI on http://{host}:{port}  ({argv[3]})")
    os.execvp(argv[0], argv)


# ------------------------------------------------------------------------------------------------ deploy

@main.group()
def deploy():
    """The quota file rendered for cluster schedulers: YARN, YuniKorn, Kubernetes, Slurm."""


@deploy.command("render")
@click.option("--target", type=click.Choice(["yarn", "yunikorn", "kubernetes", "slurm", "all"]), default="all",
              show_default=True, help="Which scheduler's config to write.")
@click.option("--output", "-o", "output", type=click.Path(file_okay=False), required=True,
              help="Directory to write into (created if missing).")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              help="Facility config (default: USERBATCH_FACILITY_CONFIG or conf/facility.yaml).")
def deploy_render(target, output, config_path):
    """Write capacity-scheduler.xml, queues.yaml, quotas.yaml, slurm-accounts.sh from the facility config."""
    from .facility.config import load_config
    from .cluster.render import render

    files = render(load_config(config_path), target)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        path = out / name
        path.write_text(text)
        if name.endswith(".sh"):
            path.chmod(0o755)
        click.echo(str(path))


@deploy.command("sbatch")
@click.argument("template", required=False)
@click.option("-p", "--param", "params", multiple=True, metavar="KEY=VALUE", help="Template parameter (repeatable).")
@click.option("--bps", "bps_file", type=click.Path(), help="Run 'bps submit' of this submit YAML instead.")
@click.option("--account", help="Slurm account (default: the group's g_<group>, else your own u_<user>).")
@click.option("--user", help="Whose account (default: $USER).")
@click.option("--group", help="Charge this group's account.")
@click.option("--cores", type=int, help="Cores (default from the facility config).")
@click.option("--hours", type=float, help="Wall-time limit (default from the facility config).")
@click.option("--spark-submit", "use_spark_submit", is_flag=True,
              help="Run spark-submit jobs/TEMPLATE.py instead of 'userbatch jobs run'.")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False), help="Facility config.")
def deploy_sbatch(template, params, bps_file, account, user, group, cores, hours, use_spark_submit, config_path):
    """Print an sbatch script that runs TEMPLATE (or a BPS submit YAML) under a Slurm account."""
    from .facility.config import load_config
    from .cluster.naming import slurm_account
    from .cluster.slurm import sbatch_script

    if bool(template) == bool(bps_file):
        raise UserbatchError("give a TEMPLATE or --bps SUBMIT_YAML (one of them)")
    cfg = load_config(config_path)
    if template:
        from .facility.templates import load_template

        load_template(template)  # an unknown template fails here, with the list of known ones
    if not account:
        account = slurm_account(user or getpass.getuser(), group)
    click.echo(sbatch_script("template" if template else "bps", template=template, params=list(params),
                             bps_file=bps_file, account=account, cores=cores or cfg.default_cores,
                             hours=hours or cfg.default_max_hours, memory_per_core_gb=cfg.memory_per_core_gb,
                             mode="spark-submit" if use_spark_submit else "cli"), nl=False)


@deploy.command("apply")
@click.argument("target", type=click.Choice(["slurm"]))
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False), help="Facility config.")
@click.option("--slurm-conf", help="SLURM_CONF of the Slurm to apply to (default: the slurm_conf setting).")
@click.option("--json", "as_json", is_flag=True)
def deploy_apply(target, config_path, slurm_conf, as_json):
    """Apply the quota file to a running scheduler: Slurm accounts, users, GrpTRESMins, MaxTRES, fair-share
    (sacctmgr; safe to run again)."""
    from .cluster.slurm import apply_accounts
    from .facility.config import load_config

    done = apply_accounts(load_config(config_path), slurm_conf)
    if as_json:
        return click.echo(json.dumps(done, indent=2))
    click.echo(f"applied {done['commands']} sacctmgr commands: {len(done['accounts'])} accounts "
               f"({', '.join(done['accounts'])}), {len(done['users'])} users")


# ---------------------------------------------------------------------------------- dev cluster / Spark Connect

@main.group()
def cluster():
    """A Spark standalone cluster on this machine (127.0.0.1), for development and tests."""


@cluster.command("start")
@click.option("--workers", type=click.IntRange(1), default=2, show_default=True)
@click.option("--cores", type=click.IntRange(1), default=1, show_default=True, help="Cores per worker.")
@click.option("--memory", default="1g", show_default=True, help="Memory per worker (e.g. 1g).")
@click.option("--json", "as_json", is_flag=True)
def cluster_start(workers, cores, memory, as_json):
    """Start a master and N workers (detached; 'userbatch cluster stop' ends them)."""
    from .cluster import dev

    st = dev.start(workers=workers, cores=cores, memory=memory)
    if as_json:
        _echo_json(st)
    else:
        click.echo(f"{st['master_url']}  ({workers} worker(s) x {cores} core(s), {memory}; UI {st['webui_url']})")
        click.echo(f"use it: SPARK_MASTER={st['master_url']}, or runner: {{kind: standalone, master: ...}}")


@cluster.command("stop")
def cluster_stop():
    """Stop the dev cluster (no-op when none runs)."""
    from .cluster import dev

    r = dev.stop()
    click.echo(f"stopped {len(r['stopped'])} process(es)" if r.get("master_url") else "no cluster recorded")


@cluster.command("status")
@click.option("--json", "as_json", is_flag=True)
def cluster_status(as_json):
    """Master URL and alive workers (asked from the master's /json/)."""
    from .cluster import dev

    st = dev.status()
    if as_json:
        _echo_json(st)
    elif not st["running"]:
        click.echo("not running" + (" (stale record cleaned by the next start/stop)" if st.get("stale") else ""))
    else:
        click.echo(f"{st['master_url']}  alive workers: {st['alive_workers']}/{st['workers']}  UI {st['webui_url']}")


@cluster.group("slurm")
def cluster_slurm():
    """A real single-node Slurm with accounting (munge, MariaDB, slurmdbd, slurmctld, slurmd) under the facility
    home: what the slurm runner and 'deploy apply slurm' talk to."""


_SLURM_DIR = click.option("--dir", "root", type=click.Path(file_okay=False),
                          help="Its directory (default: <home>/slurm).")


@cluster_slurm.command("start")
@_SLURM_DIR
@click.option("--cpus", type=click.IntRange(1), help="CPUs of the node (default: this machine's).")
@click.option("--json", "as_json", is_flag=True)
def cluster_slurm_start(root, cpus, as_json):
    """Start it (installing Debian's packages when missing; idempotent)."""
    from .cluster import slurm_local

    st = slurm_local.start(root, cpus=cpus)
    if as_json:
        return _echo_json(st)
    click.echo(f"Slurm up: node {st['node']} {st['node_state']}; export SLURM_CONF={st['conf']}")


@cluster_slurm.command("stop")
@_SLURM_DIR
def cluster_slurm_stop(root):
    """Stop every daemon (and the jobs still running)."""
    from .cluster import slurm_local

    r = slurm_local.stop(root)
    click.echo(f"stopped {', '.join(r['stopped'])}" if r["stopped"] else "nothing was running")


@cluster_slurm.command("status")
@_SLURM_DIR
@click.option("--json", "as_json", is_flag=True)
def cluster_slurm_status(root, as_json):
    """Each daemon's pid and the node's state (exit status 1 when not running)."""
    from .cluster import slurm_local

    st = slurm_local.status(root)
    if as_json:
        _echo_json(st)
    else:
        for name, pid in st["daemons"].items():
            click.echo(f"{name:10s} {pid or 'not running'}")
        click.echo(f"node {st['node']}: {st['node_state'] or 'unknown'}; SLURM_CONF={st['conf']}")
    if not st["running"]:
        sys.exit(1)


@main.group()
def connect():
    """A Spark Connect server for notebooks: userbatch.session(remote="sc://127.0.0.1:15002")."""


@connect.command("start")
@click.option("--master", "spark_master",
              help="spark://... or local[N] (default: the dev cluster if up, else local[*]).")
@click.option("--port", type=click.IntRange(1, 65535), default=15002, show_default=True)
def connect_start(spark_master, port):
    """Start the Spark Connect server on 127.0.0.1 (detached)."""
    from .cluster import dev

    st = dev.connect_start(master=spark_master, port=port)
    click.echo(f"{st['url']}  (against {st['master']}; log {st['log']})")


@connect.command("stop")
def connect_stop():
    """Stop the Spark Connect server."""
    from .cluster import dev

    r = dev.connect_stop()
    click.echo(f"stopped {r['url']}" if r.get("url") else "no Spark Connect server recorded")


@connect.command("status")
@click.option("--json", "as_json", is_flag=True)
def connect_status(as_json):
    from .cluster import dev

    st = dev.connect_status()
    if as_json:
        _echo_json(st)
    else:
        click.echo(f"{st['url']} against {st['master']}" if st["running"] else "not running")


# ------------------------------------------------------------------------------------------------ light curves

@main.group()
def lightcurve():
    """Look at light curves."""


@lightcurve.command("plot")
@click.argument("object_id")
@click.option("--table", "-t", default="dp1.forced_source", show_default=True, help="ForcedSource table.")
@click.option("--output", "-o", type=click.Path(), help="PNG to write (default lightcurve_<OBJECT_ID>.png).")
@click.option("--min-period", type=float, default=0.05, show_default=True, help="Shortest period searched (days).")
@click.option("--key", default="objectId", show_default=True)
@click.pass_context
def lightcurve_plot(ctx, object_id, table, output, min_period, key):
    """Plot OBJECT_ID's multi-band light curve, its periodogram and the curve folded at the best period."""
    from .viz import plot_lightcurve

    out = plot_lightcurve(table, object_id, output or f"lightcurve_{object_id}.png", min_period_day=min_period,
                          key=key)
    click.echo(f"wrote {out}")


# ------------------------------------------------------------------------------------------------ simulate / demo

@main.command()
@click.argument("out_dir", type=click.Path())
@click.option("--objects", type=int, default=10_000, show_default=True)
@click.option("--visits", type=int, default=200, show_default=True)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["parquet", "csv"]), default="parquet", show_default=True)
def simulate(out_dir, objects, visits, seed, fmt):
    """Write a simulated LSST-like survey (Object, Visit, ForcedSource, Gaia-like) as files."""
    from .sim import SurveyConfig, write_survey

    paths = write_survey(SurveyConfig(n_objects=objects, n_visits=visits, seed=seed), out_dir, fmt=fmt)
    for name, path in paths.items():
        click.echo(f"{name:14s} {path}")


@main.command()
@click.option("--objects", type=int, default=20_000, show_default=True, help="Simulated objects.")
@click.option("--home", type=click.Path(), help="Facility home for the demo (default ./demo_output, wiped first).")
@click.pass_context
def demo(ctx, objects, home):
    """Simulate a small survey, ingest it, search it, query it, and show versions and provenance."""
    from .demo import run_demo

    run_demo(n_objects=objects, home=home, master=ctx.obj.get("master"), echo=click.echo)


if __name__ == "__main__":
    main()
