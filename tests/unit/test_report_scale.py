"""The diagnosis report at mission scale: 100,000 files render in seconds, in bounded space.

The mission corpus is ~100,000 files (issue 25). A report step that is quadratic in files
(a set difference rebuilt per record, a list scan per path) took 34 min there; these tests
build an OUT of synthetic file records (no audio: files.jsonl, stats.zarr and index.json
written by the pipeline's own writers) and render the whole report under a time limit that
such a step cannot meet.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from preprocess.actors.records import dumps_record
from preprocess.config import PreprocessConfig, load_config
from preprocess.diagnose.findings import LIST_ROWS, diagnose_output
from preprocess.diagnose.report import render_terminal, write_report
from preprocess.diagnose.whatif import INTEGRITY_REASONS, region_utterances, to_samples
from preprocess.measure import kernels
from preprocess.measure.policy import Measurements, decide_measured
from preprocess.out.assemble import build_index
from preprocess.out.stats_store import write_stats
from preprocess.plan.planner import kept_items, split_plan
from shards import write_index, write_manifest

# Share of each planted fault (the mission corpus had ~9 % faults).
FAULTS = {
    "short": 0.02,
    "quiet": 0.01,
    "silent": 0.005,
    "mostly_silent": 0.01,
    "noise_only": 0.01,
    "clipped": 0.01,
    "corrupt": 0.005,
    "duplicate": 0.01,
    "nonfinite": 0.002,
    "no_snr": 0.005,
}


def synthetic_records(n: int, cfg: PreprocessConfig, seed: int = 0) -> list[dict[str, Any]]:
    """`n` files.jsonl records shaped like the mission corpus: lognormal lengths around
    4 s in folders of 1,000, a few % faults; decisions made by the policy itself."""
    rng = np.random.default_rng(seed)
    seconds = np.clip(rng.lognormal(np.log(4.0), 0.5, n), 0.3, 30.0)
    peak = rng.uniform(0.05, 0.95, n)
    rms = peak * rng.uniform(0.08, 0.25, n)
    active = rng.uniform(0.5, 0.95, n)
    snr = rng.uniform(5.0, 45.0, n)
    fault = rng.choice([*FAULTS, "good"], size=n, p=[*FAULTS.values(), 1.0 - sum(FAULTS.values())])
    records = []
    for i in range(n):
        kind, s = str(fault[i]), float(seconds[i])
        rec: dict[str, Any] = {
            "path": f"spk{i // 1000:03d}/utt{i:06d}.wav",
            "file_id": i,
            "status": "kept",
            "reason": "ok",
            "detail": None,
            "sha256": f"{i:064x}",
            "bytes": int(s * 32000) + 44,
            "duplicate_of": None,
            "split": None,
            "sample_rate": 16000,
            "channels": 1,
            "format": "WAV",
            "subtype": "PCM_16",
            "seconds": round(s, 4),
            "peak": float(peak[i]),
            "peak_without_dc": float(peak[i]),
            "rms": float(rms[i]),
            "dc": float(rng.normal(0.0, 0.002)),
            "active_fraction": float(active[i]),
            "active_seconds": round(s * float(active[i]), 4),
            "loudness_lufs": float(20 * np.log10(rms[i]) - 0.7),
            "clipped_fraction": 0.0,
            "nonfinite": 0,
            "gain_db": None,
            "segments": 0,
            "trimmed_seconds": round(s * min(1.0, float(active[i]) + 0.1), 4),
            "valid_seconds": 0.0,
            "snr_db": round(float(snr[i]), 2),
            "dnsmos_sig": None,
            "dnsmos_bak": None,
            "dnsmos_ovrl": None,
            "dnsmos_windows": None,
        }
        if kind == "short":
            rec.update(seconds=round(s / 40, 4), active_seconds=round(s / 60, 4))
            rec["trimmed_seconds"] = rec["active_seconds"]
        elif kind == "quiet":
            rec.update(peak=1e-5, peak_without_dc=1e-5, rms=2e-6, loudness_lufs=-110.0)
        elif kind == "silent":
            rec.update(peak=0.0, peak_without_dc=0.0, rms=0.0, dc=0.0, snr_db=-20.0)
            rec.update(active_fraction=0.0, active_seconds=0.0, loudness_lufs=None)
        elif kind == "mostly_silent":  # long, with a little speech
            rec.update(seconds=round(4 * s, 4), active_fraction=0.1)
            rec.update(active_seconds=round(0.4 * s, 4), trimmed_seconds=round(0.5 * s, 4))
        elif kind == "noise_only":  # no speech above the floor: the SNR estimate's floor
            rec.update(active_fraction=0.0, active_seconds=0.0, snr_db=-20.0)
        elif kind == "clipped":
            rec.update(peak=1.0, peak_without_dc=1.0, clipped_fraction=0.05)
        elif kind == "no_snr":
            rec["snr_db"] = None
        elif kind in ("corrupt", "duplicate", "nonfinite"):
            rec.update(status="rejected", reason=kind)
            if kind == "corrupt":
                rec.update(detail="Error opening: unexpected end of file", seconds=None)
                rec.update({k: None for k in ("peak", "rms", "dc", "snr_db", "format")})
            elif kind == "duplicate":
                rec["duplicate_of"] = f"spk000/utt{i % 1000:06d}.wav"
            records.append(rec)
            continue
        records.append(rec)
    return decide_all(records, cfg)


def decide_all(records: list[dict[str, Any]], cfg: PreprocessConfig) -> list[dict[str, Any]]:
    """Decide every measured record with the policy, cut each kept file's trimmed speech
    into utterances as one region (the pipeline's kernel; synthetic files have no inner
    pauses) and fill in what follows: gain, utterances (`segments`), their audio, split.
    A kept file without an utterance is `short`, as the unit decides."""
    for rec in records:
        if rec["reason"] in INTEGRITY_REASONS:
            continue
        d = decide_measured(Measurements.from_record(rec), cfg)
        rec.update(status=d.status, reason=d.reason, gain_db=d.gain_db if d.kept else None)
        rec.update(segments=0, valid_seconds=0.0, split=None)
    kept = [r for r in records if r["status"] == "kept"]
    count, audio = region_utterances(to_samples(r["trimmed_seconds"] for r in kept), cfg)
    for r, k, a in zip(kept, count.tolist(), audio.tolist(), strict=True):
        if k == 0:
            r.update(status="rejected", reason="short", gain_db=None)
            r["detail"] = "no utterance reaches min_utterance_seconds after trimming"
            continue
        r.update(segments=k, valid_seconds=a / 16000)
        r["split"] = "val" if r["path"] < "spk005" else "train"
    return records


def manifest_rows(records: list[dict[str, Any]], cfg: PreprocessConfig) -> list[dict[str, Any]]:
    """The manifest.jsonl rows of the kept records' utterances (one region per file, as
    `decide_all` cut them), one shard per split: what assembly writes for an OUT."""
    kept = [r for r in records if r["status"] == "kept"]
    lengths = to_samples(r["trimmed_seconds"] for r in kept)
    ends = np.cumsum(lengths)
    plan = kernels.utterance_plan(
        np.stack([ends - lengths, ends], axis=1),
        cfg.utterance_max_samples,
        cfg.utterance_min_samples,
    )
    owner = np.searchsorted(ends, plan[:, 0], side="right")
    rows, last, k = [], -1, 0
    for i, (offset, n) in zip(owner.tolist(), plan.tolist(), strict=True):
        k = k + 1 if i == last else 0
        last, r = i, kept[i]
        rows.append(
            {
                "key": f"{r['file_id']:016x}-{k:05d}",
                "shard": f"{r['split']}-000000.tar",
                "split": r["split"],
                "samples": n,
                "seconds": n / 16000,
                "valid_seconds": n / 16000,
                "source": r["path"],
                "offset": offset - int(ends[i] - lengths[i]),
            }
        )
    return rows


def write_out(
    out: Path, records: list[dict[str, Any]], cfg: PreprocessConfig, scan_only: bool = True
) -> None:
    """`records` as an OUT the way assembly writes one: files.jsonl, stats.zarr with
    per-frame RMS for every decoded 20 ms frame, index.json, and manifest.jsonl — empty for
    a scan (`scan_only`), else every utterance (no tars: the report never opens one)."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "files.jsonl", "w", encoding="utf-8") as f:
        f.writelines(dumps_record(r) + "\n" for r in records)
    frames = np.array([int((r["seconds"] or 0.0) / 0.02) for r in records], dtype=np.int64)
    rng = np.random.default_rng(len(records))
    pool = rng.uniform(1e-4, 0.3, int(frames.max(initial=0)) + 1).astype(np.float32)
    write_stats(out / "stats.zarr", records, (pool[:k] for k in frames), frames, 0.02)
    write_manifest(out, [] if scan_only else manifest_rows(records, cfg))
    index = build_index(cfg, [], records, Path("/corpus"), split_plan(kept_items(records), cfg))
    index.update(input_digest="0" * 64, scan_only=scan_only)
    write_index(out, index)


