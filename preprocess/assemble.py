"""Turn committed work units into the OUT contract: shards/, files.jsonl, stats.zarr, index.json.

Shard parts of the shard groups are renamed into contiguous `train-NNNNNN.tar` /
`val-NNNNNN.tar` in group order, so names depend only on the plan, never on which worker
finished first. Every step is idempotent: rerunning after a kill mid-assembly finishes the same way.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from preprocess.config import PreprocessConfig
from preprocess.plan import WorkUnit
from preprocess.records import dumps_record
from preprocess.shard_group import group_dir, shard_groups
from preprocess.stats_store import write_stats
from preprocess.unit import unit_dir

FORMAT_VERSION = 1


def code_version() -> str:
    """Package version plus a hash of the code that shapes the output (preprocess/ and
    shards/ sources): the same wherever it runs (a checkout, a `ray job` upload, an
    install), and different whenever that code differs, committed or not."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("telucodec")
    except PackageNotFoundError:
        v = "unknown"
    h = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for package in (here, here.parent / "shards"):
        for src in sorted(package.glob("*.py")):
            h.update(src.name.encode() + b"\0" + src.read_bytes())
    return f"{v}+src.{h.hexdigest()[:12]}"


def place_shards(out: Path, work: Path, units: list[WorkUnit]) -> list[dict[str, Any]]:
    """Move shard group parts to their final names; returns index entries in name order."""
    shard_dir = out / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    counters: dict[str, int] = defaultdict(int)
    entries = []
    for group, group_units in shard_groups(units).items():
        split = group_units[0].split
        done = json.loads((group_dir(work, group) / "done.json").read_text())
        for part in done["shards"]:
            name = f"{split}-{counters[split]:06d}.tar"
            counters[split] += 1
            src, dst = group_dir(work, group) / part["name"], shard_dir / name
            if src.exists():
                os.replace(src, dst)
            elif not dst.exists():
                raise FileNotFoundError(f"shard group {group}: shard part {src} is missing")
            entries.append(
                {
                    "name": name,
                    "split": split,
                    "samples": part["samples"],
                    "bytes": part["bytes"],
                    "sha256": part["sha256"],
                }
            )
    return entries


def _unit_records(work: Path, units: list[WorkUnit]) -> list[tuple[dict, int, int]]:
    """(record, unit_id, row in that unit) for every file a worker processed."""
    rows = []
    for unit in units:
        lines = (unit_dir(work, unit.unit_id) / "files.jsonl").read_text(encoding="utf-8")
        for i, line in enumerate(lines.splitlines()):
            rows.append((json.loads(line), unit.unit_id, i))
    return rows


def assemble(
    out: Path,
    work: Path,
    cfg: PreprocessConfig,
    units: list[WorkUnit],
    plan_records: list[dict[str, Any]],
    input_root: Path,
    scan_only: bool = False,
) -> dict[str, Any]:
    """Write the final OUT files and return the index (no shards when `scan_only`)."""
    shards = [] if scan_only else place_shards(out, work, units)
    rows = _unit_records(work, units) + [(r, -1, -1) for r in plan_records]
    rows.sort(key=lambda row: row[0]["path"])
    records = [r for r, _, _ in rows]
    tmp = out / "files.jsonl.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for rec in records:
            f.write(dumps_record(rec) + "\n")
    os.replace(tmp, out / "files.jsonl")
    _write_stats(out, work, cfg, units, rows)
    index = build_index(cfg, shards, records, input_root)
    index["scan_only"] = scan_only
    tmp = out / "index.json.tmp"
    tmp.write_text(json.dumps(index, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    os.replace(tmp, out / "index.json")
    return index


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
        import shutil

        shutil.rmtree(tmp)
    write_stats(
        tmp, [r for r, _, _ in rows], chunks(), lengths, cfg.frame_samples / cfg.sample_rate
    )
    final = out / "stats.zarr"
    if final.exists():
        import shutil

        shutil.rmtree(final)
    os.replace(tmp, final)


def build_index(
    cfg: PreprocessConfig,
    shards: list[dict[str, Any]],
    records: list[dict[str, Any]],
    input_root: Path,
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
    split_totals = {}
    for split in ("train", "val"):
        rs = [r for r in kept if r["split"] == split]
        split_totals[split] = {
            "files": len(rs),
            "segments": sum(r["segments"] for r in rs),
            "shards": sum(1 for s in shards if s["split"] == split),
            "valid_hours": round(sum(r["valid_seconds"] or 0.0 for r in rs) / 3600.0, 6),
        }
    return {
        "format_version": FORMAT_VERSION,
        "code_version": code_version(),
        "input": str(input_root),
        "config": cfg.to_dict(),
        "config_digest": cfg.digest(),
        "sample_rate": cfg.sample_rate,
        "segment_samples": cfg.segment_samples,
        "shards": shards,
        "totals": {
            "files": len(records),
            "kept": len(kept),
            "rejected": len(records) - len(kept),
            "input_hours": round(sum(r["seconds"] or 0.0 for r in records) / 3600.0, 6),
            "by_reason": dict(sorted(by_reason.items())),
            "splits": split_totals,
        },
    }
