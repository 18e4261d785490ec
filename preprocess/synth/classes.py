"""`python -m preprocess.synth OUT`: a deterministic demo corpus with real-world faults.

A corpus scraped from the web is not a folder of clean WAVs: it holds quiet takes,
numerically dead and digitally silent files, noise, clipping, DC offset, NaN, byte
copies, empty/garbage/truncated/header-only files and plain non-audio, under nested,
non-ASCII, space-containing paths. This command plants each of those faults, in known
proportions, into speech from `preprocess.speech`, and writes the ground truth of what
the pipeline should decide for every file (docs/CONTRACTS.md, "Decision policy") to
`OUT.truth.jsonl` beside the corpus. docs/SYNTH.md describes classes and schema.

Same seed (and engine, and library versions) ⇒ byte-identical files and truth: all
randomness comes from seeded `numpy.random.Generator`s, one per file, and the two
places where libsndfile writes non-deterministic bytes (the WAV PEAK chunk's timestamp,
the Ogg stream serial number) are rewritten.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import shutil
import struct
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from tqdm import tqdm

from preprocess.speech import (
    ENGINES,
    TELUGU_SENTENCES,
    Voice,
    coloured_noise,
    espeak_version,
    random_voice,
    resolve_engine,
    speech,
)


@dataclass(frozen=True)
class FaultClass:
    """A kind of file in the corpus and the decision docs/CONTRACTS.md prescribes for it."""

    name: str
    status: str  # "kept" | "rejected"
    reason: str  # files.jsonl reason code
    per_minute: float  # files per minute of requested audio (clean: filled by duration)
    minimum: int = 1  # even --minutes 1 gets this many


CLASSES = {
    c.name: c
    for c in (
        FaultClass("clean", "kept", "ok", 0.0, 6),
        FaultClass("short", "rejected", "short", 0.5),
        FaultClass("quiet_speech", "kept", "normalized", 0.4),
        FaultClass("dead", "rejected", "quiet", 0.2),
        FaultClass("mostly_silent", "rejected", "mostly_silent", 0.15),
        FaultClass("digital_silence", "rejected", "silent", 0.2),
        FaultClass("noise_only", "rejected", "no_speech", 0.2),
        FaultClass("clipped", "rejected", "clipped", 0.3),
        FaultClass("dc_offset", "kept", "ok", 0.3),
        FaultClass("nonfinite", "rejected", "nonfinite", 0.2),
        FaultClass("duplicate", "rejected", "duplicate", 0.4),
        FaultClass("empty", "rejected", "corrupt", 0.1),
        FaultClass("garbage", "rejected", "corrupt", 0.2, 2),
        FaultClass("header_only", "rejected", "corrupt", 0.1),
        FaultClass("truncated", "rejected", "corrupt", 0.2, 2),
        FaultClass("not_audio", "rejected", "not_audio", 0.4, 4),
    )
}

SAMPLE_RATES = (16000, 22050, 44100, 48000)
CLEAN_FORMATS = (
    ("WAV", "PCM_16"),
    ("WAV", "PCM_24"),
    ("WAV", "FLOAT"),
    ("FLAC", "PCM_16"),
    ("FLAC", "PCM_24"),
    ("OGG", "VORBIS"),
)
# Extension spellings, cycled per format so upper- and mixed-case ones always occur.
EXTENSIONS = {"WAV": (".WAV", ".wav", ".wav"), "FLAC": (".Flac", ".flac"), "OGG": (".ogg", ".OGG")}
# Clean files are 2–12 s: under ~2 s, active speech nears the 1 s `short` threshold and
# the truth would hinge on the activity detector's last frame.
CLEAN_SECONDS = (2.0, 12.0)
COPIES_DIR = "నకలు"  # "copies": a top-level folder of re-uploads, sorts after ASCII names
TRUTH_FIELDS = (
    "path",
    "class",
    "expected_status",
    "expected_reason",
    "speaker",
    "sample_rate",
    "channels",
    "format",
    "subtype",
    "seconds",
    "speech_seconds",
    "duplicate_of",
    "sha256",
)


@dataclass
class FileSpec:
    """One planned file: what to render, where, and what the truth says about it."""

    cls: str
    index: int  # key of this file's own random stream
    format: str | None = None
    subtype: str | None = None
    sample_rate: int | None = None
    channels: int | None = None
    seconds: float | None = None
    speech_seconds: float | None = None
    params: dict[str, Any] = field(default_factory=dict)
    path: str = ""
    speaker: str | None = None
    voice: Voice | None = None
    duplicate_of: str | None = None


@dataclass(frozen=True)
class Folder:
    """A directory files go into; a speaker folder keeps one voice across its sessions."""

    path: str  # POSIX, relative to OUT
    speaker: str | None
    voice: Voice | None
    telugu_names: bool  # file stems in Telugu script ("వాక్యం 07") instead of "utt_0007"


@dataclass(frozen=True)
class SynthConfig:
    """Everything that shapes the corpus bytes (with the engine's and libraries' versions)."""

    out: str
    minutes: float = 10.0
    seed: int = 0
    engine: str = "auto"


# ---------------------------------------------------------------------------------------
# Planning: which files, in what formats, where
# ---------------------------------------------------------------------------------------


def class_counts(minutes: float) -> dict[str, int]:
    """Files per fault class for `minutes` of audio; clean is filled later by duration."""
    return {
        c.name: max(c.minimum, int(round(c.per_minute * minutes)))
        for c in CLASSES.values()
        if c.name != "clean"
    }


def plan_corpus(minutes: float, seed: int) -> list[FileSpec]:
    """The whole corpus as FileSpecs with paths, sorted by path. Engine-independent."""
    rng = _rng(seed, 0)
    counts = class_counts(minutes)
    specs: list[FileSpec] = []
    for name in sorted(counts):
        if name in ("duplicate", "not_audio"):
            continue
        planner = _PLANNERS[name]
        specs += [planner(rng, FileSpec(name, 0), k) for k in range(counts[name])]
    specs += _plan_clean(rng, minutes, specs, counts["duplicate"])
    for i, spec in enumerate(specs):
        spec.index = i
    folders = plan_folders(rng, minutes)
    _place_audio(rng, specs, folders)
    specs += _plan_duplicates(rng, specs, counts["duplicate"], len(specs))
    specs += _plan_not_audio(rng, folders, counts["not_audio"], len(specs), specs)
    specs.sort(key=lambda s: s.path)
    _check_unique_paths(specs)
    return specs


def _plan_clean(
    rng: np.random.Generator, minutes: float, faults: list[FileSpec], n_duplicates: int
) -> list[FileSpec]:
    """Clean files of 2–12 s until the requested minutes are reached.

    Clean speech stays the majority of the audio even when the one-of-each-class floor
    of the faults outweighs a tiny --minutes (then the total runs over).
    """
    fault_seconds = sum(s.seconds or 0.0 for s in faults)
    fault_seconds += n_duplicates * float(np.mean(CLEAN_SECONDS))
    budget = max(minutes * 60.0 - fault_seconds, 1.1 * fault_seconds)
    formats = [CLEAN_FORMATS[i] for i in rng.permutation(len(CLEAN_FORMATS))]
    rates = [SAMPLE_RATES[i] for i in rng.permutation(len(SAMPLE_RATES))]
    clean: list[FileSpec] = []
    total = 0.0
    while total < budget or len(clean) < CLASSES["clean"].minimum:
        k = len(clean)
        fmt, subtype = formats[k % len(formats)]
        peak_range = (-10.0, -4.0) if fmt == "OGG" else (-10.0, -2.0)  # vorbis overshoots
        spec = FileSpec("clean", 0, fmt, subtype, rates[k % len(rates)], (1, 1, 2)[k % 3])
        _timing(rng, spec, (CLEAN_SECONDS[0] - 0.2, CLEAN_SECONDS[1] - 0.8))
        spec.params["peak_dbfs"] = float(rng.uniform(*peak_range))
        clean.append(spec)
        total += spec.seconds or 0.0
    return clean


def _plan_short(rng: np.random.Generator, s: FileSpec, k: int) -> FileSpec:
    """Under a second of speech between two short pauses: `short` (active < 1 s)."""
    s.format, s.subtype = CLEAN_FORMATS[int(rng.integers(len(CLEAN_FORMATS)))]
    _audio_shape(rng, s)
    _timing(rng, s, (0.35, 0.65), pads=(0.08, 0.15))
    s.params["peak_dbfs"] = float(rng.uniform(-9.0, -3.0))
    return s


def _plan_quiet_speech(rng: np.random.Generator, s: FileSpec, k: int) -> FileSpec:
    """Intact speech peaking near −45 dBFS (a low-gain take): kept, loudness-rescued.

    FLOAT so nothing is lost to quantisation; the noise floor sits ~40 dB under the
    speech, as it would from the preamp, not at an implausible −105 dBFS.
    """
    s.format, s.subtype = "WAV", "FLOAT"
    _audio_shape(rng, s)
    _timing(rng, s, (2.5, 6.0))
    s.params |= {"peak_dbfs": float(rng.uniform(-46.0, -44.0)), "floor_db": -40.0}
    return s


def _plan_dead(rng: np.random.Generator, s: FileSpec, k: int) -> FileSpec:
    """Speech scaled to a peak of ~1e-6 (−120 dBFS): numerically dead, `quiet`."""
    s.format, s.subtype = "WAV", "FLOAT"
    _audio_shape(rng, s)
    _timing(rng, s, (2.0, 4.0))
    s.params["peak"] = float(1e-6 * rng.uniform(0.8, 1.25))
    return s


def _plan_mostly_silent(rng: np.random.Generator, s: FileSpec, k: int) -> FileSpec:
    """~1.8 s of speech, then 10–13 s of −70 dBFS room tone: active fraction ≈ 0.1–0.15
    while active seconds stay ≥ 1 (so the reason is `mostly_silent`, not `short`)."""
    s.format, s.subtype = [("WAV", "PCM_16"), ("WAV", "PCM_24"), ("FLAC", "PCM_16")][
        int(rng.integers(3))
    ]
    _audio_shape(rng, s)
    s.speech_seconds = round(float(rng.uniform(1.6, 2.0)), 3)
    silence = float(rng.uniform(10.0, 13.0))
    s.seconds = round(s.speech_seconds + silence, 3)
    s.params = {
        "peak_dbfs": float(rng.uniform(-6.0, -2.0)),
        "silence_dbfs": float(rng.uniform(-72.0, -68.0)),
    }
    return s


def _plan_digital_silence(rng: np.random.Generator, s: FileSpec, k: int) -> FileSpec:
    s.format, s.subtype = [("WAV", "PCM_16"), ("FLAC", "PCM_16"), ("WAV", "FLOAT")][
        int(rng.integers(3))
    ]
    _audio_shape(rng, s)
    s.seconds = round(float(rng.uniform(1.5, 4.0)), 3)
    s.speech_seconds = 0.0
    return s


def _plan_noise_only(rng: np.random.Generator, s: FileSpec, k: int) -> FileSpec:
    """A few seconds of stationary coloured noise (fan, hiss): `no_speech`."""
    s.format, s.subtype = [("WAV", "PCM_16"), ("FLAC", "PCM_16"), ("WAV", "PCM_24")][
        int(rng.integers(3))
    ]
    _audio_shape(rng, s)
    s.seconds = round(float(rng.uniform(2.5, 5.0)), 3)
    s.speech_seconds = 0.0
    s.params = {
        "rms_dbfs": float(rng.uniform(-35.0, -25.0)),
        "exponent": float(rng.uniform(0.6, 1.2)),
        "wobble_hz": float(rng.uniform(0.1, 0.4)),
    }
    return s


def _plan_clipped(rng: np.random.Generator, s: FileSpec, k: int) -> FileSpec:
    """Speech ×8 then hard-clipped at ±1, PCM_16: far more than 0.5 % clipped samples."""
    s.format, s.subtype = "WAV", "PCM_16"
    _audio_shape(rng, s)
    _timing(rng, s, (2.5, 5.0))
    s.params |= {"peak_dbfs": float(rng.uniform(-6.0, -3.0)), "gain": 8.0}
    return s


def _plan_dc_offset(rng: np.random.Generator, s: FileSpec, k: int) -> FileSpec:
    """Intact speech on a +0.2 DC offset (a bad ADC): kept, the pipeline removes the DC."""
    s.format, s.subtype = [("WAV", "PCM_16"), ("WAV", "FLOAT"), ("FLAC", "PCM_24")][
        int(rng.integers(3))
    ]
    _audio_shape(rng, s)
    _timing(rng, s, (2.5, 5.0))
    s.params |= {"peak_dbfs": float(rng.uniform(-9.0, -6.0)), "dc": 0.2}
    return s


def _plan_nonfinite(rng: np.random.Generator, s: FileSpec, k: int) -> FileSpec:
    """FLOAT speech with a few NaN and ±Inf samples (a broken float export)."""
    s.format, s.subtype = "WAV", "FLOAT"
    _audio_shape(rng, s)
    _timing(rng, s, (1.5, 3.5))
    s.params |= {
        "peak_dbfs": float(rng.uniform(-8.0, -3.0)),
        "n_nan": int(rng.integers(1, 5)),
        "n_inf": int(rng.integers(1, 4)),
    }
    return s


def _plan_empty(rng: np.random.Generator, s: FileSpec, k: int) -> FileSpec:
    s.format = "WAV"  # only to choose the extension; the file has no header
    return s


def _plan_garbage(rng: np.random.Generator, s: FileSpec, k: int) -> FileSpec:
    """Bytes that are not audio under an audio extension: random bytes, or an HTML error
    page a scraper saved as .wav/.flac."""
    s.format = ("WAV", "FLAC")[k % 2]
    kind = ("random", "html")[(k + k // 2) % 2]  # k = 0..3 covers every (kind, format)
    s.params = {"kind": kind, "size": int(rng.integers(512, 32768))}
    return s


def _plan_header_only(rng: np.random.Generator, s: FileSpec, k: int) -> FileSpec:
    """A valid WAV header and zero frames (an interrupted recorder)."""
    s.format = "WAV"
    s.subtype = ("PCM_16", "PCM_24", "FLOAT")[int(rng.integers(3))]
    _audio_shape(rng, s)
    s.seconds = s.speech_seconds = 0.0
    return s


def _plan_truncated(rng: np.random.Generator, s: FileSpec, k: int) -> FileSpec:
    """A WAV or FLAC cut to ~60 % of its bytes (an interrupted download); the header
    still declares the full length. Alternates WAV and FLAC so both occur."""
    s.format, s.subtype = (
        ("WAV", "PCM_16"),
        ("FLAC", "PCM_16"),
        ("WAV", "PCM_24"),
        ("FLAC", "PCM_24"),
    )[k % 4]
    _audio_shape(rng, s)
    _timing(rng, s, (3.0, 6.0))
    keep, peak_dbfs = float(rng.uniform(0.55, 0.65)), float(rng.uniform(-8.0, -3.0))
    s.params |= {"keep": keep, "peak_dbfs": peak_dbfs}
    return s


# A planner fills in the k-th file of its class; k cycles formats where both must occur.
_PLANNERS: dict[str, Callable[[np.random.Generator, FileSpec, int], FileSpec]] = {
    "short": _plan_short,
    "quiet_speech": _plan_quiet_speech,
    "dead": _plan_dead,
    "mostly_silent": _plan_mostly_silent,
    "digital_silence": _plan_digital_silence,
    "noise_only": _plan_noise_only,
    "clipped": _plan_clipped,
    "dc_offset": _plan_dc_offset,
    "nonfinite": _plan_nonfinite,
    "empty": _plan_empty,
    "garbage": _plan_garbage,
    "header_only": _plan_header_only,
    "truncated": _plan_truncated,
}


def _timing(
    rng: np.random.Generator,
    s: FileSpec,
    speech_range: tuple[float, float],
    pads: tuple[float, float] = (0.1, 0.4),
) -> None:
    """Speech of `speech_range` seconds between lead and tail room tone.

    Recordings start before and end after the talker; a file that is speech from its
    first sample to its last gives a speech-activity detector no background to measure.
    """
    lead, tail = (round(float(rng.uniform(*pads)), 3) for _ in range(2))
    s.speech_seconds = round(float(rng.uniform(*speech_range)), 3)
    s.seconds = round(lead + s.speech_seconds + tail, 3)
    s.params["lead"] = lead


def _audio_shape(rng: np.random.Generator, s: FileSpec) -> None:
    s.sample_rate = SAMPLE_RATES[int(rng.integers(len(SAMPLE_RATES)))]
    s.channels = 2 if rng.random() < 0.3 else 1


def plan_folders(rng: np.random.Generator, minutes: float) -> list[Folder]:
    """Speaker folders with session subfolders, some in Telugu script or with spaces.

    The last speaker is named in Telugu ("వక్త 05", "speaker 05"); sessions are named
    "session 1", a date, or "రికార్డింగ్ 2" ("recording 2"); some speakers keep files
    directly in their folder.
    """
    n_speakers = int(np.clip(2 + round(minutes / 2), 3, 16))
    folders: list[Folder] = []
    for k in range(1, n_speakers + 1):
        speaker = f"spk_{k:02d}" if k < n_speakers else f"వక్త {k:02d}"
        voice = random_voice(rng)
        if rng.random() < 0.3:
            folders.append(Folder(speaker, speaker, voice, bool(rng.random() < 0.3)))
        for j in range(1, int(rng.integers(1, 4)) + 1):
            style = int(rng.integers(3))
            name = (
                f"session {j}",
                f"2023-{j + 2:02d}-{int(rng.integers(1, 29)):02d}",
                f"రికార్డింగ్ {j}",
            )[style]
            folders.append(Folder(f"{speaker}/{name}", speaker, voice, style == 2))
    return folders


def _place_audio(rng: np.random.Generator, specs: list[FileSpec], folders: list[Folder]) -> None:
    """Put every audio-bearing spec into a random folder, numbered within the folder."""
    per_folder: Counter[str] = Counter()
    per_format: Counter[str] = Counter()
    for i in rng.permutation(len(specs)):
        s = specs[int(i)]
        folder = folders[int(rng.integers(len(folders)))]
        per_folder[folder.path] += 1
        n = per_folder[folder.path]
        stem = f"వాక్యం {n:02d}" if folder.telugu_names else f"utt_{n:04d}"
        spellings = EXTENSIONS[s.format or "WAV"]
        ext = spellings[per_format[s.format or "WAV"] % len(spellings)]
        per_format[s.format or "WAV"] += 1
        s.path = f"{folder.path}/{stem}{ext}"
        s.speaker, s.voice = folder.speaker, folder.voice


def _plan_duplicates(
    rng: np.random.Generator, specs: list[FileSpec], n: int, first_index: int
) -> list[FileSpec]:
    """Byte copies of clean files under names that sort after the original.

    The policy keeps the first of a group in sorted path order, so placing every copy
    after its original makes the truth simple: original kept `ok`, copies `duplicate`.
    Copies go next to the original ("utt_0007_copy.wav": '_' sorts after '.'), into a
    later speaker's folder, or under the Telugu `COPIES_DIR` (after all ASCII names).
    """
    used = {s.path.casefold() for s in specs}
    clean = sorted((s for s in specs if s.cls == "clean"), key=lambda s: s.path)
    speakers = sorted({s.speaker for s in specs if s.speaker})
    copies: list[FileSpec] = []
    for k in range(n):
        original = clean[int(rng.integers(len(clean)))]
        folder, name = original.path.rsplit("/", 1)
        stem, ext = name.rsplit(".", 1)
        candidates = [
            f"{folder}/{stem}_copy.{ext}",
            f"{folder}/{stem}_copy{k + 2}.{ext}",
            f"{COPIES_DIR}/{original.path}",
        ]
        candidates += [f"{sp}/{name}" for sp in speakers if sp > (original.speaker or "")]
        candidates = [c for c in candidates if c > original.path and c.casefold() not in used]
        path = candidates[int(rng.integers(len(candidates)))]
        used.add(path.casefold())
        copy = dataclasses.replace(
            original,
            cls="duplicate",
            index=first_index + k,
            path=path,
            speaker=path.split("/", 1)[0],
            duplicate_of=original.path,
            params={},
        )
        copies.append(copy)
    return copies


NOT_AUDIO_KINDS = ("README.txt", "transcript.json", "cover.jpg", "metadata.csv")


def _plan_not_audio(
    rng: np.random.Generator,
    folders: list[Folder],
    n: int,
    first_index: int,
    specs: list[FileSpec],
) -> list[FileSpec]:
    """README.txt at the top, then transcripts, cover art and CSVs in speaker folders."""
    used = {s.path.casefold() for s in specs}
    out: list[FileSpec] = []
    for k in range(n):
        kind = NOT_AUDIO_KINDS[k % len(NOT_AUDIO_KINDS)]
        if k == 0:
            path, speaker = kind, None
        else:
            order = rng.permutation(len(folders))
            free = [
                folders[int(i)]
                for i in order
                if f"{folders[int(i)].path}/{kind}".casefold() not in used
            ]
            folder = free[0] if free else folders[int(order[0])]
            stem, ext = kind.rsplit(".", 1)
            path = f"{folder.path}/{kind}" if free else f"{folder.path}/{stem}_{k}.{ext}"
            speaker = folder.speaker
        used.add(path.casefold())
        out.append(
            FileSpec(
                "not_audio", first_index + k, path=path, speaker=speaker, params={"kind": kind}
            )
        )
    return out


def _check_unique_paths(specs: list[FileSpec]) -> None:
    """Paths must be unique even on a case-insensitive file system."""
    seen: dict[str, str] = {}
    for s in specs:
        key = s.path.casefold()
        if key in seen:
            raise AssertionError(f"planned paths collide: {seen[key]!r} and {s.path!r}")
        seen[key] = s.path


# ---------------------------------------------------------------------------------------
# Rendering: FileSpec → bytes
# ---------------------------------------------------------------------------------------


def render(spec: FileSpec, rng: np.random.Generator, engine: str) -> bytes:
    """The bytes of one (non-duplicate) file."""
    if spec.cls in _SIGNALS:
        audio = _SIGNALS[spec.cls](spec, rng, engine)
        return encode(audio, spec, rng)
    return _BYTES[spec.cls](spec, rng, engine)


def encode(audio: np.ndarray, spec: FileSpec, rng: np.random.Generator) -> bytes:
    """float[frames, channels] → file bytes in the spec's format, made reproducible."""
    buf = io.BytesIO()
    sf.write(buf, audio, spec.sample_rate, format=spec.format, subtype=spec.subtype)
    return reproducible(buf.getvalue(), spec.format or "", int(rng.integers(1, 2**31)))


