"""The final summary table a preprocessing run prints."""

from __future__ import annotations

import sys
from typing import Any


def print_summary(index: dict[str, Any]) -> None:
    t = index["totals"]
    print()
    print(f"{'reason':<15}{'files':>8}{'hours':>10}")
    print("-" * 33)
    for reason, slot in sorted(t["by_reason"].items(), key=lambda kv: -kv[1]["files"]):
        print(f"{reason:<15}{slot['files']:>8}{slot['hours']:>10.3f}")
    print("-" * 33)
    print(f"{'total':<15}{t['files']:>8}{t['input_hours']:>10.3f}")
    for split, s in t["splits"].items():
        groups = f" in {s['groups']} groups" if "groups" in s else ""
        share = f" ({100 * s['fraction']:.1f} % of kept hours)" if "fraction" in s else ""
        print(
            f"{split}: {s['files']} files{groups} → {s['segments']} segments in {s['shards']} "
            f"shards, {s['valid_hours']:.3f} h of real audio{share}"
        )
    if "_elapsed_s" in index:
        rate = t["input_hours"] * 3600 / max(index["_elapsed_s"], 1e-9)
        print(f"elapsed {index['_elapsed_s']:.1f} s ({rate:.0f} audio-seconds/s)")
    if index.get("_worker_peak_rss_mb"):
        print(f"peak worker RSS {index['_worker_peak_rss_mb']:.0f} MB")
    if not any(s["segments"] for s in t["splits"].values()):
        print(
            "preprocess: warning: no segment was kept, so OUT holds no audio to train on: "
            "the reasons are above",
            file=sys.stderr,
        )
