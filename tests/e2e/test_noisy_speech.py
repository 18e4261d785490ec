"""Decisions on real speech recorded over noise: noisy speech is speech (issue 24).

Real recordings (not synthetic, never seen by the project) come from files that PyPI
packages ship, fetched with `pip download --no-deps` into a cache at test time (skipped
with the reason when the index cannot be reached):

- `pysptk` 1.0.1 sdist: CMU ARCTIC utterance a0007 (one male talker, 16 kHz);
- `pyannote.audio` 4.0.7 wheel: sample.wav, two talkers in conversation, whose speech
  part (6.6–30 s, per its sample.rttm) is cut into four items.

Each item is mixed with white, pink and brown noise, babble (time-shifted speech of the
other items, four talkers) and 50 Hz mains hum at 0–30 dB SNR: active-speech power (ITU-T
P.56 style: over the clean item's active frames) over noise power, full band. Pink and
brown noise are shaped from 20 Hz, like an audio test generator (a 1/f spectrum down to
0.1 Hz would put most of its power in infrasound that no microphone records).
"""

from __future__ import annotations

import functools
import math
import os
import struct
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from preprocess.config import PreprocessConfig
from preprocess.measure import kernels
from preprocess.measure.policy import Decision, decide, reject
from preprocess.measure.scan import FileAnalysis, analyze_file
from preprocess.measure.spool import SampleSpool
from preprocess.measure.utterances import plan_utterances

SR = 16000
CACHE = Path(os.environ.get("TELUCODEC_SPEECH_CACHE", Path.home() / ".cache/telucodec/speech"))
SOURCES = {  # name → (pip spec, archive, member)
    "arctic": (
        "pysptk==1.0.1",
        "pysptk-1.0.1.tar.gz",
        "pysptk-1.0.1/pysptk/example_audio_data/arctic_a0007.wav",
    ),
    "pyannote": (
        "pyannote.audio==4.0.7",
        "pyannote_audio-4.0.7-py3-none-any.whl",
        "pyannote/audio/sample/sample.wav",
    ),
}
PYANNOTE_SPEECH = (6.6, 30.0)  # seconds: first and last speech in the shipped sample.rttm
PYANNOTE_ITEMS = 4
SNRS_DB = (0, 5, 10, 15, 20, 30)
NOISES = ("white", "pink", "brown", "babble", "hum")
# What a listener would call speech problems (the file has none): never the reason for a
# file of plain speech over noise at ≥ 5 dB SNR.
SILENCE_REASONS = {"no_speech", "mostly_silent", "short", "silent"}


def _member(spec: str, archive: str, member: str) -> Path:
    """`member` of a PyPI archive, downloaded once into CACHE; skips when offline."""
    out = CACHE / "extracted" / member
    if out.is_file():
        return out
    CACHE.mkdir(parents=True, exist_ok=True)
    if not (CACHE / archive).is_file():
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(CACHE), spec]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if done.returncode or not (CACHE / archive).is_file():
            pytest.skip(f"real speech needs `pip download {spec}` (no package index?)")
    out.parent.mkdir(parents=True, exist_ok=True)
    if archive.endswith(".whl"):
        with zipfile.ZipFile(CACHE / archive) as z:
            data = z.read(member)
    else:
        with tarfile.open(CACHE / archive) as t:
            data = t.extractfile(member).read()
    tmp = out.with_suffix(".part")
    tmp.write_bytes(data)
    tmp.replace(out)
    return out


def _read_16k(path: Path) -> np.ndarray:
    x, rate = sf.read(path, dtype="float64", always_2d=True)
    x = x.mean(axis=1)
    return soxr.resample(x, rate, SR, quality="HQ") if rate != SR else x


@functools.cache
def real_speech() -> dict[str, np.ndarray]:
    """name → float64 16 kHz mono recording of speech, DC removed (5 items, 3–6 s each)."""
    items = {"arctic_a0007": _read_16k(_member(*SOURCES["arctic"]))}
    conv = _read_16k(_member(*SOURCES["pyannote"]))
    lo, hi = (int(s * SR) for s in PYANNOTE_SPEECH)
    for i, part in enumerate(np.array_split(conv[lo:hi], PYANNOTE_ITEMS)):
        items[f"pyannote_{i}"] = part
    return {k: v - v.mean() for k, v in items.items()}


def _band_power_frames(x: np.ndarray, highpass: bool) -> np.ndarray:
    if highpass:
        x = kernels.HighPass(SR).process(x.astype(np.float32)).astype(np.float64)
    n = x.size // 320 * 320
    return (x[:n].reshape(-1, 320) ** 2).mean(axis=1)


def active_mask(clean: np.ndarray) -> np.ndarray:
    """P.56-style activity of a clean recording: frames within 30 dB of its loudest
    (smoothed) frames and above its own floor, as the reference the mix is scaled on."""
    p = _band_power_frames(clean, highpass=True)
    db = 10 * np.log10(np.maximum(p, 1e-20))
    return db > max(np.percentile(db, 95) - 30.0, np.percentile(db, 5) + 15.0)


