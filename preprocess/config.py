"""Preprocessing configuration: one dataclass, printed at start and stored in index.json.

Defaults are documented in docs/PREPROCESS.md; a JSON or TOML file (`--config`) overrides
them, and command-line flags override the file. `preset="original"` reproduces the
original ad-hoc filter (duration ≥ 1 s, RMS > 0.001, peak > 0.01) for comparison.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PRESETS = ("default", "original")
AUDIO_ENCODINGS = ("flac", "npy")
# Written by `to_dict` for readers of index.json (they are properties, not knobs); dropped
# again when a dict is turned back into a config.
DERIVED_KEYS = ("utterance_max_samples", "frame_samples")
# Keys of format 1 (fixed segments cut at preprocessing). The segment length is a training
# knob now, so a config that still sets them is refused with one line saying where it went.
RETIRED_KEYS = ("segment_seconds", "min_valid_fraction")
RETIRED_WHY = (
    "the segment length is chosen at training time (`train_ds.py --segment-seconds`); "
    "preprocess writes whole utterances of up to max_utterance_seconds"
)


class ConfigError(ValueError):
    """A config value or file that cannot be used; the message names the key or file.

    Raised before Ray starts or OUT is touched, so the CLIs turn it into one line and
    exit 2 (`preprocess: error: …`) instead of a traceback or a run of `corrupt` files.
    """

    def __init__(self, message: str, key: str | None = None):
        super().__init__(message)
        self.key = key


QUALITY = ("snr", "dnsmos")
# Whose speech activity the speech-amount rules read (docs/PREPROCESS.md, "A second
# opinion on speech").
VADS = ("ours", "silero")


@dataclass(frozen=True)
class PreprocessConfig:
    """Every knob that changes the output bytes lives here (and so in the config hash)."""

    preset: str = "default"
    sample_rate: int = 16000
    frame_ms: float = 20.0
    block_seconds: float = 10.0
    # Utterances (docs/PREPROCESS.md "Utterances": why these numbers)
    trim: bool = True
    trim_margin_ms: float = 200.0
    split_pause_seconds: float = 1.0
    max_utterance_seconds: float = 20.0
    min_utterance_seconds: float = 0.5
    # Splitting and sharding
    split_by: str = "dir"  # dir | file | re:PATTERN | manifest:FILE (docs/PREPROCESS.md)
    val_fraction: float = 0.05
    # Val gets at least this much audio (capped at a quarter of the corpus, see
    # preprocess.plan.split): 5 % of a 1 h corpus is 3 minutes, too few for a stable SNR.
    min_val_seconds: float = 300.0
    split_seed: int = 0
    shard_mb: float = 32.0
    audio_encoding: str = "flac"
    # Decisions (docs/CONTRACTS.md)
    min_peak_dbfs: float = -80.0
    # `quiet` also when integer PCM speech spans < 16 steps (−66 dBFS in 16-bit): too few
    # bits deep to normalize (docs/CONTRACTS.md).
    min_peak_lsb: float = 16.0
    min_no_speech_seconds: float = 0.1
    min_active_seconds: float = 1.0
    min_active_fraction: float = 0.2
    clip_level: float = 0.99
    clip_min_run: int = 3
    max_clipped_fraction: float = 0.005
    # Voice-activity detector (preprocess.measure.kernels.active_frames)
    # 6 dB over each band's floor, measured: tests/e2e/test_noisy_speech.py (the 12 dB it replaced
    # lost most speech at 10 dB SNR in white noise; noise alone stays under ~3 dB).
    vad_margin_db: float = 6.0
    vad_floor_dbfs: float = -100.0
    # Minimum-statistics window: long enough that continuous read speech still holds a
    # pause (1.5 s marked a third of a 6 s continuous utterance inactive; 5 s: under 20 %).
    vad_window_seconds: float = 5.0
    # "silero": no_speech/short/mostly_silent read Silero VAD's speech seconds instead of
    # ours (preprocess.measure.silero_vad; opt-in: ~6 CPU-s per audio-hour, docs/PREPROCESS.md).
    vad: str = "ours"
    # Loudness normalisation (BS.1770 on the active part)
    normalize: bool = True
    target_lufs: float = -23.0
    peak_limit_dbfs: float = -1.0
    rescue_gain_db: float = 20.0
    # The original filter's thresholds, used by preset "original"
    original_min_seconds: float = 1.0
    original_min_rms: float = 0.001
    original_min_peak: float = 0.01
    extra_audio_extensions: tuple[str, ...] = field(default_factory=tuple)
    # sha256 of the `manifest:FILE` of split_by, so a changed manifest is another config
    # (another digest). Filled in from the file when empty; "" for the other split modes.
    split_manifest_sha256: str = ""
    # Quality scores (preprocess.measure.quality). The speech-band SNR is always measured;
    # DNSMOS P.835 only with quality="dnsmos" (~0.6 CPU-s per 9.01 s window scored, up to
    # dnsmos_max_windows per file). The thresholds are off by default: no clean file lost.
    quality: str = "snr"
    dnsmos_max_windows: int = 2
    min_snr_db: float = -100.0  # reason `noisy`; the estimate never reads below −20 dB
    min_dnsmos_ovrl: float = 0.0  # reason `low_quality`; DNSMOS is 1–5

    def __post_init__(self) -> None:
        for key, value in validated(self).items():
            object.__setattr__(self, key, value)

    @property
    def frame_samples(self) -> int:
        return int(round(self.sample_rate * self.frame_ms / 1000.0))

    @property
    def utterance_max_samples(self) -> int:
        """The longest sample a shard holds: the cap training segment lengths stay under."""
        return int(round(self.sample_rate * self.max_utterance_seconds))

    @property
    def utterance_min_samples(self) -> int:
        return max(1, math.ceil(self.sample_rate * self.min_utterance_seconds))

    @property
    def block_frames_16k(self) -> int:
        """Analysis block in 16 kHz samples, a whole number of frames."""
        frames = max(1, int(self.block_seconds * 1000.0 / self.frame_ms))
        return frames * self.frame_samples

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["extra_audio_extensions"] = list(self.extra_audio_extensions)
        d["utterance_max_samples"] = self.utterance_max_samples
        d["frame_samples"] = self.frame_samples
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "config") -> PreprocessConfig:
        """The inverse of `to_dict` (index.json's "config", a Ray actor's argument, a config
        file): derived keys are dropped and every value is validated. Unknown keys are an
        error naming `source` and the key, so a typo never silently does nothing."""
        values = {k: v for k, v in data.items() if k not in DERIVED_KEYS}
        _refuse_retired(values, source)
        _refuse_unknown(values, source)
        return cls(**values)

    def digest(self) -> str:
        """Hash of everything that shapes the output; a rerun only resumes a matching plan."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode("utf-8")
        return hashlib.sha256(blob).hexdigest()[:16]

    def replace(self, **changes: Any) -> PreprocessConfig:
        return dataclasses.replace(self, **changes)


