"""The diagnosis as words: verdicts per scenario, report.md, the terminal summary, file lists.

The original diagnosis was a flowchart of guesses: "if debug shows > 30 % padding … if
range < 0.01 … if RMS < 0.001" (docs/DIAGNOSE.md quotes it). This module answers each
branch with a measurement (`Findings`, from files.jsonl) and states what our pipeline does
about it, and every count links to a TSV of the files behind it, so a user can go and listen.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import re
import shutil
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from preprocess.diagnose.findings import (
    SILENCE_REASONS,
    Findings,
    Links,
    diagnose_output,
    highest,
    lowest,
)
from preprocess.diagnose.whatif import ORIGINAL_SEGMENT_SECONDS, UNDECODABLE_REASONS
from preprocess.measure.policy import REASONS

FLOWCHART_PADDING = 0.30  # "If debug shows > 30 % padding" (scenario A)
DC_NOTABLE = 0.01  # |mean| above −40 dBFS is worth a look; kept files have it removed anyway
CURVE_TABLE_SECONDS = (0.5, 1.0, 2.0, 4.0, 8.0)  # training lengths a user tries
LIST_ALL_CAP = 500  # rows of an "all of them" table in report.md; its TSV has up to LIST_ROWS


# ---------------------------------------------------------------------------------------
# Small formatting helpers
# ---------------------------------------------------------------------------------------


def dbfs(x: float | None) -> float:
    """Linear amplitude → dBFS; −inf for 0, NaN when not measured."""
    if x is None:
        return math.nan
    return 20.0 * math.log10(x) if x > 0 else -math.inf


def pct(x: float) -> str:
    return f"{100.0 * x:.1f} %"


def hours(h: float) -> str:
    return f"{h:.1f} h" if h >= 10 else f"{h:.3f} h"


def num(x: float | None, fmt: str = ".1f") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, float) and math.isinf(x):
        return "-inf" if x < 0 else "inf"
    return format(x, fmt)


def md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table; '|' inside a cell is escaped."""

    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def plain(markdown: str) -> str:
    """Markdown → terminal text: links become their label, emphasis and backticks go."""
    text = re.sub(r"\[([^\]]+)\]\([^)]+\)", r"\1", markdown)
    return text.replace("**", "").replace("`", "")


# ---------------------------------------------------------------------------------------
# Verdicts: one line per scenario of the original flowchart
# ---------------------------------------------------------------------------------------


def recommendation(f: Findings) -> str:
    """The recommended training length in words, honest about the ends of the range."""
    c = f.curve
    i = c.at(f.recommended)
    if c.padding[i] > f.max_padding or c.dropped[i] > f.max_padding or not c.windows[i]:
        return (
            f"{f.recommended:g} s (no length examined keeps padding and dropped audio "
            f"≤ {pct(f.max_padding)})"
        )
    longer = " or longer" if f.recommended >= c.seconds[-1] else ""
    return f"{f.recommended:g} s{longer} (≤ {pct(f.max_padding)} padding)"


def train_flag(seconds: float) -> str:
    """The training flag that sets a segment length: the one knob for it."""
    return f"`train_ds.py --segment-seconds {seconds:g}`"


def verdict_a(f: Findings) -> str:
    """Scenario A (too short → padding), measured both ways."""
    c, S = f.curve, f.segment_seconds
    naive2 = c.naive[c.at(ORIGINAL_SEGMENT_SECONDS)]
    padding, dropped = c.padding[c.at(S)], c.dropped[c.at(S)]
    shorter = [r for r in f.decodable if r["seconds"] < ORIGINAL_SEGMENT_SECONDS]
    if naive2 > FLOWCHART_PADDING:
        state = f"over {pct(FLOWCHART_PADDING)}: scenario A — FIXED by masks"
    else:
        state = f"≤ {pct(FLOWCHART_PADDING)}: not scenario A; masks count none anyway — OK"
    line = (
        f"**A — too short / padding:** {pct(naive2)} of samples would be padding at "
        f"{ORIGINAL_SEGMENT_SECONDS:g} s (original; "
        f"{f.links.files('shorter-than-2s', shorter, lowest('seconds'))} shorter than "
        f"{ORIGINAL_SEGMENT_SECONDS:g} s); windows of {S:g} s cut from "
        f"{len(f.utterances.samples)} utterances: 0 % counted ({pct(padding)} of window "
        f"samples masked padding, {pct(dropped)} of the audio in windows too short to use) "
        f"— {state}. {f.reason_files('short')} rejected `short`; "
        f"recommended training segment length {recommendation(f)}: "
        f"{train_flag(f.recommended)}."
    )
    if padding > f.max_padding or dropped > f.max_padding:
        worst = max(padding, dropped)
        what = "padding" if padding >= dropped else "audio dropped"
        line += (
            f" Warning: {pct(worst)} {what} at {S:g} s exceeds {pct(f.max_padding)}; "
            f"{padding_advice(f)}."
        )
    return line


