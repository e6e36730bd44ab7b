"""Director tables: a child table (ForcedSource, Source) stored in its parent's (Object's) HEALPix partitions.

Each child row takes its parent's position (joined on the key, ``objectId``) and so its parent's ``_healpix_29``,
and the child table is written with exactly the parent's partitions: every row of an object sits in the same
partition — the same files — as every other row of it. Per-object work (light-curve features, periodograms) then
reads one partition at a time and needs no shuffle, as Qserv's director tables do.

ForcedSource carries no time in the Rubin schema; the observation time comes from Visit (``expMidptMJD``) joined
on ``visit``. That join is done here, once, at ingest (Visit is small: a broadcast join), and the time is stored
as a column of the child table, so no reader ever repeats it.

Rows without a parent (or, with a visit table, without a visit) cannot be placed: they are refused and counted
(``on_orphans="reject"``, the count is in the result and the commit metadata) or fail the write (``"error"``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..errors import ColumnNotFound, UserbatchError
from .catalog import Catalog
from .info import partitions_of
from .provenance import Provenance
from .read import resolve, to_spark
from .write import WriteResult, write_table

log = logging.getLogger(__name__)

ORPHAN_POLICIES = ("reject", "error")


@dataclass(frozen=True)
class VisitTimes:
    """Where the child rows' times come from: ``column`` of table ``table``, joined on ``key``."""

    table: str
    key: str = "visit"
    column: str = "expMidptMJD"
    version: int | None = None


def write_child_table(
    df,
    name: str,
    *,
    parent: str,
    key: str = "objectId",
    parent_version: int | None = None,
    times: VisitTimes | None = None,
    mode: str = "create",
    on_orphans: str = "reject",
    catalog: Catalog | None = None,
    provenance: Provenance | None = None,
    **write_options,
) -> WriteResult:
    """Write ``df`` as table ``name`` co-located with ``parent`` (see the module docstring).

    The child gets the parent's coordinate columns (replacing any of its own of the same names: a forced
    measurement is made at the object's position) and, with ``times``, the visit's time column. The parent's
    version read is pinned and recorded, with the visit table's, in the provenance and in the table's properties.
    """
    from pyspark.sql import functions as F

    if on_orphans not in ORPHAN_POLICIES:
        raise UserbatchError(f"on_orphans must be one of {', '.join(ORPHAN_POLICIES)}; got {on_orphans!r}")
    for bad in ("ra_column", "dec_column", "partition_order", "pixel_threshold", "partitions"):
        if write_options.get(bad) is not None:
            raise UserbatchError(f"{bad} is set by the parent table of a director child; drop it")
    cat = catalog or Catalog()
    pentry = cat.get(parent)
    if not pentry.spatial:
        raise UserbatchError(f"parent table {parent} has no sky positions, so children cannot be placed by it")
    psnap = resolve(pentry, version=parent_version)
    ra, dec = pentry.ra_column, pentry.dec_column
    for what, cols, have in (("child data", [key], df.columns), (f"parent {parent}", [key, ra, dec],
                                                               psnap.schema.names)):
        missing = [c for c in cols if c not in have]
        if missing:
            raise ColumnNotFound(f"{what} has no column(s) {', '.join(missing)}; it has {', '.join(have)}")
    spark = df.sparkSession
    prov = provenance or Provenance(job="ingest-child")
    prov.add_input(parent, psnap.version if psnap.version >= 0 else None, role="parent")

    dropped = [c for c in (ra, dec) if c in df.columns]
    if dropped:
        log.info("%s: replacing the child's %s with the parent's", name, ", ".join(dropped))
    child = df.drop(*dropped)
    parents = to_spark(spark, psnap, [key, ra, dec]).withColumn("__ub_parent", F.lit(True))
    joined = child.join(parents, key, "left")
    checks = [F.sum(F.when(F.col("__ub_parent").isNull(), 1).otherwise(0)).alias("orphans")]

    properties = {"director": {"table": parent, "version": psnap.version, "key": key}}
    if times is not None:
        ventry = cat.get(times.table)
        vsnap = resolve(ventry, version=times.version)
        for c in (times.key, times.column):
            if c not in vsnap.schema.names:
                raise ColumnNotFound(f"visit table {times.table} has no column {c!r}; it has "
                                     f"{', '.join(vsnap.schema.names)}")
        if times.key not in df.columns:
            raise ColumnNotFound(f"child data has no column {times.key!r} to join {times.table} on")
        if times.column in df.columns:
            joined = joined.drop(times.column)
        visits = to_spark(spark, vsnap, [times.key, times.column]).withColumn("__ub_visit", F.lit(True))
        joined = joined.join(F.broadcast(visits), times.key, "left")
        checks.append(F.sum(F.when(F.col("__ub_visit").isNull(), 1).otherwise(0)).alias("unknown_visits"))
        prov.add_input(times.table, vsnap.version if vsnap.version >= 0 else None, role="times")
        properties["time_column"] = times.column
        properties["times"] = {"table": times.table, "version": vsnap.version, "key": times.key}

    joined = joined.cache()  # counted, then written: one evaluation of the joins
    try:
        counts = joined.agg(*checks).first().asDict()
        counts = {k: int(v or 0) for k, v in counts.items()}
        refused = counts.get("orphans", 0) + counts.get("unknown_visits", 0)
        if refused and on_orphans == "error":
            raise UserbatchError(
                f"{name}: {counts.get('orphans', 0)} row(s) have no parent in {parent}"
                + (f" and {counts.get('unknown_visits', 0)} no visit in {times.table}" if times else "")
                + "; fix the inputs or write with on_orphans='reject'")
        keep = F.col("__ub_parent").isNotNull()
        if times is not None:
            keep = keep & F.col("__ub_visit").isNotNull()
        placed = joined.filter(keep).drop("__ub_parent", "__ub_visit")
        if refused:
            log.warning("%s: refused %d child row(s) without a parent or visit: %s", name, refused, counts)
        prov.parameters.update({"director": properties["director"], "refused": counts})
        props = {**(write_options.pop("properties", None) or {}), **properties}
        result = write_table(placed, name, mode, catalog=cat, ra_column=ra, dec_column=dec,
                             partitions=partitions_of(psnap), properties=props, provenance=prov, **write_options)
    finally:
        joined.unpersist()
    result.rejected += refused
    return result
