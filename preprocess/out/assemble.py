"""Turn committed work units and shard groups into the OUT contract: shards/, manifest.jsonl,
files.jsonl, stats.zarr, index.json.

Shard parts of the shard groups (`preprocess.actors.shard_group`) are hard-linked (copied where
links are not supported) to contiguous `train-NNNNNN.tar` / `val-NNNNNN.tar` in group
order, so names depend only on the plan and the decisions, never on which worker
finished first. Each kept file's record gets the split the run decided on the kept audio. Parts stay
in their group until the run ends, so every step is idempotent: a rerun after a kill
mid-assembly, even on a changed input, places the same way; shards of an earlier plan that
the new index does not list are removed. manifest.jsonl (one row per utterance, in shard-name
order) is joined from the parts' rows the group writers kept (`shard_group.part_manifest_rows`).
index.json is written last (`shards.write_index`): its presence means the OUT is complete.
The OUT layout and its fields are docs/SHARDS.md.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from preprocess.actors.records import dumps_record
from preprocess.actors.shard_group import group_dir, part_manifest_rows
from preprocess.actors.unit import unit_dir
from preprocess.config import PreprocessConfig
from preprocess.measure.stage_times import PhaseClock
from preprocess.out.stats_store import write_stats
from preprocess.plan.planner import ShardGroup, WorkUnit
from preprocess.plan.provenance import running_code_version
from preprocess.plan.split import SplitPlan
from shards import FORMAT_VERSION, SHARD_DIR, write_index
from shards.atomic import atomic_write_text, commit_dir, fsync_dir
from shards.manifest import MANIFEST_NAME, write_manifest

# Names place_shards writes (and its temp links): anything else in shards/ is not ours.
_SHARD_NAME = re.compile(r"(train|val)-\d{6}\.tar(\.link-tmp)?")


def place_shards(out: Path, work: Path, groups: list[ShardGroup]) -> list[dict[str, Any]]:
    """Link shard group parts to their final names; returns index entries in name order,
    each with `_rows`: (group, part) whose manifest rows it holds (dropped from the index)."""
    shard_dir = out / SHARD_DIR
    shard_dir.mkdir(parents=True, exist_ok=True)
    counters: dict[str, int] = defaultdict(int)
    entries = []
    for group in groups:
        split, gdir = group.split, group_dir(work, group.group_id)
        done = json.loads((gdir / "done.json").read_text())
        for part in done["shards"]:
            name = f"{split}-{counters[split]:06d}.tar"
            counters[split] += 1
            src = gdir / part["name"]
            if not src.exists():
                raise FileNotFoundError(
                    f"shard group {group.group_id}: shard part {src} is missing (removed "
                    f"during the run?); delete {work / 'groups'} and rerun to redo the groups"
                )
            _link(src, shard_dir / name)
            entries.append(
                {
                    "name": name,
                    "split": split,
                    "samples": part["samples"],
                    "bytes": part["bytes"],
                    "sha256": part["sha256"],
                    "_rows": (group.group_id, part),
                }
            )
    fsync_dir(shard_dir)  # the renames above are durable before index.json lists them
    return entries


def _link(src: Path, dst: Path) -> None:
    """Put `src`'s bytes at `dst` atomically, leaving `src` in place for a rerun."""
    if dst.exists() and os.path.samefile(src, dst):
        return
    tmp = dst.with_name(dst.name + ".link-tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:  # a filesystem without hard links
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def remove_stale_shards(out: Path, shards: list[dict[str, Any]]) -> None:
    """Delete shards (and temp links) an earlier plan placed that this index does not list:
    an OUT holds one run's output, even for tools that glob shards/."""
    listed = {s["name"] for s in shards}
    shard_dir = out / SHARD_DIR
    if not shard_dir.is_dir():
        return
    for path in shard_dir.iterdir():
        if path.name not in listed and _SHARD_NAME.fullmatch(path.name):
            path.unlink()


@dataclass
class Outcome:
    """What the scan decided: the units, each unit's files.jsonl records (unit → records in
    unit order), the records of files decided at planning, and the split of the kept audio."""

    units: list[WorkUnit]
    records: dict[int, list[dict[str, Any]]]
    plan_records: list[dict[str, Any]]
    split: SplitPlan


def assemble(
    out: Path,
    work: Path,
    cfg: PreprocessConfig,
    outcome: Outcome,
    groups: list[ShardGroup],
    input_root: Path,
    input_digest: str,
    scan_only: bool = False,
    clock: PhaseClock | None = None,
) -> dict[str, Any]:
    """Write the final OUT files and return the index (no shards when `scan_only`); each
    step is a phase of `clock` when given."""
    clock = clock or PhaseClock()
    with clock.phase("assembly: shards, manifest"):
        placed = [] if scan_only else place_shards(out, work, groups)
        shards = [{k: v for k, v in e.items() if k != "_rows"} for e in placed]
        remove_stale_shards(out, shards)
        write_manifest(out, _manifest_rows(work, placed))
    clock.begin("assembly: files.jsonl")
    rows = [
        (rec, unit.unit_id, i)
        for unit in outcome.units
        for i, rec in enumerate(outcome.records[unit.unit_id])
    ]
    rows += [(r, -1, -1) for r in outcome.plan_records]
    rows.sort(key=lambda row: row[0]["path"])
    records = [r for r, _, _ in rows]
    for rec in records:
        rec["split"] = outcome.split.split_of[rec["path"]] if rec["status"] == "kept" else None
    atomic_write_text(out / "files.jsonl", "".join(dumps_record(r) + "\n" for r in records))
    clock.end()
    with clock.phase("assembly: stats.zarr"):
        _write_stats(out, work, cfg, outcome.units, rows)
    with clock.phase("assembly: index.json"):
        index = build_index(cfg, shards, records, input_root, outcome.split)
        index["input_digest"] = input_digest
        index["scan_only"] = scan_only
        write_index(out, index)
    return index


def _manifest_rows(work: Path, placed: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every utterance's manifest row, in shard-name order, then order within the shard."""
    for entry in sorted(placed, key=lambda e: e["name"]):
        group, part = entry["_rows"]
        n = 0
        for row in part_manifest_rows(work, group, part):
            n += 1
            yield {"key": row.pop("key"), "shard": entry["name"], **row}
        if n != entry["samples"]:
            raise ValueError(
                f"shard group {group}: {part['manifest']['name']} lists {n} utterances, its "
                f"shard {entry['name']} holds {entry['samples']}; delete {work / 'groups'} "
                "and rerun"
            )


def _write_stats(out: Path, work: Path, cfg, units, rows) -> None:
    per_unit: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for unit in units:
        d = unit_dir(work, unit.unit_id)
        lengths = np.load(d / "frame_lengths.npy")
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        per_unit[unit.unit_id] = (np.load(d / "frame_rms.npy", mmap_mode="r"), offsets)
    lengths = np.array(
        [0 if u < 0 else per_unit[u][1][i + 1] - per_unit[u][1][i] for _, u, i in rows],
        dtype=np.int64,
    )

    def chunks():
        for _, u, i in rows:
            if u < 0:
                yield np.zeros(0, np.float32)
            else:
                values, offs = per_unit[u]
                yield np.asarray(values[offs[i] : offs[i + 1]], dtype=np.float32)

    tmp = out / "stats.zarr.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    write_stats(
        tmp, [r for r, _, _ in rows], chunks(), lengths, cfg.frame_samples / cfg.sample_rate
    )
    commit_dir(tmp, out / "stats.zarr")


def _split_totals(
    shards: list[dict[str, Any]], kept: list[dict[str, Any]], split: SplitPlan
) -> dict[str, dict[str, Any]]:
    """Per split: files, groups, segments (utterances written: the name stays for readers
    of index.json), shards, hours (kept files), valid hours (the audio in utterances, what
    the split weighs), and the share of valid hours achieved next to the share asked (null
    when a manifest gives the split)."""
    valid_seconds = sum(r["valid_seconds"] or 0.0 for r in kept)
    asked = split.asked_fraction
    totals = {}
    for name in ("train", "val"):
        rs = [r for r in kept if r["split"] == name]
        valid = sum(r["valid_seconds"] or 0.0 for r in rs)
        totals[name] = {
            "files": len(rs),
            "groups": len({split.group_of[r["path"]] for r in rs}),
            "segments": sum(r["segments"] for r in rs),
            "shards": sum(1 for s in shards if s["split"] == name),
            "hours": round(sum(r["seconds"] or 0.0 for r in rs) / 3600.0, 6),
            "valid_hours": round(valid / 3600.0, 6),
            "fraction": round(valid / valid_seconds, 6) if valid_seconds else 0.0,
            "asked_fraction": None
            if asked is None
            else round(asked if name == "val" else 1.0 - asked, 6),
        }
    return totals


def build_index(
    cfg: PreprocessConfig,
    shards: list[dict[str, Any]],
    records: list[dict[str, Any]],
    input_root: Path,
    split: SplitPlan,
) -> dict[str, Any]:
    """index.json: config, code version, per-shard counts + sha256, totals per reason."""
    by_reason: dict[str, dict[str, float]] = {}
    for r in records:
        slot = by_reason.setdefault(r["reason"], {"files": 0, "hours": 0.0})
        slot["files"] += 1
        slot["hours"] += (r["seconds"] or 0.0) / 3600.0
    for slot in by_reason.values():
        slot["hours"] = round(slot["hours"], 6)
    kept = [r for r in records if r["status"] == "kept"]
    split_totals = _split_totals(shards, kept, split)
    return {
        "format_version": FORMAT_VERSION,
        "code_version": running_code_version(),
        "input": str(input_root),
        "config": cfg.to_dict(),
        "config_digest": cfg.digest(),
        "sample_rate": cfg.sample_rate,
        "utterance_max_samples": cfg.utterance_max_samples,
        "manifest": MANIFEST_NAME,
        "shards": shards,
        "totals": {
            "files": len(records),
            "kept": len(kept),
            "rejected": len(records) - len(kept),
            "input_hours": round(sum(r["seconds"] or 0.0 for r in records) / 3600.0, 6),
            "by_reason": dict(sorted(by_reason.items())),
            "splits": split_totals,
            "split_grouping": split.grouping,
        },
    }
