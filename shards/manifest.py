"""`OUT/manifest.jsonl`: every utterance of an OUT, one JSON line each, without opening a tar.

Samplers that bucket by duration (Lhotse's `DynamicBucketingSampler`), window counters and
reports need each utterance's length and provenance; reading them from the shards would
decode every tar. One line per utterance, in shard-name order, then order within the shard:

    {"key": "b5c24fa3a925315d-00000", "shard": "train-000000.tar", "split": "train",
     "samples": 52311, "seconds": 3.2694, "valid_seconds": 3.2694,
     "source": "spk_02/utt_0004.flac", "offset": 4160}

>>> write_manifest(out, rows)      # atomic: readers see the old file or the new one
>>> read_manifest(out)[0]["key"]   # ManifestError naming file and line on a bad line
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from shards.atomic import atomic_write_text

MANIFEST_NAME = "manifest.jsonl"
# Field → the types a row's value may have (bool is an int subclass: refused separately).
MANIFEST_FIELDS: dict[str, tuple[type, ...]] = {
    "key": (str,),
    "shard": (str,),
    "split": (str,),
    "samples": (int,),
    "seconds": (int, float),
    "valid_seconds": (int, float),
    "source": (str,),
    "offset": (int,),
}


class ManifestError(ValueError):
    """A manifest line that is not a JSON object with the manifest's fields; names file and line."""


def _row_problem(row: Any) -> str | None:
    """What is wrong with one row, or None."""
    if not isinstance(row, dict):
        return f"expected a JSON object, got {type(row).__name__}"
    missing = [f for f in MANIFEST_FIELDS if f not in row]
    if missing:
        return f"missing {', '.join(missing)}"
    for name, types in MANIFEST_FIELDS.items():
        value = row[name]
        if isinstance(value, bool) or not isinstance(value, types):
            return f"{name} is {value!r}, expected {' or '.join(t.__name__ for t in types)}"
    if row["samples"] < 1:
        return f"samples is {row['samples']}, expected >= 1"
    return None


def write_manifest(out: str | os.PathLike, rows: Iterable[dict[str, Any]]) -> Path:
    """Write `out/manifest.jsonl` atomically from `rows` (already in shard, then sample order);
    each row must carry MANIFEST_FIELDS (extra fields are kept). Returns the path."""
    path = Path(out) / MANIFEST_NAME
    lines = []
    for i, row in enumerate(rows):
        problem = _row_problem(row)
        if problem:
            raise ManifestError(f"{path}: row {i} ({row.get('key', '?')}): {problem}")
        lines.append(json.dumps(row, sort_keys=True, separators=(",", ":"), ensure_ascii=False))
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return path


def read_manifest(out: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of `out/manifest.jsonl`, in file order. FileNotFoundError when there is none;
    ManifestError naming the file and line for a line that is not a valid row."""
    path = Path(out) / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no manifest; expected a format-2 preprocess output "
            "(python -m preprocess.run --output DIR)"
        )
    rows = []
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ManifestError(f"{path}:{number}: not valid JSON: {exc}") from exc
            problem = _row_problem(row)
            if problem:
                raise ManifestError(f"{path}:{number}: {problem}")
            rows.append(row)
    return rows