def padding_advice(f: Findings) -> str:
    """What to change when the scored length pads (or drops) too much, in the direction
    the curve points: padding is not monotonic in the length (a tail window is used only
    when it holds min(S/2, 1 s)), so the remedy is the recommended length, shorter or
    longer, never a rule of thumb that could contradict it. A training flag, never a
    preprocess re-run: the shards hold whole utterances."""
    c, S, rec = f.curve, f.segment_seconds, f.recommended
    i = c.at(rec)
    if c.padding[i] > f.max_padding or c.dropped[i] > f.max_padding or not c.windows[i]:
        return f"no length examined ({c.seconds[0]:g}–{c.seconds[-1]:g} s) stays within it"
    way = "shorter" if rec < S else "longer"
    return f"the recommended {rec:g} s ({way}) pads {pct(c.padding[i])}: {train_flag(rec)}"


def verdict_b(f: Findings) -> str:
    """Scenario B ("range < 0.01"): rescued quiet speech vs numerically dead files."""
    limit = f.cfg.original_min_peak
    low = [r for r in f.measured if r["peak"] <= limit]
    if not low:
        return (
            f"**B — too quiet:** no file has peak ≤ {limit:g} — not scenario B; "
            f"{f.reason_files('normalized')} "
            "normalized by ≥ +{:g} dB anyway — OK.".format(f.cfg.rescue_gain_db)
        )
    parts = Counter(r["reason"] for r in low)
    rescued = [r for r in low if r["reason"] == "normalized"]
    gains = [r["gain_db"] for r in rescued if r["gain_db"] is not None]
    gain = f", median gain +{float(np.median(gains)):.1f} dB" if gains else ""
    bits = [
        f"{f.links.count('peak-low-normalized', rescued, lowest('peak'))} intact quiet "
        f"speech rescued by normalization (`normalized`{gain})",
        f"{f.links.count('peak-low-quiet', [r for r in low if r['reason'] == 'quiet'])} "
        f"numerically dead (`quiet`, < {f.cfg.min_peak_dbfs:g} dBFS)",
        f"{f.links.count('peak-low-silent', [r for r in low if r['reason'] == 'silent'])} "
        "digital silence (`silent`)",
    ]
    other = [r for r in low if r["reason"] not in ("normalized", "quiet", "silent")]
    if other:
        names = ", ".join(
            f"`{k}` {v}"
            for k, v in sorted(parts.items())
            if k not in ("normalized", "quiet", "silent")
        )
        bits.append(f"{f.links.count('peak-low-other', other, lowest('peak'))} other ({names})")
    state = "FIXED by normalization" if rescued else "dead files filtered"
    return (
        f"**B — too quiet:** peak ≤ {limit:g} in {f.links.files('peak-low', low, lowest('peak'))} "
        f"(the original filter drops them all): " + ", ".join(bits) + f" — {state}."
    )


