"""`OUT/index.json`: the manifest of one preprocessing run, and the only way to list shards.

    OUT/index.json                  this manifest (written last: its presence means done)
    OUT/shards/train-000000.tar …   WebDataset shards (docs/SHARDS.md)
    OUT/shards/val-000000.tar …
    OUT/files.jsonl  OUT/stats.zarr  OUT/report/

Readers never glob `shards/`: a shard belongs to the output only if index.json lists it,
which keeps stale or foreign tars in the folder out of training and evaluation. Fields:
`format_version`, `code_version`, `input`, `input_digest`, `config`, `config_digest`,
`sample_rate`, `segment_samples`, `scan_only`, `totals`, and `shards`: one `{name, split,
samples, bytes, sha256}` per shard, in name order.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shards.atomic import atomic_write_json

INDEX_NAME = "index.json"
SHARD_DIR = "shards"
SPLITS = ("train", "val")
FORMAT_VERSION = 1
_HASH_CHUNK = 1 << 20


class IndexFormatError(ValueError):
    """index.json is missing a field or has one of the wrong type; the message names it."""


@dataclass(frozen=True)
class ShardRef:
    """One shard listed in index.json, with its absolute path under OUT. Readers take it as
    a local file (never a URL) and check what they read against the other fields."""

    name: str
    split: str
    samples: int
    bytes: int
    sha256: str
    path: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "split": self.split,
            "samples": self.samples,
            "bytes": self.bytes,
            "sha256": self.sha256,
        }


@dataclass(frozen=True)
class Index:
    """A parsed index.json; `root` is the OUT directory it describes."""

    root: Path
    data: dict[str, Any]
    shards: tuple[ShardRef, ...]

    @classmethod
    def load(cls, out: str | os.PathLike) -> Index:
        """Read `out/index.json`; a clear error when `out` is not a preprocess output."""
        root = Path(out)
        path = root / INDEX_NAME
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: no index.json; expected a preprocess output directory "
                "(python -m preprocess.run --output DIR)"
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise IndexFormatError(f"{path}: not valid JSON: {exc}") from exc
        if not isinstance(data, dict) or not isinstance(data.get("shards"), list):
            raise IndexFormatError(f"{path}: expected an object with a 'shards' list")
        # Absolute, so a relative OUT such as `pipe:cmd` or `data:v2` can never read as a URL.
        shard_dir = root.absolute() / SHARD_DIR
        refs = []
        for i, s in enumerate(data["shards"]):
            try:
                name, split = str(s["name"]), str(s["split"])
                ref = ShardRef(
                    name=name,
                    split=split,
                    samples=int(s["samples"]),
                    bytes=int(s["bytes"]),
                    sha256=str(s["sha256"]),
                    path=str(shard_dir / name),
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise IndexFormatError(f"{path}: shards[{i}] is malformed: {exc!r}") from exc
            if "/" in name or name.startswith("."):
                raise IndexFormatError(f"{path}: shards[{i}] name {name!r} is not a file name")
            refs.append(ref)
        return cls(root, data, tuple(sorted(refs, key=lambda r: r.name)))

    # -------------------------------------------------------------------- fields

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.data.get("config", {}))

    @property
    def segment_samples(self) -> int:
        return int(self.data.get("segment_samples") or self.config.get("segment_samples", 16000))

    @property
    def sample_rate(self) -> int:
        return int(self.data.get("sample_rate", 16000))

    @property
    def scan_only(self) -> bool:
        return bool(self.data.get("scan_only", False))

    @property
    def totals(self) -> dict[str, Any]:
        return dict(self.data.get("totals", {}))

    # -------------------------------------------------------------------- shards

    def entries(self, split: str) -> list[ShardRef]:
        """The shards of one split, in name order."""
        if split not in SPLITS:
            raise ValueError(f"split {split!r}: expected one of {SPLITS}")
        return [r for r in self.shards if r.split == split]

    def paths(self, split: str) -> list[str]:
        """Absolute local paths of a split's shards. Readers given `entries(split)` instead
        also check each read against index.json (shards/reader.py)."""
        return [r.path for r in self.entries(split)]

    def samples(self, split: str) -> int:
        return sum(r.samples for r in self.entries(split))

    def verify(self, split: str | None = None, checksum: bool = True) -> list[str]:
        """Problems with the listed shards on disk (missing, size or sha256 mismatch)."""
        problems = []
        for ref in self.shards if split is None else self.entries(split):
            p = Path(ref.path)
            if not p.is_file():
                problems.append(f"{ref.name}: listed in index.json but missing")
            elif p.stat().st_size != ref.bytes:
                problems.append(f"{ref.name}: {p.stat().st_size} bytes, index says {ref.bytes}")
            elif checksum and sha256_file(p) != ref.sha256:
                problems.append(f"{ref.name}: sha256 differs from index.json")
        return problems


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def write_index(out: str | os.PathLike, data: dict[str, Any]) -> None:
    """Write `out/index.json` atomically: readers see the old manifest or the new one."""
    atomic_write_json(Path(out) / INDEX_NAME, data, indent=1, sort_keys=True, ensure_ascii=False)
