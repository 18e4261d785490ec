"""Reason codes on measurements alone (preprocess.measure.policy.decide_measured)."""

from __future__ import annotations

from preprocess.config import PreprocessConfig
from preprocess.measure.policy import Measurements, decide_measured


def measured(seconds: float, active_seconds: float, **more: float | None) -> Measurements:
    """An intact file's measurements, `seconds` long with `active_seconds` of speech;
    `more` sets other fields (Silero's figure, the decoded length)."""
    return Measurements(
        seconds=seconds,
        peak=0.5,
        peak_without_dc=0.5,
        rms=0.1,
        active_seconds=active_seconds,
        active_fraction=active_seconds / seconds,
        clipped_fraction=0.0,
        loudness_lufs=-25.0,
        snr_db=20.0,
        **more,
    )


def test_a_file_shorter_than_the_speech_asked_for_is_short_not_no_speech():
    """At 113 h, 229 of 909 planted sub-0.5-s files were called no_speech: on a fraction of
    a second the noise floor follows the speech, so few frames count as active."""
    cfg = PreprocessConfig()
    decision = decide_measured(measured(0.3, 0.02), cfg)
    assert (decision.kept, decision.reason) == (False, "short")
    assert "0.30 s long" in decision.detail


def test_a_long_file_without_activity_is_still_no_speech():
    decision = decide_measured(measured(5.0, 0.02), PreprocessConfig())
    assert (decision.kept, decision.reason) == (False, "no_speech")