def verdict_c(f: Findings) -> str:
    """Scenario C ("RMS < 0.001"): files dominated by silence or noise."""
    silent = f.by_reason(*SILENCE_REASONS)
    low_rms = [r for r in f.measured if r["rms"] <= f.cfg.original_min_rms]
    kept_low = [r for r in low_rms if r["status"] == "kept"]
    original = (
        f"The original's test (RMS ≤ {f.cfg.original_min_rms:g}) flags "
        f"{f.links.files('rms-low', low_rms, lowest('rms'))}, of which "
        f"we keep {f.links.count('rms-low-kept', kept_low, lowest('rms'))} as intact speech."
    )
    if not silent:
        return f"**C — mostly silent:** no file is dominated by silence or noise — OK. {original}"
    counts = ", ".join(f"{f.reason_count(reason)} `{reason}`" for reason in SILENCE_REASONS)
    return (
        f"**C — mostly silent:** silence or noise dominates "
        f"{f.links.files('silence-or-noise', silent, lowest('active_fraction'))} "
        f"({counts}; active fraction < "
        f"{f.cfg.min_active_fraction:g} or < {f.cfg.min_no_speech_seconds:g} s of speech) — "
        f"FILTERED. {original}"
    )


# ---------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------


def _file_row(r: dict[str, Any], *cols: str) -> list[Any]:
    """One row of a top-N table: the path first, then the named columns, formatted."""
    fmt: dict[str, Callable[[dict[str, Any]], str]] = {
        "seconds": lambda r: num(r["seconds"], ".2f"),
        "peak_dbfs": lambda r: num(dbfs(r["peak"])),
        "rms_dbfs": lambda r: num(dbfs(r["rms"])),
        "active": lambda r: num(r["active_fraction"], ".2f"),
        "gain_db": lambda r: num(r["gain_db"], "+.1f"),
        "clipped": lambda r: pct(r["clipped_fraction"] or 0.0),
        "dc": lambda r: num(r["dc"], "+.3f"),
        "nonfinite": lambda r: str(r["nonfinite"]),
        "reason": lambda r: f"{r['status']}/{r['reason']}",
        "detail": lambda r: r["detail"] or "",
        "duplicate_of": lambda r: f"`{r['duplicate_of']}`",
        "snr_db": lambda r: num(r.get("snr_db")),
        "dnsmos_ovrl": lambda r: num(r.get("dnsmos_ovrl"), ".2f"),
        "dnsmos_sig": lambda r: num(r.get("dnsmos_sig"), ".2f"),
        "dnsmos_bak": lambda r: num(r.get("dnsmos_bak"), ".2f"),
    }
    return [f"`{r['path']}`", *(fmt[c](r) for c in cols)]


_HEADERS = {
    "seconds": "seconds",
    "peak_dbfs": "peak dBFS",
    "rms_dbfs": "RMS dBFS",
    "active": "active",
    "gain_db": "gain dB",
    "clipped": "clipped",
    "dc": "DC",
    "nonfinite": "non-finite samples",
    "reason": "decision",
    "detail": "error / detail",
    "duplicate_of": "duplicate of",
    "snr_db": "SNR dB",
    "dnsmos_ovrl": "DNSMOS OVRL",
    "dnsmos_sig": "SIG",
    "dnsmos_bak": "BAK",
}


def top_table(
    f: Findings,
    title: str,
    records: Sequence[dict[str, Any]],
    key: Callable[[dict[str, Any]], float],
    cols: Sequence[str],
    descending: bool = False,
    limit: int | None = None,
) -> str:
    """The `--top` worst files of one kind, worst first (limit=0: all, up to LIST_ALL_CAP;
    a linked TSV holds up to LIST_ROWS, files.jsonl every file)."""
    if not records:
        return f"*{title}: none.*"
    n = LIST_ALL_CAP if limit == 0 else (limit or f.top)
    rows = heapq.nsmallest(  # not a full sort: a corpus may have a million files
        n, records, key=lambda r: (-key(r) if descending else key(r), r["path"])
    )
    table = md_table(["file", *(_HEADERS[c] for c in cols)], [_file_row(r, *cols) for r in rows])
    more = f" (first {len(rows)} of {len(records)})" if len(records) > len(rows) else ""
    return f"**{title}**{more}\n\n{table}"


