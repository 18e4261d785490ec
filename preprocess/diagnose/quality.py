"""The report's quality section: SNR and DNSMOS distributions, worst files, and what-ifs.

Everything here reads files.jsonl records (through `Findings`), never audio: the what-if
rows re-decide every file with `policy.decide_measured` under `min_snr_db` /
`min_dnsmos_ovrl` values on a grid, so "what would 15 dB cost me?" is answered from OUT.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from preprocess.diagnose.whatif import outcome

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
    rows = []
    for value in grid:
        o = outcome(f"{key}={value:g}", f.records, f.cfg.replace(**{key: value}))
        lost = [r for r in f.records if r["path"] in base.kept_paths - o.kept_paths]
        rows.append(
            [
                f"`{key}={value:g}{unit}`",
                o.files_kept,
                hours(o.hours_kept),
                hours(o.valid_hours),
                o.segments,
                f.links.count(f"quality-{key}-{value:g}-lost", lost),
            ]
        )
    return md_table(
        ["threshold", "files kept", "hours kept", "hours in segments", "segments", "lost"], rows
    )


def _summary(values: list[float], unit: str) -> str:
    v = np.asarray(values, dtype=float)
    p10, p50, p90 = np.percentile(v, [10, 50, 90])
    return f"median {p50:.1f}{unit} (10th–90th percentile {p10:.1f}–{p90:.1f}{unit})"


def section_quality(f: Findings) -> str:
    """## Quality: how clean the speech is (SNR always; DNSMOS when the run scored it)."""
    from preprocess.diagnose.report import top_table

    snr = scored(f.measured, "snr_db")
    mos = scored(f.measured, "dnsmos_ovrl")
    kept = [r for r in f.records if r["status"] == "kept"]
    parts = [
        "## Quality — noise and artefacts",
        "![quality](quality.png)",
        "Speech SNR: active-frame vs pause energy above 80 Hz (`preprocess.measure.quality`), "
        f"measured on every decoded file; {len(snr)} files"
        + (f", {_summary([r['snr_db'] for r in snr], ' dB')}." if snr else ".")
        + f" Rejected below `min_snr_db` = {f.cfg.min_snr_db:g} dB (`noisy`): "
        f"{f.links.files('reason-noisy', f.by_reason('noisy'))}.",
    ]
    if mos:
        parts.append(
            "DNSMOS P.835 OVRL (Reddy et al. 2022; up to "
            f"{f.cfg.dnsmos_max_windows} × 9 s of each file's speech): {len(mos)} files, "
            f"{_summary([r['dnsmos_ovrl'] for r in mos], '')}. Rejected below "
            f"`min_dnsmos_ovrl` = {f.cfg.min_dnsmos_ovrl:g} (`low_quality`): "
            f"{f.links.files('reason-low_quality', f.by_reason('low_quality'))}."
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
            scored(kept, "snr_db"),
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
