"""What the diagnosis measured, from a preprocess OUT: the `Findings` every report part reads.

`diagnose_output` reads `files.jsonl`, `index.json` (through `shards.Index`),
`manifest.jsonl` and `stats.zarr` — never the audio — and computes everything the report
says once: the padding curve over training segment lengths, the what-if outcomes, the
re-decided mismatches and the per-frame level histograms. `report.py` turns Findings into
words and `plots.py` into figures.
"""

from __future__ import annotations

import heapq
import json
import math
import re
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from preprocess.config import PreprocessConfig
from preprocess.diagnose.whatif import (
    INTEGRITY_REASONS,
    ORIGINAL_SEGMENT_SECONDS,
    TRAIN_SEGMENT_SECONDS,
    UNDECODABLE_REASONS,
    Outcome,
    PaddingCurve,
    RecordTable,
    padding_curve,
    recommend_segment_seconds,
    segment_grid,
    to_samples,
    what_if_table,
)
from shards import FORMAT_VERSION, INDEX_NAME, SAMPLE_RATE, Index, IndexFormatError

SILENCE_REASONS = ("mostly_silent", "no_speech", "silent")  # scenario C
FRAME_DB_BINS = np.arange(-120.0, 2.0, 2.0)


def is_output(path: Path) -> bool:
    """A preprocess OUT (or a diagnosis scan) holds index.json and files.jsonl."""
    return (path / INDEX_NAME).is_file() and (path / "files.jsonl").is_file()


def config_from_index(index: Index) -> PreprocessConfig:
    """The config a run used, back from index.json."""
    return PreprocessConfig.from_dict(index.config)


