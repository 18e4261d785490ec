"""The output directory: claim and check OUT (`outdir`), then turn finished units and
groups into OUT's files (`assemble`: files.jsonl, index.json) and stats.zarr
(`stats_store`). Imports `plan`, `actors`, `measure` and `shards`."""