# ---------------------------------------------------------------------------------------
# Validation: every field, in one place
# ---------------------------------------------------------------------------------------

# field → (type, check, allowed values in words). Numbers are finite; a float field takes
# an int (stored as float, so `2` in a file and `--flag 2.0` give one digest); bools are
# never numbers and numbers never bools.
_RULES: dict[str, tuple[type, Callable[[Any], bool], str]] = {
    "preset": (str, lambda v: v in PRESETS, f"one of {list(PRESETS)}"),
    "sample_rate": (int, lambda v: v == 16000, "16000 (shards are 16 kHz by contract)"),
    "frame_ms": (float, lambda v: 1.0 <= v <= 1000.0, "1 ≤ frame_ms ≤ 1000"),
    "block_seconds": (float, lambda v: 0.1 <= v <= 3600.0, "0.1 ≤ block_seconds ≤ 3600"),
    "trim": (bool, lambda v: True, "true or false"),
    "trim_margin_ms": (float, lambda v: v >= 0.0, "trim_margin_ms ≥ 0"),
    "split_pause_seconds": (float, lambda v: v > 0.0, "split_pause_seconds > 0"),
    "max_utterance_seconds": (
        float,
        lambda v: 1.0 <= v <= 600.0,
        "1 ≤ max_utterance_seconds ≤ 600",
    ),
    "min_utterance_seconds": (
        float,
        lambda v: 0.0 <= v <= 600.0,
        "0 ≤ min_utterance_seconds ≤ max_utterance_seconds",
    ),
    "split_by": (str, lambda v: True, "dir, file, re:PATTERN or manifest:FILE"),
    "val_fraction": (float, lambda v: 0.0 <= v < 1.0, "0 ≤ val_fraction < 1"),
    "min_val_seconds": (float, lambda v: v >= 0.0, "min_val_seconds ≥ 0"),
    "split_seed": (int, lambda v: v >= 0, "an integer ≥ 0"),
    "shard_mb": (float, lambda v: v > 0.0, "shard_mb > 0"),
    "audio_encoding": (str, lambda v: v in AUDIO_ENCODINGS, f"one of {list(AUDIO_ENCODINGS)}"),
    "min_peak_dbfs": (float, lambda v: v <= 0.0, "min_peak_dbfs ≤ 0"),
    "min_peak_lsb": (float, lambda v: v >= 0.0, "min_peak_lsb ≥ 0"),
    "min_no_speech_seconds": (float, lambda v: v >= 0.0, "min_no_speech_seconds ≥ 0"),
    "min_active_seconds": (float, lambda v: v >= 0.0, "min_active_seconds ≥ 0"),
    "min_active_fraction": (float, lambda v: 0.0 <= v <= 1.0, "0 ≤ min_active_fraction ≤ 1"),
    "clip_level": (float, lambda v: 0.0 < v <= 1.0, "0 < clip_level ≤ 1"),
    "clip_min_run": (int, lambda v: v >= 1, "an integer ≥ 1"),
    "max_clipped_fraction": (float, lambda v: 0.0 <= v <= 1.0, "0 ≤ max_clipped_fraction ≤ 1"),
    "vad_margin_db": (float, lambda v: v >= 0.0, "vad_margin_db ≥ 0"),
    "vad_floor_dbfs": (float, lambda v: v <= 0.0, "vad_floor_dbfs ≤ 0"),
    "vad_window_seconds": (float, lambda v: v > 0.0, "vad_window_seconds > 0"),
    "vad": (str, lambda v: v in VADS, f"one of {list(VADS)}"),
    "normalize": (bool, lambda v: True, "true or false"),
    "target_lufs": (float, lambda v: -70.0 <= v <= 0.0, "-70 ≤ target_lufs ≤ 0"),
    "peak_limit_dbfs": (float, lambda v: v <= 0.0, "peak_limit_dbfs ≤ 0"),
    "rescue_gain_db": (float, lambda v: v >= 0.0, "rescue_gain_db ≥ 0"),
    "original_min_seconds": (float, lambda v: v >= 0.0, "original_min_seconds ≥ 0"),
    "original_min_rms": (float, lambda v: 0.0 <= v <= 1.0, "0 ≤ original_min_rms ≤ 1"),
    "original_min_peak": (float, lambda v: 0.0 <= v <= 1.0, "0 ≤ original_min_peak ≤ 1"),
    "extra_audio_extensions": (tuple, lambda v: True, 'a list of extensions such as ".m4a"'),
    "split_manifest_sha256": (str, lambda v: True, "64 hex digits"),
    "quality": (str, lambda v: v in QUALITY, f"one of {list(QUALITY)}"),
    "dnsmos_max_windows": (int, lambda v: v >= 1, "an integer ≥ 1"),
    "min_snr_db": (float, lambda v: v <= 100.0, "min_snr_db ≤ 100"),
    "min_dnsmos_ovrl": (float, lambda v: 0.0 <= v <= 5.0, "0 ≤ min_dnsmos_ovrl ≤ 5"),
}
_TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _fail(key: str, value: Any, expected: str) -> ConfigError:
    return ConfigError(f"config key {key} = {value!r}: expected {expected}", key=key)


