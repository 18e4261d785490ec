"""`python -m preprocess.run --vad silero` end to end: Silero decides the speech amount,
both figures land in files.jsonl and stats.zarr, and the config says which VAD ran."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import soundfile as sf
import zarr

from preprocess.config import PreprocessConfig
from tests.conftest import preprocess
from tests.e2e.test_noisy_speech import NOISES, decide_file, mix, noise, real_speech
from tests.unit.test_silero_vad import SR, arctic, bursts, conversation

if (
    importlib.util.find_spec("silero_vad") is None
    or importlib.util.find_spec("onnxruntime") is None
):
    pytest.skip("needs the silero-vad wheel and onnxruntime", allow_module_level=True)


def test_run_with_vad_silero_rejects_noise_bursts_and_records_both_figures(tmp_path):
    corpus = tmp_path / "corpus"
    x, _ = conversation()
    files = {
        "spk_a/arctic.wav": arctic(),
        "spk_b/conversation.wav": x[6 * SR : 18 * SR],
        "spk_c/bursts.wav": bursts(),
    }
    for rel, audio in files.items():
        (corpus / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(corpus / rel, audio, SR, subtype="PCM_16")
    config = tmp_path / "c.toml"
    config.write_text("[preprocess]\nval_fraction = 0.0\n")
    out = tmp_path / "out"
    preprocess(corpus, out, "--workers", "1", "--vad", "silero", "--config", str(config))

    lines = (out / "files.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    by_path = {r["path"]: r for r in records}
    bursts_rec = by_path["spk_c/bursts.wav"]
    assert (bursts_rec["reason"], bursts_rec["silero_speech_seconds"]) == ("no_speech", 0.0)
    assert bursts_rec["detail"].endswith("(Silero VAD)")
    assert bursts_rec["active_seconds"] > 3.0  # ours calls half of it active: still recorded
    for rel in ("spk_a/arctic.wav", "spk_b/conversation.wav"):
        assert by_path[rel]["status"] == "kept", by_path[rel]
        assert by_path[rel]["silero_speech_seconds"] > 2.5

    index = json.loads((out / "index.json").read_text(encoding="utf-8"))
    assert index["config"]["vad"] == "silero"
    column = zarr.open_group(str(out / "stats.zarr"), mode="r")["files/silero_speech_seconds"][:]
    assert np.allclose(column, [r["silero_speech_seconds"] for r in records])


def test_silero_keeps_real_speech_over_any_noise_at_0_db_and_rejects_noise_alone(tmp_path):
    """The mixes of tests/e2e/test_noisy_speech.py at their hardest: our detector loses
    pink noise at 0 dB (`mostly_silent`), Silero keeps all 25; noise alone stays out."""
    cfg = PreprocessConfig(vad="silero")
    path = tmp_path / "mix.wav"
    lost = []
    for name in real_speech():
        for kind in NOISES:
            sf.write(path, mix(name, kind, 0.0).audio, SR, subtype="PCM_16")
            decision, _ = decide_file(path, cfg, tmp_path)
            if not decision.kept:
                lost.append((name, kind, decision.reason))
    assert not lost
    for kind in ("white", "pink", "brown", "hum"):
        sf.write(path, (0.1 * noise(kind, 10 * SR, 11)).astype(np.float32), SR, subtype="PCM_16")
        decision, a = decide_file(path, cfg, tmp_path)
        assert decision.reason == "no_speech" and a.silero_speech_seconds < 0.3, kind
