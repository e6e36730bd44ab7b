"""The image side-car: a ctrl_bps WMS plugin that runs Rubin pipelines (QuantumGraph jobs) as Spark tasks inside a
facility run, so image work shares the catalog jobs' queue, quota ledger, accounting and provenance."""