def _checked(key: str, value: Any) -> Any:
    """`value` as the field's type if it has that type and lies in range; else ConfigError."""
    kind, ok, expected = _RULES[key]
    if kind is tuple:
        return _checked_extensions(key, value, expected)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        words = _TYPE_WORDS[kind]
        raise _fail(key, value, words if words == expected else f"{words}, {expected}")
    if kind is float and not math.isfinite(value):
        raise _fail(key, value, f"a finite number, {expected}")
    if not ok(value):
        raise _fail(key, value, expected)
    return value


def _checked_extensions(key: str, value: Any, expected: str) -> tuple[str, ...]:
    if isinstance(value, list):
        value = tuple(value)
    if not isinstance(value, tuple) or not all(
        isinstance(e, str) and e.strip(".") and "/" not in e for e in value
    ):
        raise _fail(key, value, expected)
    return value


def _checked_split(cfg: PreprocessConfig) -> str:
    """split_by's syntax, and the manifest's hash (read from the file when not given)."""
    # Imported here, not at the top: config is the data every part reads (measure and the
    # diagnosis included), and the split rules belong to the orchestration; a module-level
    # import would pull preprocess.plan.split into measure's imports (tests/e2e/test_layout.py).
    from preprocess.plan.split import manifest_sha256, parse_split_by

    try:
        rule = parse_split_by(cfg.split_by)
    except ValueError as exc:
        raise _fail("split_by", cfg.split_by, str(exc)) from None
    sha = cfg.split_manifest_sha256
    if rule.manifest is None:
        if sha:
            raise _fail("split_manifest_sha256", sha, '"" unless split_by is manifest:FILE')
        return sha
    if not sha:
        try:
            sha = manifest_sha256(rule.manifest)
        except OSError as exc:
            raise _fail("split_by", cfg.split_by, f"a readable manifest ({exc})") from None
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise _fail("split_manifest_sha256", sha, "64 hex digits")
    return sha