def section_decisions(f: Findings) -> str:
    total_h = sum(r["seconds"] or 0.0 for r in f.records) / 3600.0
    counts = Counter(r["reason"] for r in f.records)
    rows = []
    for reason in sorted(counts, key=lambda k: (-counts[k], REASONS.index(k))):
        rs = f.by_reason(reason)
        h = sum(r["seconds"] or 0.0 for r in rs) / 3600.0
        status = "kept" if rs[0]["status"] == "kept" else "rejected"
        rows.append(
            [
                f"`{reason}`",
                status,
                f.reason_count(reason),
                hours(h),
                pct(h / total_h) if total_h else "–",
            ]
        )
    rows.append(["**total**", "", f.links.count("all", f.records), hours(total_h), ""])
    return "## Decisions\n\n" + md_table(["reason", "status", "files", "hours", "of hours"], rows)


def split_warning(f: Findings) -> str | None:
    """Why val is smaller than asked (share of the kept audio, or min_val_seconds); else
    None.

    Val is whole groups, so the split aims at 0.8–1.25 × the asked share of the audio the
    decisions kept (its utterances: `valid_hours`); below 0.8 × is worth a line."""
    val = (f.splits or {}).get("val")
    if not val or "fraction" not in val:
        return None
    asked = val["asked_fraction"]
    val_s = val.get("valid_hours", val["hours"]) * 3600.0
    if asked and val["files"] == 0:
        return f"no validation split (asked {pct(asked)})"
    short_share = asked is not None and val["fraction"] < 0.8 * asked
    short_time = asked != 0 and val_s < f.cfg.min_val_seconds
    reasons = []
    if short_share:
        reasons.append(f"{pct(val['fraction'])} of the kept audio for an asked {pct(asked)}")
    if short_time:
        reasons.append(
            f"{val_s:.0f} s in {val['groups']} groups, under min_val_seconds = "
            f"{f.cfg.min_val_seconds:g} s"
        )
    return "val is smaller than asked: " + "; ".join(reasons) if reasons else None


def section_split(f: Findings) -> str:
    """Files, groups and hours per split, the share of the kept audio (in utterances: what
    the split weighs) achieved next to the share asked."""
    head = f"## Train/val split\n\nSplit by `{f.cfg.split_by}`; whole groups never straddle it."
    if not f.splits or "groups" not in f.splits.get("val", {}):
        return head + " (index.json predates per-group split totals.)"
    rows = [
        [
            split,
            s["files"],
            s["groups"],
            s["segments"],
            hours(s["hours"]),
            hours(s.get("valid_hours", s["hours"])),
            pct(s["fraction"]),
            "given" if s["asked_fraction"] is None else pct(s["asked_fraction"]),
        ]
        for split, s in f.splits.items()
    ]
    header = ["split", "files", "groups", "utterances", "hours", "in utterances", "share", "asked"]
    table = md_table(header, rows)
    warning = split_warning(f)
    return "\n\n".join([head, table] + ([f"**Warning:** {warning}."] if warning else []))