def reproducible(data: bytes, fmt: str, ogg_serial: int) -> bytes:
    """Rewrite the bytes libsndfile takes from the clock: the WAV PEAK chunk's timestamp
    (time(NULL)) and the Ogg stream serial number (seeded from gettimeofday)."""
    if fmt == "WAV":
        return _zero_peak_timestamp(data)
    if fmt == "OGG":
        return _set_ogg_serial(data, ogg_serial)
    return data


def _speech(
    spec: FileSpec,
    rng: np.random.Generator,
    engine: str,
    seconds: float,
    floor_db: float | None = None,
) -> np.ndarray:
    return speech(
        rng, seconds, spec.sample_rate or 16000, engine=engine, voice=spec.voice, floor_db=floor_db
    ).astype(np.float64)


def _to_channels(rng: np.random.Generator, mono: np.ndarray, channels: int) -> np.ndarray:
    """float[n] → float[n, channels]; a second channel is a delayed, weaker mic."""
    if channels == 1:
        return mono[:, None]
    delay = int(rng.integers(1, 24))
    other = float(rng.uniform(0.7, 0.95)) * np.concatenate([np.zeros(delay), mono[:-delay]])
    return np.stack([mono, other], axis=1)


def _at_peak(x: np.ndarray, peak: float) -> np.ndarray:
    p = float(np.max(np.abs(x)))
    return x * (peak / p) if p > 0 else x