def validated(cfg: PreprocessConfig) -> dict[str, Any]:
    """Every field checked (type, range, split_by syntax); returns the normalized values.

    The one place config values are judged, so `frame_ms = 0` or `"abc"` for a number is a
    one-line error naming the key before any work starts, never a crash in a worker.
    """
    values = {f.name: _checked(f.name, getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    values["split_manifest_sha256"] = _checked_split(cfg)
    if values["min_utterance_seconds"] > values["max_utterance_seconds"]:
        raise _fail(
            "min_utterance_seconds",
            values["min_utterance_seconds"],
            f"≤ max_utterance_seconds ({values['max_utterance_seconds']:g})",
        )
    if values["min_dnsmos_ovrl"] > 0 and values["quality"] != "dnsmos":
        raise _fail(
            "min_dnsmos_ovrl",
            values["min_dnsmos_ovrl"],
            "0 unless quality='dnsmos' (--quality dnsmos): no file has a DNSMOS score",
        )
    return values


# ---------------------------------------------------------------------------------------
# Loading: defaults ← file ← flags
# ---------------------------------------------------------------------------------------


def _known_fields() -> set[str]:
    return {f.name for f in dataclasses.fields(PreprocessConfig)}


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The key → value table of a JSON or TOML config file (a `[preprocess]` table is
    accepted); every problem with the file is a ConfigError naming it."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"config file {p}: no such file")
    if p.is_dir():
        raise ConfigError(f"config file {p}: is a directory, expected a JSON or TOML file")
    kind = "TOML" if p.suffix.lower() == ".toml" else "JSON"
    try:
        text = p.read_text(encoding="utf-8")
        data = tomllib.loads(text) if kind == "TOML" else json.loads(text)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {p}: cannot read it ({exc})") from None
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"config file {p}: not valid {kind} ({exc})") from None
    if isinstance(data, dict) and isinstance(data.get("preprocess"), dict):
        data = data["preprocess"]
    if not isinstance(data, dict):
        got = type(data).__name__
        raise ConfigError(f"config file {p}: expected a table of config keys, got a {got}")
    data = {k: v for k, v in data.items() if k not in DERIVED_KEYS}
    _refuse_retired(data, f"config file {p}")
    _refuse_unknown(data, f"config file {p}")
    return data


def _refuse_retired(values: Mapping[str, Any], source: str) -> None:
    """A format-1 key (`segment_seconds`, `min_valid_fraction`): one line saying where the
    segment length went, rather than "unknown key" or a setting silently ignored."""
    retired = [k for k in RETIRED_KEYS if k in values]
    if retired:
        raise ConfigError(
            f"{source}: {retired[0]} is no longer a preprocess setting: {RETIRED_WHY}",
            key=retired[0],
        )


def _refuse_unknown(values: Mapping[str, Any], source: str) -> None:
    unknown = sorted(set(values) - _known_fields())
    if unknown:
        raise ConfigError(
            f"{source}: unknown config keys {unknown}; known: {sorted(_known_fields())}"
        )


def load_config(path: str | Path | None = None, **overrides: Any) -> PreprocessConfig:
    """Defaults ← file (JSON or TOML; a `[preprocess]` table is accepted) ← overrides.

    Unknown keys are an error naming the key, so a typo never silently does nothing; a bad
    value from the file is an error naming the file and the key.
    """
    from_file = read_config_file(path) if path is not None else {}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    _refuse_retired(overrides, "config")
    try:
        return PreprocessConfig(**{**from_file, **overrides})
    except ConfigError as exc:
        if exc.key in from_file and exc.key not in overrides:
            raise ConfigError(f"config file {path}: {exc}", key=exc.key) from None
        raise
