"""The demo corpus generator: deterministic, complete ground truth, faults as planted."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy import signal

from preprocess.synth.classes import CLASSES
from preprocess.synth.cli import main as synth_main
from preprocess.synth.corpus import config_path, prepare_output
from preprocess.synth.render import encode
from preprocess.synth.spec import CLEAN_FORMATS, CLEAN_SECONDS, SAMPLE_RATES, FileSpec
from preprocess.synth.speech import espeak_available, speech
from preprocess.synth.truth import TRUTH_FIELDS

REPO = Path(__file__).resolve().parents[2]
ARGS = ["--minutes", "1", "--engine", "procedural", "--no-progress"]

# The decision docs/CONTRACTS.md prescribes for each planted class.
EXPECTED = {
    "clean": ("kept", "ok"),
    "short": ("rejected", "short"),
    "quiet_speech": ("kept", "normalized"),
    "dead": ("rejected", "quiet"),
    "mostly_silent": ("rejected", "mostly_silent"),
    "digital_silence": ("rejected", "silent"),
    "noise_only": ("rejected", "no_speech"),
    "clipped": ("rejected", "clipped"),
    "dc_offset": ("kept", "ok"),
    "nonfinite": ("rejected", "nonfinite"),
    "duplicate": ("rejected", "duplicate"),
    "empty": ("rejected", "corrupt"),
    "garbage": ("rejected", "corrupt"),
    "header_only": ("rejected", "corrupt"),
    "truncated": ("rejected", "corrupt"),
    "not_audio": ("rejected", "not_audio"),
}


def read_truth(out: Path) -> list[dict]:
    text = out.with_name(out.name + ".truth.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]


def files_under(out: Path) -> list[str]:
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())


def of_class(truth: list[dict], name: str) -> list[dict]:
    rows = [t for t in truth if t["class"] == name]
    assert rows, f"no {name} file planted"
    return rows


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, list[dict]]:
    """Seed 7, procedural speech, made in-process (the CLI as a subprocess:
    tests/e2e/test_entry_points.py)."""
    out = run_in_process(tmp_path_factory.mktemp("a") / "corpus", 7)
    return out, read_truth(out)


def run_in_process(out: Path, seed: int) -> Path:
    assert synth_main([str(out), "--seed", str(seed), *ARGS]) == 0
    return out


def test_each_fault_class_has_one_registry_entry_with_its_decision_and_renderer():
    assert list(CLASSES) == list(EXPECTED)
    for name, fault in CLASSES.items():
        assert (fault.status, fault.reason) == EXPECTED[name]
        # Only byte copies have no renderer; corpus-level classes have no planner of their own.
        assert (fault.render is None) == (name == "duplicate")
        assert (fault.plan is None) == (name in ("clean", "duplicate", "not_audio"))


def test_same_seed_gives_byte_identical_files_and_truth(corpus, tmp_path):
    out, truth = corpus
    again = run_in_process(tmp_path / "corpus", 7)
    assert files_under(again) == files_under(out)
    for rel in files_under(out):
        assert (again / rel).read_bytes() == (out / rel).read_bytes(), rel
    assert read_truth(again) == truth


def test_different_seed_gives_a_different_corpus(corpus, tmp_path):
    out, truth = corpus
    other = read_truth(run_in_process(tmp_path / "corpus", 8))
    empty = hashlib.sha256(b"").hexdigest()
    shared = {t["sha256"] for t in truth} & {t["sha256"] for t in other} - {empty}
    assert not shared
    assert [t["path"] for t in other] != [t["path"] for t in truth]


def test_truth_lists_every_file_once_sorted_and_nothing_else(corpus):
    out, truth = corpus
    paths = [t["path"] for t in truth]
    assert paths == sorted(paths) == files_under(out)
    assert len(set(paths)) == len(paths)
    assert all(list(t) == list(TRUTH_FIELDS) for t in truth)
    assert not any(p.name.endswith(".truth.jsonl") for p in out.rglob("*"))


def test_truth_sha256_matches_the_file_bytes(corpus):
    out, truth = corpus
    for t in truth:
        assert hashlib.sha256((out / t["path"]).read_bytes()).hexdigest() == t["sha256"]


def test_every_class_is_planted_with_the_contract_decision(corpus):
    _, truth = corpus
    assert {t["class"] for t in truth} == set(EXPECTED)
    for t in truth:
        assert (t["expected_status"], t["expected_reason"]) == EXPECTED[t["class"]], t["path"]
        assert t["speaker"] == (t["path"].split("/")[0] if "/" in t["path"] else None)


def test_clean_speech_is_most_of_the_audio_in_every_format(corpus):
    _, truth = corpus
    clean = of_class(truth, "clean")
    seconds = sum(t["seconds"] for t in clean)
    assert seconds > 0.5 * sum(t["seconds"] or 0 for t in truth)
    assert all(CLEAN_SECONDS[0] <= t["seconds"] <= CLEAN_SECONDS[1] for t in clean)
    assert {(t["format"], t["subtype"]) for t in clean} == set(CLEAN_FORMATS)
    assert {t["sample_rate"] for t in clean} == set(SAMPLE_RATES)
    assert {t["channels"] for t in clean} == {1, 2}


def test_paths_are_nested_non_ascii_spaced_and_mixed_case(corpus):
    _, truth = corpus
    paths = [t["path"] for t in truth]
    assert any(p.count("/") >= 2 for p in paths)
    assert any(not p.isascii() for p in paths)
    assert any(" " in p for p in paths)
    suffixes = {Path(p).suffix for p in paths}
    assert {".WAV", ".Flac"} <= suffixes


def test_declared_audio_properties_match_soundfile(corpus):
    out, truth = corpus
    for t in truth:
        if t["subtype"] is None:
            continue
        info = sf.info(str(out / t["path"]))
        got = (info.samplerate, info.channels, info.format, info.subtype)
        assert got == (t["sample_rate"], t["channels"], t["format"], t["subtype"]), t["path"]
        if t["class"] not in ("truncated", "header_only"):
            assert info.frames == round(t["seconds"] * t["sample_rate"]), t["path"]


def test_speech_classes_are_not_silent(corpus):
    out, truth = corpus
    for t in truth:
        if t["class"] in ("clean", "short", "dc_offset", "clipped"):
            x, _ = sf.read(str(out / t["path"]))
            assert np.max(np.abs(x)) > 0.05, t["path"]


def test_quiet_speech_peaks_near_minus_45_dbfs_in_float(corpus):
    out, truth = corpus
    for t in of_class(truth, "quiet_speech"):
        x, _ = sf.read(str(out / t["path"]), dtype="float32")
        assert t["subtype"] == "FLOAT"
        assert abs(20 * np.log10(np.max(np.abs(x))) + 45.0) < 3.0, t["path"]


def test_dead_files_peak_near_1e_minus_6(corpus):
    out, truth = corpus
    for t in of_class(truth, "dead"):
        x, _ = sf.read(str(out / t["path"]), dtype="float32")
        assert 5e-7 < np.max(np.abs(x)) < 2e-6, t["path"]


def test_digital_silence_is_all_zeros_and_noise_has_no_pauses(corpus):
    out, truth = corpus
    for t in of_class(truth, "digital_silence"):
        x, _ = sf.read(str(out / t["path"]))
        assert x.size > 0 and not np.any(x)
    for t in of_class(truth, "noise_only"):
        db = frame_db(out / t["path"], highpass_hz=100.0)  # as an activity detector sees it
        assert np.percentile(db, 99) - np.percentile(db, 1) < 10.0, t["path"]


def test_clipped_files_have_far_more_than_half_a_percent_clipped(corpus):
    out, truth = corpus
    for t in of_class(truth, "clipped"):
        x, _ = sf.read(str(out / t["path"]))
        assert t["subtype"] == "PCM_16"
        assert np.mean(np.abs(x) >= 0.99) > 0.02, t["path"]


def test_dc_offset_files_sit_on_plus_0_2(corpus):
    out, truth = corpus
    for t in of_class(truth, "dc_offset"):
        x, _ = sf.read(str(out / t["path"]))
        assert abs(float(np.mean(x)) - 0.2) < 0.02 and np.max(np.abs(x)) < 0.99, t["path"]


def test_nonfinite_files_hold_nan_and_inf(corpus):
    out, truth = corpus
    for t in of_class(truth, "nonfinite"):
        x, _ = sf.read(str(out / t["path"]), dtype="float32")
        assert np.isnan(x).any() and np.isinf(x).any(), t["path"]
        assert np.isfinite(x).mean() > 0.99


def test_mostly_silent_files_are_short_speech_then_long_room_tone(corpus):
    out, truth = corpus
    for t in of_class(truth, "mostly_silent"):
        assert t["seconds"] - t["speech_seconds"] >= 10.0 and t["speech_seconds"] >= 1.5
        db = frame_db(out / t["path"])
        loud = db > db.max() - 30.0
        assert loud.mean() < 0.2 and loud.sum() * 0.02 >= 1.0, t["path"]
        assert -75.0 < np.median(db[-100:]) < -65.0  # the tail is near −70 dBFS


def test_duplicates_are_byte_copies_that_sort_after_the_original(corpus):
    out, truth = corpus
    by_path = {t["path"]: t for t in truth}
    for t in of_class(truth, "duplicate"):
        original = by_path[t["duplicate_of"]]
        assert t["path"] > original["path"]
        assert original["class"] == "clean" and original["expected_status"] == "kept"
        assert (out / t["path"]).read_bytes() == (out / original["path"]).read_bytes()
        assert t["sha256"] == original["sha256"]
    # Apart from the planted copies (and empty files), every file's bytes are unique.
    empty = hashlib.sha256(b"").hexdigest()
    shas = [t["sha256"] for t in truth if t["class"] != "duplicate" and t["sha256"] != empty]
    assert len(shas) == len(set(shas))


def test_truncated_files_decode_fewer_frames_than_declared(corpus):
    out, truth = corpus
    assert {t["format"] for t in of_class(truth, "truncated")} == {"WAV", "FLAC"}
    for t in of_class(truth, "truncated"):
        path = out / t["path"]
        data = path.read_bytes()
        declared = round(t["seconds"] * t["sample_rate"])
        if t["format"] == "WAV":
            assert wav_declared_frames(data) == declared
        else:
            assert sf.info(str(path)).frames == declared
        try:
            decoded = sf.read(str(path))[0].shape[0]
        except sf.LibsndfileError:
            continue  # a decoder error is as good: the file is corrupt
        assert decoded < declared, t["path"]


def test_broken_and_non_audio_files_do_not_open(corpus):
    out, truth = corpus
    assert all((out / t["path"]).stat().st_size == 0 for t in of_class(truth, "empty"))
    for t in of_class(truth, "empty") + of_class(truth, "garbage") + of_class(truth, "not_audio"):
        with pytest.raises(sf.LibsndfileError):
            sf.info(str(out / t["path"]))
    for t in of_class(truth, "header_only"):
        assert sf.info(str(out / t["path"])).frames == 0
    names = {Path(t["path"]).name for t in of_class(truth, "not_audio")}
    assert {"README.txt", "transcript.json", "cover.jpg", "metadata.csv"} <= names


def test_libsndfile_clock_bytes_are_rewritten():
    ogg = FileSpec("clean", 0, "OGG", "VORBIS", 16000, 1)
    audio = 0.1 * np.sin(np.arange(16000) / 10.0)[:, None]
    a, b = (encode(audio, ogg, np.random.default_rng(1)) for _ in range(2))
    assert a == b
    assert sf.read(io.BytesIO(a))[0].shape == (16000,)  # the page checksums are valid
    wav = encode(audio, FileSpec("clean", 0, "WAV", "FLOAT", 16000, 1), np.random.default_rng(1))
    peak = wav.index(b"PEAK")
    assert wav[peak + 12 : peak + 16] == b"\0\0\0\0"


def test_refuses_to_write_into_a_non_empty_directory(tmp_path):
    out = tmp_path / "corpus"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    with pytest.raises(SystemExit, match="not empty"):
        synth_main([str(out), *ARGS])
    with pytest.raises(SystemExit, match="not a synth corpus"):
        synth_main([str(out), "--overwrite", *ARGS])
    assert (out / "mine.txt").read_text() == "keep me"
    config_path(out).write_text("{}")  # an earlier synth run: replaceable
    prepare_output(out, overwrite=True)
    assert out.is_dir() and not any(out.iterdir())


def test_procedural_speech_has_syllables_and_pauses():
    x = speech(np.random.default_rng(0), 6.0, 16000, engine="procedural")
    assert x.dtype == np.float32 and x.shape == (96000,)
    assert np.isfinite(x).all() and np.max(np.abs(x)) == pytest.approx(1.0)
    assert_speech_like(x, 16000)
    again = speech(np.random.default_rng(0), 6.0, 16000, engine="procedural")
    assert np.array_equal(x, again)


@pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed")
def test_espeak_speech_is_deterministic_telugu_speech():
    x = speech(np.random.default_rng(3), 4.0, 44100, engine="espeak")
    assert x.dtype == np.float32 and x.shape == (176400,)
    assert_speech_like(x, 44100)
    assert np.array_equal(x, speech(np.random.default_rng(3), 4.0, 44100, engine="espeak"))


def test_forcing_a_missing_espeak_is_an_error(monkeypatch, tmp_path):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(SystemExit, match="espeak"):
        synth_main([str(tmp_path / "c"), "--engine", "espeak"])


def assert_speech_like(x: np.ndarray, sample_rate: int) -> None:
    """Syllables and pauses: frame energies span > 20 dB, mostly in the loud part."""
    db = frame_db_of(x, sample_rate)
    assert np.percentile(db, 95) - np.percentile(db, 5) > 20.0
    assert 0.4 < np.mean(db > np.max(db) - 30.0) < 0.98


def frame_db(path: Path, highpass_hz: float | None = None) -> np.ndarray:
    x, sr = sf.read(str(path), always_2d=True)
    mono = x.mean(axis=1)
    if highpass_hz:
        mono = signal.sosfilt(signal.butter(2, highpass_hz, "highpass", fs=sr, output="sos"), mono)
    return frame_db_of(mono, sr)


def frame_db_of(x: np.ndarray, sample_rate: int) -> np.ndarray:
    """20 ms frame RMS in dBFS."""
    n = sample_rate // 50
    frames = x[: x.size // n * n].reshape(-1, n).astype(np.float64)
    return 10.0 * np.log10(np.mean(frames**2, axis=1) + 1e-20)


def wav_declared_frames(data: bytes) -> int:
    """Frames the RIFF header declares (data chunk size / block align); libsndfile's own
    count is clamped to the bytes present, so a truncated WAV needs the raw header."""
    pos, block_align = 12, 0
    while pos + 8 <= len(data):
        chunk, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        if chunk == b"fmt ":
            block_align = struct.unpack_from("<H", data, pos + 8 + 12)[0]
        if chunk == b"data":
            return size // block_align
        pos += 8 + size + (size & 1)
    raise AssertionError("no data chunk")


def test_header_only_files_never_collide_into_unplanned_duplicates():
    """Seed 1 at 70 minutes once planned two header-only WAVs with the same subtype and
    rate: byte-identical files the truth did not plan, so synthesis failed its own check.
    Every header-only file of any corpus now has its own header."""
    from preprocess.synth.classes import render
    from preprocess.synth.plan import plan_corpus

    for minutes, seed in ((70.0, 1), (60.0, 1), (120.0, 3)):
        specs = [s for s in plan_corpus(minutes, seed) if s.cls == "header_only"]
        blobs = [render(s, np.random.default_rng(0), "procedural") for s in specs]
        assert len(set(blobs)) == len(blobs), (minutes, seed)
