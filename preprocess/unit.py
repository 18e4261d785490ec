"""Process one work unit: scan, decide, segment and shard its files; commit atomically.

A unit's outputs live in `OUT/.work/units/unit-NNNNNN/`: shard parts, `files.jsonl`,
`frame_rms.npy`, and last `done.json`. The directory is built as `unit-NNNNNN.partial` and
committed by one rename (`dir_commit`). A unit without `done.json` is wiped and redone on
rerun; one whose `done.json` holds the same `unit_key` (config, unit, and the path, size
and sha256 of every file it read) and whose parts are all there is skipped. That is what
makes kill -9 and rerun byte-identical, and a rerun on a changed input equal to a clean run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
from pathlib import Path
from typing import Any

import numpy as np

from preprocess.config import PreprocessConfig
from preprocess.dir_commit import commit_dir
from preprocess.interleave import interleave
from preprocess.measure.policy import decide, reject
from preprocess.measure.scan import analyze_file
from preprocess.measure.segment import cut_segments, plan_segments, trim_range
from preprocess.measure.spool import SampleSpool
from preprocess.plan import InputFile, WorkUnit
from preprocess.records import dumps_record, file_record
from shards import ShardWriter, encode_sample, sample_key
from shards.atomic import atomic_write_json
from shards.writer import TAR_MEMBER_HEADER_BYTES


def unit_dir(work: Path, unit_id: int) -> Path:
    return work / "units" / f"unit-{unit_id:06d}"


def unit_key(unit: WorkUnit, files: dict[str, InputFile], cfg: PreprocessConfig) -> str:
    """Everything a unit's output depends on: config, unit id (it seeds the interleave),
    and each file's path, size, sha256 and split in unit order. Any change gives a new key."""
    payload = {
        "config_digest": cfg.digest(),
        "unit_id": unit.unit_id,
        "split": unit.split,
        "files": [[p, files[p].bytes, files[p].sha256, files[p].split] for p in unit.paths],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def unit_is_done(work: Path, unit_id: int, key: str, scan_only: bool = False) -> bool:
    """Committed with this `unit_key`, and every shard part it lists still on disk."""
    udir = unit_dir(work, unit_id)
    try:
        d = json.loads((udir / "done.json").read_text())
        if d["unit_key"] != key or d.get("scan_only", False) != scan_only:
            return False
        return all((udir / p["name"]).stat().st_size == p["bytes"] for p in d["shards"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        return False


class _EncodedSpool:
    """Encoded samples on disk (audio bytes + json bytes) so a unit's memory stays bounded."""

    def __init__(self, path: Path):
        self.path = path
        self._f = open(path, "w+b")  # noqa: SIM115 - closed in close()
        self.index: list[tuple[int, int, int, str]] = []  # offset, audio len, json len, ext

    def add(self, sample: dict[str, Any]) -> int:
        ext = next(k for k in sample if k.startswith("audio."))
        audio, meta = sample[ext], sample["json"]
        offset = self._f.seek(0, os.SEEK_END)
        self._f.write(struct.pack("<II", len(audio), len(meta)))
        self._f.write(audio)
        self._f.write(meta)
        self.index.append((offset, len(audio), len(meta), ext))
        return len(self.index) - 1

    def get(self, i: int, key: str) -> dict[str, Any]:
        offset, n_audio, n_meta, ext = self.index[i]
        self._f.seek(offset + 8)
        audio = self._f.read(n_audio)
        meta = self._f.read(n_meta)
        return {"__key__": key, ext: audio, "json": meta}

    def close(self) -> None:
        self._f.close()
        self.path.unlink(missing_ok=True)


def process_unit(
    unit: WorkUnit,
    files: dict[str, InputFile],
    input_root: Path,
    work: Path,
    cfg: PreprocessConfig,
    scan_only: bool = False,
) -> dict[str, Any]:
    """Run one unit to completion and commit it; returns its done.json content.

    `scan_only` measures and decides (and counts the segments a file would give) but
    encodes and writes nothing: the diagnosis of a raw corpus.
    """
    udir = unit_dir(work, unit.unit_id)
    if udir.exists():
        shutil.rmtree(udir)  # a half-finished attempt from a killed run
    tmp = udir.with_name(udir.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    encoded = _EncodedSpool(tmp / "samples.bin")
    records: list[dict[str, Any]] = []
    frame_rms: list[np.ndarray] = []
    per_file_samples: list[list[tuple[int, str]]] = []  # [(spool index, key)] per file
    seconds_in = 0.0
    try:
        for rel in unit.paths:
            f = files[rel]
            rec, rms, samples = _process_file(
                f, input_root / rel, tmp, cfg, None if scan_only else encoded
            )
            records.append(rec)
            frame_rms.append(rms)
            per_file_samples.append(samples)
            seconds_in += rec["seconds"] or 0.0
        shards = [] if scan_only else _write_parts(tmp, unit, per_file_samples, encoded, cfg)
    finally:
        encoded.close()
    _write_unit_stats(tmp, records, frame_rms)
    done = {
        "unit_id": unit.unit_id,
        "split": unit.split,
        "config_digest": cfg.digest(),
        "unit_key": unit_key(unit, files, cfg),
        "scan_only": scan_only,
        "shards": shards,
        "files": len(records),
        "seconds": seconds_in,
        "kept": sum(r["status"] == "kept" for r in records),
        "segments": sum(r["segments"] for r in records),
    }
    atomic_write_json(tmp / "done.json", done, sort_keys=True, indent=1)
    commit_dir(tmp, udir)
    return done


def _process_file(
    f: InputFile, full: Path, tmp: Path, cfg: PreprocessConfig, encoded: _EncodedSpool | None
) -> tuple[dict[str, Any], np.ndarray, list[tuple[int, str]]]:
    """Scan, decide and segment one file. A failure of any kind becomes a reason code.

    With `encoded` None (scan only) segments are planned and counted, not cut.
    """
    samples: list[tuple[int, str]] = []
    n_segments = 0
    with SampleSpool(tmp) as spool:
        try:
            analysis = analyze_file(full, cfg, spool)
            decision = decide(analysis, cfg, f.is_audio_extension)
            valid = 0
            if decision.kept and encoded is None:
                plan = plan_segments(analysis, cfg)
                n_segments, valid = len(plan), int(plan[:, 1].sum())
            elif decision.kept:
                for seg in cut_segments(analysis, spool, cfg, decision.gain_db):
                    key = sample_key(f.file_id, seg.index)
                    meta = {
                        "source": f.path,
                        "offset": seg.offset,
                        "gain_db": round(decision.gain_db, 4),
                        "sample_rate": cfg.sample_rate,
                        "split": f.split,
                    }
                    sample = encode_sample(key, seg.audio, seg.valid, meta, cfg.audio_encoding)
                    samples.append((encoded.add(sample), key))
                    valid += seg.n_valid
                n_segments = len(samples)
            if decision.kept and n_segments == 0:
                decision = reject("short", "no segment reaches min_valid_fraction after trimming")
            start, end = trim_range(analysis, cfg) if analysis.error is None else (0, 0)
            rec = file_record(f, decision, analysis, n_segments, valid, end - start)
            rms = analysis.frame_rms.astype(np.float32)
        except Exception as exc:  # one bad file never stops the job
            samples = []
            decision = reject("corrupt", f"processing failed: {type(exc).__name__}: {exc}")
            rec = file_record(f, decision)
            rms = np.zeros(0, np.float32)
    return rec, rms, samples


def _write_parts(
    tmp: Path,
    unit: WorkUnit,
    per_file: list[list[tuple[int, str]]],
    encoded: _EncodedSpool,
    cfg: PreprocessConfig,
) -> list[dict[str, Any]]:
    """Write the unit's samples, interleaved across files, into one shard part.

    Units are sized to about one shard; only a unit far over the target (one very long
    file) is split into several parts of ~shard_mb each.
    """
    order = interleave([len(s) for s in per_file], seed=cfg.split_seed * 1_000_003 + unit.unit_id)
    est_total = sum(
        _tar_estimate(encoded.index[i][1] + encoded.index[i][2]) for s in per_file for i, _ in s
    )
    target = cfg.shard_mb * 1e6 if est_total > 2 * cfg.shard_mb * 1e6 else float("inf")
    parts: list[dict[str, Any]] = []
    writer: ShardWriter | None = None
    size = 0
    for file_i, seg_i in order:
        if writer is None:
            writer = ShardWriter(tmp / f"part-{len(parts):03d}.tar", encoding=cfg.audio_encoding)
            size = 0
        index, key = per_file[file_i][seg_i]
        sample = encoded.get(index, key)
        writer.write_encoded(sample)
        size += _tar_estimate(sum(len(v) for k, v in sample.items() if k != "__key__"))
        if size >= target:
            parts.append(writer.close().to_dict())
            writer = None
    if writer is not None:
        parts.append(writer.close().to_dict())
    return parts


def _tar_estimate(member_bytes: int) -> int:
    """A sample's size in the tar as the split estimates it: its member bytes plus one
    member's header blocks. That undercounts (two members, each with headers and padding:
    ~3.5 KB), but where units split into parts, and so the output bytes, depend on it."""
    return member_bytes + TAR_MEMBER_HEADER_BYTES


def _write_unit_stats(tmp: Path, records: list[dict], frame_rms: list[np.ndarray]) -> None:
    with open(tmp / "files.jsonl", "w", encoding="utf-8") as out:
        for rec in records:
            out.write(dumps_record(rec) + "\n")
    lengths = np.array([r.size for r in frame_rms], dtype=np.int64)
    values = np.concatenate(frame_rms) if frame_rms else np.zeros(0, np.float32)
    np.save(tmp / "frame_rms.npy", values.astype(np.float32))
    np.save(tmp / "frame_lengths.npy", lengths)
