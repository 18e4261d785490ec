"""Keep or reject one analysed file, with a reason code; and the gain a kept file gets.

The rules and their order are the table in docs/CONTRACTS.md: the first rule that fires
is the reason. Quiet but intact speech is not a reason to reject — it is rescued by
loudness normalisation and marked `normalized`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from preprocess.config import PreprocessConfig
from preprocess.measure.kernels import OVERFLOW_LIMIT
from preprocess.measure.scan import FileAnalysis

_DECODE_REASONS = (
    "not_audio",
    "unsupported_format",
    "corrupt",
    "duplicate",
    "nonfinite",
    "silent",
    "quiet",
    "no_speech",
    "short",
    "mostly_silent",
    "clipped",
)
# Decided while listing the input, before any byte of the file is read (docs/CONTRACTS.md).
LISTING_REASONS = ("bad_name", "not_regular_file", "broken_link", "symlink_loop", "unreadable")
# Thresholds on the quality scores (preprocess.measure.quality); off by default.
QUALITY_REASONS = ("noisy", "low_quality")
REJECT_REASONS = _DECODE_REASONS + QUALITY_REASONS + LISTING_REASONS
KEEP_REASONS = ("ok", "normalized")
# stats.zarr stores a reason as its index here: new codes are appended, old ones keep theirs.
REASONS = _DECODE_REASONS + KEEP_REASONS + LISTING_REASONS + QUALITY_REASONS


@dataclass(frozen=True)
class Decision:
    status: str  # "kept" | "rejected"
    reason: str
    gain_db: float = 0.0
    detail: str | None = None

    @property
    def kept(self) -> bool:
        return self.status == "kept"


def reject(reason: str, detail: str | None = None) -> Decision:
    assert reason in REJECT_REASONS, reason
    return Decision("rejected", reason, 0.0, detail)


def dbfs(x: float) -> float:
    return 20.0 * math.log10(x) if x > 0 else -math.inf


# libsndfile's message for an encoding it parses but does not implement (64-bit integer
# PCM, a WAVE_FORMAT_EXTENSIBLE sub-format it lacks): the file may be fine, the decoder
# cannot read it, so the user should convert it, not look for damage.
_UNIMPLEMENTED = "unimplemented format"


def undecodable(message: str | None, is_audio_extension: bool) -> Decision:
    """The reason for a file the decoder could not open or read, from its message."""
    if message and _UNIMPLEMENTED in message.lower():
        return reject(
            "unsupported_format",
            f"{message}; the decoder does not implement this encoding: convert it first, "
            "e.g. `ffmpeg -i in.wav -c:a pcm_s16le out.wav`",
        )
    return reject("corrupt" if is_audio_extension else "not_audio", message)


def pcm_bits(subtype: str | None) -> int | None:
    """Bit depth of integer PCM (`PCM_16` → 16, `PCM_U8` → 8); None for float or lossy."""
    bits = {"PCM_S8": 8, "PCM_U8": 8, "PCM_16": 16, "PCM_24": 24, "PCM_32": 32}
    return bits.get(subtype or "")


def decide(a: FileAnalysis, cfg: PreprocessConfig, is_audio_extension: bool) -> Decision:
    """Apply the policy of `cfg.preset` to an analysed file."""
    if a.error is not None:
        return undecodable(a.error, is_audio_extension)
    if a.header is None or a.frames_read == 0:
        return reject("corrupt", "no audio frames (header only or empty stream)")
    if a.truncated:
        return reject("corrupt", a.truncated)
    if a.frames_read < a.header.frames:
        return reject(
            "corrupt",
            f"truncated: header declares {a.header.frames} frames, decoded {a.frames_read}",
        )
    if a.nonfinite:
        return reject("nonfinite", "NaN or Inf samples in the decoded audio")
    if a.overflow:
        return reject(
            "nonfinite",
            f"{a.overflow} sample(s) beyond ±{OVERFLOW_LIMIT:g} (90 dB over full scale): "
            "overflowed or corrupt float data",
        )
    return decide_measured(Measurements.from_analysis(a), cfg)


@dataclass(frozen=True)
class Measurements:
    """The scalar measurements the threshold rules read: taken from a FileAnalysis when a
    file is scanned, or from its files.jsonl line, so what-if questions need no decoding."""

    seconds: float
    peak: float
    peak_without_dc: float
    rms: float
    active_seconds: float
    active_fraction: float
    clipped_fraction: float
    loudness_lufs: float
    snr_db: float | None = None  # None: not measured (an OUT from before quality scores)
    dnsmos_ovrl: float | None = None  # None: DNSMOS not run (quality="snr")
    pcm_bits: int | None = None  # integer PCM bit depth of the source; None: float, lossy
    silero_speech_seconds: float | None = None  # None: Silero VAD not run (vad="ours")
    # The decoded length (the header's `seconds` can claim more than decodes): what the
    # speech fractions are of. None: not known (then `seconds`).
    decoded_seconds: float | None = None

    @classmethod
    def from_analysis(cls, a: FileAnalysis) -> Measurements:
        """From pass 1 of a file that decoded (integrity checks passed)."""
        return cls(
            seconds=a.seconds,
            peak=a.peak,
            peak_without_dc=a.peak_without_dc,
            rms=a.rms,
            active_seconds=a.active_seconds,
            active_fraction=a.active_fraction,
            clipped_fraction=a.clipped_fraction,
            loudness_lufs=a.loudness_lufs,
            snr_db=a.snr_db,
            dnsmos_ovrl=a.dnsmos_ovrl,
            pcm_bits=pcm_bits(a.header.subtype if a.header else None),
            silero_speech_seconds=a.silero_speech_seconds,
            decoded_seconds=a.frames_read / a.header.sample_rate
            if a.header and a.header.sample_rate
            else None,  # as files.jsonl's `seconds` of a decoded file
        )

    @classmethod
    def from_record(cls, rec: dict) -> Measurements:
        """From a files.jsonl line of a decoded file (its measurement fields are set)."""

        def f(name: str, missing: float = 0.0) -> float:
            v = rec.get(name)
            return missing if v is None else float(v)

        return cls(
            seconds=f("seconds"),
            peak=f("peak"),
            peak_without_dc=f("peak_without_dc"),
            rms=f("rms"),
            active_seconds=f("active_seconds"),
            active_fraction=f("active_fraction"),
            clipped_fraction=f("clipped_fraction"),
            loudness_lufs=f("loudness_lufs", -math.inf),
            snr_db=rec.get("snr_db"),
            dnsmos_ovrl=rec.get("dnsmos_ovrl"),
            pcm_bits=pcm_bits(rec.get("subtype")),
            silero_speech_seconds=rec.get("silero_speech_seconds"),
            decoded_seconds=rec.get("seconds"),  # a decoded file's length from its samples
        )


def decide_measured(a: Measurements, cfg: PreprocessConfig) -> Decision:
    """The threshold rules, on measurements alone (integrity checks already passed)."""
    if cfg.preset == "original":
        return _decide_original(a, cfg)
    if a.peak == 0.0:
        return reject("silent", "digital silence: every sample is zero")
    if a.peak_without_dc == 0.0:
        return reject("quiet", "no signal once its DC offset is removed")
    if dbfs(a.peak_without_dc) < cfg.min_peak_dbfs:
        return reject(
            "quiet", f"peak {dbfs(a.peak_without_dc):.1f} dBFS < {cfg.min_peak_dbfs} dBFS"
        )
    if a.pcm_bits is not None:
        # Too few bits deep: speech spanning ±N steps carries quantization noise only
        # ~20·log10(N / 1.7) dB under it (N = 16: ~19 dB), which normalization would raise
        # with it; and the activity detector, under its −100 dBFS floor, would call it
        # `no_speech` or `short` when it is intact speech (issue 24).
        lsb = a.peak_without_dc * 2.0 ** (a.pcm_bits - 1)
        if lsb < cfg.min_peak_lsb:
            return reject(
                "quiet",
                f"peak {lsb:.1f} LSB of {a.pcm_bits}-bit PCM < {cfg.min_peak_lsb:g} LSB "
                f"({dbfs(a.peak_without_dc):.1f} dBFS): too few bits deep to rescue",
            )
    if a.seconds < cfg.min_active_seconds:
        # Too short to hold the speech asked for, whatever it holds; on a fraction of a second
        # the noise floor cannot be told from speech, so activity would wrongly say no_speech.
        return reject("short", f"{a.seconds:.2f} s long < {cfg.min_active_seconds} s of speech")
    speech_seconds, speech_fraction, by = speech_amount(a, cfg)
    if speech_seconds < cfg.min_no_speech_seconds:
        return reject("no_speech", f"{speech_seconds:.2f} s of speech-like activity{by}")
    if speech_seconds < cfg.min_active_seconds:
        return reject("short", f"{speech_seconds:.2f} s active < {cfg.min_active_seconds} s{by}")
    if speech_fraction < cfg.min_active_fraction:
        return reject(
            "mostly_silent",
            f"active fraction {speech_fraction:.3f} < {cfg.min_active_fraction}{by}",
        )
    if a.clipped_fraction > cfg.max_clipped_fraction:
        return reject(
            "clipped",
            f"{100 * a.clipped_fraction:.2f} % of samples clipped > "
            f"{100 * cfg.max_clipped_fraction:.2f} %",
        )
    if a.snr_db is not None and a.snr_db < cfg.min_snr_db:
        return reject("noisy", f"speech SNR {a.snr_db:.1f} dB < {cfg.min_snr_db} dB")
    if a.dnsmos_ovrl is not None and a.dnsmos_ovrl < cfg.min_dnsmos_ovrl:
        return reject("low_quality", f"DNSMOS OVRL {a.dnsmos_ovrl:.2f} < {cfg.min_dnsmos_ovrl}")
    gain_db = normalization_gain_db(a, cfg)
    reason = "normalized" if gain_db >= cfg.rescue_gain_db else "ok"
    return Decision("kept", reason, gain_db)


def speech_amount(a: Measurements, cfg: PreprocessConfig) -> tuple[float, float, str]:
    """(speech seconds, speech fraction of the file, detail suffix) the speech-amount
    rules read: our detector's, or with `vad = "silero"` Silero VAD's (its figure is
    missing only in a record from a run without it; ours then)."""
    if cfg.vad == "silero" and a.silero_speech_seconds is not None:
        seconds = a.silero_speech_seconds
        length = a.seconds if a.decoded_seconds is None else a.decoded_seconds
        fraction = min(1.0, seconds / length) if length > 0 else 0.0
        return seconds, fraction, " (Silero VAD)"
    return a.active_seconds, a.active_fraction, ""


def normalization_gain_db(a: Measurements, cfg: PreprocessConfig) -> float:
    """Gain to `target_lufs`, capped so the DC-free sample peak stays ≤ `peak_limit_dbfs`."""
    if not cfg.normalize:
        return 0.0
    headroom = cfg.peak_limit_dbfs - dbfs(a.peak_without_dc)
    if not math.isfinite(a.loudness_lufs):
        return min(0.0, headroom)
    return min(cfg.target_lufs - a.loudness_lufs, headroom)


def _decide_original(a: Measurements, cfg: PreprocessConfig) -> Decision:
    """The original filter: duration ≥ 1 s, RMS > 0.001, peak > 0.01; no normalisation."""
    if a.seconds < cfg.original_min_seconds:
        return reject("short", f"{a.seconds:.2f} s < {cfg.original_min_seconds} s")
    if a.peak <= cfg.original_min_peak:
        return reject("quiet", f"peak {a.peak:.2e} ≤ {cfg.original_min_peak}")
    if a.rms <= cfg.original_min_rms:
        return reject("mostly_silent", f"RMS {a.rms:.2e} ≤ {cfg.original_min_rms}")
    headroom = cfg.peak_limit_dbfs - dbfs(a.peak_without_dc)
    return Decision("kept", "ok", min(0.0, headroom))