def section_a(f: Findings) -> str:
    c, S = f.curve, f.segment_seconds
    marks = sorted({*(x for x in CURVE_TABLE_SECONDS if x <= c.seconds[-1]), S, f.recommended, 2.0})
    rows = [
        [
            f"{s:g} s"
            + (" (scored)" if s == S else "")
            + (" (recommended)" if s == f.recommended else "")
            + (" (original)" if s == ORIGINAL_SEGMENT_SECONDS else ""),
            pct(c.naive[c.at(s)]),
            pct(c.padding[c.at(s)]),
            "0.0 %",
            pct(c.dropped[c.at(s)]),
            int(c.windows[c.at(s)]),
        ]
        for s in marks
    ]
    u = f.utterances
    lengths = (
        f"{len(u.samples)} utterances, median {float(np.median(u.seconds)):.2f} s, "
        f"longest {float(u.seconds.max()):.2f} s"
        if u.samples.size
        else "no utterances"
    )
    source = "exact" if u.exact else "an estimate"
    return "\n\n".join(
        [
            "## A — too short / padding",
            verdict_a(f),
            "![durations](durations.png)\n![padding curve](padding_curve.png)",
            "The shards hold whole utterances (each kept file's speech split at pauses of "
            f"≥ {f.cfg.split_pause_seconds:g} s, capped at {f.cfg.max_utterance_seconds:g} s, "
            f"pieces under {f.cfg.min_utterance_seconds:g} s dropped); the training segment "
            "length is chosen when training, not here, and the loader cuts windows of it "
            f"from the utterances: {lengths}. Lengths from {u.source} ({source}).",
            "*original*: every decodable file zero-padded up to whole segments, padding "
            "counted as signal. *ours*: windows of the training length on the validation "
            "grid (0, S, 2S, … in each utterance; training cuts at a random phase, the same "
            "shares on average); a window running past an utterance's end is zero-padded and "
            "masked out of losses and metrics (padding in windows, never counted), and is "
            "used only if it holds min(S/2, 1 s) of real audio. *dropped*: real audio in "
            "the tail windows too short to use.",
            md_table(
                [
                    "training segment",
                    "original: padding counted",
                    "ours: padding in windows",
                    "ours: padding counted",
                    "ours: audio dropped",
                    "windows (val grid)",
                ],
                rows,
            ),
            f"Recommended: {train_flag(f.recommended)}, {recommendation(f)} — the longest "
            f"length examined ({c.seconds[0]:g}–{c.seconds[-1]:g} s, at most the utterance "
            f"cap) whose masked padding is ≤ {pct(f.max_padding)} of window samples and "
            f"whose dropped audio is ≤ {pct(f.max_padding)} too (`--max-padding`). No "
            "preprocess re-run is needed for any length: `--segment-seconds S` scores "
            "another one. Counting padding as signal, the original way would need ≤ "
            f"{f.recommended_naive:g} s.",
            top_table(
                f, "Shortest files", f.decodable, lambda r: r["seconds"], ["seconds", "reason"]
            ),
        ]
    )


def section_b(f: Findings) -> str:
    kept = [r for r in f.records if r["status"] == "kept" and r["gain_db"] is not None]
    return "\n\n".join(
        [
            "## B — too quiet",
            verdict_b(f),
            "![levels](levels.png)\n![gain](gain.png)",
            f"Peak and RMS are of the {f.cfg.sample_rate // 1000:g} kHz mono signal the "
            "pipeline measures and shards: decoded, downmixed and resampled, DC included, "
            "before normalization. Resampling can overshoot, so a file that peaks just under "
            "0 dBFS at its own rate may read above 0 dBFS here: that is not clipping, which is "
            "counted on the source-rate samples (see Clipping).",
            f"Kept files are loudness-normalized to {f.cfg.target_lufs:g} LUFS on their active "
            f"part (peak-limited to {f.cfg.peak_limit_dbfs:g} dBFS); a gain ≥ "
            f"+{f.cfg.rescue_gain_db:g} dB marks the file `normalized` (quiet speech rescued). "
            "Rescued that way: "
            f"{f.reason_files('normalized')}.",
            top_table(
                f,
                "Quietest files",
                f.measured,
                lambda r: r["peak"],
                ["peak_dbfs", "rms_dbfs", "gain_db", "reason"],
            ),
            top_table(
                f,
                "Largest normalization gains",
                kept,
                lambda r: r["gain_db"],
                ["gain_db", "peak_dbfs", "reason"],
                descending=True,
            ),
        ]
    )


def section_c(f: Findings) -> str:
    return "\n\n".join(
        [
            "## C — mostly silent",
            verdict_c(f),
            "![active fraction](active_fraction.png)",
            "Active fraction: the share of 20 ms frames the voice-activity detector marks "
            f"as speech-like. Rejected below {f.cfg.min_active_fraction:g} (`mostly_silent`), "
            f"with under {f.cfg.min_no_speech_seconds:g} s active (`no_speech`), or all-zero "
            "(`silent`). The right panel shows per-frame levels from stats.zarr.",
            top_table(
                f,
                "Least active files",
                f.measured,
                lambda r: r["active_fraction"] or 0.0,
                ["active", "seconds", "rms_dbfs", "reason"],
            ),
        ]
    )