def _db(v: float) -> float:
    return 10.0 ** (v / 20.0)


def _signal_speech(spec: FileSpec, rng: np.random.Generator, engine: str) -> np.ndarray:
    """Speech in room tone at the spec's peak: clean, short, quiet_speech, dead, and the
    base of clipped, dc_offset, nonfinite and truncated."""
    floor_db = spec.params.get("floor_db", float(rng.uniform(-70.0, -55.0)))
    words = _speech(spec, rng, engine, spec.speech_seconds or 0.0, floor_db)
    mono = _with_room_tone(rng, words, spec, floor_db, spec.params["lead"])
    peak = spec.params.get("peak", _db(spec.params.get("peak_dbfs", -3.0)))
    return _at_peak(_to_channels(rng, mono, spec.channels or 1), peak)


def _with_room_tone(
    rng: np.random.Generator,
    words: np.ndarray,
    spec: FileSpec,
    floor_db: float,
    lead_seconds: float,
) -> np.ndarray:
    """Pad `words` (peak 1) with room tone at its own floor level to spec.seconds."""
    sr = spec.sample_rate or 16000
    n = int(round((spec.seconds or 0.0) * sr))
    lead = min(int(round(lead_seconds * sr)), n - words.size)
    out = _db(floor_db) * coloured_noise(rng, n, 1.0)
    out[lead : lead + words.size] = words
    return out


