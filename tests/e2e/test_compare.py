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
import soundfile as sf
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
    meta["samples"] = 16000  # format 2: utterances of 1 s, 0.75 s of it real
    with ShardWriter(tmp_path / "out" / "shards" / "val-000000.tar") as w:
        for i in range(2):
            w.write(f"f{i}-00000", _speech(1.0, i), [[0, 12000]], meta)
    # A stale shard of an earlier run, not in index.json: compare must not read it.
    with ShardWriter(tmp_path / "out" / "shards" / "val-000099.tar") as stale:
        stale.write("old-00000", _speech(1.0, 9), [[0, 16000]], meta)
    listed = [{**w.info.to_dict(), "split": "val"}]
    shards.write_index(tmp_path / "out", {"shards": listed, "utterance_max_samples": 320000})
    row = {"shard": "val-000000.tar", "split": "val", "samples": 16000, "seconds": 1.0}
    row |= {"valid_seconds": 0.75, "source": "a.wav", "offset": 0}
    shards.write_manifest(tmp_path / "out", [{**row, "key": f"f{i}-00000"} for i in range(2)])
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


# ------------------------------------------------------------ a folder of recordings: --audio


def _telucodec_compare(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "telucodec", "compare", *args],
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_audio_folder_is_scored_per_file_and_unusable_files_are_skipped_by_reason(tmp_path):
    """Real recordings in any format and rate: the two usable files are scored (chunked),
    the corrupt, too short and silent ones skipped and counted by reason, the .txt ignored."""
    torch.manual_seed(0)
    ckpt = save_codec(tmp_path / "ckpt", Codec(get_config("tiny")).eval())
    rec = tmp_path / "recordings"
    (rec / "b").mkdir(parents=True)
    at_48k = np.interp(np.arange(120000) / 3, np.arange(40000), _speech(2.5, 0))
    sf.write(rec / "a.wav", np.stack([at_48k, 0.5 * at_48k], 1), 48000)  # 2.5 s stereo
    at_22k = np.interp(np.arange(33075) * 16000 / 22050, np.arange(24000), _speech(1.5, 1))
    sf.write(rec / "b" / "c.flac", at_22k, 22050)  # 1.5 s, in a subfolder
    (rec / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt this is no audio")
    sf.write(rec / "blip.wav", _speech(0.1, 2), 16000)
    sf.write(rec / "b" / "silence.wav", np.zeros(16000, np.float32), 16000)
    (rec / "notes.txt").write_text("not audio, not counted")
    with_opus = missing_opus() is None
    env = {} if with_opus else {"PATH": "/nonexistent"}
    common = ["--checkpoint", str(ckpt), "--audio", str(rec), "--kbps", "6"]
    proc = _telucodec_compare(
        *common, "--chunk-seconds", "1", "--out", str(tmp_path / "cmp"), env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert "skipped 3 of 5 files: 1 silent, 1 too short, 1 unreadable" in proc.stderr
    assert "scored 2 of 5 audio files at -23 LUFS, as 3 items" in proc.stdout
    report = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert (report["files"], report["files_scored"], report["skipped_files"]) == (5, 2, 3)
    assert report["skipped"] == {
        "silent": ["b/silence.wav"],
        "too_short": ["blip.wav"],
        "unreadable": ["corrupt.wav"],
    }
    # Sorted by relative path; 2.5 s at 1 s chunks: 1 s + 1.5 s (the 0.5 s tail joins in).
    assert [(f["path"], f["items"]) for f in report["scored"]] == [("a.wav", 2), ("b/c.flac", 1)]
    assert report["items_scored"] == 3 and report["normalized_to_lufs"] == -23.0
    assert report["codecs"]["telucodec"]["6"]["items"] == 3
    assert ("opus" in report["codecs"]) == with_opus
    if with_opus:
        assert report["codecs"]["opus"]["6"]["items"] == 3
    assert (tmp_path / "cmp" / "compare.png").stat().st_size > 5000


def test_chunks_are_consecutive_and_a_short_last_piece_joins_the_one_before():
    from telucodec_cli.audio_files import chunk_bounds

    assert chunk_bounds(25_000, 1000, 10) == [(0, 10_000), (10_000, 20_000), (20_000, 25_000)]
    assert chunk_bounds(20_500, 1000, 10) == [(0, 10_000), (10_000, 20_500)]  # 0.5 s tail
    assert chunk_bounds(700, 1000, 10) == [(0, 700)]  # one short file stays one item
    assert chunk_bounds(10_000, 1000, 10) == [(0, 10_000)]


def test_recordings_are_listed_recursively_in_path_order_and_other_files_left_out(tmp_path):
    from telucodec_cli.audio_files import list_recordings

    for name in ("z.wav", "a/b.FLAC", "a/notes.txt", "m.m4a", "a/c/d.ogg", "readme"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    found = [p.relative_to(tmp_path).as_posix() for p in list_recordings(tmp_path)]
    # .m4a is audio libsndfile cannot decode: listed, so it is counted as skipped.
    assert found == ["a/b.FLAC", "a/c/d.ogg", "m.m4a", "z.wav"]


def test_a_recording_is_brought_to_the_corpus_level_or_skipped_with_a_reason(tmp_path):
    from preprocess.measure.loudness import integrated_loudness
    from telucodec_cli.audio_files import SkipFile, load_recording

    quiet = 0.05 * _speech(2.0, 3)
    sf.write(tmp_path / "quiet.wav", quiet, 16000, subtype="FLOAT")
    audio, lufs = load_recording(tmp_path / "quiet.wav", 16000, normalize=True)
    assert lufs < -40 and integrated_loudness(audio, 16000) == pytest.approx(-23.0, abs=0.05)
    as_is, _ = load_recording(tmp_path / "quiet.wav", 16000, normalize=False)
    assert np.array_equal(as_is, quiet)
    # 0.3 s has no 400 ms gating block: too short to normalize, scored as is without.
    sf.write(tmp_path / "short.wav", _speech(0.3, 4), 16000, subtype="FLOAT")
    with pytest.raises(SkipFile, match="too_short"):
        load_recording(tmp_path / "short.wav", 16000, normalize=True)
    assert load_recording(tmp_path / "short.wav", 16000, normalize=False)[1] is None
    bad = {
        "empty": np.zeros(0, np.float32),
        "nonfinite": np.full(8000, np.nan, np.float32),
        "silent": np.zeros(8000, np.float32),
    }
    for reason, samples in bad.items():
        sf.write(tmp_path / f"{reason}.wav", samples, 16000, subtype="FLOAT")
        with pytest.raises(SkipFile, match=reason):
            load_recording(tmp_path / f"{reason}.wav", 16000, normalize=False)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], "one of the arguments --data-dir/--data/--data_dir --audio is required"),
        (["--audio", "A", "--data-dir", "B"], "not allowed with argument"),
        (["--data-dir", "B", "--no-normalize"], "apply to --audio only"),
        (["--audio", "A", "--max-items", "2"], "apply to --data-dir only"),
        (["--audio", "A", "--chunk-seconds", "0.5"], "--chunk-seconds must be >= 1"),
        (["--audio", ""], "--audio needs a folder"),  # not the working directory by accident
    ],
)
def test_compare_takes_exactly_one_source_and_refuses_the_others_flags(argv, expected, capsys):
    from telucodec_cli.main import parse_args

    with pytest.raises(SystemExit) as exc:
        parse_args(["compare", "--checkpoint", "C", *argv])
    assert exc.value.code == 2
    assert expected in capsys.readouterr().err


def test_a_folder_without_audio_is_one_line_exit_2_before_the_model_loads(tmp_path, capsys):
    from telucodec_cli.main import main

    (tmp_path / "notes.txt").write_text("no audio here")
    missing_checkpoint = tmp_path / "no-checkpoint"  # never read: the folder is refused first
    assert main(["compare", "--checkpoint", str(missing_checkpoint), "--audio", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"telucodec compare: error: --audio {tmp_path}: no audio files (by extension: "
                   ".wav, .flac, …)"]  # fmt: skip