def section_integrity(f: Findings) -> str:
    """Clipping, DC, non-finite samples, formats, duplicates, corrupt and non-audio files."""
    m = f.measured
    clipped = [r for r in m if (r["clipped_fraction"] or 0.0) > 0]
    dc = [r for r in m if abs(r["dc"] or 0.0) > DC_NOTABLE]
    nonfinite = f.by_reason("nonfinite")
    parts = [
        "## Clipping",
        f"Clipped runs (≥ {f.cfg.clip_min_run} samples at |x| ≥ {f.cfg.clip_level:g}) in "
        f"{f.links.files('clipping-any', clipped, highest('clipped_fraction'))}; over "
        f"{pct(f.cfg.max_clipped_fraction)} "
        f"of samples, rejected `clipped`: "
        f"{f.reason_files('clipped')}.",
        top_table(
            f,
            "Most clipped files",
            clipped,
            lambda r: r["clipped_fraction"],
            ["clipped", "peak_dbfs", "reason"],
            descending=True,
        ),
        "## DC offset",
        f"|DC| > {DC_NOTABLE:g} in {f.links.files('dc-offset', dc, highest('dc', absolute=True))}; "
        "kept files have "
        "their mean removed before normalization, so DC never reaches a shard.",
        top_table(
            f,
            "Largest DC offsets",
            dc,
            lambda r: abs(r["dc"]),
            ["dc", "peak_dbfs", "reason"],
            descending=True,
        ),
        "## Non-finite samples",
        "NaN, Inf or overflowing (beyond ±32768) samples in "
        f"{f.reason_files('nonfinite')} "
        "(rejected `nonfinite`).",
        top_table(
            f,
            "Files with non-finite samples",
            nonfinite,
            lambda r: r["nonfinite"] or 0,
            ["nonfinite", "seconds"],
            descending=True,
        ),
        section_formats(f),
        "## Duplicates",
        f"Byte copies of a file earlier in sorted path order: "
        f"{f.reason_files('duplicate')}; the first of each "
        "group is judged, the rest rejected `duplicate`.",
        top_table(
            f, "Duplicates", f.by_reason("duplicate"), lambda r: 0, ["duplicate_of"], limit=0
        ),
        "## Corrupt and non-audio files",
        f"{f.reason_count('corrupt')} `corrupt` (cannot be "
        f"decoded, empty or truncated), "
        f"{f.reason_count('not_audio')} `not_audio`.",
        top_table(
            f,
            "Corrupt and non-audio files",
            f.by_reason(*UNDECODABLE_REASONS),
            lambda r: 0,
            ["reason", "detail"],
            limit=0,
        ),
    ]
    return "\n\n".join(parts)


def section_formats(f: Findings) -> str:
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in f.records:
        if r["sample_rate"] is None:
            continue
        key = (r["format"] or "?", r["subtype"] or "?", r["sample_rate"], r["channels"])
        groups.setdefault(key, []).append(r)
    rows = [
        [
            fmt,
            sub,
            sr,
            ch,
            f.links.count(f"format-{fmt}-{sub}-{sr}-{ch}", rs),
            hours(sum(r["seconds"] or 0.0 for r in rs) / 3600.0),
        ]
        for (fmt, sub, sr, ch), rs in sorted(groups.items(), key=lambda kv: -len(kv[1]))
    ]
    return "## Sample rates, channels, formats\n\n" + md_table(
        ["format", "subtype", "sample rate", "channels", "files", "hours"], rows
    )