def _signal_mostly_silent(spec: FileSpec, rng: np.random.Generator, engine: str) -> np.ndarray:
    peak_dbfs, silence_dbfs = spec.params["peak_dbfs"], spec.params["silence_dbfs"]
    words = _speech(spec, rng, engine, spec.speech_seconds or 0.0, silence_dbfs - peak_dbfs)
    mono = _with_room_tone(rng, words, spec, silence_dbfs - peak_dbfs, 0.0)
    return _to_channels(rng, mono * _db(peak_dbfs), spec.channels or 1)


def _signal_digital_silence(spec: FileSpec, rng: np.random.Generator, engine: str) -> np.ndarray:
    n = int(round((spec.seconds or 0.0) * (spec.sample_rate or 16000)))
    return np.zeros((n, spec.channels or 1))


def _signal_noise_only(spec: FileSpec, rng: np.random.Generator, engine: str) -> np.ndarray:
    """Coloured noise with a slow ±1 dB wobble: stationary enough that no frame rises
    12 dB over the noise floor, as a fan or tape hiss would."""
    sr = spec.sample_rate or 16000
    n = int(round((spec.seconds or 0.0) * sr))
    p = spec.params
    phase = 2 * np.pi * p["wobble_hz"] * np.arange(n) / sr + rng.uniform(0, 2 * np.pi)
    wobble = 1.0 + 0.1 * np.sin(phase)
    chans = [coloured_noise(rng, n, p["exponent"]) for _ in range(spec.channels or 1)]
    return np.stack(chans, axis=1) * (wobble * _db(p["rms_dbfs"]))[:, None]


