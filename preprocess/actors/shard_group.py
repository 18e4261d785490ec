"""Write one shard group: its files' encoded samples → interleaved shard part(s).

Work units are smaller than shards so that every worker stays busy to the end of a run; a
shard group is the set of kept files whose samples make one shard, all of one split
(`plan.make_shard_groups`, packed once every unit is done and the split is decided on the
kept audio), so shard boundaries and bytes depend only on the plan and the decisions,
never on the worker count. A group is written by an actor from the committed units'
spools (no re-encoding, memory bounded by one sample) in a seeded interleave over all of
the group's files; each sample's json gets its split here.

Output lives in `OUT/.work/groups/group-NNNNNN/` and commits like a unit (`.partial` dir
→ `shards.atomic.commit_dir`, `done.json` last). Beside each part `part-NNN.tar` goes
`part-NNN.jsonl`: the part's manifest rows (key, split, samples, seconds, valid seconds,
source, offset, in tar order), taken from the samples' json as they are copied, so
assembly writes OUT/manifest.jsonl without opening a tar.

Reruns: a group's `group_key` is built from its split, its members and the `unit_key` of
each unit they come from (with the group id, which seeds the interleave, and the config).
A committed group is reused only if its key matches and every shard part it lists is on
disk with its size; otherwise it is written again, and only from units whose committed
`done.json` holds the key the current plan expects (`write_group` refuses stale units
rather than copy their samples).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from preprocess.actors.interleave import interleave
from preprocess.actors.unit import SPOOL_NAME, SavedSpool, unit_dir
from preprocess.config import PreprocessConfig
from preprocess.measure.stage_times import lap
from preprocess.plan.planner import ShardGroup
from shards import SAMPLE_RATE, ShardWriter
from shards.atomic import commit_dir, write_json_for_commit
from shards.writer import TAR_MEMBER_HEADER_BYTES


def group_dir(work: Path, group: int) -> Path:
    return work / "groups" / f"group-{group:06d}"


def group_key(group: ShardGroup, unit_keys: dict[int, str], digest: str) -> str:
    """Everything a group's shard bytes depend on: config, group id (it seeds the
    interleave), split, its members (unit, file position) in plan order and the
    `unit_key` of each unit they come from."""
    payload = {
        "config_digest": digest,
        "shard_group": group.group_id,
        "split": group.split,
        "members": [list(m) for m in group.members],
        "units": [[u, unit_keys[u]] for u in group.unit_ids()],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def group_is_done(work: Path, group: int, key: str) -> bool:
    """Committed with this `group_key`, and every shard part (and its manifest rows) it
    lists still on disk with its size."""
    gdir = group_dir(work, group)
    try:
        d = json.loads((gdir / "done.json").read_text())
        if d["group_key"] != key:
            return False
        return all(
            (gdir / p["name"]).stat().st_size == p["bytes"]
            and (gdir / p["manifest"]["name"]).stat().st_size == p["manifest"]["bytes"]
            for p in d["shards"]
        )
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        return False


class StaleUnitError(RuntimeError):
    """A unit of the group is not committed with the key the current plan expects."""


def write_group(
    group: ShardGroup, unit_keys: dict[int, str], work: Path, cfg: PreprocessConfig
) -> dict[str, Any]:
    """Write `group`'s shard part(s) from its units' spools; returns its done.json.

    `unit_keys` are the keys the current plan gives the units: each unit's committed
    `done.json` must hold its key (and its parts be whole), or nothing is written. Only a
    group far over the shard target (one very long file) is split into several parts of
    ~shard_mb each. The spools stay: the driver frees a unit's once no group needs it.
    """
    for unit_id in group.unit_ids():
        _check_unit(work, unit_id, unit_keys[unit_id])
    gdir = group_dir(work, group.group_id)
    if gdir.exists():
        shutil.rmtree(gdir)
    tmp = gdir.with_name(gdir.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    spools: dict[int, SavedSpool] = {}
    files_of: dict[int, list[list[list]]] = {}
    for unit_id in group.unit_ids():  # indexes only: a spool's file is opened per read
        path = unit_dir(work, unit_id) / SPOOL_NAME
        spools[unit_id], files_of[unit_id] = SavedSpool.open(path)
    per_file = [(spools[u], files_of[u][pos]) for u, pos in group.members]
    parts = _write_parts(tmp, group, per_file, cfg)
    done = {
        "shard_group": group.group_id,
        "split": group.split,
        "config_digest": cfg.digest(),
        "group_key": group_key(group, unit_keys, cfg.digest()),
        "units": group.unit_ids(),
        "shards": parts,
    }
    write_json_for_commit(tmp / "done.json", done, sort_keys=True, indent=1)
    commit_dir(tmp, gdir)
    lap("tar")
    return done


def _check_unit(work: Path, unit_id: int, key: str) -> None:
    udir = unit_dir(work, unit_id)
    try:
        d = json.loads((udir / "done.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise StaleUnitError(f"unit {unit_id} is not committed: {exc}") from exc
    if d.get("unit_key") != key or d.get("scan_only", False):
        raise StaleUnitError(
            f"unit {unit_id} was committed for other inputs or config (unit_key "
            f"{str(d.get('unit_key'))[:12]}, expected {key[:12]}); not writing its group"
        )
    for part in d.get("parts", []):
        path = udir / part["name"]
        if not path.exists() or path.stat().st_size != part["bytes"]:
            raise StaleUnitError(f"unit {unit_id}: part {path} is missing or truncated")


def _write_parts(
    tmp: Path,
    group: ShardGroup,
    per_file: list[tuple[SavedSpool, list[list]]],
    cfg: PreprocessConfig,
) -> list[dict[str, Any]]:
    seed = cfg.split_seed * 1_000_003 + group.group_id
    order = interleave([len(s) for _, s in per_file], seed=seed)
    est_total = sum(
        _tar_estimate(spool.index[i][1] + spool.index[i][2])
        for spool, samples in per_file
        for i, _ in samples
    )
    target = cfg.shard_mb * 1e6 if est_total > 2 * cfg.shard_mb * 1e6 else float("inf")
    parts: list[dict[str, Any]] = []
    writer: ShardWriter | None = None
    rows: list[str] = []
    size = 0
    try:
        for file_i, seg_i in order:
            if writer is None:
                path = tmp / f"part-{len(parts):03d}.tar"
                writer = ShardWriter(path, encoding=cfg.audio_encoding)
                rows, size = [], 0
            spool, samples = per_file[file_i]
            index, key = samples[seg_i]
            sample = spool.get(index, key)
            sample["json"] = with_split(sample["json"], group.split)
            writer.write_encoded(sample)
            rows.append(json.dumps(manifest_row(key, sample["json"]), separators=(",", ":")))
            size += _tar_estimate(sum(len(v) for k, v in sample.items() if k != "__key__"))
            if size >= target:
                parts.append(_close_part(writer, rows))
                writer = None
        if writer is not None:
            parts.append(_close_part(writer, rows))
            writer = None
    finally:
        # A write that fails part-way (ENOSPC) must not leave the part's file open in a
        # long-lived actor: drop it (the group is redone by the next run).
        if writer is not None:
            writer.abort()
    return parts


def with_split(meta_json: bytes, split: str) -> bytes:
    """A spooled sample's json with its split set, serialized as `shards.encode_sample`
    does (sorted keys, no spaces), so the bytes repeat."""
    meta = json.loads(meta_json)
    meta["split"] = split
    return json.dumps(meta, sort_keys=True, separators=(",", ":")).encode("utf-8")


def manifest_row(key: str, meta_json: bytes) -> dict[str, Any]:
    """One utterance's OUT/manifest.jsonl row (less its final shard name) from its json."""
    meta = json.loads(meta_json)
    valid = sum(end - start for start, end in meta["valid"])
    return {
        "key": key,
        "split": meta["split"],
        "samples": meta["samples"],
        "seconds": meta["samples"] / SAMPLE_RATE,
        "valid_seconds": valid / SAMPLE_RATE,
        "source": meta["source"],
        "offset": meta["offset"],
    }


def _close_part(writer: ShardWriter, rows: list[str]) -> dict[str, Any]:
    """Finish a part and write its manifest rows beside it; its done.json entry."""
    part = writer.close().to_dict()
    path = writer.path.with_suffix(".jsonl")
    # Durable with the group: `commit_dir` fsyncs the whole partial dir.
    path.write_text("".join(row + "\n" for row in rows), encoding="utf-8")
    part["manifest"] = {"name": path.name, "bytes": path.stat().st_size}
    return part


def part_manifest_rows(work: Path, group: int, part: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A committed part's manifest rows, in tar order (assembly adds the shard name)."""
    with open(group_dir(work, group) / part["manifest"]["name"], encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)


def _tar_estimate(member_bytes: int) -> int:
    """A sample's size in the tar as the split estimates it: its member bytes plus one
    member's header block. That undercounts (two members, each with a header block and
    padding: ~1.5 KB), but where groups split into parts, and so the output bytes, depend on it."""
    return member_bytes + TAR_MEMBER_HEADER_BYTES
