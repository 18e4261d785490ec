"""The final summary table a preprocessing run prints, and whether its result is usable.

Per split, `segments` in index.json's totals counts the utterances written (the field
kept its format-1 name)."""

from __future__ import annotations

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
        share = f" ({100 * s['fraction']:.1f} % of it)" if "fraction" in s else ""
        print(
            f"{split}: {s['files']} files{groups} → {s['segments']} utterances in "
            f"{s['shards']} shards, {s['valid_hours']:.3f} h of speech{share}"
        )
    if "_elapsed_s" in index:
        rate = t["input_hours"] * 3600 / max(index["_elapsed_s"], 1e-9)
        print(f"elapsed {index['_elapsed_s']:.1f} s ({rate:.0f} audio-seconds/s)")
    if index.get("_worker_peak_rss_mb"):
        print(f"peak worker RSS {index['_worker_peak_rss_mb']:.0f} MB")


def unusable_result(index: dict[str, Any]) -> str | None:
    """Why OUT holds nothing to train on (nothing kept, or nothing in train), or no val
    although one was asked, in one line that says what to change; None when it is
    usable. A split given by a manifest is taken as given, an empty val included."""
    t, cfg = index["totals"], index.get("config", {})
    splits = t["splits"]
    if not any(s["segments"] for s in splits.values()):
        if not t["files"]:
            return f"no file found under {index.get('input')}: nothing to preprocess"
        return (
            f"nothing kept: all {t['files']} files were rejected (reasons above; per file in "
            "files.jsonl); loosen the thresholds that rejected them"
        )
    if not splits.get("train", {}).get("segments"):  # only a manifest's split can do this
        return (
            "train is empty: every kept utterance is in val, as the split manifest says; "
            "list some files as train in it"
        )
    asked = cfg.get("val_fraction", 0.0)
    by_manifest = str(cfg.get("split_by", "")).startswith("manifest:")
    if asked > 0 and not by_manifest and not splits.get("val", {}).get("segments"):
        return (
            f"val is empty although val_fraction is {asked:g}: use --split-by file or a "
            "speaker regex for finer groups, or --val-fraction 0 for none"
        )
    return None