def _signal_clipped(spec: FileSpec, rng: np.random.Generator, engine: str) -> np.ndarray:
    x = _signal_speech(spec, rng, engine)
    return np.clip(x * spec.params["gain"], -1.0, 1.0)


def _signal_dc_offset(spec: FileSpec, rng: np.random.Generator, engine: str) -> np.ndarray:
    return _signal_speech(spec, rng, engine) + spec.params["dc"]


def _signal_nonfinite(spec: FileSpec, rng: np.random.Generator, engine: str) -> np.ndarray:
    x = _signal_speech(spec, rng, engine)
    n_nan, n_inf = spec.params["n_nan"], spec.params["n_inf"]
    where = rng.choice(x.size, n_nan + n_inf, replace=False)
    flat = x.reshape(-1)
    flat[where[:n_nan]] = np.nan
    flat[where[n_nan:]] = np.where(rng.random(n_inf) < 0.5, np.inf, -np.inf)
    return x


_SIGNALS: dict[str, Callable[[FileSpec, np.random.Generator, str], np.ndarray]] = {
    "clean": _signal_speech,
    "quiet_speech": _signal_speech,
    "dead": _signal_speech,
    "short": _signal_speech,
    "mostly_silent": _signal_mostly_silent,
    "digital_silence": _signal_digital_silence,
    "noise_only": _signal_noise_only,
    "clipped": _signal_clipped,
    "dc_offset": _signal_dc_offset,
    "nonfinite": _signal_nonfinite,
}


