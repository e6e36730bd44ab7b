"""What per-object computations (light-curve features, periodograms) share: where the rows come from and how
the work is run — one unit per partition of a director table (threads or Spark tasks, no shuffle), a Spark
shuffle by object for any other table or Spark DataFrame, or one in-process call for pandas / Arrow input."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from ..engine import default_parallelism, get_session
from ..tables.catalog import Catalog
from ..tables.provenance import Provenance
from ..tables.read import read_table
from ..tables.write import write_table
from .sides import read_files
from .partition_tasks import run_local, run_spark


@dataclass
class PerObject:
    """A planned per-object computation. Subclasses name their ``kernel(table, spec) -> pa.Table`` (all rows of an
    object in ``table``), the ``job`` recorded in provenance and the ``param_key`` their parameters go under."""

    spec: object  # has .columns, .object_column and .schema(object_type)
    source: tuple  # ("director", FileSide) | ("table", entry, version) | ("arrow", pa.Table) | ("spark", df)
    engine: str
    spark: object = None
    table: str | None = None
    version: int | None = None

    kernel = None
    job = "per_object"
    param_key = "per_object"

    def explain(self) -> str:
        kind = self.source[0]
        if kind == "director":
            side = self.source[1]
            return (f"director table {self.table}@{self.version}: {len(side.partitions)} partitions, one unit each, "
                    f"no shuffle; engine {self.engine}")
        if kind == "table":
            return f"table {self.table}@{self.version} (not a director table): one shuffle by object; engine spark"
        return f"{kind} input; engine {self.engine}"

    def parameters(self) -> dict:
        raise NotImplementedError

    def _units(self):
        side = self.source[1]
        return [(side.files[i], side.schema) for i in np.argsort(-side.part_rows(), kind="stable")]

    def to_arrow(self) -> pa.Table:
        kind = self.source[0]
        spec, kernel = self.spec, type(self).kernel
        if kind == "arrow":
            return kernel(self.source[1], spec)
        if kind == "director" and self.engine == "local":

            schema = spec.schema(self.source[1].schema.field(spec.object_column).type)
            return run_local(self._units(), lambda u: kernel(read_files(u[0], u[1], spec.columns), spec), schema)
        return self.to_spark().toArrow()

    def to_pandas(self):
        return self.to_arrow().to_pandas()

    def to_spark(self, spark=None):
        from pyspark.sql.pandas.types import from_arrow_schema

        spark = spark or self.spark or get_session()
        spec, kernel = self.spec, type(self).kernel
        kind = self.source[0]
        if kind == "director" and self.engine == "spark":

            schema = spec.schema(self.source[1].schema.field(spec.object_column).type)
            return run_spark(spark, self._units(), lambda u: kernel(read_files(u[0], u[1], spec.columns), spec), schema)
        if kind in ("table", "spark"):
            if kind == "table":

                df = read_table(self.source[1], self.source[2], spark=spark, columns=spec.columns)
            else:
                df = self.source[1].select(*spec.columns)
            otype = pa.int64() if df.schema[spec.object_column].dataType.typeName() == "long" else pa.string()
            schema = spec.schema(otype)
            n = max(1, default_parallelism(spark) * 2)

            def run(batches):
                tables = [pa.Table.from_batches([b]) for b in batches]
                if tables:
                    yield from kernel(pa.concat_tables(tables), spec).cast(schema).to_batches()

            return df.repartition(n, spec.object_column).mapInArrow(run, from_arrow_schema(schema))
        t = self.to_arrow()
        return spark.createDataFrame(t.to_pandas(), from_arrow_schema(t.schema))

    def write(self, name: str, mode: str = "create", *, catalog: Catalog | None = None, provenance=None,
              **write_options):
        """Write the result as a table (not spatial: one row per object, or per object and band)."""
        prov = provenance or Provenance(job=self.job)
        if self.table:
            prov.add_input(self.table, self.version)
        prov.parameters.setdefault(self.param_key, self.parameters())
        return write_table(self.to_spark(), name, mode, catalog=catalog, ra_column=None, dec_column=None,
                           provenance=prov, **write_options)