def build_synthetic_out(
    out: Path, n: int, seed: int = 0, scan_only: bool = True
) -> list[dict[str, Any]]:
    """An OUT of `n` synthetic files under the default config; returns their records."""
    cfg = load_config(None)
    records = synthetic_records(n, cfg, seed)
    write_out(out, records, cfg, scan_only)
    return records


# A quadratic step at 100 k files costs minutes: the old report spent 20.5 s at 10 k files
# in one set difference per record and threshold (≈ 34 min at 100 k); this one renders
# 100 k in ~10 s on 2 busy cores.
REPORT_LIMIT_S = 40.0
REPORT_DIR_LIMIT_BYTES = 8 << 20  # was 61 MB at 92 k files
WHAT_IFS = ("original", "min_seconds=0.5,min_rms=0.0005")


@pytest.fixture(scope="module")
def big_report(tmp_path_factory) -> dict[str, Any]:
    """100,000 synthetic files in an OUT with a manifest of their utterances, diagnosed
    once (what-ifs included), timed."""
    root = tmp_path_factory.mktemp("scale")
    records = build_synthetic_out(root / "out", 100_000, scan_only=False)
    start = time.perf_counter()
    f = diagnose_output(root / "out", what_ifs=WHAT_IFS)
    path = write_report(f, root / "report")
    terminal = render_terminal(f, path)
    return {
        "seconds": time.perf_counter() - start,
        "records": records,
        "findings": f,
        "out": root / "out",
        "report": root / "report",
        "md": path.read_text(encoding="utf-8"),
        "terminal": terminal,
    }