def _bytes_empty(spec: FileSpec, rng: np.random.Generator, engine: str) -> bytes:
    return b""


def _bytes_garbage(spec: FileSpec, rng: np.random.Generator, engine: str) -> bytes:
    size = spec.params["size"]
    if spec.params["kind"] == "html":
        page = (
            "<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>\n"
            f"<body><h1>Not Found</h1><p>The requested URL /audio/{spec.index:06d} was not "
            "found on this server.</p>\n"
        )
        filler = "<!-- " + rng.bytes(size).hex() + " -->\n</body></html>\n"
        return (page + filler).encode("utf-8")
    return b"\x00\x7fGARBAGE" + rng.bytes(size)  # never a RIFF/fLaC/OggS magic


def _bytes_header_only(spec: FileSpec, rng: np.random.Generator, engine: str) -> bytes:
    return encode(np.zeros((0, spec.channels or 1)), spec, rng)


def _bytes_truncated(spec: FileSpec, rng: np.random.Generator, engine: str) -> bytes:
    whole = encode(_signal_speech(spec, rng, engine), spec, rng)
    return whole[: int(len(whole) * spec.params["keep"])]


def _bytes_not_audio(spec: FileSpec, rng: np.random.Generator, engine: str) -> bytes:
    """Files scrapers drag along: a README, transcripts, cover art, a metadata sheet."""
    kind = spec.params["kind"]
    place = spec.path.rsplit("/", 1)[0] if "/" in spec.path else "."
    lines = [TELUGU_SENTENCES[int(i)] for i in rng.choice(len(TELUGU_SENTENCES), 4, False)]
    if kind == "README.txt":
        text = (
            f"Telugu speech recordings ({place})\n\nScraped for the TeluCodec demo. "
            "Audio is 16-48 kHz WAV/FLAC/OGG; see metadata.csv.\n\nSample prompts:\n"
        )
        return (text + "".join(f"  {t}\n" for t in lines)).encode("utf-8")
    if kind == "transcript.json":
        items = [{"utt": f"utt_{i + 1:04d}", "text": t} for i, t in enumerate(lines)]
        return json.dumps({"folder": place, "items": items}, ensure_ascii=False, indent=1).encode(
            "utf-8"
        )
    if kind == "metadata.csv":
        rows = ["file,speaker,text"] + [
            f"utt_{i + 1:04d}.wav,{place},{t}" for i, t in enumerate(lines)
        ]
        return ("\n".join(rows) + "\n").encode("utf-8")
    # cover.jpg: a JPEG's markers (SOI, JFIF APP0 … EOI) around random entropy-coded bytes
    return (
        b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
        + rng.bytes(int(rng.integers(2048, 8192)))
        + b"\xff\xd9"
    )


