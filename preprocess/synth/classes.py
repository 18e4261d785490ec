"""The fault classes of the demo corpus: one registry entry per class, holding everything
about it — the decision docs/CONTRACTS.md prescribes, how many files per minute, how a
file of the class is planned, and how its bytes are rendered.

A class whose planner is None is planned by the corpus planner (`plan.py`), because it
depends on the rest of the corpus: `clean` fills the requested duration, `duplicate`
copies a clean file, `not_audio` goes into the speaker folders.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from preprocess.synth.render import (
    Renderer,
    encode,
    encoded,
    from_db,
    speech_in_room_tone,
    spoken,
    to_channels,
    with_room_tone,
)
from preprocess.synth.sndfile_bytes import reproducible
from preprocess.synth.spec import (
    CLEAN_FORMATS,
    FileSpec,
    draw_audio_shape,
    draw_timing,
    pick,
)
from preprocess.synth.speech import TELUGU_SENTENCES, coloured_noise

# A planner fills in the k-th file of its class; k cycles formats where both must occur.
Planner = Callable[[np.random.Generator, FileSpec, int], FileSpec]


@dataclass(frozen=True)
class FaultClass:
    """A kind of file in the corpus and the decision docs/CONTRACTS.md prescribes for it."""

    name: str
    status: str  # "kept" | "rejected"
    reason: str  # files.jsonl reason code
    per_minute: float  # files per minute of requested audio (clean: filled by duration)
    minimum: int = 1  # even --minutes 1 gets this many
    plan: Planner | None = None  # None: planned by the corpus planner (see above)
    render: Renderer | None = None  # None: a byte copy of another file (duplicate)


# ---------------------------------------------------------------------------------------
# Speech at a level: short, quiet_speech, dead (clean is planned with the corpus)
# ---------------------------------------------------------------------------------------


def _plan_short(rng: np.random.Generator, s: FileSpec, k: int) -> FileSpec:
    """Under a second of speech between two short pauses: `short` (active < 1 s)."""
    s.format, s.subtype = pick(rng, CLEAN_FORMATS)
    draw_audio_shape(rng, s)
    draw_timing(rng, s, (0.35, 0.65), pads=(0.08, 0.15))
    s.params["peak_dbfs"] = float(rng.uniform(-9.0, -3.0))
    return s


def _plan_quiet_speech(rng: np.random.Generator, s: FileSpec, k: int) -> FileSpec:
    """Intact speech peaking near −45 dBFS (a low-gain take): kept, loudness-rescued.

    FLOAT so nothing is lost to quantisation; the noise floor sits ~40 dB under the
    speech, as it would from the preamp, not at an implausible −105 dBFS.
    """
    s.format, s.subtype = "WAV", "FLOAT"
    draw_audio_shape(rng, s)
    draw_timing(rng, s, (2.5, 6.0))
    s.params |= {"peak_dbfs": float(rng.uniform(-46.0, -44.0)), "floor_db": -40.0}
    return s


def _plan_dead(rng: np.random.Generator, s: FileSpec, k: int) -> FileSpec:
    """Speech scaled to a peak of ~1e-6 (−120 dBFS): numerically dead, `quiet`."""
    s.format, s.subtype = "WAV", "FLOAT"
    draw_audio_shape(rng, s)
    draw_timing(rng, s, (2.0, 4.0))
    s.params["peak"] = float(1e-6 * rng.uniform(0.8, 1.25))
    return s


# ---------------------------------------------------------------------------------------
# Silence and noise: mostly_silent, digital_silence, noise_only
# ---------------------------------------------------------------------------------------


def _plan_mostly_silent(rng: np.random.Generator, s: FileSpec, k: int) -> FileSpec:
    """~1.8 s of speech, then 10–13 s of −70 dBFS room tone: active fraction ≈ 0.1–0.15
    while active seconds stay ≥ 1 (so the reason is `mostly_silent`, not `short`)."""
    s.format, s.subtype = pick(rng, [("WAV", "PCM_16"), ("WAV", "PCM_24"), ("FLAC", "PCM_16")])
    draw_audio_shape(rng, s)
    s.speech_seconds = round(float(rng.uniform(1.6, 2.0)), 3)
    silence = float(rng.uniform(10.0, 13.0))
    s.seconds = round(s.speech_seconds + silence, 3)
    s.params = {
        "peak_dbfs": float(rng.uniform(-6.0, -2.0)),
        "silence_dbfs": float(rng.uniform(-72.0, -68.0)),
    }
    return s


def _signal_mostly_silent(spec: FileSpec, rng: np.random.Generator, engine: str) -> np.ndarray:
    peak_dbfs, silence_dbfs = spec.params["peak_dbfs"], spec.params["silence_dbfs"]
    words = spoken(spec, rng, engine, spec.speech_seconds or 0.0, silence_dbfs - peak_dbfs)
    mono = with_room_tone(rng, words, spec, silence_dbfs - peak_dbfs, 0.0)
    return to_channels(rng, mono * from_db(peak_dbfs), spec.channels or 1)


def _plan_digital_silence(rng: np.random.Generator, s: FileSpec, k: int) -> FileSpec:
    s.format, s.subtype = pick(rng, [("WAV", "PCM_16"), ("FLAC", "PCM_16"), ("WAV", "FLOAT")])
    draw_audio_shape(rng, s)
    s.seconds = round(float(rng.uniform(1.5, 4.0)), 3)
    s.speech_seconds = 0.0
    return s


def _signal_digital_silence(spec: FileSpec, rng: np.random.Generator, engine: str) -> np.ndarray:
    n = int(round((spec.seconds or 0.0) * (spec.sample_rate or 16000)))
    return np.zeros((n, spec.channels or 1))


def _plan_noise_only(rng: np.random.Generator, s: FileSpec, k: int) -> FileSpec:
    """A few seconds of stationary coloured noise (fan, hiss): `no_speech`."""
    s.format, s.subtype = pick(rng, [("WAV", "PCM_16"), ("FLAC", "PCM_16"), ("WAV", "PCM_24")])
    draw_audio_shape(rng, s)
    s.seconds = round(float(rng.uniform(2.5, 5.0)), 3)
    s.speech_seconds = 0.0
    s.params = {
        "rms_dbfs": float(rng.uniform(-35.0, -25.0)),
        "exponent": float(rng.uniform(0.6, 1.2)),
        "wobble_hz": float(rng.uniform(0.1, 0.4)),
    }
    return s


def _signal_noise_only(spec: FileSpec, rng: np.random.Generator, engine: str) -> np.ndarray:
    """Coloured noise with a slow ±1 dB wobble: stationary enough that no frame rises
    12 dB over the noise floor, as a fan or tape hiss would."""
    sr = spec.sample_rate or 16000
    n = int(round((spec.seconds or 0.0) * sr))
    p = spec.params
    phase = 2 * np.pi * p["wobble_hz"] * np.arange(n) / sr + rng.uniform(0, 2 * np.pi)
    wobble = 1.0 + 0.1 * np.sin(phase)
    chans = [coloured_noise(rng, n, p["exponent"]) for _ in range(spec.channels or 1)]
    return np.stack(chans, axis=1) * (wobble * from_db(p["rms_dbfs"]))[:, None]


# ---------------------------------------------------------------------------------------
# Damaged samples: clipped, dc_offset, nonfinite
# ---------------------------------------------------------------------------------------


def _plan_clipped(rng: np.random.Generator, s: FileSpec, k: int) -> FileSpec:
    """Speech ×8 then hard-clipped at ±1, PCM_16: far more than 0.5 % clipped samples."""
    s.format, s.subtype = "WAV", "PCM_16"
    draw_audio_shape(rng, s)
    draw_timing(rng, s, (2.5, 5.0))
    s.params |= {"peak_dbfs": float(rng.uniform(-6.0, -3.0)), "gain": 8.0}
    return s


def _signal_clipped(spec: FileSpec, rng: np.random.Generator, engine: str) -> np.ndarray:
    x = speech_in_room_tone(spec, rng, engine)
    return np.clip(x * spec.params["gain"], -1.0, 1.0)


def _plan_dc_offset(rng: np.random.Generator, s: FileSpec, k: int) -> FileSpec:
    """Intact speech on a +0.2 DC offset (a bad ADC): kept, the pipeline removes the DC."""
    s.format, s.subtype = pick(rng, [("WAV", "PCM_16"), ("WAV", "FLOAT"), ("FLAC", "PCM_24")])
    draw_audio_shape(rng, s)
    draw_timing(rng, s, (2.5, 5.0))
    s.params |= {"peak_dbfs": float(rng.uniform(-9.0, -6.0)), "dc": 0.2}
    return s


def _signal_dc_offset(spec: FileSpec, rng: np.random.Generator, engine: str) -> np.ndarray:
    return speech_in_room_tone(spec, rng, engine) + spec.params["dc"]


def _plan_nonfinite(rng: np.random.Generator, s: FileSpec, k: int) -> FileSpec:
    """FLOAT speech with a few NaN and ±Inf samples (a broken float export)."""
    s.format, s.subtype = "WAV", "FLOAT"
    draw_audio_shape(rng, s)
    draw_timing(rng, s, (1.5, 3.5))
    s.params |= {
        "peak_dbfs": float(rng.uniform(-8.0, -3.0)),
        "n_nan": int(rng.integers(1, 5)),
        "n_inf": int(rng.integers(1, 4)),
    }
    return s


def _signal_nonfinite(spec: FileSpec, rng: np.random.Generator, engine: str) -> np.ndarray:
    x = speech_in_room_tone(spec, rng, engine)
    n_nan, n_inf = spec.params["n_nan"], spec.params["n_inf"]
    where = rng.choice(x.size, n_nan + n_inf, replace=False)
    flat = x.reshape(-1)
    flat[where[:n_nan]] = np.nan
    flat[where[n_nan:]] = np.where(rng.random(n_inf) < 0.5, np.inf, -np.inf)
    return x


# ---------------------------------------------------------------------------------------
# Broken files: empty, garbage, header_only, truncated
# ---------------------------------------------------------------------------------------


def _plan_empty(rng: np.random.Generator, s: FileSpec, k: int) -> FileSpec:
    s.format = "WAV"  # only to choose the extension; the file has no header
    return s


def _bytes_empty(spec: FileSpec, rng: np.random.Generator, engine: str) -> bytes:
    return b""


def _plan_garbage(rng: np.random.Generator, s: FileSpec, k: int) -> FileSpec:
    """Bytes that are not audio under an audio extension: random bytes, or an HTML error
    page a scraper saved as .wav/.flac."""
    s.format = ("WAV", "FLAC")[k % 2]
    kind = ("random", "html")[(k + k // 2) % 2]  # k = 0..3 covers every (kind, format)
    s.params = {"kind": kind, "size": int(rng.integers(512, 32768))}
    return s


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


HEADER_ONLY_SHAPES = [
    (subtype, rate)
    for rate in (16000, 44100, 48000, 22050, 8000, 32000, 11025, 24000)
    for subtype in ("PCM_16", "PCM_24", "FLOAT")
]


def _plan_header_only(rng: np.random.Generator, s: FileSpec, k: int) -> FileSpec:
    """A valid WAV header and zero frames (an interrupted recorder). A header holds only
    subtype, rate and channels, so the k-th such file gets its own (subtype, rate) pair:
    two identical headers would be byte duplicates, which the truth does not plan."""
    s.format = "WAV"
    pick(rng, ("PCM_16", "PCM_24", "FLOAT"))  # keeps the draws of later files unchanged
    draw_audio_shape(rng, s)
    s.subtype, s.sample_rate = HEADER_ONLY_SHAPES[k % len(HEADER_ONLY_SHAPES)]
    s.channels = 1 + k // len(HEADER_ONLY_SHAPES)
    s.seconds = s.speech_seconds = 0.0
    return s


def _bytes_header_only(spec: FileSpec, rng: np.random.Generator, engine: str) -> bytes:
    """The header and a take name (an INFO chunk, as recorders write), zero frames. The
    take name is drawn from the file's own stream, so corpora of other seeds do not share
    this file's bytes either."""
    buf = io.BytesIO()
    channels = spec.channels or 1
    with sf.SoundFile(buf, "w", spec.sample_rate, channels, spec.subtype, format="WAV") as f:
        f.title = f"take {int(rng.integers(1, 2**31))}"
    return reproducible(buf.getvalue(), "WAV", int(rng.integers(1, 2**31)))