def test_report_of_100k_files_renders_in_seconds(big_report):
    n = len(big_report["records"])
    assert big_report["seconds"] < REPORT_LIMIT_S, (
        f"report of {n} files took {big_report['seconds']:.1f} s"
    )
    assert f"{n} files" in big_report["md"] and f"{n} files" in big_report["terminal"]


def test_report_folder_stays_small_and_long_lists_say_how_many_are_left_out(big_report):
    report, records = big_report["report"], big_report["records"]
    size = sum(p.stat().st_size for p in report.rglob("*") if p.is_file())
    assert size < REPORT_DIR_LIMIT_BYTES, f"report folder {size / 1e6:.1f} MB"
    kept = [r for r in records if r["status"] == "kept"]
    assert f"[{len(kept)}](files/whatif-0-kept.tsv)" in big_report["md"]  # the full count
    lines = (report / "files" / "whatif-0-kept.tsv").read_text(encoding="utf-8").splitlines()
    rows = lines[1:-1]
    assert len(rows) == LIST_ROWS < len(kept)
    assert lines[-1] == (
        f"# {len(kept) - LIST_ROWS} more files not listed: {LIST_ROWS} of {len(kept)} "
        "shown (path order); every file is in files.jsonl"
    )
    assert [line.split("\t")[0] for line in rows] == [r["path"] for r in kept[:LIST_ROWS]]


def test_a_capped_list_with_an_order_holds_the_worst_files(big_report):
    records = big_report["records"]
    short = sorted(
        (r for r in records if r["reason"] == "short"), key=lambda r: (r["seconds"], r["path"])
    )
    assert len(short) > LIST_ROWS
    lines = (big_report["report"] / "files" / "reason-short.tsv").read_text().splitlines()
    assert [line.split("\t")[0] for line in lines[1:-1]] == [r["path"] for r in short[:LIST_ROWS]]
    assert "(lowest seconds first)" in lines[-1]
    # A what-if's lost files: the noisiest first, as the threshold reads them.
    tsv = big_report["report"] / "files" / "quality-min_snr_db-30-lost.tsv"
    lines = tsv.read_text().splitlines()
    snr = [float(line.split("\t")[12]) for line in lines[1:-1]]
    assert len(snr) == LIST_ROWS and snr == sorted(snr) and "lowest snr_db first" in lines[-1]


def test_synthetic_out_decisions_agree_with_the_policy(big_report):
    """The fixture is a faithful OUT: re-deciding reproduces every decision."""
    out, records = big_report["out"], big_report["records"]
    assert json.loads((out / "index.json").read_text())["totals"]["files"] == len(records)
    assert big_report["findings"].mismatches == []
    n = len(records)
    assert f"reproduces {n} of {n} decisions" in big_report["md"]


def test_padding_table_at_scale_counts_every_utterance_of_the_manifest(big_report):
    """The padding curve reads all of manifest.jsonl: its windows at 1 s are the loader's
    grid count over every utterance (each ≥ 0.5 s, so ⌊n / S⌋ plus a half-real tail)."""
    f = big_report["findings"]
    kept = [r for r in big_report["records"] if r["status"] == "kept"]
    assert f.utterances.exact and f.utterances.samples.size == sum(r["segments"] for r in kept)
    n = f.utterances.samples
    expected = int((n // 16000 + (n % 16000 >= 8000)).sum())
    assert int(f.curve.windows[f.curve.at(1.0)]) == expected
    assert "`train_ds.py --segment-seconds" in big_report["md"]