_BYTES: dict[str, Callable[[FileSpec, np.random.Generator, str], bytes]] = {
    "empty": _bytes_empty,
    "garbage": _bytes_garbage,
    "header_only": _bytes_header_only,
    "truncated": _bytes_truncated,
    "not_audio": _bytes_not_audio,
}


# ---------------------------------------------------------------------------------------
# Byte-level reproducibility fixes for libsndfile output
# ---------------------------------------------------------------------------------------


def _zero_peak_timestamp(data: bytes) -> bytes:
    """Zero the timestamp field of a RIFF/WAVE PEAK chunk (libsndfile writes time(NULL))."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return data
    buf = bytearray(data)
    pos = 12
    while pos + 8 <= len(buf):
        chunk, size = bytes(buf[pos : pos + 4]), struct.unpack_from("<I", buf, pos + 4)[0]
        if chunk == b"PEAK" and size >= 8:
            struct.pack_into("<I", buf, pos + 12, 0)  # after the 4-byte version
        if chunk == b"data":
            break
        pos += 8 + size + (size & 1)
    return bytes(buf)


def _ogg_crc_table() -> list[int]:
    table = []
    for i in range(256):
        r = i << 24
        for _ in range(8):
            r = ((r << 1) ^ 0x04C11DB7) if r & 0x80000000 else (r << 1)
        table.append(r & 0xFFFFFFFF)
    return table


_OGG_CRC = _ogg_crc_table()


def _ogg_crc(page: bytes | bytearray) -> int:
    """Ogg page checksum: CRC-32, polynomial 0x04C11DB7, no reflection, init 0 (RFC 3533)."""
    crc = 0
    for b in page:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _OGG_CRC[((crc >> 24) ^ b) & 0xFF]
    return crc


def _set_ogg_serial(data: bytes, serial: int) -> bytes:
    """Give every page of a single-stream Ogg file `serial`, re-checksumming each page."""
    buf = bytearray(data)
    pos = 0
    while pos < len(buf):
        if buf[pos : pos + 4] != b"OggS":
            raise ValueError(f"Ogg page expected at byte {pos}")
        n_segments = buf[pos + 26]
        length = 27 + n_segments + sum(buf[pos + 27 : pos + 27 + n_segments])
        struct.pack_into("<I", buf, pos + 14, serial)
        struct.pack_into("<I", buf, pos + 22, 0)
        struct.pack_into("<I", buf, pos + 22, _ogg_crc(buf[pos : pos + length]))
        pos += length
    return bytes(buf)


# ---------------------------------------------------------------------------------------
# Ground truth and the command
# ---------------------------------------------------------------------------------------


def truth_record(spec: FileSpec, data: bytes) -> dict[str, Any]:
    """One line of OUT.truth.jsonl (schema in docs/SYNTH.md)."""
    fault = CLASSES[spec.cls]
    return {
        "path": spec.path,
        "class": spec.cls,
        "expected_status": fault.status,
        "expected_reason": fault.reason,
        "speaker": spec.speaker,
        "sample_rate": spec.sample_rate,
        "channels": spec.channels,
        "format": spec.format if spec.subtype else None,
        "subtype": spec.subtype,
        "seconds": spec.seconds,
        "speech_seconds": spec.speech_seconds,
        "duplicate_of": spec.duplicate_of,
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def check_truth(records: list[dict[str, Any]]) -> None:
    """Guard the plan against itself: every non-empty byte-identical group must be one
    original, first in sorted path order, followed by its `duplicate` copies. A clash
    (two digital-silence files of the same length, say) would make the truth wrong."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        if r["sha256"] != hashlib.sha256(b"").hexdigest():
            groups.setdefault(r["sha256"], []).append(r)
    for group in groups.values():
        first, *rest = sorted(group, key=lambda r: r["path"])
        if first["class"] == "duplicate" or any(
            r["class"] != "duplicate" or r["duplicate_of"] != first["path"] for r in rest
        ):
            raise AssertionError(f"unplanned identical files: {[r['path'] for r in group]}")