def section_what_if(f: Findings) -> str:
    base = f.outcomes[0]
    rows = []
    for i, o in enumerate(f.outcomes):
        gained = [f.records[j] for j in np.flatnonzero(o.kept & ~base.kept)]
        lost = [f.records[j] for j in np.flatnonzero(base.kept & ~o.kept)]
        rows.append(
            [
                f"`{o.label}`",
                o.cfg.preset,
                f.links.count(f"whatif-{i}-kept", o.kept_records(f.records)),
                hours(o.hours_kept),
                hours(o.utterance_hours),
                o.utterances,
                o.estimated,
                f.links.count(f"whatif-{i}-gained", gained),
                f.links.count(f"whatif-{i}-lost", lost),
            ]
        )
    reasons = sorted({k for o in f.outcomes for k in o.by_reason}, key=REASONS.index)
    per_reason = [[f"`{k}`", *(o.by_reason.get(k, 0) for o in f.outcomes)] for k in reasons]
    check = (
        f"Re-deciding the current config from files.jsonl reproduces "
        f"{len(f.records) - len(f.mismatches)} of {len(f.records)} decisions"
        + (
            ": differs for " + ", ".join(f"`{p}`" for p in f.mismatches[: f.top])
            if f.mismatches
            else "."
        )
    )
    return "\n\n".join(
        [
            "## What-if: other thresholds",
            "Decisions re-made by `preprocess.measure.policy.decide_measured` from files.jsonl "
            '(no decoding). `--what-if "min_seconds=0.5,min_rms=0.0005"` uses the original '
            "filter's names (→ `original_min_*`, preset original); any config field works "
            "(`--what-if min_active_fraction=0.1`); `--what-if original` is the preset. "
            "A file the run kept has its utterances as cut; *estimated* counts kept files the "
            "run rejected on a threshold, whose utterances are estimated from their trimmed "
            "length as one region (an upper bound: OUT does not store the speech mask that "
            "pauses split at). Utterance settings (`split_pause_seconds`, "
            "`max_utterance_seconds`, `min_utterance_seconds`) need a rescan of the corpus; "
            "the training segment length is scored with `--segment-seconds`.",
            md_table(
                [
                    "config",
                    "preset",
                    "files kept",
                    "hours kept",
                    "hours in utterances",
                    "utterances",
                    "estimated",
                    "gained",
                    "lost",
                ],
                rows,
            ),
            md_table(["reason", *(f"`{o.label}`" for o in f.outcomes)], per_reason),
            check,
        ]
    )


def section_quality(f: Findings) -> str:
    """The quality section lives in its own module (it imports this one's helpers)."""
    from preprocess.diagnose.quality import section_quality as section

    return section(f)


# ---------------------------------------------------------------------------------------
# Documents
# ---------------------------------------------------------------------------------------


def render_markdown(f: Findings) -> str:
    """The whole report.md; fills `f.links` with the file lists the counts point to."""
    total_h = sum(r["seconds"] or 0.0 for r in f.records) / 3600.0
    head = [
        "# Corpus diagnosis",
        f"Corpus `{f.source}`: {len(f.records)} files, {hours(total_h)}. Diagnosis data "
        f"`{f.out}` (files.jsonl + stats.zarr; no audio decoded for this report). Paths below "
        "are relative to the corpus; each count links to a TSV of the files behind it (up "
        f"to {f.links.rows} of them, the worst first where a count has more; files.jsonl "
        "has every file). Histograms stack kept files (blue) on rejected ones (red).",
        "## Verdicts",
        "\n".join(f"- {v}" for v in (verdict_a(f), verdict_b(f), verdict_c(f))),
    ]
    body = [
        section_decisions(f),
        section_split(f),
        section_a(f),
        section_b(f),
        section_c(f),
        section_integrity(f),
        section_what_if(f),
        section_quality(f),
    ]
    return "\n\n".join(head + body) + "\n"


