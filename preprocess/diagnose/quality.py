"""The report's quality section: SNR and DNSMOS distributions, worst files, and what-ifs.

Everything here reads files.jsonl records (through `Findings`), never audio: the what-if
rows re-decide every file with `policy.decide_measured` under `min_snr_db` /
`min_dnsmos_ovrl` values on a grid, so "what would 15 dB cost me?" is answered from OUT.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from preprocess.diagnose.findings import lowest
from preprocess.diagnose.whatif import outcome
from preprocess.measure.quality import SNR_MIN_DB

if TYPE_CHECKING:
    from preprocess.diagnose.findings import Findings

SNR_GRID_DB = (0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0)
DNSMOS_GRID = (2.0, 2.5, 3.0, 3.25, 3.5)


def scored(records: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """Records that carry the score `key` (decoded files; DNSMOS only when it ran)."""
    return [r for r in records if r.get(key) is not None]


def quality_what_if(f: Findings, key: str, grid: tuple[float, ...], unit: str) -> str:
    """One row per threshold on `grid`: what the current config keeps with `key` = value."""
    from preprocess.diagnose.report import hours, md_table

    base = f.outcomes[0]
    worst = lowest(key.removeprefix("min_"))  # the score the threshold reads: lowest first
    rows = []
    for value in grid:
        o = outcome(f"{key}={value:g}", f.records, f.cfg.replace(**{key: value}), f.table)
        lost = [f.records[i] for i in np.flatnonzero(base.kept & ~o.kept)]
        rows.append(
            [
                f"`{key}={value:g}{unit}`",
                o.files_kept,
                hours(o.hours_kept),
                hours(o.utterance_hours),
                o.utterances,
                f.links.count(f"quality-{key}-{value:g}-lost", lost, worst),
            ]
        )
    return md_table(
        ["threshold", "files kept", "hours kept", "hours in utterances", "utterances", "lost"],
        rows,
    )


def _summary(values: list[float], unit: str) -> str:
    v = np.asarray(values, dtype=float)
    p10, p50, p90 = np.percentile(v, [10, 50, 90])
    return f"median {p50:.1f}{unit} (10th–90th percentile {p10:.1f}–{p90:.1f}{unit})"


def snr_estimates(
    records: list[dict[str, Any]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(estimated, at the floor, without) among `records`.

    At the floor (`SNR_MIN_DB`): the active frames carry no more power than the pauses,
    so there is no speech level to estimate from (silence, noise only, or no pause). Those
    and the files with no value at all are counted apart, never drawn at −20 dB, where
    they would read as a peak of very noisy speech."""
    estimated, floor, without = [], [], []
    for r in records:
        v = r.get("snr_db")
        if v is None:
            without.append(r)
        elif v <= SNR_MIN_DB:
            floor.append(r)
        else:
            estimated.append(r)
    return estimated, floor, without


def section_quality(f: Findings) -> str:
    """## Quality: how clean the speech is (SNR always; DNSMOS when the run scored it)."""
    from preprocess.diagnose.report import top_table

    snr, floor, without = snr_estimates(f.measured)
    snr_kept = [r for r in snr if r["status"] == "kept"]
    mos = scored(f.measured, "dnsmos_ovrl")
    kept = [r for r in f.records if r["status"] == "kept"]
    estimated = (
        f"estimated for {len(snr)} files, {_summary([r['snr_db'] for r in snr], ' dB')}"
        + (
            f"; kept files {_summary([r['snr_db'] for r in snr_kept], ' dB')}"
            if snr_kept and len(snr_kept) < len(snr)
            else ""
        )
        if snr
        else "estimated for no file"
    )
    parts = [
        "## Quality — noise and artefacts",
        "![quality](quality.png)",
        "Speech SNR: active-frame vs pause energy above 80 Hz (`preprocess.measure.quality`), "
        f"for every decoded file: {estimated}. Without an estimate, counted apart and not "
        f"drawn: {f.links.files('snr-floor', floor, lowest('active_fraction'))} whose "
        f"speech frames are no louder than their pauses (the estimate's floor, "
        f"{SNR_MIN_DB:g} dB: silence, noise only, no pause) and "
        f"{f.links.files('snr-none', without)} with no value. "
        f"Rejected below `min_snr_db` = {f.cfg.min_snr_db:g} dB (`noisy`): "
        f"{f.reason_files('noisy')}.",
    ]
    if mos:
        parts.append(
            "DNSMOS P.835 OVRL (Reddy et al. 2022; up to "
            f"{f.cfg.dnsmos_max_windows} × 9 s of each file's speech): {len(mos)} files, "
            f"{_summary([r['dnsmos_ovrl'] for r in mos], '')}. Rejected below "
            f"`min_dnsmos_ovrl` = {f.cfg.min_dnsmos_ovrl:g} (`low_quality`): "
            f"{f.reason_files('low_quality')}."
        )
    else:
        parts.append("DNSMOS not scored in this run (`--quality dnsmos` scores it).")
    parts += [
        "**What-if: a minimum speech SNR** (from files.jsonl, no decoding)",
        quality_what_if(f, "min_snr_db", SNR_GRID_DB, " dB"),
    ]
    if mos:
        parts += [
            "**What-if: a minimum DNSMOS OVRL**",
            quality_what_if(f, "min_dnsmos_ovrl", DNSMOS_GRID, ""),
        ]
    parts.append(
        top_table(
            f,
            "Noisiest kept files (lowest speech SNR)",
            snr_estimates(kept)[0],
            lambda r: r["snr_db"],
            ["snr_db", "dnsmos_ovrl", "seconds", "reason"],
        )
    )
    if mos:
        parts.append(
            top_table(
                f,
                "Lowest DNSMOS OVRL among kept files",
                scored(kept, "dnsmos_ovrl"),
                lambda r: r["dnsmos_ovrl"],
                ["dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak", "snr_db", "reason"],
            )
        )
    return "\n\n".join(parts)