def truth_path(out: Path) -> Path:
    """`demo/corpus` → `demo/corpus.truth.jsonl`: beside the corpus, never inside it."""
    return out.with_name(out.name + ".truth.jsonl")


def config_path(out: Path) -> Path:
    return out.with_name(out.name + ".synth.json")


def synthesize(cfg: SynthConfig, progress: bool = True) -> list[dict[str, Any]]:
    """Plan, render and write the corpus and its truth; returns the truth records."""
    out = Path(cfg.out)
    engine = resolve_engine(cfg.engine)
    specs = plan_corpus(cfg.minutes, cfg.seed)
    copied = {s.duplicate_of for s in specs if s.duplicate_of is not None}
    originals: dict[str, bytes] = {}  # only the files that get copied stay in memory
    records = []
    order = sorted(specs, key=lambda s: (s.cls == "duplicate", s.path))
    for spec in tqdm(order, desc="synth", unit="file", disable=not progress, file=sys.stderr):
        if spec.duplicate_of is not None:
            data = originals[spec.duplicate_of]
        else:
            data = render(spec, _rng(cfg.seed, 1, spec.index), engine)
            if spec.path in copied:
                originals[spec.path] = data
        target = out / spec.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        records.append(truth_record(spec, data))
    records.sort(key=lambda r: r["path"])
    check_truth(records)
    with open(truth_path(out), "w", encoding="utf-8", newline="\n") as f:
        for r in records:
            f.write(json.dumps({k: r[k] for k in TRUTH_FIELDS}, ensure_ascii=False) + "\n")
    return records


def _rng(seed: int, *key: int) -> np.random.Generator:
    """Independent stream per purpose and file: adding a file never reshuffles another."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key)))


def prepare_output(out: Path, overwrite: bool) -> None:
    """Refuse a non-empty OUT; with --overwrite replace only an earlier synth corpus
    (recognised by OUT.synth.json beside it), never an arbitrary directory."""
    if out.exists() and not out.is_dir():
        raise SystemExit(f"synth: {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise SystemExit(f"synth: {out} is not empty; pass --overwrite to replace it")
        if not config_path(out).is_file():
            raise SystemExit(
                f"synth: {out} is not empty and has no {config_path(out).name} beside it, "
                "so it is not a synth corpus; refusing to delete it"
            )
        shutil.rmtree(out)
    for p in (truth_path(out), config_path(out)):
        p.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


def summary(records: list[dict[str, Any]]) -> str:
    """Counts and minutes per class, as printed to stdout."""
    lines = [f"{'class':<16} {'files':>5}  {'expected':<26} {'minutes':>7}"]
    for name, fault in CLASSES.items():
        rs = [r for r in records if r["class"] == name]
        minutes = sum(r["seconds"] or 0.0 for r in rs) / 60.0
        lines.append(
            f"{name:<16} {len(rs):>5}  {fault.status + '/' + fault.reason:<26} {minutes:>7.2f}"
        )
    total = sum(r["seconds"] or 0.0 for r in records) / 60.0
    lines.append(f"{'total':<16} {len(records):>5}  {'':<26} {total:>7.2f}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="preprocess.synth",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("out", help="corpus directory to create; truth goes to OUT.truth.jsonl")
    p.add_argument("--minutes", type=float, default=10.0, help="about this much audio")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--engine",
        choices=ENGINES,
        default="auto",
        help="speech source: espeak-ng Telugu voice, procedural, or auto",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace an earlier synth corpus at OUT"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.minutes <= 0:
        raise SystemExit("synth: --minutes must be positive")
    cfg = SynthConfig(str(args.out), args.minutes, args.seed, args.engine)
    out = Path(cfg.out)
    try:
        engine = resolve_engine(cfg.engine)
    except RuntimeError as exc:
        raise SystemExit(f"synth: {exc}") from exc
    meta = dataclasses.asdict(cfg) | {
        "engine_resolved": engine,
        "espeak_version": espeak_version() if engine == "espeak" else None,
        "libsndfile": sf.__libsndfile_version__,
        "numpy": np.__version__,
    }
    print("synth config:", json.dumps(meta, ensure_ascii=False), flush=True)
    prepare_output(out, args.overwrite)
    config_path(out).write_text(
        json.dumps(meta, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    records = synthesize(cfg, progress=not args.no_progress)
    print(summary(records))
    print(f"corpus: {out}\ntruth:  {truth_path(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