def render_terminal(f: Findings, report_path: Path | None = None) -> str:
    """The summary printed at the end of `python -m preprocess.diagnose`."""
    scratch = Links()  # terminal text links nowhere; keep f.links as the report made it
    g = dataclasses.replace(f, links=scratch)
    lines = [f"diagnosis of {f.source}: {len(f.records)} files", ""]
    lines += [plain(v) for v in (verdict_a(g), verdict_b(g), verdict_c(g))]
    counts = Counter(r["reason"] for r in f.records)
    lines += ["", f"{'reason':<15}{'files':>7}{'hours':>10}", "-" * 32]
    for reason, n in sorted(counts.items(), key=lambda kv: (-kv[1], REASONS.index(kv[0]))):
        h = sum(r["seconds"] or 0.0 for r in f.by_reason(reason)) / 3600.0
        lines.append(f"{reason:<15}{n:>7}{h:>10.3f}")
    lines += ["", "what-if (from files.jsonl, no decoding):"]
    w = max(len(o.label) for o in f.outcomes) + 2
    lines.append(
        f"{'config':<{w}}{'kept':>6}{'hours kept':>12}{'in utterances':>15}{'utterances':>12}"
    )
    for o in f.outcomes:
        lines.append(
            f"{o.label:<{w}}{o.files_kept:>6}{o.hours_kept:>12.3f}{o.utterance_hours:>15.3f}"
            f"{o.utterances:>12}" + (f"  ({o.estimated} estimated)" if o.estimated else "")
        )
    if f.splits and "groups" in f.splits.get("val", {}):
        lines.append("")
        for split, s in f.splits.items():
            lines.append(
                f"{split}: {s['files']} files in {s['groups']} groups, {s['hours']:.3f} h "
                f"({pct(s['fraction'])} of the kept audio)"
            )
        warning = split_warning(f)
        if warning:
            lines.append(f"warning: {warning}")
    if f.mismatches:
        lines.append(f"note: re-deciding differs from files.jsonl for {len(f.mismatches)} files")
    if report_path is not None:
        lines += ["", f"report: {report_path}"]
    return "\n".join(lines)


def write_file_lists(links: Links, directory: Path, root: str) -> None:
    """One TSV per linked count: path, decision, the key measurements, and the full path.

    A list longer than `links.rows` holds that many rows (the worst first where the count
    has an order) and ends in one `#` line saying how many more there are: files.jsonl,
    not the report, is the table of every file."""
    directory.mkdir(parents=True, exist_ok=True)
    cols = (
        "path",
        "status",
        "reason",
        "seconds",
        "peak",
        "rms",
        "active_fraction",
        "gain_db",
        "clipped_fraction",
        "dc",
        "duplicate_of",
        "detail",
        "snr_db",
        "dnsmos_ovrl",
    )
    lines: dict[int, str] = {}  # one formatted line per record, shared by every list

    def line(r: dict[str, Any]) -> str:
        key = id(r)
        if key not in lines:
            cells = ["" if r.get(c) is None else str(r[c]) for c in cols]
            cells.append(f"{root}/{r['path']}")
            lines[key] = "\t".join(c.replace("\t", " ").replace("\n", " ") for c in cells)
        return lines[key]

    for name, fl in links.lists.items():
        with open(directory / f"{name}.tsv", "w", encoding="utf-8", newline="\n") as out:
            out.write("\t".join((*cols, "file")) + "\n")
            out.writelines(line(r) + "\n" for r in fl.rows)
            if fl.total > len(fl.rows):
                out.write(
                    f"# {fl.total - len(fl.rows)} more files not listed: {len(fl.rows)} of "
                    f"{fl.total} shown ({fl.order}); every file is in files.jsonl\n"
                )


# ---------------------------------------------------------------------------------------
# Writing the report
# ---------------------------------------------------------------------------------------


def write_report(f: Findings, report_dir: Path) -> Path:
    """report.md, summary.txt, the PNGs and files/*.tsv into `report_dir`; returns report.md."""
    from preprocess.diagnose.plots import write_plots  # matplotlib only when drawing

    report_dir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(report_dir / "files", ignore_errors=True)  # lists of an earlier report
    path = report_dir / "report.md"
    path.write_text(render_markdown(f), encoding="utf-8")
    write_file_lists(f.links, report_dir / "files", f.source)
    write_plots(f, report_dir)
    (report_dir / "summary.txt").write_text(render_terminal(f, path) + "\n", encoding="utf-8")
    return path


def report_for_output(
    out: Path,
    segment_seconds: float | None = None,
    report_dir: Path | None = None,
    **options: Any,
) -> Path:
    """Write the report for a preprocess OUT (default `OUT/report/`); never decodes audio.
    `segment_seconds` is the training length to score (default: training's own);
    `options` are diagnose_output's what_ifs, top and max_padding."""
    f = diagnose_output(Path(out), segment_seconds, **options)
    return write_report(f, Path(report_dir) if report_dir else Path(out) / "report")
