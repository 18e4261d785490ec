"""Write one shard group: the encoded samples of its work units → interleaved shard part(s).

Work units are smaller than shards so that every worker stays busy to the end of a run;
a shard group is the set of units whose samples make one shard (`plan.make_units`), so
shard boundaries and bytes depend only on the plan, never on the worker count. A group is
written by an actor once all of its units are committed: samples are copied from the
units' spools (no re-encoding, memory bounded by one sample) in a seeded interleave over
all of the group's files. Output lives in `OUT/.work/groups/group-NNNNNN/` and commits
like a unit (`.partial` dir → rename, `done.json` last).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from preprocess.config import PreprocessConfig
from preprocess.interleave import interleave
from preprocess.plan import WorkUnit
from preprocess.stage_times import lap
from preprocess.unit import EncodedSpool, unit_dir
from shards import ShardWriter
from shards.atomic import atomic_write_json

_TAR_MEMBER_OVERHEAD = 1536  # two 512-byte headers + padding, per sample (estimate)


def group_dir(work: Path, group: int) -> Path:
    return work / "groups" / f"group-{group:06d}"


def group_is_done(work: Path, group: int, digest: str) -> bool:
    done = group_dir(work, group) / "done.json"
    if not done.exists():
        return False
    try:
        return json.loads(done.read_text())["config_digest"] == digest
    except (json.JSONDecodeError, KeyError):
        return False


def shard_groups(units: list[WorkUnit]) -> dict[int, list[WorkUnit]]:
    """Units by shard group, groups and units in plan order."""
    groups: dict[int, list[WorkUnit]] = {}
    for unit in units:
        groups.setdefault(unit.shard_group, []).append(unit)
    return dict(sorted(groups.items()))


def write_group(
    group: int, units: list[WorkUnit], work: Path, cfg: PreprocessConfig
) -> dict[str, Any]:
    """Write group `group`'s shard part(s) from its committed units; returns its done.json.

    Only a group far over the shard target (one very long file) is split into several
    parts of ~shard_mb each.
    """
    gdir = group_dir(work, group)
    if gdir.exists():
        shutil.rmtree(gdir)
    tmp = gdir.with_name(gdir.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    spools: list[EncodedSpool] = []
    per_file: list[tuple[int, list[list]]] = []  # (spool, [[sample, key], …]) per file
    try:
        for unit in units:
            spool, files = EncodedSpool.open_saved(unit_dir(work, unit.unit_id) / "samples.bin")
            spools.append(spool)
            per_file += [(len(spools) - 1, samples) for samples in files]
        parts = _write_parts(tmp, group, spools, per_file, cfg)
    finally:
        for spool in spools:
            spool.close()
    done = {
        "shard_group": group,
        "split": units[0].split,
        "config_digest": cfg.digest(),
        "units": [u.unit_id for u in units],
        "shards": parts,
    }
    atomic_write_json(tmp / "done.json", done, sort_keys=True, indent=1)
    os.replace(tmp, gdir)
    # The spools are now copied into the group's shards: free their disk space.
    for unit in units:
        for name in ("samples.bin", "samples.json"):
            (unit_dir(work, unit.unit_id) / name).unlink(missing_ok=True)
    lap("tar")
    return done


def _write_parts(
    tmp: Path,
    group: int,
    spools: list[EncodedSpool],
    per_file: list[tuple[int, list[list]]],
    cfg: PreprocessConfig,
) -> list[dict[str, Any]]:
    order = interleave([len(s) for _, s in per_file], seed=cfg.split_seed * 1_000_003 + group)
    est_total = sum(
        spools[sp].index[i][1] + spools[sp].index[i][2] + _TAR_MEMBER_OVERHEAD
        for sp, samples in per_file
        for i, _ in samples
    )
    target = cfg.shard_mb * 1e6 if est_total > 2 * cfg.shard_mb * 1e6 else float("inf")
    parts: list[dict[str, Any]] = []
    writer: ShardWriter | None = None
    size = 0
    for file_i, seg_i in order:
        if writer is None:
            writer = ShardWriter(tmp / f"part-{len(parts):03d}.tar", encoding=cfg.audio_encoding)
            size = 0
        spool_i, samples = per_file[file_i]
        index, key = samples[seg_i]
        sample = spools[spool_i].get(index, key)
        writer.write_encoded(sample)
        size += sum(len(v) for k, v in sample.items() if k != "__key__") + _TAR_MEMBER_OVERHEAD
        if size >= target:
            parts.append(writer.close().to_dict())
            writer = None
    if writer is not None:
        parts.append(writer.close().to_dict())
    return parts
