"""The report's figures: one PNG per question of the original flowchart (Agg, no display).

Each function takes plain arrays and thresholds and writes one file, so a figure can be
regenerated or tested without the rest of the report.

Figures are `matplotlib.figure.Figure` objects with fixed margins, not pyplot with
`tight_layout`: every `preprocess.run` draws these six, and pyplot's import (≈0.5 s) plus
`tight_layout`'s extra layout pass (≈1 s for six figures) were most of the report's time
(measured, 2 cores). The labels are short and the sizes fixed, so fixed margins fit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib.ticker as ticker
import numpy as np
from matplotlib.figure import Figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from preprocess.diagnose.findings import Findings
    from preprocess.diagnose.whatif import PaddingCurve

FLOOR_DB = -140.0  # where −inf dBFS (all-zero files) is drawn
_DPI = 110


def _db(values: Sequence[float | None]) -> np.ndarray:
    x = np.array([np.nan if v is None else v for v in values], dtype=float)
    with np.errstate(divide="ignore"):
        return np.maximum(20.0 * np.log10(np.abs(x)), FLOOR_DB)


# Margins as fractions of the figure, wide enough for the axis labels at these sizes.
_ONE_PANEL = {"left": 0.09, "right": 0.98, "bottom": 0.14, "top": 0.91}
_TWO_PANELS = {"left": 0.08, "right": 0.985, "bottom": 0.14, "top": 0.88}


def _figure(size: tuple[float, float], panels: int = 1, sharey: bool = False):
    """A headless figure (Agg, no pyplot state) and its axes, margins set."""
    fig = Figure(figsize=size)
    axes = fig.subplots(1, panels, sharey=sharey)
    if panels == 1:
        fig.subplots_adjust(**_ONE_PANEL)
    else:  # room for the right panel's own y label unless it shares the left one's
        fig.subplots_adjust(**_TWO_PANELS, wspace=0.12 if sharey else 0.26)
    return fig, axes


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=_DPI)
    return path


def _no_data(ax: Axes) -> None:
    ax.text(0.5, 0.5, "no files", ha="center", va="center", transform=ax.transAxes)


def _vline(ax: Axes, x: float, label: str, color: str, style: str = "--") -> None:
    ax.axvline(x, color=color, linestyle=style, linewidth=1.2, label=label)


KEPT_COLOR, REJECTED_COLOR = "#4c72b0", "#c44e52"
MARK_COLORS = ("black", "#55a868", "#8172b2")  # threshold lines: never the bars' colours


def _stacked(ax: Axes, values: Sequence[float | None], kept: Sequence[bool], bins) -> bool:
    """Histogram of `values`, kept files stacked on rejected ones (missing values skipped);
    False, with "no files" drawn, when there is nothing to draw."""
    v = np.array([np.nan if x is None else x for x in values], dtype=float)
    k = np.asarray(kept, dtype=bool)
    finite = np.isfinite(v)
    v, k = v[finite], k[finite]
    if not v.size:
        _no_data(ax)
        return False
    edges = bins(v) if callable(bins) else bins
    ax.hist(
        [v[k], v[~k]],
        bins=edges,
        stacked=True,
        color=[KEPT_COLOR, REJECTED_COLOR],
        edgecolor="white",
        linewidth=0.5,
        label=[f"kept ({int(k.sum())})", f"rejected ({int((~k).sum())})"],
    )
    return True


def duration_bins(seconds: np.ndarray) -> np.ndarray:
    """Log-spaced edges from just below the shortest file to just above the longest, so
    no file falls outside (a fixed 0.05 s start hid every shorter file)."""
    s = seconds[seconds > 0]
    if not s.size:
        return np.geomspace(0.1, 10.0, 21)
    lo, hi = s.min() / 1.1, max(s.max() * 1.1, s.min() * 2.0)
    per_decade = 12
    n = int(np.clip(np.ceil(np.log10(hi / lo) * per_decade), 20, 60))
    return np.geomspace(lo, hi, n + 1)


def level_bins(db: np.ndarray) -> np.ndarray:
    """5 dB edges from the all-zero floor up past the loudest value: a peak measured after
    resampling can exceed 0 dBFS and must not fall off the right end."""
    top = max(5.0, math.ceil(float(np.max(db, initial=0.0)) / 5.0) * 5.0 + 5.0)
    return np.arange(FLOOR_DB, top + 0.1, 5.0)


def plot_durations(
    seconds: Sequence[float],
    kept: Sequence[bool],
    marks: dict[str, float],
    utterance_seconds: np.ndarray,
    utterance_marks: dict[str, float],
    path: Path,
) -> Path:
    """Left: file durations, kept on rejected (log x: a few 0.3 s files hide on a linear
    axis next to 60 s ones; the bins span the shortest to the longest file). Right: the
    utterances the shards hold, which the training windows are cut from."""
    fig, axes = _figure((10, 3.6), panels=2)
    ax = axes[0]
    s = np.array([np.nan if x is None else x for x in seconds], dtype=float)
    positive = np.nan_to_num(s, nan=0.0) > 0
    if _stacked(ax, s[positive], np.asarray(kept, dtype=bool)[positive], duration_bins):
        ax.set_xscale("log")
    for (label, x), color, style in zip(
        marks.items(), MARK_COLORS, ("--", "-.", ":"), strict=False
    ):
        _vline(ax, x, label, color, style)
    ax.set_xlabel("file duration (s)")
    ax.set_ylabel("files")
    ax.set_title("files (decodable)", fontsize=9)
    ax.legend(fontsize=7)
    ax = axes[1]
    u = np.asarray(utterance_seconds, dtype=float)
    if u.size:
        ax.hist(
            u,
            bins=duration_bins(u),
            color=KEPT_COLOR,
            edgecolor="white",
            linewidth=0.5,
            label=f"utterances ({u.size})",
        )
        ax.set_xscale("log")
        for (label, x), color, style in zip(
            utterance_marks.items(), MARK_COLORS, ("--", "-.", ":"), strict=False
        ):
            _vline(ax, x, label, color, style)
        ax.legend(fontsize=7)
    else:
        _no_data(ax)
    ax.set_xlabel("utterance length (s)")
    ax.set_ylabel("utterances")
    ax.set_title("utterances (shard samples)", fontsize=9)
    for ax in axes:
        ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
        ax.yaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    fig.suptitle("A: file durations and the utterances cut from them")
    return _save(fig, path)


def plot_padding_curve(
    curve: PaddingCurve,
    scored: float,
    original: float,
    recommended: float,
    max_padding: float,
    path: Path,
) -> Path:
    """Padding vs training segment length: the original way, ours in windows (masked),
    ours counted, and the audio ours drops in tail windows too short to use."""
    fig, ax = _figure((7, 3.8))
    x = curve.seconds
    ax.plot(x, 100 * curve.naive, color="#c44e52", lw=2, label="original: padding counted")
    ax.plot(
        x, 100 * curve.padding, color="#4c72b0", lw=2, label="ours: padding in windows (masked)"
    )
    ax.plot(x, np.zeros_like(x), color="#55a868", lw=2, label="ours: padding counted")
    ax.plot(x, 100 * curve.dropped, color="#8c8c8c", lw=1.2, ls=":", label="ours: audio dropped")
    ax.axhline(100 * max_padding, color="black", lw=0.8, ls=":", label="max padding")
    _vline(ax, original, f"original {original:g} s", "#c44e52")
    _vline(ax, scored, f"scored {scored:g} s", "#4c72b0")
    ax.plot(
        [recommended],
        [100 * curve.padding[curve.at(recommended)]],
        "o",
        color="black",
        label=f"recommended {recommended:g} s",
    )
    ax.set_xscale("log")
    ticks = [t for t in (0.5, 1, 2, 4, 8, 16) if x[0] <= t <= x[-1]]
    ax.xaxis.set_major_locator(ticker.FixedLocator(ticks))
    ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xlabel("training segment length S (s): train_ds.py --segment-seconds")
    ax.set_ylabel("% of samples")
    top = max(35.0, 105 * float(np.nanmax(curve.naive, initial=0.0)))
    ax.set_ylim(bottom=-2, top=top)
    ax.set_title("A: zero padding vs training segment length")
    ax.legend(fontsize=7, loc="upper left")
    return _save(fig, path)


def plot_levels(
    peaks: Sequence[float],
    rms: Sequence[float],
    kept: Sequence[bool],
    peak_marks: dict[str, float],
    rms_marks: dict[str, float],
    path: Path,
) -> Path:
    """Peak and RMS in dBFS side by side, kept on rejected, with the original's and our
    thresholds. Both are of the 16 kHz mono signal (after resampling), DC included."""
    fig, axes = _figure((9, 3.6), panels=2, sharey=True)
    for ax, values, marks, name in (
        (axes[0], peaks, peak_marks, "sample peak at 16 kHz mono"),
        (axes[1], rms, rms_marks, "RMS"),
    ):
        _stacked(ax, _db(values), kept, level_bins)
        for (label, x), color in zip(marks.items(), MARK_COLORS, strict=False):
            _vline(ax, x, label, color)
        ax.set_xlabel(f"{name} (dBFS; all-zero files at {FLOOR_DB:g})")
        ax.legend(fontsize=7, loc="upper left")
    axes[0].set_ylabel("files")
    axes[0].yaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    fig.suptitle("B: levels of the measured files")
    return _save(fig, path)


def plot_gain(gains: Sequence[float], rescue_db: float, path: Path) -> Path:
    """Histogram of the loudness gain applied to kept files (rejected files get none, so
    this is the one histogram with no rejected part)."""
    fig, ax = _figure((7, 3.4))
    g = np.asarray([x for x in gains if x is not None and math.isfinite(x)], dtype=float)
    if g.size:
        lo, hi = min(g.min(), -5.0), max(g.max(), rescue_db + 5.0)
        ax.hist(
            g,
            bins=np.arange(math.floor(lo), math.ceil(hi) + 2, 2.0),
            color=KEPT_COLOR,
            edgecolor="white",
            label=f"kept ({g.size})",
        )
    else:
        _no_data(ax)
    _vline(ax, rescue_db, f"rescue ≥ +{rescue_db:g} dB (normalized)", "#55a868")
    ax.set_xlabel("gain applied by normalization (dB)")
    ax.set_ylabel("kept files")
    ax.yaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax.set_title("B: loudness normalization gain")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_activity(
    active: Sequence[float],
    kept: Sequence[bool],
    min_active: float,
    frame_hist: np.ndarray | None,
    bin_edges: np.ndarray,
    path: Path,
) -> Path:
    """Per-file active fraction, and per-frame RMS levels (kept vs silence/noise files)."""
    fig, axes = _figure((10, 3.6), panels=2)
    _stacked(axes[0], active, kept, np.linspace(0, 1, 21))
    _vline(axes[0], min_active, f"min active {min_active:g}", "black")
    axes[0].set_xlabel("active (speech-like) fraction of the file")
    axes[0].set_ylabel("files")
    axes[0].yaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    axes[0].legend(fontsize=8)
    centers = 0.5 * (bin_edges[1:] + bin_edges[:-1])
    if frame_hist is not None and frame_hist.sum():
        for k, (label, color) in enumerate(
            (("kept files", KEPT_COLOR), ("silent / noise / dead files", REJECTED_COLOR))
        ):
            total = frame_hist[k].sum()
            if total:
                axes[1].plot(centers, 100 * frame_hist[k] / total, color=color, label=label)
        axes[1].legend(fontsize=8)
    else:
        _no_data(axes[1])
    axes[1].set_xlabel("20 ms frame RMS (dBFS)")
    axes[1].set_ylabel("% of frames")
    fig.suptitle("C: how much of each file is speech")
    return _save(fig, path)


def write_plots(f: Findings, directory: Path) -> list[Path]:
    """All figures of the report into `directory`."""
    from preprocess.diagnose.findings import FRAME_DB_BINS
    from preprocess.diagnose.quality import snr_estimates
    from preprocess.diagnose.whatif import ORIGINAL_SEGMENT_SECONDS

    directory.mkdir(parents=True, exist_ok=True)
    cfg, m = f.cfg, f.measured
    kept = [r for r in f.records if r["status"] == "kept"]
    m_kept = [r["status"] == "kept" for r in m]
    snr, floor, without = snr_estimates(m)
    return [
        plot_durations(
            [r["seconds"] for r in f.decodable],
            [r["status"] == "kept" for r in f.decodable],
            {
                f"original segment {ORIGINAL_SEGMENT_SECONDS:g} s": ORIGINAL_SEGMENT_SECONDS,
                f"original min {cfg.original_min_seconds:g} s": cfg.original_min_seconds,
            },
            f.utterances.seconds,
            {
                f"scored training length {f.segment_seconds:g} s": f.segment_seconds,
                f"recommended {f.recommended:g} s": f.recommended,
                f"min utterance {cfg.min_utterance_seconds:g} s": cfg.min_utterance_seconds,
            },
            directory / "durations.png",
        ),
        plot_padding_curve(
            f.curve,
            f.segment_seconds,
            ORIGINAL_SEGMENT_SECONDS,
            f.recommended,
            f.max_padding,
            directory / "padding_curve.png",
        ),
        plot_levels(
            [r["peak"] for r in m],
            [r["rms"] for r in m],
            m_kept,
            {
                f"original peak > {cfg.original_min_peak:g}": 20
                * math.log10(cfg.original_min_peak),
                f"dead < {cfg.min_peak_dbfs:g} dBFS": cfg.min_peak_dbfs,
            },
            {f"original RMS > {cfg.original_min_rms:g}": 20 * math.log10(cfg.original_min_rms)},
            directory / "levels.png",
        ),
        plot_gain([r["gain_db"] for r in kept], cfg.rescue_gain_db, directory / "gain.png"),
        plot_activity(
            [r["active_fraction"] for r in m],
            m_kept,
            cfg.min_active_fraction,
            f.frame_hist,
            FRAME_DB_BINS,
            directory / "active_fraction.png",
        ),
        plot_quality(
            [r["snr_db"] for r in snr],
            [r["status"] == "kept" for r in snr],
            len(floor),
            len(without),
            {k: [r.get(f"dnsmos_{k}") for r in m] for k in ("sig", "bak", "ovrl")},
            m_kept,
            cfg.min_snr_db,
            cfg.min_dnsmos_ovrl,
            directory / "quality.png",
        ),
    ]


def plot_quality(
    snr_db: Sequence[float],
    snr_kept: Sequence[bool],
    at_floor: int,
    without: int,
    dnsmos: dict[str, Sequence[float | None]],
    kept: Sequence[bool],
    min_snr_db: float,
    min_ovrl: float,
    path: Path,
) -> Path:
    """Per-file speech SNR (estimates only: files at the estimate's floor or without one
    are counted in the title, not drawn at −20 dB), and DNSMOS SIG/BAK/OVRL when scored;
    kept files apart from rejected ones in both."""
    from preprocess.measure.quality import SNR_MIN_DB

    fig, axes = _figure((10, 3.6), panels=2)

    def snr_bins(s: np.ndarray) -> np.ndarray:
        lo, hi = math.floor(min(s.min(), 0.0) / 5) * 5, math.ceil(max(s.max(), 40.0) / 5) * 5
        return np.arange(lo, hi + 2.5, 2.5)

    _stacked(axes[0], snr_db, snr_kept, snr_bins)
    if min_snr_db > SNR_MIN_DB:  # the estimate's floor: a lower threshold is "off"
        _vline(axes[0], min_snr_db, f"min SNR {min_snr_db:g} dB (noisy)", "black")
    axes[0].legend(fontsize=8)
    axes[0].set_title(
        f"not drawn: {at_floor} files with speech no louder than pauses, "
        f"{without} without an estimate",
        fontsize=8,
    )
    axes[0].set_xlabel("speech SNR, active frames vs pauses above 80 Hz (dB)")
    axes[0].set_ylabel("files")
    axes[0].yaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    colors = {"sig": "#55a868", "bak": "#8172b2", "ovrl": KEPT_COLOR}
    k = np.asarray(kept, dtype=bool)
    drawn = False
    for key, values in dnsmos.items():
        v = np.array([np.nan if x is None else x for x in values], dtype=float)
        for part, style, name in ((k, "-", "kept"), (~k, "--", "rejected")):
            x = v[part & np.isfinite(v)]
            if x.size:
                axes[1].hist(
                    x,
                    bins=np.arange(1.0, 5.01, 0.125),
                    histtype="step",
                    color=colors[key],
                    linestyle=style,
                    linewidth=1.5,
                    label=f"{key.upper()} {name}",
                )
                drawn = True
    if drawn:
        if min_ovrl > 0:
            _vline(axes[1], min_ovrl, f"min OVRL {min_ovrl:g} (low_quality)", "black", ":")
        axes[1].legend(fontsize=7, ncol=2)
    else:
        axes[1].text(
            0.5,
            0.5,
            "DNSMOS not scored\n(--quality dnsmos)",
            ha="center",
            va="center",
            transform=axes[1].transAxes,
        )
    axes[1].set_xlabel("DNSMOS P.835 (1–5)")
    axes[1].set_ylabel("files")
    axes[1].yaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    fig.suptitle("Quality: noise floor and perceived quality")
    return _save(fig, path)
