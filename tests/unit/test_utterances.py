"""A shard sample is an utterance (issue 23, format 2): trimmed speech split at long pauses,
capped in length, each written whole with its length in its meta."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from preprocess.actors import unit as unit_mod
from preprocess.config import PreprocessConfig
from preprocess.plan.planner import InputFile, WorkUnit, fingerprint
from shards import decode_sample
from tests.e2e.test_robustness import _speechlike

SR = 16000


def _noise(seconds: float, seed: int) -> np.ndarray:
    """A pause: background noise under the noise inside `_speechlike`'s syllable gaps."""
    return (2e-5 * np.random.default_rng(seed).standard_normal(int(seconds * SR))).astype(
        np.float32
    )


def _run_unit(root: Path, names: list[str], work: Path, cfg: PreprocessConfig):
    """process_unit on `names`; returns (records by path, decoded samples in spool order)."""
    files = {}
    for r in fingerprint(root, names):
        f = InputFile(**r)
        f.split = "train"
        files[f.path] = f
    unit_mod.process_unit(WorkUnit(0, names), files, root, work, cfg)
    udir = unit_mod.unit_dir(work, 0)
    records = {
        json.loads(line)["path"]: json.loads(line)
        for line in (udir / "files.jsonl").read_text().splitlines()
    }
    spool, per_file = unit_mod.SavedSpool.open(udir / unit_mod.SPOOL_NAME)
    samples = [decode_sample(spool.get(i, key)) for rows in per_file for i, key in rows]
    return records, samples


def test_a_long_pause_splits_a_file_and_a_short_one_stays_inside(tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    parts = [
        _noise(1.0, 1),
        _speechlike(3.0, SR, seed=1),
        _noise(2.0, 2),  # ≥ split_pause_seconds (1 s): a new utterance
        _speechlike(3.0, SR, seed=2),
        _noise(0.5, 3),  # < 1 s: real audio inside the utterance
        _speechlike(2.0, SR, seed=3),
        _noise(1.0, 4),
    ]
    sf.write(root / "talk.wav", np.concatenate(parts), SR, subtype="PCM_16")
    records, samples = _run_unit(root, ["talk.wav"], tmp_path / "work", PreprocessConfig())
    rec = records["talk.wav"]
    assert rec["status"] == "kept" and rec["segments"] == len(samples) == 2
    first, second = samples
    # Speech at 1–4 s and 6–11.5 s, each widened by the 200 ms trim margin (± a frame).
    assert abs(first["meta"]["offset"] / SR - 0.8) <= 0.06
    assert abs(first["audio"].size / SR - 3.4) <= 0.1
    assert abs(second["meta"]["offset"] / SR - 5.8) <= 0.06
    assert abs(second["audio"].size / SR - 5.9) <= 0.1
    for s in samples:
        n = s["audio"].size
        assert s["meta"]["samples"] == n and s["meta"]["valid"] == [[0, n]] and s["mask"].all()
        assert s["meta"]["source"] == "talk.wav" and s["meta"]["sample_rate"] == SR
    assert rec["valid_seconds"] == pytest.approx(sum(s["audio"].size for s in samples) / SR)


def test_speech_over_the_cap_is_cut_into_near_equal_pieces(tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    sf.write(root / "long.wav", _speechlike(45.0, SR, seed=9), SR, subtype="PCM_16")
    cfg = PreprocessConfig()
    _, samples = _run_unit(root, ["long.wav"], tmp_path / "work", cfg)
    lengths = [s["audio"].size for s in samples]
    assert len(lengths) == 3 and max(lengths) - min(lengths) <= 1  # 15 s each, not 20+20+5
    assert max(lengths) <= cfg.utterance_max_samples
    offsets = [s["meta"]["offset"] for s in samples]
    assert offsets[1] == offsets[0] + lengths[0] and offsets[2] == offsets[1] + lengths[1]


def test_pieces_under_the_minimum_are_not_written_and_the_record_counts_what_was(tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    parts = [_speechlike(3.0, SR, seed=1), _noise(2.0, 2), _speechlike(6.0, SR, seed=2)]
    sf.write(root / "talk.wav", np.concatenate(parts), SR, subtype="PCM_16")
    cfg = PreprocessConfig(min_utterance_seconds=4.0)
    records, samples = _run_unit(root, ["talk.wav"], tmp_path / "work", cfg)
    assert [s["audio"].size / SR > 6.0 for s in samples] == [True]  # the 3-s region dropped
    rec = records["talk.wav"]
    assert rec["segments"] == 1
    assert rec["valid_seconds"] == pytest.approx(samples[0]["audio"].size / SR)
    assert samples[0]["meta"]["offset"] > 4.5 * SR


def test_a_file_with_no_utterance_long_enough_is_rejected_short(tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    sf.write(root / "brief.wav", _speechlike(3.0, SR, seed=1), SR, subtype="PCM_16")
    cfg = PreprocessConfig(min_active_seconds=0.5, min_utterance_seconds=5.0)
    records, samples = _run_unit(root, ["brief.wav"], tmp_path / "work", cfg)
    assert not samples
    assert records["brief.wav"]["reason"] == "short"
    assert "min_utterance_seconds" in records["brief.wav"]["detail"]
