"""`OUT.truth.jsonl`: what the pipeline should decide for every file of the corpus.

One line per file, sorted by path, fields `TRUTH_FIELDS` (schema in docs/SYNTH.md); the
expected status and reason come from the file's fault class (`classes.CLASSES`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from preprocess.synth.classes import CLASSES
from preprocess.synth.spec import FileSpec

TRUTH_FIELDS = (
    "path",
    "class",
    "expected_status",
    "expected_reason",
    "speaker",
    "sample_rate",
    "channels",
    "format",
    "subtype",
    "seconds",
    "speech_seconds",
    "duplicate_of",
    "sha256",
)


def truth_record(spec: FileSpec, data: bytes) -> dict[str, Any]:
    """One line of OUT.truth.jsonl (schema in docs/SYNTH.md)."""
    fault = CLASSES[spec.cls]
    return {
        "path": spec.path,
        "class": spec.cls,
        "expected_status": fault.status,
        "expected_reason": fault.reason,
        "speaker": spec.speaker,
        "sample_rate": spec.sample_rate,
        "channels": spec.channels,
        "format": spec.format if spec.subtype else None,
        "subtype": spec.subtype,
        "seconds": spec.seconds,
        "speech_seconds": spec.speech_seconds,
        "duplicate_of": spec.duplicate_of,
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def check_truth(records: list[dict[str, Any]]) -> None:
    """Guard the plan against itself: every non-empty byte-identical group must be one
    original, first in sorted path order, followed by its `duplicate` copies. A clash
    (two digital-silence files of the same length, say) would make the truth wrong."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        if r["sha256"] != hashlib.sha256(b"").hexdigest():
            groups.setdefault(r["sha256"], []).append(r)
    for group in groups.values():
        first, *rest = sorted(group, key=lambda r: r["path"])
        if first["class"] == "duplicate" or any(
            r["class"] != "duplicate" or r["duplicate_of"] != first["path"] for r in rest
        ):
            raise AssertionError(f"unplanned identical files: {[r['path'] for r in group]}")


def write_truth(path: Path, records: list[dict[str, Any]]) -> None:
    """The truth file: one JSON line per record, fields in TRUTH_FIELDS order."""
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for r in records:
            f.write(json.dumps({k: r[k] for k in TRUTH_FIELDS}, ensure_ascii=False) + "\n")
