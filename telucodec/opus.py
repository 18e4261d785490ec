"""Opus as the reference codec: encode/decode with opus-tools' `opusenc`/`opusdec`.

CLI-side glue (subprocesses and temp files), used by `python -m telucodec compare`.
Absent binaries are reported with a clear message, never a crash.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf


def missing_opus() -> str | None:
    """None when opusenc and opusdec are on PATH, else a message saying how to get them."""
    absent = [b for b in ("opusenc", "opusdec") if shutil.which(b) is None]
    if not absent:
        return None
    return (
        f"{' and '.join(absent)} not found on PATH: install opus-tools "
        "(Debian/Ubuntu: apt-get install opus-tools; macOS: brew install opus-tools) "
        "to compare against Opus"
    )


def opus_round_trip(audio: np.ndarray, sample_rate: int, kbps: float) -> np.ndarray:
    """float32[T] mono → Opus at `kbps` (hard CBR) → float32 decoded at `sample_rate`.

    The result may be longer/shifted by the codec's delay; align before scoring.
    """
    with tempfile.TemporaryDirectory(prefix="tc-opus-") as tmp:
        wav, opus, out = Path(tmp, "in.wav"), Path(tmp, "x.opus"), Path(tmp, "out.wav")
        sf.write(wav, np.clip(audio, -1, 1), sample_rate, subtype="PCM_16")
        subprocess.run(
            ["opusenc", "--quiet", "--hard-cbr", "--bitrate", f"{kbps:g}", str(wav), str(opus)],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            ["opusdec", "--quiet", "--rate", str(sample_rate), str(opus), str(out)],
            check=True,
            capture_output=True,
        )
        decoded, sr = sf.read(out, dtype="float32", always_2d=True)
    if sr != sample_rate:
        raise RuntimeError(f"opusdec wrote {sr} Hz, asked for {sample_rate} Hz")
    return decoded.mean(axis=1)
