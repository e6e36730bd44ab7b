"""The tables layer: the catalog (which tables exist, who may read them), Delta/HATS/Parquet snapshots, reads,
writes with HEALPix partitioning and margins, ingest, HATS in and out, provenance."""