def _plan_truncated(rng: np.random.Generator, s: FileSpec, k: int) -> FileSpec:
    """A WAV or FLAC cut to ~60 % of its bytes (an interrupted download); the header
    still declares the full length. Alternates WAV and FLAC so both occur."""
    s.format, s.subtype = (
        ("WAV", "PCM_16"),
        ("FLAC", "PCM_16"),
        ("WAV", "PCM_24"),
        ("FLAC", "PCM_24"),
    )[k % 4]
    draw_audio_shape(rng, s)
    draw_timing(rng, s, (3.0, 6.0))
    keep, peak_dbfs = float(rng.uniform(0.55, 0.65)), float(rng.uniform(-8.0, -3.0))
    s.params |= {"keep": keep, "peak_dbfs": peak_dbfs}
    return s


def _bytes_truncated(spec: FileSpec, rng: np.random.Generator, engine: str) -> bytes:
    whole = encode(speech_in_room_tone(spec, rng, engine), spec, rng)
    return whole[: int(len(whole) * spec.params["keep"])]


# ---------------------------------------------------------------------------------------
# Files that are not audio (placed by the corpus planner)
# ---------------------------------------------------------------------------------------


NOT_AUDIO_KINDS = ("README.txt", "transcript.json", "cover.jpg", "metadata.csv")


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


