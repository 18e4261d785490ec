"""Quality scores: the speech-band SNR estimate against known mixes, DNSMOS P.835 on one
window, the thresholds that reject on them, and their place in files.jsonl / what-if."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from preprocess.config import PreprocessConfig, load_config
from preprocess.measure import kernels
from preprocess.measure.policy import REJECT_REASONS, Measurements, decide_measured
from preprocess.measure.quality import speech_snr_db
from preprocess.measure.scan import analyze_file
from preprocess.measure.spool import SampleSpool
from preprocess.synth.speech import coloured_noise, speech

SR = 16000
SNRS_DB = (0, 10, 20, 30)
NOISES = {"white": 0.0, "pink": 1.0}
# Measured |estimate − truth| bound per mixing SNR, over 3 utterances × white and pink
# noise (the table in docs/PREPROCESS.md); the test fails if the estimator gets worse.
ERROR_BOUND_DB = {0: 6.5, 10: 2.5, 20: 1.25, 30: 0.75}


def _band_frames_power(x: np.ndarray) -> np.ndarray:
    """Power of 20 ms frames of the 80 Hz high-passed signal: the band the scan measures."""
    hp = kernels.HighPass(SR).process(x.astype(np.float32)).astype(np.float64)
    n = hp.size // 320 * 320
    return (hp[:n].reshape(-1, 320) ** 2).mean(axis=1)


def mix_at_snr(seed: int, snr_db: float, exponent: float, seconds: float = 8.0) -> np.ndarray:
    """Procedural speech (no floor of its own) plus noise at `snr_db`: active-speech power
    (frames the clean speech is active in, as P.56) over noise power, both above 80 Hz."""
    clean = speech(
        np.random.default_rng(seed), seconds, SR, engine="procedural", floor_db=-140.0
    ).astype(np.float64)
    p_clean = _band_frames_power(clean)
    active = kernels.active_frames(
        (10 * np.log10(np.maximum(p_clean, 1e-24))).astype(np.float32),
        frame_seconds=0.02,
        window_seconds=5.0,
    )
    noise = coloured_noise(np.random.default_rng(1000 + seed), clean.size, exponent)
    scale = math.sqrt(
        p_clean[active].mean() / 10 ** (snr_db / 10) / _band_frames_power(noise).mean()
    )
    x = clean + scale * noise
    return (0.5 * x / np.abs(x).max()).astype(np.float32)


def scan(tmp_path: Path, x: np.ndarray, cfg: PreprocessConfig | None = None, name: str = "x"):
    path = tmp_path / f"{name}.wav"
    sf.write(path, x, SR, subtype="FLOAT")
    with SampleSpool(tmp_path) as spool:
        return analyze_file(path, cfg or PreprocessConfig(), spool)


def test_speech_snr_estimate_error_is_bounded_on_white_and_pink_noise(tmp_path):
    errors: dict[int, list[float]] = {s: [] for s in SNRS_DB}
    rows = []
    for colour, exponent in NOISES.items():
        for snr in SNRS_DB:
            for seed in range(3):
                est = scan(tmp_path, mix_at_snr(seed, snr, exponent)).snr_db
                errors[snr].append(est - snr)
                rows.append(f"{colour:>5} {snr:>3} dB seed {seed}: estimate {est:6.2f}")
    print("\n".join(rows))
    for snr in SNRS_DB:
        worst = max(abs(e) for e in errors[snr])
        print(f"{snr:>3} dB: mean error {np.mean(errors[snr]):+.2f} dB, max |error| {worst:.2f} dB")
        assert worst <= ERROR_BOUND_DB[snr], (snr, errors[snr])


def test_snr_estimate_ranks_noisier_mixes_lower(tmp_path):
    estimates = [scan(tmp_path, mix_at_snr(5, snr, 1.0)).snr_db for snr in SNRS_DB]
    assert estimates == sorted(estimates)
    assert len(set(estimates)) == len(estimates)


def test_snr_of_noise_gated_speech_is_high_and_finite():
    db = np.full(500, -200.0, np.float32)
    active = np.zeros(500, bool)
    db[100:400], active[100:400] = -20.0, True
    assert speech_snr_db(db, active) == 80.0  # −20 dBFS over the −100 dBFS floor
    assert speech_snr_db(np.zeros(0, np.float32), np.zeros(0, bool)) is None


# ---------------------------------------------------------------------------------------
# DNSMOS P.835
# ---------------------------------------------------------------------------------------


def test_dnsmos_hears_noise_and_repeats_bit_for_bit():
    pytest.importorskip("onnxruntime")
    from preprocess.measure.quality import DNSMOS_WINDOW, dnsmos_window

    clean = mix_at_snr(1, 40.0, 1.0, seconds=DNSMOS_WINDOW / SR)
    noisy = mix_at_snr(1, 0.0, 0.0, seconds=DNSMOS_WINDOW / SR)
    sig_c, bak_c, ovrl_c = dnsmos_window(clean)
    sig_n, bak_n, ovrl_n = dnsmos_window(noisy)
    print(f"clean SIG/BAK/OVRL {sig_c:.3f}/{bak_c:.3f}/{ovrl_c:.3f}")
    print(f"0 dB  SIG/BAK/OVRL {sig_n:.3f}/{bak_n:.3f}/{ovrl_n:.3f}")
    assert all(1.0 <= v <= 5.0 for v in (sig_c, bak_c, ovrl_c, sig_n, bak_n, ovrl_n))
    assert bak_c > bak_n + 1.0 and ovrl_c > ovrl_n + 0.5
    assert dnsmos_window(noisy) == (sig_n, bak_n, ovrl_n)  # one thread: same bits


def test_dnsmos_windows_are_bounded_and_sit_on_speech():
    from preprocess.measure.quality import DNSMOS_WINDOW, window_starts

    frame = 320
    active = np.zeros(30_000, bool)  # 10 minutes of 20 ms frames
    active[20_000:29_000] = True  # speech only in minutes 6.7–9.7
    starts = window_starts(active, frame, active.size * frame, max_windows=3)
    assert len(starts) == 3 and starts == window_starts(active, frame, active.size * frame, 3)
    for s in starts:
        centre = (s + DNSMOS_WINDOW // 2) // frame
        assert active[centre]
    assert window_starts(active, frame, DNSMOS_WINDOW - 5, 3) == [0]  # short: one, tiled
    few = np.zeros(3000, bool)
    few[100:200] = True  # 2 s of speech fill one window, not three
    assert len(window_starts(few, frame, few.size * frame, 3)) == 1


# ---------------------------------------------------------------------------------------
# Thresholds, reasons, config
# ---------------------------------------------------------------------------------------


def _measured(**kw) -> Measurements:
    base = dict(
        seconds=5.0,
        peak=0.5,
        peak_without_dc=0.5,
        rms=0.1,
        active_seconds=4.0,
        active_fraction=0.8,
        clipped_fraction=0.0,
        loudness_lufs=-20.0,
    )
    return Measurements(**{**base, **kw})


def test_a_file_that_is_only_dc_is_quiet_with_a_detail_that_says_so():
    """A 1-sample or constant file: its peak without DC is 0 ("peak -inf dBFS" before)."""
    d = decide_measured(_measured(peak=0.3, peak_without_dc=0.0), PreprocessConfig())
    assert (d.reason, d.detail) == ("quiet", "no signal once its DC offset is removed")


def test_quality_thresholds_are_off_by_default_so_no_file_is_lost():
    cfg = PreprocessConfig()
    assert decide_measured(_measured(snr_db=-20.0, dnsmos_ovrl=1.0), cfg).kept
    assert decide_measured(_measured(), cfg).kept  # an OUT without scores


def test_low_snr_is_rejected_noisy_and_low_dnsmos_low_quality():
    cfg = PreprocessConfig(min_snr_db=15.0, quality="dnsmos", min_dnsmos_ovrl=3.0)
    d = decide_measured(_measured(snr_db=9.5, dnsmos_ovrl=3.5), cfg)
    assert (d.status, d.reason) == ("rejected", "noisy") and "9.5 dB" in d.detail
    d = decide_measured(_measured(snr_db=25.0, dnsmos_ovrl=2.4), cfg)
    assert (d.status, d.reason) == ("rejected", "low_quality")
    assert decide_measured(_measured(snr_db=25.0, dnsmos_ovrl=3.2), cfg).kept


def test_new_reasons_are_appended_after_the_old_ones():
    # stats.zarr stores reasons by index: old codes must not move.
    assert REJECT_REASONS[10] == "clipped"
    assert {"noisy", "low_quality"} <= set(REJECT_REASONS[11:])


def test_dnsmos_threshold_without_dnsmos_scores_is_refused():
    with pytest.raises(ValueError, match="min_dnsmos_ovrl.*quality='dnsmos'"):
        load_config(None, min_dnsmos_ovrl=3.0)
    with pytest.raises(ValueError, match="config key quality = 'mos': expected one of"):
        load_config(None, quality="mos")


# ---------------------------------------------------------------------------------------
# End to end: files.jsonl, stats.zarr, the report, determinism with DNSMOS
# ---------------------------------------------------------------------------------------

CORPUS = {  # path → (seed, mixing SNR dB, noise exponent)
    "spk_a/clean.wav": (11, 45.0, 1.0),
    "spk_a/pink_20.wav": (12, 20.0, 1.0),
    "spk_b/white_12.wav": (13, 12.0, 0.0),
    "spk_b/pink_30.wav": (14, 30.0, 1.0),
}


@pytest.fixture(scope="module")
def quality_runs(tmp_path_factory) -> dict:
    """A 4-file corpus of known SNRs, preprocessed with DNSMOS and min_snr_db = 15 on 2
    workers, then diagnosed from OUT alone."""
    pytest.importorskip("onnxruntime")
    from tests.conftest import preprocess

    root = tmp_path_factory.mktemp("quality")
    corpus = root / "corpus"
    for rel, (seed, snr, exponent) in CORPUS.items():
        (corpus / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(corpus / rel, mix_at_snr(seed, snr, exponent, seconds=6.0), SR, subtype="PCM_16")
    config = root / "quality.toml"
    config.write_text("[preprocess]\nmin_snr_db = 15.0\nval_fraction = 0.0\n")
    out = root / "out-w2"
    preprocess(corpus, out, "--workers", "2", "--quality", "dnsmos", "--config", str(config))
    from preprocess.diagnose.report import report_for_output

    report = report_for_output(out, what_ifs=["min_snr_db=25"])
    return {
        "corpus": corpus,
        "config": config,
        "out": out,
        "report": report,
        "records": read_jsonl(out / "files.jsonl"),
    }


def read_jsonl(path: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_every_decoded_file_has_snr_and_dnsmos_in_files_jsonl(quality_runs):
    by_path = {r["path"]: r for r in quality_runs["records"]}
    for rel, (_, snr, _) in CORPUS.items():
        r = by_path[rel]
        assert abs(r["snr_db"] - snr) <= 2.5, (rel, r["snr_db"])
        assert 1.0 <= r["dnsmos_ovrl"] <= 5.0 and r["dnsmos_windows"] == 1
        assert r["dnsmos_sig"] is not None and r["dnsmos_bak"] is not None
    assert by_path["spk_a/clean.wav"]["dnsmos_bak"] > by_path["spk_b/white_12.wav"]["dnsmos_bak"]


def test_file_under_min_snr_is_rejected_noisy_and_the_rest_kept(quality_runs):
    by_path = {r["path"]: r for r in quality_runs["records"]}
    noisy = by_path["spk_b/white_12.wav"]
    assert (noisy["status"], noisy["reason"]) == ("rejected", "noisy")
    assert "< 15.0 dB" in noisy["detail"]
    assert all(by_path[p]["status"] == "kept" for p in CORPUS if p != "spk_b/white_12.wav")


def test_dnsmos_run_is_byte_identical_on_1_and_2_workers(quality_runs, tmp_path):
    import hashlib

    from tests.conftest import preprocess

    a, b = quality_runs["out"], tmp_path / "out-w1"
    preprocess(
        quality_runs["corpus"],
        b,
        "--workers",
        "1",
        "--quality",
        "dnsmos",
        "--config",
        str(quality_runs["config"]),
    )
    names = ["files.jsonl", "index.json", *(p.name for p in sorted((a / "shards").glob("*.tar")))]

    def digest(out: Path, name: str) -> str:
        path = out / name if (out / name).exists() else out / "shards" / name
        return hashlib.sha256(path.read_bytes()).hexdigest()

    assert [digest(a, n) for n in names] == [digest(b, n) for n in names]


def test_stats_zarr_holds_the_scores_aligned_with_files_jsonl(quality_runs):
    from preprocess.out.stats_store import read_stats

    stats = read_stats(quality_runs["out"] / "stats.zarr")
    cols, records = stats["files"], quality_runs["records"]
    assert np.allclose(cols["snr_db"], [r["snr_db"] for r in records], atol=1e-3)
    assert np.allclose(cols["dnsmos_ovrl"], [r["dnsmos_ovrl"] for r in records], atol=1e-4)
    reasons = stats["attrs"]["reasons"]
    assert [reasons[c] for c in cols["reason"]] == [r["reason"] for r in records]


def test_report_has_a_quality_section_with_plot_worst_files_and_what_ifs(quality_runs):
    report = quality_runs["report"]
    md = report.read_text(encoding="utf-8")
    section = md[md.index("## Quality") :]
    assert "![quality](quality.png)" in section
    assert (report.parent / "quality.png").read_bytes()[:4] == b"\x89PNG"
    assert "`min_snr_db=25 dB`" in section and "`min_dnsmos_ovrl=3`" in section
    assert "Noisiest kept files" in section and "`spk_a/pink_20.wav`" in section
    assert "Lowest DNSMOS OVRL" in section
    # what-if from files.jsonl: a 25 dB floor keeps the 30 dB and clean files only
    row = next(line for line in section.splitlines() if "`min_snr_db=25 dB`" in line)
    assert row.split("|")[2].strip() == "2"
