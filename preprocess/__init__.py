"""Corpus → filtered, normalized, masked segments → shards (docs/PREPROCESS.md).

    preprocess/
      run.py          the CLI: `python -m preprocess.run`, `python preprocess/run.py`
      pipeline.py     the run end to end on Ray: plan → units on actors → assemble
      ray_session.py  start/join/stop the Ray a run uses
      schedule.py     units and shard-group writes on the actor pool, each group once ready
      config.py       PreprocessConfig: every knob, stored in index.json
      plan.py         list, hash, dedupe, split and group files into shard groups and work units
      unit.py         one work unit on one actor: scan, decide, segment, encode (keyed for reruns)
      shard_group.py  one shard group on one actor: its units' samples → its shard part(s)
      interleave.py   sample order inside a shard (neighbours from different files)
      records.py      the files.jsonl line of one file
      assemble.py     units, groups → OUT: shards/, files.jsonl, stats.zarr, index.json
      stats_store.py  OUT/stats.zarr (per-file scalars, ragged per-frame RMS)
      dir_commit.py   commit a directory built under a temporary name, durably
      provenance.py   code_version: which code shaped an OUT
      summary.py      the table a run prints
      measure/        per-file measurement and decisions (decode, kernels, loudness, policy),
                      and the stage lap timers (stage_times) its code and the actors share
      diagnose/       the report: scenarios A/B/C, what-if, plots (`python -m preprocess.diagnose`)
      synth/          the demo corpus with planted faults (`python -m preprocess.synth`)

Arrows point one way: the orchestration here imports `measure` and `shards`; `measure`
imports only `config`; `diagnose` imports `measure` and the read side of this level
(config, stats_store, shards.Index); `synth` imports nothing of the pipeline, and the
pipeline imports neither `diagnose` nor `synth` (tests/test_layout.py).
"""
