"""`--vad silero`: Silero VAD's ONNX model as a second opinion on speech activity (issue 24).

Real speech comes from the cache tests/e2e/test_noisy_speech.py fills (pyannote.audio's
sample.wav and its RTTM annotation, CMU ARCTIC a0007 from pysptk); those tests skip when
the package index cannot be reached.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import soundfile as sf

from preprocess import run
from preprocess.config import ConfigError, PreprocessConfig
from preprocess.measure import silero_vad
from preprocess.measure.policy import decide, decide_measured
from preprocess.measure.scan import analyze_file
from preprocess.measure.silero_vad import FRAME, SileroUnavailable, silero_speech, speech_regions
from preprocess.measure.spool import SampleSpool
from tests.conftest import REPO
from tests.e2e.test_noisy_speech import CACHE, SOURCES, _member
from tests.unit.test_policy import measured as policy_measured

SR = 16000
if (
    importlib.util.find_spec("silero_vad") is None
    or importlib.util.find_spec("onnxruntime") is None
):
    pytest.skip("needs the silero-vad wheel and onnxruntime", allow_module_level=True)


def conversation() -> tuple[np.ndarray, float]:
    """pyannote.audio's 30 s two-talker sample (16 kHz) and its annotated speech seconds
    (the union of the turns in sample.rttm: 22.46 s)."""
    wav = _member(*SOURCES["pyannote"])
    with zipfile.ZipFile(CACHE / SOURCES["pyannote"][1]) as z:
        rttm = z.read("pyannote/audio/sample/sample.rttm").decode()
    turns = sorted(
        (float(f[3]), float(f[3]) + float(f[4])) for f in map(str.split, rttm.splitlines())
    )
    union, end = 0.0, 0.0
    for a, b in turns:
        union += max(0.0, b - max(a, end))
        end = max(end, b)
    x, rate = sf.read(wav, dtype="float32")
    assert rate == SR
    return x, union


def arctic() -> np.ndarray:
    x, rate = sf.read(_member(*SOURCES["arctic"]), dtype="float32")
    assert rate == SR
    return x


def bursts(seconds: float = 10.0, seed: int = 0) -> np.ndarray:
    """White noise switched on and off every 0.5 s: energy that comes and goes like speech
    (our detector calls half of it active), but no voice in it."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    gate = np.floor(t * 2) % 2 == 0
    x = 0.1 * rng.standard_normal(t.size) * gate + 0.001 * rng.standard_normal(t.size)
    return x.astype(np.float32)


# ------------------------------------------------------------------------- the model


def test_speech_seconds_of_a_real_conversation_match_its_annotation():
    x, annotated = conversation()
    assert annotated == pytest.approx(22.46, abs=0.01)
    assert silero_speech(x).seconds == pytest.approx(annotated, abs=1.0)


def test_silence_and_noise_around_speech_add_no_speech_seconds():
    speech = arctic()
    alone = silero_speech(speech).seconds
    rng = np.random.default_rng(1)
    quiet, noise = np.zeros(3 * SR), 0.01 * rng.standard_normal(3 * SR)
    assert 2.5 < alone < 4.0  # a 4 s recording with short pauses at both ends
    for pad in (quiet, noise):
        padded = np.concatenate([pad, speech, pad]).astype(np.float32)
        assert silero_speech(padded).seconds == pytest.approx(alone, abs=0.25)


@pytest.mark.parametrize("level", [0.01, 0.05, 0.3])
def test_white_noise_alone_has_almost_no_speech(level):
    x = (level * np.random.default_rng(2).standard_normal(10 * SR)).astype(np.float32)
    assert silero_speech(x).seconds < 0.3


def test_noise_bursts_are_not_speech():
    assert silero_speech(bursts()).seconds < 0.3


def test_digital_silence_and_an_empty_signal_have_no_speech():
    assert silero_speech(np.zeros(5 * SR, np.float32)).seconds == 0.0
    empty = silero_speech(np.zeros(0, np.float32))
    assert empty.seconds == 0.0 and empty.regions.shape == (0, 2)