# ---------------------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------------------


# In this order in the printed summary and docs/SYNTH.md's table.
CLASSES: dict[str, FaultClass] = {
    c.name: c
    for c in (
        FaultClass("clean", "kept", "ok", 0.0, minimum=6, render=encoded(speech_in_room_tone)),
        FaultClass(
            "short", "rejected", "short", 0.5, plan=_plan_short, render=encoded(speech_in_room_tone)
        ),
        FaultClass(
            "quiet_speech",
            "kept",
            "normalized",
            0.4,
            plan=_plan_quiet_speech,
            render=encoded(speech_in_room_tone),
        ),
        FaultClass(
            "dead", "rejected", "quiet", 0.2, plan=_plan_dead, render=encoded(speech_in_room_tone)
        ),
        FaultClass(
            "mostly_silent",
            "rejected",
            "mostly_silent",
            0.15,
            plan=_plan_mostly_silent,
            render=encoded(_signal_mostly_silent),
        ),
        FaultClass(
            "digital_silence",
            "rejected",
            "silent",
            0.2,
            plan=_plan_digital_silence,
            render=encoded(_signal_digital_silence),
        ),
        FaultClass(
            "noise_only",
            "rejected",
            "no_speech",
            0.2,
            plan=_plan_noise_only,
            render=encoded(_signal_noise_only),
        ),
        FaultClass(
            "clipped",
            "rejected",
            "clipped",
            0.3,
            plan=_plan_clipped,
            render=encoded(_signal_clipped),
        ),
        FaultClass(
            "dc_offset", "kept", "ok", 0.3, plan=_plan_dc_offset, render=encoded(_signal_dc_offset)
        ),
        FaultClass(
            "nonfinite",
            "rejected",
            "nonfinite",
            0.2,
            plan=_plan_nonfinite,
            render=encoded(_signal_nonfinite),
        ),
        FaultClass("duplicate", "rejected", "duplicate", 0.4),
        FaultClass("empty", "rejected", "corrupt", 0.1, plan=_plan_empty, render=_bytes_empty),
        FaultClass(
            "garbage",
            "rejected",
            "corrupt",
            0.2,
            minimum=2,
            plan=_plan_garbage,
            render=_bytes_garbage,
        ),
        FaultClass(
            "header_only",
            "rejected",
            "corrupt",
            0.1,
            plan=_plan_header_only,
            render=_bytes_header_only,
        ),
        FaultClass(
            "truncated",
            "rejected",
            "corrupt",
            0.2,
            minimum=2,
            plan=_plan_truncated,
            render=_bytes_truncated,
        ),
        FaultClass("not_audio", "rejected", "not_audio", 0.4, minimum=4, render=_bytes_not_audio),
    )
}


def render(spec: FileSpec, rng: np.random.Generator, engine: str) -> bytes:
    """The bytes of one (non-duplicate) file, by its class's renderer."""
    renderer = CLASSES[spec.cls].render
    if renderer is None:
        raise ValueError(f"{spec.path}: class {spec.cls!r} is copied, not rendered")
    return renderer(spec, rng, engine)
