"""Corpus → filtered, normalized utterances → shards (docs/PREPROCESS.md).

    preprocess/
      run.py          the CLI: `python -m preprocess.run`, `python preprocess/run.py`
      config.py       PreprocessConfig: every knob, stored in index.json
      pipeline.py     the run on Ray: plan → units → split the kept audio → groups → assemble
      summary.py      the table a run prints
      plan/           on the driver: before any audio is read, and between the two rounds
        planner.py      list, hash, dedupe, pack units; after the scan, split and shard groups
        split.py        the train/val split of the kept audio, by group
        provenance.py   code_version: which code shaped an OUT
      actors/         the work on Ray
        ray_session.py  start/join/stop the Ray a run uses
        schedule.py     units and shard-group writes on the actor pool, each group once ready
        unit.py         one work unit on one actor: scan, decide, cut utterances, encode (keyed)
        records.py      the files.jsonl line of one file
        shard_group.py  one shard group on one actor: its files' samples → its shard part(s)
        interleave.py   sample order inside a shard (neighbours from different files)
      out/            the output directory
        outdir.py       claim OUT for one run, refuse a foreign or changed one
        assemble.py     units, groups → OUT: shards/, files.jsonl, stats.zarr, index.json
        stats_store.py  OUT/stats.zarr (per-file scalars, ragged per-frame RMS)
      measure/        per-file measurement and decisions (decode, kernels, loudness, policy),
                      and the stage lap timers (stage_times) its code and the actors share
      diagnose/       the report: scenarios A/B/C, what-if, plots (`python -m preprocess.diagnose`)
      synth/          the demo corpus with planted faults (`python -m preprocess.synth`)

Arrows point one way: `actors` imports `plan`, `out` imports both, `pipeline` all three and
`run` the pipeline; each may import `config`, `measure` and `shards`. `measure` imports only
`config`; `diagnose` imports `measure`, the read side (config, out.stats_store,
shards.Index) and `run` for the CLI's ending (exit codes, one-line errors, signals);
`synth` imports nothing of the pipeline, and the pipeline imports neither `diagnose` nor
`synth` (tests/e2e/test_layout.py).
"""
