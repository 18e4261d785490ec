"""Process one work unit: scan, decide, segment and encode its files; commit atomically.

A unit's outputs live in `OUT/.work/units/unit-NNNNNN/`: the encoded samples
(`samples.bin` + `samples.json`, which `preprocess.shard_group` later writes into the
unit's shard), `files.jsonl`, `frame_rms.npy`, and last `done.json`. A unit without
`done.json` is wiped and redone on rerun; one with it is skipped. That is what makes
kill -9 and rerun byte-identical.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path
from typing import Any

import numpy as np

from preprocess.config import PreprocessConfig
from preprocess.plan import InputFile, WorkUnit
from preprocess.policy import decide, reject
from preprocess.records import dumps_record, file_record
from preprocess.scan import analyze_file
from preprocess.segment import cut_segments, plan_segments, trim_range
from preprocess.spool import SampleSpool
from preprocess.stage_times import lap
from shards import encode_sample, sample_key


def unit_dir(work: Path, unit_id: int) -> Path:
    return work / "units" / f"unit-{unit_id:06d}"


def unit_is_done(work: Path, unit_id: int, digest: str, scan_only: bool = False) -> bool:
    done = unit_dir(work, unit_id) / "done.json"
    if not done.exists():
        return False
    try:
        d = json.loads(done.read_text())
        return d["config_digest"] == digest and d.get("scan_only", False) == scan_only
    except (json.JSONDecodeError, KeyError):
        return False


class EncodedSpool:
    """Encoded samples on disk (audio bytes + json bytes) so a unit's memory stays bounded.

    Kept with the committed unit (`save`) until its shard group is written.
    """

    def __init__(self, path: Path, mode: str = "w+b"):
        self.path = path
        self._f = open(path, mode)  # noqa: SIM115 - closed in close()
        self.index: list[tuple[int, int, int, str]] = []  # offset, audio len, json len, ext
        self._saved = False

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

    def save(self, per_file: list[list[tuple[int, str]]]) -> None:
        """Keep the spool: fsync it and write its index and per-file (sample, key) lists."""
        self._f.flush()
        os.fsync(self._f.fileno())
        _write_json_atomic(
            self.path.with_suffix(".json"), {"index": self.index, "per_file": per_file}
        )
        self._saved = True

    @classmethod
    def open_saved(cls, path: Path) -> tuple[EncodedSpool, list[list[list]]]:
        """A saved spool, read-only, and its per-file [[sample, key], …] lists."""
        spool = cls(path, "rb")
        saved = json.loads(path.with_suffix(".json").read_text())
        spool.index = [tuple(entry) for entry in saved["index"]]
        spool._saved = True
        return spool, saved["per_file"]

    def close(self) -> None:
        self._f.close()
        if not self._saved:
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
    encoded = EncodedSpool(tmp / "samples.bin")
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
        if not scan_only:
            encoded.save(per_file_samples)
    finally:
        encoded.close()
    _write_unit_stats(tmp, records, frame_rms)
    done = {
        "unit_id": unit.unit_id,
        "split": unit.split,
        "config_digest": cfg.digest(),
        "scan_only": scan_only,
        "shard_group": unit.shard_group,
        "files": len(records),
        "seconds": seconds_in,
        "kept": sum(r["status"] == "kept" for r in records),
        "segments": sum(r["segments"] for r in records),
    }
    _write_json_atomic(tmp / "done.json", done)
    os.replace(tmp, udir)
    lap("unit_io")
    return done


def _process_file(
    f: InputFile, full: Path, tmp: Path, cfg: PreprocessConfig, encoded: EncodedSpool | None
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
    lap("segment")
    return rec, rms, samples


def _write_unit_stats(tmp: Path, records: list[dict], frame_rms: list[np.ndarray]) -> None:
    with open(tmp / "files.jsonl", "w", encoding="utf-8") as out:
        for rec in records:
            out.write(dumps_record(rec) + "\n")
    lengths = np.array([r.size for r in frame_rms], dtype=np.int64)
    values = np.concatenate(frame_rms) if frame_rms else np.zeros(0, np.float32)
    np.save(tmp / "frame_rms.npy", values.astype(np.float32))
    np.save(tmp / "frame_lengths.npy", lengths)


def _write_json_atomic(path: Path, obj: Any) -> None:
    part = path.with_name(path.name + ".tmp")
    with open(part, "w", encoding="utf-8") as f:
        json.dump(obj, f, sort_keys=True, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(part, path)