def read_records(out: Path) -> list[dict[str, Any]]:
    """files.jsonl, one dict per input file, in path order."""
    with open(out / "files.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:60] or "x"


# Rows per files/*.tsv. At 100,000 files a list per count (every reason, every what-if)
# made a 61 MB report folder; files.jsonl holds every file, a list is for listening.
LIST_ROWS = 1000


@dataclass(frozen=True)
class Worst:
    """How to pick the rows of a list too long to write whole: smallest `key` first."""

    key: Callable[[dict[str, Any]], float]
    order: str  # said in the TSV: "lowest peak first"


def lowest(key: str) -> Worst:
    """Smallest `key` first (files without it last)."""
    return Worst(lambda r: math.inf if r.get(key) is None else r[key], f"lowest {key} first")


def highest(key: str, absolute: bool = False) -> Worst:
    """Largest `key` (or |key|) first (files without it last)."""

    def k(r: dict[str, Any]) -> float:
        v = r.get(key)
        return math.inf if v is None else -(abs(v) if absolute else v)

    return Worst(k, f"largest {'|' + key + '|' if absolute else key} first")


# Which files of a long reason list are worth listening to first.
REASON_WORST = {
    "short": lowest("seconds"),
    "quiet": lowest("peak"),
    "no_speech": lowest("active_seconds"),
    "mostly_silent": lowest("active_fraction"),
    "clipped": highest("clipped_fraction"),
    "nonfinite": highest("nonfinite"),
    "noisy": lowest("snr_db"),
    "low_quality": lowest("dnsmos_ovrl"),
    "normalized": highest("gain_db"),
}


@dataclass(frozen=True)
class FileList:
    """The rows one count links to: all its files, or LIST_ROWS of them chosen by `order`."""

    rows: list[dict[str, Any]]
    total: int
    order: str  # how `rows` were chosen when total > len(rows)


@dataclass
class Links:
    """Each count in the report links to `files/<name>.tsv`, the files behind it (at most
    `rows` of them, the worst first when the count has a `Worst`; files.jsonl has all)."""

    lists: dict[str, FileList] = field(default_factory=dict)
    rows: int = LIST_ROWS

    def count(
        self, name: str, records: Sequence[dict[str, Any]], worst: Worst | None = None
    ) -> str:
        name = _slug(name)
        if len(records) <= self.rows:
            self.lists[name] = FileList(list(records), len(records), "path order")
        elif worst is None:
            self.lists[name] = FileList(list(records[: self.rows]), len(records), "path order")
        else:  # not a full sort: a list may hold every file of the corpus
            rows = heapq.nsmallest(self.rows, records, key=lambda r: (worst.key(r), r["path"]))
            self.lists[name] = FileList(rows, len(records), worst.order)
        return f"[{len(records)}](files/{name}.tsv)"

    def files(
        self, name: str, records: Sequence[dict[str, Any]], worst: Worst | None = None
    ) -> str:
        """`[3](…) files` / `[1](…) file`: a linked count with its noun."""
        return self.count(name, records, worst) + (" file" if len(records) == 1 else " files")


@dataclass
class Findings:
    """The measured answers to the original flowchart, plus what-ifs and top-N lists."""

    source: str  # the corpus the records describe
    out: Path
    cfg: PreprocessConfig  # the config of the run
    records: list[dict[str, Any]]
    table: RecordTable  # the records' measurements, parsed once for every re-decision
    segment_seconds: float  # the training segment length scored (`--segment-seconds`)
    utterances: Utterances  # the utterance lengths the padding curve is computed from
    curve: PaddingCurve
    recommended: float  # our way (windows from utterances, masked)
    recommended_naive: float  # the original way, for comparison
    outcomes: list[Outcome]  # current config first
    mismatches: list[str]  # paths where re-deciding the current config disagrees
    frame_hist: np.ndarray | None  # [2, bins]: kept files, silence/noise files
    top: int
    max_padding: float
    links: Links = field(default_factory=Links)
    splits: dict[str, dict[str, Any]] | None = None  # index.json totals.splits

    @cached_property
    def decodable(self) -> list[dict[str, Any]]:
        """Every file that decodes: what the original training would have padded."""
        return [
            r
            for r in self.records
            if r["reason"] not in UNDECODABLE_REASONS and (r["seconds"] or 0) > 0
        ]

    @cached_property
    def measured(self) -> list[dict[str, Any]]:
        """Files the threshold rules looked at (integrity checks passed)."""
        return [
            r
            for r in self.records
            if r["reason"] not in INTEGRITY_REASONS
            and r["peak"] is not None
            and r["rms"] is not None
        ]

    @cached_property
    def _reason_groups(self) -> dict[str, list[dict[str, Any]]]:
        groups: dict[str, list[dict[str, Any]]] = {}
        for r in self.records:
            groups.setdefault(r["reason"], []).append(r)
        return groups

    def by_reason(self, *reasons: str) -> list[dict[str, Any]]:
        """Files with any of these reasons, in files.jsonl (path) order."""
        if len(reasons) == 1:
            return list(self._reason_groups.get(reasons[0], []))
        return [r for r in self.records if r["reason"] in reasons]

    def reason_count(self, reason: str) -> str:
        """The linked count of one reason's files (`files/reason-<reason>.tsv`)."""
        return self.links.count(
            "reason-" + reason, self.by_reason(reason), REASON_WORST.get(reason)
        )

    def reason_files(self, reason: str) -> str:
        """`reason_count` with its noun."""
        n = len(self._reason_groups.get(reason, ()))
        return self.reason_count(reason) + (" file" if n == 1 else " files")


@dataclass(frozen=True)
class Utterances:
    """Every kept utterance's length, and where the lengths come from.

    An OUT with shards lists each utterance in manifest.jsonl: exact. A scan of a raw
    corpus writes no samples and so no manifest, but each files.jsonl record lists the
    lengths of the utterances its file would give (`utterance_samples`): exact too. Only
    an OUT from before that field has per file just how many utterances and the audio in
    them (`segments`, `valid_seconds`): that audio split evenly within each file, an
    estimate where pauses split a file unevenly.
    """

    samples: np.ndarray  # int64[U], the lengths in samples
    exact: bool
    source: str  # said in the report

    @property
    def seconds(self) -> np.ndarray:
        return self.samples / SAMPLE_RATE


def manifest_utterances(index: Index) -> Utterances:
    """The utterance lengths manifest.jsonl lists (every split)."""
    samples = np.fromiter((r["samples"] for r in index.manifest()), dtype=np.int64)
    return Utterances(samples, True, "manifest.jsonl")


def scan_utterances(records: Sequence[dict[str, Any]]) -> Utterances:
    """The utterance lengths a scan's records list (`utterance_samples`); for records from
    before that field, per kept file `segments` equal utterances holding its
    `valid_seconds` (see Utterances)."""
    kept = [r for r in records if r["status"] == "kept" and (r.get("segments") or 0) > 0]
    if all("utterance_samples" in r for r in kept):
        lengths = [n for r in kept for n in r["utterance_samples"]]
        return Utterances(
            np.array(lengths, dtype=np.int64),
            True,
            "files.jsonl: each kept file's utterance lengths (a scan writes no manifest)",
        )
    count = np.array([r["segments"] for r in kept], dtype=np.int64)
    audio = to_samples(r.get("valid_seconds") for r in kept)
    each = np.repeat(audio // np.maximum(count, 1), count)
    # The remainder samples go one each to a file's first utterances, so totals are exact.
    rank = np.arange(each.size) - np.repeat(np.cumsum(count) - count, count)
    each += rank < np.repeat(audio % np.maximum(count, 1), count)
    return Utterances(
        each,
        False,
        "files.jsonl: a scan writes no manifest, so each file's utterance audio is split "
        "evenly among its utterances",
    )


def check_format(index: Index) -> None:
    """Refuse, in one line, an index.json of another format: a format-1 OUT's files.jsonl
    counts fixed 1-s segments, not utterances, and it has no manifest."""
    version = index.format_version
    if version == FORMAT_VERSION:
        return
    if index.scan_only:
        source = index.data.get("input") or "CORPUS"
        raise IndexFormatError(
            f"{index.root}: a diagnosis scan of another format (format {version!r}; this "
            f"code reads format {FORMAT_VERSION}); rescan: `python -m preprocess.diagnose "
            f"{shlex.quote(str(source))} --out {shlex.quote(str(index.root))}`"
        )
    Index.load(index.root)  # raises shards' own line: re-run preprocess (or upgrade)
    raise IndexFormatError(f"{index.root}: index.json format_version {version!r}")


def frame_level_histograms(
    values: Any, offsets: np.ndarray, group: np.ndarray, chunk: int = 1 << 22
) -> np.ndarray:
    """Histogram of per-frame RMS in dBFS for file groups 0 and 1 (−1: not counted).

    Reads the ragged frame store in chunks, so memory stays bounded on a big corpus; each
    chunk's owners come from the offsets of the files it spans (no search per frame).
    """
    bins = FRAME_DB_BINS.size - 1
    hist = np.zeros(2 * bins, dtype=np.int64)
    offsets = np.asarray(offsets, dtype=np.int64)
    total = int(offsets[-1]) if offsets.size else 0
    for start in range(0, total, chunk):
        stop = min(total, start + chunk)
        first = int(np.searchsorted(offsets, start, side="right")) - 1
        last = int(np.searchsorted(offsets, stop, side="left"))
        spans = np.clip(offsets[first : last + 1], start, stop)
        g = np.repeat(group[first:last].astype(np.int64), np.diff(spans))
        v = np.asarray(values[start:stop], dtype=np.float64)
        db = np.clip(20.0 * np.log10(np.maximum(v, 1e-7)), -119.0, 1.0)
        # Bins are 2 dB wide from −120: the index is arithmetic, not a search.
        b = np.minimum(((db - FRAME_DB_BINS[0]) // 2.0).astype(np.int64), bins - 1)
        counted = g >= 0
        hist += np.bincount(g[counted] * bins + b[counted], minlength=2 * bins)
    return hist.reshape(2, bins)


def frame_groups(records: Sequence[dict[str, Any]]) -> np.ndarray:
    """0 for kept files, 1 for files rejected as silence/noise/dead, −1 otherwise."""
    out = np.full(len(records), -1, dtype=np.int8)
    for i, r in enumerate(records):
        if r["status"] == "kept":
            out[i] = 0
        elif r["reason"] in (*SILENCE_REASONS, "quiet"):
            out[i] = 1
    return out


def _frame_hist(out: Path, records: list[dict[str, Any]]) -> Any:
    """Per-frame level histograms from stats.zarr; None when the store is absent."""
    store = out / "stats.zarr"
    if not store.exists():
        return None
    from preprocess.out.stats_store import read_stats

    stats = read_stats(store)
    paths = list(stats["files"]["path"])
    if paths != [r["path"] for r in records]:
        raise ValueError(f"{store}: rows are not aligned with {out / 'files.jsonl'}")
    return frame_level_histograms(
        stats["frame_values"], stats["frame_offsets"], frame_groups(records)
    )


def diagnose_output(
    out: Path,
    segment_seconds: float | None = None,
    what_ifs: Sequence[str] = (),
    top: int = 10,
    max_padding: float = 0.10,
) -> Findings:
    """Everything the report says, from OUT's files.jsonl, index.json, manifest.jsonl and
    stats.zarr; `segment_seconds` is the training length to score (default: training's).
    An OUT of another format is refused in one line (IndexFormatError)."""
    out = Path(out)
    index = Index.load(out, check_version=False)
    check_format(index)
    cfg = config_from_index(index)
    length = TRAIN_SEGMENT_SECONDS if segment_seconds is None else float(segment_seconds)
    if not 0.0 < length * SAMPLE_RATE <= cfg.utterance_max_samples:
        raise ValueError(
            f"--segment-seconds {length:g}: expected a training length > 0 and at most this "
            f"output's utterance cap, max_utterance_seconds = {cfg.max_utterance_seconds:g}"
        )
    records = read_records(out)
    table = RecordTable(records, cfg)
    outcomes = what_if_table(records, cfg, what_ifs, table)
    utterances = scan_utterances(records) if index.scan_only else manifest_utterances(index)
    decodable = [r for r in records if r["reason"] not in UNDECODABLE_REASONS]
    curve = padding_curve(
        [r["seconds"] for r in decodable],
        utterances.samples,
        segment_grid(ORIGINAL_SEGMENT_SECONDS, length, cap=cfg.utterance_max_samples / SAMPLE_RATE),
    )
    return Findings(
        source=index.data.get("input", str(out)),
        out=out.resolve(),
        cfg=cfg,
        records=records,
        table=table,
        segment_seconds=length,
        utterances=utterances,
        curve=curve,
        recommended=recommend_segment_seconds(curve, max_padding),
        recommended_naive=recommend_segment_seconds(curve, max_padding, "naive"),
        outcomes=outcomes,
        mismatches=[
            r["path"]
            for r, d in zip(records, outcomes[0].decisions, strict=True)
            if d != (r["status"], r["reason"])
        ],
        frame_hist=_frame_hist(out, records),
        splits=index.totals.get("splits"),
        top=top,
        max_padding=max_padding,
    )