def test_the_batched_model_gives_the_streaming_models_probabilities():
    """The wheel's silero_vad.onnx, one 32 ms frame per call with its state carried (what
    the wheel's OnnxWrapper does), against the sequence export we run."""
    import onnxruntime as ort

    x, _ = conversation()
    x = x[: 10 * SR + 300]  # a partial last frame, zero-padded by both
    path = silero_vad.model_path(silero_vad.STREAMING_MODEL)
    streaming = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    padded = np.zeros(64 + -(-x.size // FRAME) * FRAME, np.float32)
    padded[64 : 64 + x.size] = x
    state, rate, expected = np.zeros((2, 1, 128), np.float32), np.array(SR, np.int64), []
    for i in range(0, padded.size - 64, FRAME):
        chunk = padded[i : i + FRAME + 64].reshape(1, -1)
        out, state = streaming.run(None, {"input": chunk, "state": state, "sr": rate})
        expected.append(out[0, 0])
    np.testing.assert_allclose(silero_speech(x).probabilities, expected, atol=1e-6)


def test_reading_in_blocks_gives_the_same_probabilities_as_one_block(monkeypatch, tmp_path):
    x = arctic()
    whole = silero_speech(x).probabilities
    monkeypatch.setattr(silero_vad, "BLOCK_FRAMES", 7)
    with SampleSpool(tmp_path, max_memory_samples=1000) as spool:  # spilled to disk
        spool.append(x)
        blocks = silero_speech(spool).probabilities
    np.testing.assert_array_equal(blocks, whole)


# ---------------------------------------------------------------------- the hysteresis


def frames(*runs: tuple[float, int]) -> np.ndarray:
    return np.concatenate([np.full(n, p, np.float32) for p, n in runs])


def test_a_short_dip_stays_inside_speech_and_one_lasting_over_100_ms_ends_it():
    # Speech ends at a frame under 0.35 that starts ≥ 100 ms after the dip began: the 5th
    # (128 ms); 4 frames under it (the last starting 96 ms in) stay inside the speech.
    p = frames((0.9, 20), (0.1, 4), (0.9, 20))
    assert speech_regions(p, p.size * FRAME).tolist() == [[0, 44 * FRAME]]
    p = frames((0.9, 20), (0.1, 5), (0.9, 20))
    expected = [[0, 20 * FRAME], [25 * FRAME, 45 * FRAME]]
    assert speech_regions(p, p.size * FRAME).tolist() == expected


def test_a_probability_between_the_two_thresholds_keeps_speech_on_but_never_starts_it():
    p = frames((0.4, 10), (0.9, 10), (0.4, 30), (0.1, 10))
    assert speech_regions(p, p.size * FRAME).tolist() == [[10 * FRAME, 50 * FRAME]]


def test_speech_of_250_ms_or_less_is_dropped():
    # 7 frames = 224 ms (dropped), 8 frames = 256 ms (kept), as Silero's min_speech_duration_ms.
    p = frames((0.9, 7), (0.0, 10), (0.9, 8), (0.0, 10))
    assert speech_regions(p, p.size * FRAME).tolist() == [[17 * FRAME, 25 * FRAME]]


def test_speech_still_on_at_the_end_runs_to_the_last_sample():
    p = frames((0.0, 5), (0.9, 20))
    assert speech_regions(p, p.size * FRAME - 100).tolist() == [[5 * FRAME, 25 * FRAME - 100]]


def test_regions_are_those_of_silero_own_timestamps_without_padding():
    """Our hysteresis against the wheel's own (which imports torch, so only here): on the
    real conversation and on random probability tracks of every shape."""
    from silero_vad.utils_vad import get_speech_timestamps_from_probs

    x, _ = conversation()
    rng = np.random.default_rng(3)
    tracks = [(silero_speech(x).probabilities, x.size)]
    for _ in range(100):
        n = int(rng.integers(1, 400))
        level = np.repeat(rng.random(n // 8 + 1), 8)[:n]
        p = np.clip(level + 0.3 * rng.standard_normal(n), 0.0, 1.0).astype(np.float32)
        tracks.append((p, n * FRAME - int(rng.integers(0, FRAME))))
    for probs, n_samples in tracks:
        theirs = get_speech_timestamps_from_probs(
            probs.tolist(), speech_pad_ms=0, audio_length_samples=n_samples
        )
        expected = [[t["start"], t["end"]] for t in theirs]
        assert speech_regions(probs, n_samples).tolist() == expected


# --------------------------------------------------------- config, CLI and start-up


def test_an_unknown_vad_is_refused_naming_the_choices():
    with pytest.raises(ConfigError, match=r"^config key vad = 'webrtc': expected one of") as err:
        PreprocessConfig(vad="webrtc")
    assert "'ours'" in str(err.value) and "'silero'" in str(err.value)


def test_the_cli_refuses_an_unknown_vad(capsys):
    with pytest.raises(SystemExit) as exit_:
        run.build_parser().parse_args(["--input", "i", "--output", "o", "--vad", "webrtc"])
    assert exit_.value.code == 2
    assert "invalid choice: 'webrtc'" in capsys.readouterr().err


def test_vad_is_part_of_the_config_digest():
    assert PreprocessConfig(vad="silero").digest() != PreprocessConfig().digest()
    assert PreprocessConfig.from_dict(PreprocessConfig(vad="silero").to_dict()).vad == "silero"


def test_a_missing_model_is_refused_at_start_in_one_line_saying_what_to_install(
    tmp_path, capsys, monkeypatch
):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "silero_vad" else find_spec(name, *a),
    )
    with pytest.raises(SileroUnavailable, match="pip install silero-vad"):
        silero_vad.require_silero()
    (tmp_path / "in").mkdir()
    out = tmp_path / "out"
    assert run.main(["--input", str(tmp_path / "in"), "--output", str(out), "--vad", "silero"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("preprocess: error: vad=silero needs the silero-vad wheel (pip install")
    assert err.count("\n") == 1 and not out.exists()


def test_diagnose_refuses_vad_silero_without_the_model_before_scanning(
    tmp_path, capsys, monkeypatch
):
    from preprocess.diagnose import cli as diagnose

    monkeypatch.chdir(tmp_path)  # where a raw corpus's scan dir goes by default
    monkeypatch.setattr(silero_vad, "INSTALL", "the install hint")
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "silero_vad" else find_spec(name, *a),
    )
    (tmp_path / "corpus").mkdir()
    config = tmp_path / "c.toml"
    config.write_text('vad = "silero"\n')
    assert diagnose.main([str(tmp_path / "corpus"), "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err == "preprocess: error: vad=silero needs the silero-vad wheel (the install hint)\n"
    assert not (tmp_path / "corpus.diagnose").exists()


def test_a_what_if_cannot_switch_the_vad_without_a_rescan():
    from preprocess.diagnose.whatif import parse_what_if

    with pytest.raises(ValueError, match="what-if key 'vad' changes what was measured"):
        parse_what_if("vad=silero", PreprocessConfig())


def in_a_fresh_interpreter(code: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


def test_the_vad_runs_without_importing_torch_or_the_silero_vad_package():
    loaded = in_a_fresh_interpreter(
        "import json, sys, numpy as np\n"
        "from preprocess.measure.silero_vad import silero_speech\n"
        "x = (0.05 * np.random.default_rng(0).standard_normal(48000)).astype(np.float32)\n"
        "print(silero_speech(x).seconds, file=sys.stderr)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    assert "onnxruntime" in loaded
    assert not {m for m in loaded if m.split(".")[0] in ("torch", "silero_vad")}


def test_the_default_scan_never_loads_onnxruntime(tmp_path):
    path = tmp_path / "speech.wav"
    sf.write(path, arctic(), SR, subtype="PCM_16")
    loaded = in_a_fresh_interpreter(
        "import json, sys\n"
        "from preprocess.config import PreprocessConfig\n"
        "from preprocess.measure.scan import analyze_file\n"
        "from preprocess.measure.spool import SampleSpool\n"
        f"with SampleSpool({str(tmp_path)!r}) as spool:\n"
        f"    a = analyze_file({str(path)!r}, PreprocessConfig(), spool)\n"
        "assert a.silero_speech_seconds is None and a.active_seconds > 1\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    assert "onnxruntime" not in loaded


# ------------------------------------------------------------------------ the policy


def measured(active_seconds: float, silero_seconds: float | None, seconds: float = 10.0):
    return policy_measured(seconds, active_seconds, silero_speech_seconds=silero_seconds)


@pytest.mark.parametrize(
    ("silero_seconds", "reason"),
    [(0.0, "no_speech"), (0.5, "short"), (1.5, "mostly_silent"), (6.0, "ok")],
)
def test_with_vad_silero_the_speech_rules_read_silero_seconds(silero_seconds, reason):
    ours = decide_measured(measured(6.0, silero_seconds), PreprocessConfig())
    silero = decide_measured(measured(6.0, silero_seconds), PreprocessConfig(vad="silero"))
    assert ours.reason == "ok"
    assert silero.reason == reason
    if reason != "ok":
        assert silero.detail.endswith("(Silero VAD)")


def test_with_vad_silero_a_file_our_detector_misses_is_kept():
    decision = decide_measured(measured(0.0, 6.0), PreprocessConfig(vad="silero"))
    assert (decision.kept, decision.reason) == (True, "ok")


def test_silero_fraction_is_of_the_decoded_length_in_a_scan_and_in_a_record_alike():
    """A header that claims more than decodes (an MP3 Xing estimate, a cut stream): the
    scan's decision and a what-if replaying files.jsonl (whose `seconds` is the decoded
    length) must agree, so the fraction is of what decoded, not of the header's claim."""
    cfg = PreprocessConfig(vad="silero")
    from_scan = dataclasses.replace(measured(4.0, 4.0, seconds=40.0), decoded_seconds=10.0)
    from_record = measured(4.0, 4.0, seconds=10.0)  # a record's seconds: what decoded
    assert decide_measured(from_scan, cfg).reason == decide_measured(from_record, cfg).reason
    assert decide_measured(from_scan, cfg).reason == "ok"  # 40 %, not 10 % of the claim


def test_a_file_too_short_in_length_stays_short_whatever_silero_says():
    decision = decide_measured(measured(0.5, 0.5, seconds=0.6), PreprocessConfig(vad="silero"))
    assert decision.reason == "short" and "long" in decision.detail


def test_scanning_with_vad_silero_rejects_noise_bursts_our_detector_keeps(tmp_path):
    path = tmp_path / "bursts.wav"
    sf.write(path, bursts(), SR, subtype="PCM_16")
    outcomes = {}
    for vad in ("ours", "silero"):
        cfg = PreprocessConfig(vad=vad)
        with SampleSpool(tmp_path) as spool:
            a = analyze_file(path, cfg, spool)
        outcomes[vad] = (decide(a, cfg, True).reason, a.active_seconds, a.silero_speech_seconds)
    assert outcomes["ours"][0] == "ok" and outcomes["ours"][2] is None
    reason, active_seconds, silero_seconds = outcomes["silero"]
    assert reason == "no_speech" and silero_seconds < 0.3
    assert active_seconds == outcomes["ours"][1]  # our figure is still measured and recorded


def test_scanning_real_speech_with_vad_silero_keeps_it_and_records_both_figures(tmp_path):
    path = tmp_path / "speech.wav"
    sf.write(path, arctic(), SR, subtype="PCM_16")
    cfg = PreprocessConfig(vad="silero")
    with SampleSpool(tmp_path) as spool:
        a = analyze_file(path, cfg, spool)
    assert decide(a, cfg, True).kept
    assert a.silero_speech_seconds == pytest.approx(silero_speech(arctic()).seconds, abs=0.05)
    assert a.active_seconds > 1.0
