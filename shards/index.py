"""`OUT/index.json`: the index of one preprocessing run, and the only way to list shards.

    OUT/index.json                  this index (written last: its presence means done)
    OUT/manifest.jsonl              one line per utterance (shards/manifest.py)
    OUT/shards/train-000000.tar …   WebDataset shards of utterances (docs/SHARDS.md)
    OUT/shards/val-000000.tar …
    OUT/files.jsonl  OUT/stats.zarr  OUT/report/

Readers never glob `shards/`: a shard belongs to the output only if index.json lists it,
which keeps stale or foreign tars in the folder out of training and evaluation. Fields:
`format_version`, `code_version`, `input`, `input_digest`, `config`, `config_digest`,
`sample_rate`, `utterance_max_samples`, `manifest`, `scan_only`, `totals`, and `shards`:
one `{name, split, samples, bytes, sha256}` per shard, in name order.

Format 2 (this one): a sample is an utterance of any length up to `utterance_max_samples`,
and training cuts windows of its own segment length. Format 1 stored fixed 1-s segments;
`Index.load` refuses it in one line that says to re-run preprocess.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shards.atomic import atomic_write_json
from shards.manifest import MANIFEST_NAME, read_manifest

INDEX_NAME = "index.json"
SHARD_DIR = "shards"
SPLITS = ("train", "val")
# 2: one sample per utterance (≤ utterance_max_samples), manifest.jsonl; 1: fixed 1-s segments.
FORMAT_VERSION = 2
_HASH_CHUNK = 1 << 20


class IndexFormatError(ValueError):
    """index.json is missing a field or has one of the wrong type, or is of a format this
    code does not read; the message names it and, for a format, what to do."""


def _version_problem(out: Path, data: dict[str, Any]) -> str | None:
    """One line when index.json's `format_version` is not FORMAT_VERSION, else None."""
    version = data.get("format_version")
    if version == FORMAT_VERSION:
        return None
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        return (
            f"{out}: written by a newer preprocess (format {version}; this telucodec reads "
            f"format {FORMAT_VERSION}); upgrade telucodec"
        )
    if version == 1:
        source = data.get("input")
        in_arg = shlex.quote(str(source)) if isinstance(source, str) and source else "IN"
        return (
            f"{out}: written by an older preprocess (format 1: fixed 1-s segments); re-run "
            f"`python -m preprocess.run --input {in_arg} --output {shlex.quote(str(out))} "
            "--overwrite`"
        )
    return (
        f"{out}: index.json has format_version {version!r}, expected {FORMAT_VERSION}; "
        "not an output of this preprocess"
    )


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
    # manifest.jsonl rows, read on first use: a frozen Index still caches (not compared).
    _cache: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def load(cls, out: str | os.PathLike, check_version: bool = True) -> Index:
        """Read `out/index.json`; a clear error when `out` is not a preprocess output.

        Training and evaluation read samples, so an index of another `format_version`
        raises IndexFormatError with one line saying what to do. `check_version=False` is
        for tools that only look at the run (is this OUT ours, what did it keep)."""
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
        if check_version and (problem := _version_problem(root, data)):
            raise IndexFormatError(problem)
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
    def format_version(self) -> int | None:
        version = self.data.get("format_version")
        return version if isinstance(version, int) else None

    @property
    def utterance_max_samples(self) -> int:
        """The longest a sample can be, in samples: the cap on training segment length."""
        value = self.data.get("utterance_max_samples")
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise IndexFormatError(
                f"{self.root / INDEX_NAME}: utterance_max_samples is {value!r}, "
                "expected a positive integer"
            )
        return value

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

    @property
    def manifest_path(self) -> Path:
        """`OUT/manifest.jsonl` (index.json's `manifest` names it; a plain file name)."""
        name = self.data.get("manifest", MANIFEST_NAME)
        if name != MANIFEST_NAME:
            raise IndexFormatError(
                f"{self.root / INDEX_NAME}: manifest is {name!r}, expected {MANIFEST_NAME!r}"
            )
        return self.root / name

    def manifest(self, split: str | None = None) -> list[dict[str, Any]]:
        """The utterances of manifest.jsonl (all, or one split's), in shard then sample
        order; read once per Index. Rows are shared: copy one before changing it."""
        if "rows" not in self._cache:
            self._cache["rows"] = read_manifest(self.manifest_path.parent)
        rows = self._cache["rows"]
        if split is None:
            return list(rows)
        if split not in SPLITS:
            raise ValueError(f"split {split!r}: expected one of {SPLITS}")
        return [r for r in rows if r["split"] == split]

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
    """Write `out/index.json` atomically: readers see the old index or the new one. Without
    a `format_version` in `data` it records FORMAT_VERSION: this code writes that format."""
    data = {"format_version": FORMAT_VERSION, **data}
    atomic_write_json(Path(out) / INDEX_NAME, data, indent=1, sort_keys=True, ensure_ascii=False)
