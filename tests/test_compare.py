"""`python -m telucodec compare`: our codec vs Opus, lag-aligned, scored with the evaluation
tally (one schema with eval.json and metrics.json) plus PESQ-WB and STOI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import shards
from shards import ShardWriter
from telucodec.checkpoint import save_codec
from telucodec.compare import EXTRA, align, compare
from telucodec.configs import get_config
from telucodec.evaluate import MetricSums
from telucodec.model import Codec
from telucodec.opus import missing_opus
from tests.conftest import REPO


def _speech(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    x = sum(np.sin(2 * np.pi * f * t) / (k + 1) for k, f in enumerate((140, 280, 700, 1200)))
    env = (np.sin(2 * np.pi * 3 * t) > -0.2).astype(float)
    return (0.3 * x * env / 2 + 0.003 * rng.standard_normal(t.size)).astype(np.float32)


def test_align_recovers_a_known_delay():
    ref = _speech(1.0, 0)
    for lag in (0, 37, 312, -25):
        est = np.roll(np.pad(ref, (400, 400)), lag)[400 : 400 + ref.size + 300]
        aligned, found = align(ref, est)
        assert found == lag
        body = slice(400, ref.size - 400)
        assert np.allclose(aligned[body], ref[body], atol=1e-6)


def test_compare_scores_our_codec_and_a_stand_in_reference():
    torch.manual_seed(0)
    model = Codec(get_config("tiny")).eval()
    items = [(_speech(1.0, s), np.ones(16000, bool)) for s in range(2)]

    def delayed_copy(audio, sr, kbps):  # a "codec" that only delays: aligns to perfect
        return np.concatenate([np.zeros(123, np.float32), audio])

    res = compare(model, items, [1.5, 6], delayed_copy)
    assert set(res) == {"telucodec", "opus"} and set(res["opus"]) == {"1.5", "6"}
    assert res["opus"]["6"]["masked_snr_db"] > 60  # recovered exactly after alignment
    assert res["opus"]["6"]["items"] == 2 and res["opus"]["6"]["pesq_wb_items"] == 2
    schema = set(MetricSums(EXTRA).summary())
    assert set(res["opus"]["6"]) == schema
    assert set(res["telucodec"]["6"]) == schema | {"n_quantizers"}
    assert res["telucodec"]["6"]["n_quantizers"] == 12
    # Each codec sees real samples only: nothing is padding, masked = unmasked.
    ours = res["telucodec"]["6"]
    assert ours["padding_fraction"] == 0 and ours["unmasked_snr_db"] == ours["masked_snr_db"]


def test_missing_opus_tools_is_a_message_not_a_crash(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    msg = missing_opus()
    assert "opusenc" in msg and "opus-tools" in msg


@pytest.mark.parametrize("with_opus", [True, False])
def test_compare_cli_writes_json_and_png(tmp_path, with_opus):
    if with_opus and missing_opus():
        pytest.skip("opus-tools not installed")
    torch.manual_seed(0)
    ckpt = save_codec(tmp_path / "ckpt", Codec(get_config("tiny")).eval())
    meta = {"source": "a.wav", "offset": 0, "gain_db": 0.0, "sample_rate": 16000, "split": "val"}
    with ShardWriter(tmp_path / "out" / "shards" / "val-000000.tar") as w:
        for i in range(2):
            w.write(f"f{i}-00000", _speech(1.0, i), [[0, 12000]], meta)
    # A stale shard of an earlier run, not in index.json: compare must not read it.
    with ShardWriter(tmp_path / "out" / "shards" / "val-000099.tar") as stale:
        stale.write("old-00000", _speech(1.0, 9), [[0, 16000]], meta)
    shards.write_index(tmp_path / "out", {"shards": [{**w.info.to_dict(), "split": "val"}]})
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if not with_opus:
        env["PATH"] = "/nonexistent"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "telucodec",
            "compare",
            "--checkpoint",
            str(ckpt),
            "--data-dir",
            str(tmp_path / "out"),
            "--kbps",
            "6",
            "--out",
            str(tmp_path / "cmp"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert ("opus" in report["codecs"]) == with_opus
    assert report["codecs"]["telucodec"]["6"]["items"] == 2  # the stale shard's item: not read
    assert (tmp_path / "cmp" / "compare.png").stat().st_size > 5000
    if not with_opus:
        assert "opus-tools" in proc.stderr
