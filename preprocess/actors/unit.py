"""Process one work unit: scan, decide, cut utterances and encode its files; commit atomically.

A unit's outputs live in `OUT/.work/units/unit-NNNNNN/`: the encoded samples
(`samples.bin` + `samples.json`, with no split yet: once every unit is done the split is
decided on the kept audio, and `preprocess.actors.shard_group` copies each file's samples
into the shard of its split's group), `files.jsonl`, `frame_rms.npy`, and last
`done.json`. The directory is built as `unit-NNNNNN.partial` and committed by one rename
(`shards.atomic.commit_dir`). A unit without `done.json` is wiped and redone on rerun; one whose
`done.json` holds the same `unit_key` (config, unit, and the path, size and sha256 of every
file it read) is skipped, provided its encoded samples are all there whenever a shard
group still to be written needs them. That is what makes kill -9 and rerun byte-identical, and a
rerun on a changed input equal to a clean run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import struct
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from preprocess.actors.records import dumps_record, file_record
from preprocess.config import PreprocessConfig
from preprocess.measure import stage_times
from preprocess.measure.policy import decide, reject
from preprocess.measure.scan import analyze_file
from preprocess.measure.spool import SampleSpool
from preprocess.measure.stage_times import lap
from preprocess.measure.utterances import cut_utterances, plan_utterances, trim_range
from preprocess.plan.planner import InputFile, WorkUnit, prefetch
from preprocess.plan.provenance import running_code_version
from shards import encode_sample, sample_key
from shards.atomic import DISK_FULL_ERRNOS, commit_dir, write_json_for_commit


def unit_dir(work: Path, unit_id: int) -> Path:
    return work / "units" / f"unit-{unit_id:06d}"


IN_PROGRESS = "in-progress"  # in a unit's partial dir: the file its worker is reading


def take_file_in_progress(work: Path, unit_id: int) -> str | None:
    """The file a unit's worker was reading when it stopped (a dead worker), if known; the
    marker is removed, so a death before the next attempt reads anything names no file."""
    udir = unit_dir(work, unit_id)
    marker = udir.with_name(udir.name + ".partial") / IN_PROGRESS
    path = read_in_progress(marker)
    marker.unlink(missing_ok=True)
    return path


def read_in_progress(marker: Path) -> str | None:
    """The path an `InProgressMarker` holds (up to its NUL); None if it names no file."""
    try:
        path = marker.read_bytes().split(b"\0", 1)[0].decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    return path or None


class InProgressMarker:
    """Names the file a unit's worker is reading, in `IN_PROGRESS`. One descriptor per
    unit and one `pwrite` per file (the path, then a NUL: a shorter path need not truncate
    what a longer one left): creating the file anew for every file cost ≈0.2 ms, 0.15
    CPU-s per audio-hour. A write is visible to the driver as soon as it returns, even if
    the worker process is then killed. On a filesystem shared between nodes (NFS) a lost
    node's last write may never reach the server, so the driver may read the file before
    it; a file is blamed only after two deaths while reading it (`schedule`)."""

    def __init__(self, path: Path):
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)

    def reading(self, rel: str) -> None:
        os.pwrite(self._fd, rel.encode("utf-8") + b"\0", 0)

    def clear(self) -> None:
        """No file is being read any more: a death from here on is no file's."""
        self.close()
        self.path.unlink(missing_ok=True)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def unit_key(unit: WorkUnit, files: dict[str, InputFile], cfg: PreprocessConfig) -> str:
    """Everything a unit's output depends on: the code that shapes output bytes
    (`provenance.running_code_version`), config, unit id, and each file's path, size and
    sha256 in unit order. Any change gives a new key. (The shard group's key is built
    from its units' keys: `shard_group.group_key`.)"""
    payload = {
        "code_version": running_code_version(),
        "config_digest": cfg.digest(),
        "unit_id": unit.unit_id,
        "files": [[p, files[p].bytes, files[p].sha256] for p in unit.paths],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


# The unit's parts: its encoded samples, which the shard groups' writers copy into their
# shard(s); the driver deletes them once no group still to be written needs them.
SPOOL_NAME = "samples.bin"
SPOOL_INDEX_NAME = "samples.json"


def free_spool(work: Path, unit_id: int) -> None:
    """Delete a unit's encoded samples (its shard groups are written): reruns that need
    them again redo the unit (`unit_is_done` with `need_parts`)."""
    for name in (SPOOL_NAME, SPOOL_INDEX_NAME):
        (unit_dir(work, unit_id) / name).unlink(missing_ok=True)


def read_unit_records(work: Path, unit_id: int) -> list[dict[str, Any]]:
    """A committed unit's files.jsonl records, in unit order."""
    lines = (unit_dir(work, unit_id) / "files.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in lines.splitlines()]


def unit_is_done(
    work: Path, unit_id: int, key: str, scan_only: bool = False, need_parts: bool = True
) -> bool:
    """Committed with this `unit_key` and, if `need_parts` (a shard group still to be
    written takes samples from it), every part it lists still on disk with its size."""
    udir = unit_dir(work, unit_id)
    try:
        d = json.loads((udir / "done.json").read_text())
        if d["unit_key"] != key or d.get("scan_only", False) != scan_only:
            return False
        if not need_parts:
            return True
        return all((udir / p["name"]).stat().st_size == p["bytes"] for p in d["parts"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        return False


class EncodedSpool:
    """Encoded samples on disk (audio bytes + json bytes) so a unit's memory stays bounded.

    Kept with the committed unit (`save`) until no shard group still to be written reads
    it (the driver frees it: `free_spool`).
    """

    def __init__(self, path: Path):
        self.path = path
        self._f = open(path, "wb")  # noqa: SIM115 - closed in close()
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

    def save(self, per_file: list[list[tuple[int, str]]]) -> None:
        """Keep the spool and write its index and per-file (sample, key) lists (the unit's
        `commit_dir` makes both durable)."""
        self._f.flush()
        write_json_for_commit(
            self.path.with_name(SPOOL_INDEX_NAME), {"index": self.index, "per_file": per_file}
        )
        self._saved = True

    def close(self) -> None:
        self._f.close()
        if not self._saved:
            self.path.unlink(missing_ok=True)


class SavedSpool:
    """A committed unit's encoded samples, read one at a time. No file stays open between
    reads: a shard group (a val group above all) takes samples from hundreds of units,
    and one open file per unit ran into the open-files limit (EMFILE at 300 units under
    `ulimit -n 256`). An open, seek, read and close per sample costs ≈20 µs."""

    def __init__(self, path: Path, index: list[tuple[int, int, int, str]]):
        self.path = path
        self.index = index  # offset, audio len, json len, ext

    @classmethod
    def open(cls, path: Path) -> tuple[SavedSpool, list[list[list]]]:
        """The spool `EncodedSpool.save` kept at `path`, and its per-file [[sample, key], …]
        lists."""
        saved = json.loads(path.with_name(SPOOL_INDEX_NAME).read_text())
        return cls(path, [tuple(entry) for entry in saved["index"]]), saved["per_file"]

    def get(self, i: int, key: str) -> dict[str, Any]:
        offset, n_audio, n_meta, ext = self.index[i]
        with open(self.path, "rb") as f:
            f.seek(offset + 8)
            audio = f.read(n_audio)
            meta = f.read(n_meta)
        return {"__key__": key, ext: audio, "json": meta}


def process_unit(
    unit: WorkUnit,
    files: dict[str, InputFile],
    input_root: Path,
    work: Path,
    cfg: PreprocessConfig,
    scan_only: bool = False,
    crashed: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run one unit to completion and commit it; returns its done.json content.

    `scan_only` measures and decides (and counts the utterances a file would give) but
    encodes and writes nothing: the diagnosis of a raw corpus. `crashed` maps files that
    killed a worker process to the detail of their `corrupt` record: they are not read
    again. Before each file its path goes to `IN_PROGRESS` in the unit's partial dir, so
    the driver can tell which file a dead worker was reading.
    """
    udir = unit_dir(work, unit.unit_id)
    if udir.exists():
        shutil.rmtree(udir)  # a half-finished attempt from a killed run
    tmp = udir.with_name(udir.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    records: list[dict[str, Any]] = []
    frame_rms: list[np.ndarray] = []
    per_file_samples: list[list[tuple[int, str]]] = []  # [(spool index, key)] per file
    seconds_in = 0.0
    prefetch(input_root, [p for p in unit.paths if not (crashed and p in crashed)])
    with contextlib.ExitStack() as opened:  # a long-lived actor must not leak either file
        marker = InProgressMarker(tmp / IN_PROGRESS)
        opened.callback(marker.close)
        encoded = EncodedSpool(tmp / SPOOL_NAME)
        opened.callback(encoded.close)
        for rel in unit.paths:
            f = files[rel]
            if crashed and rel in crashed:
                rec = file_record(f, reject("corrupt", crashed[rel]))
                rms, samples = np.zeros(0, np.float32), []
            else:
                marker.reading(rel)
                rec, rms, samples = _process_file(
                    f, input_root / rel, tmp, cfg, None if scan_only else encoded
                )
            records.append(rec)
            frame_rms.append(rms)
            per_file_samples.append(samples)
            seconds_in += rec["seconds"] or 0.0
        marker.clear()
        if not scan_only:
            encoded.save(per_file_samples)
    _write_unit_stats(tmp, records, frame_rms)
    done = {
        "unit_id": unit.unit_id,
        "config_digest": cfg.digest(),
        "unit_key": unit_key(unit, files, cfg),
        "scan_only": scan_only,
        # Sizes of the parts (none when scan_only), checked before the group is written.
        "parts": [] if scan_only else _parts(tmp),
        "files": len(records),
        "seconds": seconds_in,
        "kept": sum(r["status"] == "kept" for r in records),
        # Utterances written (files.jsonl's `segments`: the field keeps its name).
        "segments": sum(r["segments"] for r in records),
        # Files rejected because a worker died reading them (this unit is reused by
        # reruns as it is; a new OUT reads them again).
        "crashed": sorted(crashed or ()),
    }
    write_json_for_commit(tmp / "done.json", done, sort_keys=True, indent=1)
    commit_dir(tmp, udir)
    lap("unit_io")
    return done


def _process_file(
    f: InputFile, full: Path, tmp: Path, cfg: PreprocessConfig, encoded: EncodedSpool | None
) -> tuple[dict[str, Any], np.ndarray, list[tuple[int, str]]]:
    """Scan, decide and cut one file into utterances. A failure of any kind becomes a
    reason code. With `encoded` None (scan only) utterances are planned and counted, not cut.
    """
    samples: list[tuple[int, str]] = []
    lengths: list[int] = []  # of the file's utterances, written or (scan only) planned
    with SampleSpool(tmp) as spool:
        try:
            analysis = analyze_file(full, cfg, spool)
            decision = decide(analysis, cfg, f.is_audio_extension)
            if decision.kept and encoded is None:
                lengths = [int(n) for n in plan_utterances(analysis, cfg)[:, 1]]
            elif decision.kept:
                for utt in cut_utterances(analysis, spool, cfg, decision.gain_db):
                    key = sample_key(f.file_id, utt.index)
                    meta = {
                        "source": f.path,
                        "offset": utt.offset,
                        "gain_db": round(decision.gain_db, 4),
                        "sample_rate": cfg.sample_rate,
                        "split": None,  # decided on the kept audio: the group writer sets it
                    }
                    sample = encode_sample(key, utt.pcm, utt.valid, meta, cfg.audio_encoding)
                    samples.append((encoded.add(sample), key))
                    lengths.append(utt.samples)
            if decision.kept and not lengths:
                decision = reject(
                    "short", "no utterance reaches min_utterance_seconds after trimming"
                )
            start, end = trim_range(analysis, cfg) if analysis.error is None else (0, 0)
            rec = file_record(f, decision, analysis, lengths, end - start)
            rms = analysis.frame_rms.astype(np.float32)
        except Exception as exc:  # one bad file never stops the job
            if getattr(exc, "errno", None) in DISK_FULL_ERRNOS:
                raise  # a full disk is the run's to report, not this file's fault
            samples = []
            decision = reject("corrupt", f"processing failed: {type(exc).__name__}: {exc}")
            rec = file_record(f, decision)
            rms = np.zeros(0, np.float32)
    lap("segment")
    return rec, rms, samples


WARM_UP_DIR = "warm-up"  # in OUT/.work: one scratch dir per worker process, removed after


def warm_up(cfg: PreprocessConfig, work: Path) -> str:
    """Run one short generated stereo 44.1 kHz file through the whole per-file path (decode,
    downmix, resample, every kernel, cut, encode) in a scratch dir under `work`, then
    remove it; returns the file's status ("kept" unless something is wrong).

    A worker pays Numba's start (its typing and target contexts, ≈0.8 CPU-s, most of it on
    the first kernel call whatever the kernel) and its cache loads here, at actor start,
    instead of inside the first unit's stage times."""
    # Passes min_active_seconds and gives an utterance at any min_utterance_seconds.
    seconds = max(3.0, cfg.min_active_seconds + 1.0, cfg.min_utterance_seconds + 1.0)
    t = np.arange(int(seconds * 44100)) / 44100
    tone = 0.3 * np.sin(2 * np.pi * 220 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    noise = np.random.default_rng(0).standard_normal(t.size) * 0.01
    stereo = np.stack([tone + noise, tone - noise], axis=1).astype(np.float32)
    scratch = work / WARM_UP_DIR / str(os.getpid())
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        path = scratch / "warm.wav"
        sf.write(path, stereo, 44100, subtype="PCM_16")
        f = InputFile(
            path="warm.wav", bytes=path.stat().st_size, sha256="", is_audio_extension=True
        )
        encoded = EncodedSpool(scratch / SPOOL_NAME)
        try:
            rec, _rms, _samples = _process_file(f, path, scratch, cfg, encoded)
        finally:
            encoded.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return rec["status"]


def start_worker(cfg: PreprocessConfig, work: Path) -> str | None:
    """A worker's start: `warm_up`, best-effort (a failure only moves the cost to the first
    unit, so it is a warning for the driver to print, never a failed actor), and its laps
    discarded, since they are start-up and no unit's stage times. Returns the warning."""
    warning = None
    try:
        warm_up(cfg, work)
    except Exception as exc:
        warning = f"preprocess: warning: worker warm-up failed: {exc}"
    stage_times.CLOCK.take()
    return warning


def _parts(udir: Path) -> list[dict[str, Any]]:
    return [
        {"name": name, "bytes": (udir / name).stat().st_size}
        for name in (SPOOL_NAME, SPOOL_INDEX_NAME)
    ]


def _write_unit_stats(tmp: Path, records: list[dict], frame_rms: list[np.ndarray]) -> None:
    with open(tmp / "files.jsonl", "w", encoding="utf-8") as out:
        for rec in records:
            out.write(dumps_record(rec) + "\n")
    lengths = np.array([r.size for r in frame_rms], dtype=np.int64)
    values = np.concatenate(frame_rms) if frame_rms else np.zeros(0, np.float32)
    np.save(tmp / "frame_rms.npy", values.astype(np.float32))
    np.save(tmp / "frame_lengths.npy", lengths)
