"""Writing one shard group from its units' spools (preprocess/actors/shard_group.py),
in-process: no Ray, no audio decoding."""

from __future__ import annotations

import json
import resource

import numpy as np

from preprocess.actors.shard_group import group_is_done, group_key, write_group
from preprocess.actors.unit import SPOOL_NAME, EncodedSpool, unit_dir
from preprocess.config import PreprocessConfig
from preprocess.plan.planner import ShardGroup
from shards import encode_sample, read_samples


def _committed_unit(work, unit_id: int, key: str, cfg: PreprocessConfig) -> None:
    """A unit as `process_unit` commits it: one file of one 0.1 s utterance in its spool."""
    udir = unit_dir(work, unit_id)
    udir.mkdir(parents=True)
    spool = EncodedSpool(udir / SPOOL_NAME)
    meta = {"source": f"f{unit_id}.wav", "offset": 0, "gain_db": 0.0, "sample_rate": 16000}
    pcm = np.full(1600, unit_id % 100, np.int16)
    sample = encode_sample(f"{unit_id:016x}-00000", pcm, [[0, 1600]], meta | {"split": None})
    index = spool.add(sample)
    spool.save([[(index, sample["__key__"])]])
    spool.close()
    parts = [{"name": n, "bytes": (udir / n).stat().st_size} for n in (SPOOL_NAME, "samples.json")]
    (udir / "done.json").write_text(json.dumps({"unit_key": key, "parts": parts}))


def test_a_group_reading_more_units_than_the_open_files_limit_is_written(tmp_path):
    """A val group takes samples from hundreds of units; one open file per unit failed
    with EMFILE (300 units under a limit of 256)."""
    cfg, work = PreprocessConfig(), tmp_path / "work"
    units = 300
    keys = {u: f"key{u}" for u in range(units)}
    for u in range(units):
        _committed_unit(work, u, keys[u], cfg)
    group = ShardGroup(0, "val", [(u, 0) for u in range(units)])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(128, hard), hard))
    try:
        done = write_group(group, keys, work, cfg)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert group_is_done(work, 0, group_key(group, keys, cfg.digest()))
    [part] = done["shards"]
    samples = list(read_samples(work / "groups" / "group-000000" / part["name"]))
    assert len(samples) == units
    assert {s["meta"]["split"] for s in samples} == {"val"}  # set as the samples were copied