def active_power(clean: np.ndarray) -> float:
    """Mean power of the clean item over its active frames (full band)."""
    p = _band_power_frames(clean, highpass=False)
    return float(p[active_mask(clean)].mean())


def _shaped_noise(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Gaussian noise with power ∝ 1/f^exponent from 20 Hz up, nothing below; RMS 1."""
    m = n + (n & 1)
    spec = np.fft.rfft(rng.standard_normal(m))
    f = np.fft.rfftfreq(m, 1.0 / SR)
    spec *= np.where(f >= 20.0, np.maximum(f, 20.0) ** (-exponent / 2.0), 0.0)
    x = np.fft.irfft(spec, m)[:n]
    return x / np.sqrt(np.mean(x**2))


def _babble(target: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Four talkers: the other items at equal active power, each tiled from a random phase."""
    others = [v for k, v in real_speech().items() if k != target]
    out = np.zeros(n)
    for k in range(4):
        v = others[k % len(others)]
        v = v / math.sqrt(active_power(v))
        tiled = np.tile(v, n // v.size + 2)
        start = int(rng.integers(0, v.size))
        out += tiled[start : start + n]
    return out / np.sqrt(np.mean(out**2))


def _hum(n: int, rng: np.random.Generator) -> np.ndarray:
    """50 Hz mains hum with its odd harmonics (a transformer's buzz), RMS 1."""
    t = np.arange(n) / SR
    phase = rng.uniform(0, 2 * np.pi, 4)
    x = sum(
        a * np.sin(2 * np.pi * f * t + p)
        for a, f, p in zip((1, 0.3, 0.15, 0.08), (50, 150, 250, 350), phase, strict=True)
    )
    return x / np.sqrt(np.mean(x**2))


def noise(kind: str, n: int, seed: int, target: str = "") -> np.ndarray:
    """float64[n] noise of RMS 1 of one of NOISES."""
    rng = np.random.default_rng(seed)
    if kind == "babble":
        return _babble(target, n, rng)
    if kind == "hum":
        return _hum(n, rng)
    return _shaped_noise(rng, n, {"white": 0.0, "pink": 1.0, "brown": 2.0}[kind])


@dataclass(frozen=True)
class Mix:
    name: str
    kind: str
    snr_db: float  # as mixed: full band
    band_snr_db: float  # the same mix above 80 Hz, the band `snr_db` estimates
    audio: np.ndarray  # float32, peak 0.5


def mix(name: str, kind: str, snr_db: float, seed: int = 0) -> Mix:
    """Real speech item `name` plus `kind` noise at `snr_db` (active speech over noise)."""
    clean = real_speech()[name]
    # One second of noise alone on each side: a recording starts before the talker does.
    pad = np.zeros(SR)
    clean = np.concatenate([pad, clean, pad])
    n = noise(kind, clean.size, seed * 7919 + sum(map(ord, name + kind)), name)
    gain = math.sqrt(active_power(clean) / 10 ** (snr_db / 10))
    n *= gain
    act = active_mask(clean)
    band_speech = _band_power_frames(clean, True)[act].mean()
    band_noise = _band_power_frames(n, True).mean()
    x = clean + n
    scale = 0.5 / np.abs(x).max()
    return Mix(
        name,
        kind,
        snr_db,
        10 * math.log10(band_speech / band_noise),
        (x * scale).astype(np.float32),
    )


def decide_file(path: Path, cfg: PreprocessConfig, tmp: Path) -> tuple[Decision, FileAnalysis]:
    """The default per-file decision of a run (preprocess.actors.unit._process_file)."""
    with SampleSpool(tmp) as spool:
        a = analyze_file(path, cfg, spool)
        d = decide(a, cfg, is_audio_extension=True)
        if d.kept and len(plan_utterances(a, cfg)) == 0:
            d = reject("short", "no utterance reaches min_utterance_seconds after trimming")
    return d, a


def _decide_mix(tmp_path: Path, m: Mix, subtype: str = "PCM_16") -> tuple[Decision, FileAnalysis]:
    path = tmp_path / f"{m.name}_{m.kind}_{m.snr_db:g}.wav"
    sf.write(path, m.audio, SR, subtype=subtype)
    return decide_file(path, PreprocessConfig(), tmp_path)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> list[tuple[Mix, Decision, FileAnalysis]]:
    """Every item × noise × SNR, decided by default (5 × 5 × 6 = 150 files)."""
    tmp = tmp_path_factory.mktemp("noisy")
    out = []
    for name in real_speech():
        for kind in NOISES:
            for snr in SNRS_DB:
                m = mix(name, kind, snr)
                out.append((m, *_decide_mix(tmp, m)))
    rows = ["noise   " + " ".join(f"{s:>5} dB" for s in SNRS_DB)]
    for kind in NOISES:
        cells = []
        for snr in SNRS_DB:
            ds = [d for m, d, _ in out if m.kind == kind and m.snr_db == snr]
            cells.append(f"{sum(d.kept for d in ds):>4}/{len(ds)}")
        rows.append(f"{kind:<7} " + " ".join(cells))
    print("kept by noise and SNR (default config)\n" + "\n".join(rows))
    return out


def test_real_speech_over_noise_at_10_db_or_more_is_kept(mixed):
    at_10 = [(m, d) for m, d, _ in mixed if m.snr_db >= 10]
    kept = sum(d.kept for _, d in at_10)
    lost = [(m.name, m.kind, m.snr_db, d.reason) for m, d in at_10 if not d.kept]
    assert kept >= 0.95 * len(at_10), lost


def test_real_speech_over_noise_at_5_db_is_never_called_silence(mixed):
    """At ≥ 5 dB only a quality threshold may reject it (`noisy`, off by default)."""
    wrong = [
        (m.name, m.kind, m.snr_db, d.reason, d.detail)
        for m, d, _ in mixed
        if m.snr_db >= 5 and d.reason in SILENCE_REASONS
    ]
    assert not wrong


@pytest.mark.parametrize("kind", ["white", "pink", "brown", "hum"])
@pytest.mark.parametrize("seed", range(3))
def test_noise_alone_is_still_rejected(tmp_path, kind, seed):
    x = (0.1 * noise(kind, 10 * SR, seed + 11)).astype(np.float32)
    path = tmp_path / f"{kind}.wav"
    sf.write(path, x, SR, subtype="PCM_16")
    d, a = decide_file(path, PreprocessConfig(), tmp_path)
    assert not d.kept and d.reason in {"no_speech", "short", "mostly_silent"}, (d, a.active_seconds)


# p90 |snr_db − truth| over 5–30 dB: issue 24's target is 4 dB for each. Measured 0.65,
# 1.09 and 3.35 dB (babble was 5.13 dB before the quietest-half-second floor in
# quality.speech_snr_db); the bounds leave a little room above the measurement.
SNR_P90_BOUND_DB = {"white": 1.5, "pink": 2.0, "babble": 4.0}


@pytest.mark.parametrize("kind", sorted(SNR_P90_BOUND_DB))
def test_snr_estimate_error_is_bounded_from_5_to_30_db(mixed, kind):
    errors = np.array(
        [a.snr_db - m.band_snr_db for m, _, a in mixed if m.kind == kind and m.snr_db >= 5]
    )
    p90 = float(np.percentile(np.abs(errors), 90))
    print(f"{kind}: median error {np.median(errors):+.2f} dB, p90 |error| {p90:.2f} dB")
    assert p90 <= SNR_P90_BOUND_DB[kind]


def test_intact_speech_six_lsb_deep_is_quiet_not_no_speech(tmp_path):
    """−74.7 dBFS peak in 16-bit: too few bits deep (docs/CONTRACTS.md `quiet`)."""
    x = real_speech()["pyannote_1"]
    x = x * (6.0 / 32768.0) / np.abs(x).max()
    path = tmp_path / "six_lsb.wav"
    sf.write(path, x.astype(np.float32), SR, subtype="PCM_16")
    d, _ = decide_file(path, PreprocessConfig(), tmp_path)
    assert (d.status, d.reason) == ("rejected", "quiet"), d
    assert "LSB of 16-bit PCM < 16 LSB" in d.detail
    # The same level in 24-bit has 1536 steps: intact, rescued by normalization.
    sf.write(path, x.astype(np.float32), SR, subtype="PCM_24")
    d, _ = decide_file(path, PreprocessConfig(), tmp_path)
    assert (d.status, d.reason) == ("kept", "normalized"), d


def _wav_header(fmt_tag: int, bits: int, frames: int = 1600) -> bytes:
    block = bits // 8
    fmt = struct.pack("<HHIIHH", fmt_tag, 1, SR, SR * block, block, bits)
    data = bytes(frames * block)
    body = b"WAVEfmt " + struct.pack("<I", len(fmt)) + fmt + b"data"
    body += struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def test_wav_in_an_encoding_the_decoder_lacks_is_unsupported_format_not_corrupt(tmp_path):
    from preprocess.pipeline import plan_decision
    from preprocess.plan.planner import InputFile, fingerprint

    path = tmp_path / "int64.wav"
    path.write_bytes(_wav_header(1, 64))  # 64-bit integer PCM: "unimplemented format"
    d, _ = decide_file(path, PreprocessConfig(), tmp_path)
    assert (d.status, d.reason) == ("rejected", "unsupported_format"), d
    assert "convert it first" in d.detail
    rec = fingerprint(tmp_path, ["int64.wav"])[0]
    fields = {k: v for k, v in rec.items() if k in InputFile.__dataclass_fields__}
    assert plan_decision(InputFile(**fields)).reason == "unsupported_format"
    # A damaged header is still corrupt.
    path.write_bytes(_wav_header(1, 16)[:30])
    d, _ = decide_file(path, PreprocessConfig(), tmp_path)
    assert d.reason == "corrupt"
