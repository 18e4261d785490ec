"""The diagnosis: the original debug flowchart's scenarios A/B/C, measured, as a report.

    findings   read an OUT (files.jsonl, index.json via shards.Index, stats.zarr) → Findings
    whatif     re-decide records under other thresholds; padding per training length (pure)
    report     Findings → report.md, summary.txt, files/*.tsv; `report_for_output`
    plots      Findings → PNG figures (matplotlib, Agg)
    cli        `python -m preprocess.diagnose PATH` (`__main__.py`)

Imports: `preprocess.measure` (decisions are re-made by `measure.policy` itself, never a
copy of the rules), the read side of the orchestration (`preprocess.config`,
`preprocess.out.stats_store.read_stats`) and `shards` — never the pipeline, except `cli`,
which runs it in scan-only mode when PATH is a raw corpus. Nothing outside this package
imports it but the preprocess CLI (`run.py`), which writes the report after a run.
"""
