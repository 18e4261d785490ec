"""Train/val split: which group each file belongs to, and which groups go to val.

A group is what must never straddle the split — a speaker (top-level folder with
`split_by = "dir"`, a regex capture with `"re:PATTERN"`, a manifest column with
`"manifest:FILE"`) or the file itself (`"file"`). Val is filled with whole groups, taken in
a seeded hash order of their names until it holds `val_fraction` of the audio (at least
`min_val_seconds`), so the share asked for is the share given, within one group.

The measure is the header duration (`InputFile.est_seconds`) of the files that will be
decoded (decodable, not duplicates): the split is planned before any file is scanned, so
the hours that are finally *kept* can differ by what the policy rejects per group.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shards import SPLITS

# min_val_seconds never takes more than this share of the audio: a 12-minute demo corpus
# would otherwise put 5 of its 12 minutes in val and starve training.
MIN_VAL_MAX_SHARE = 0.25
_EXAMPLES = 3  # paths quoted in a warning or an error


class SplitError(ValueError):
    """The split cannot be made as configured (regex misses, manifest unreadable)."""


# ---------------------------------------------------------------------------------------
# split_by: the rule that names a file's group
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SplitRule:
    """Parsed `split_by`: kind is dir | file | re | manifest."""

    kind: str
    pattern: re.Pattern[str] | None = None
    manifest: Path | None = None


def parse_split_by(text: str) -> SplitRule:
    """`dir`, `file`, `re:PATTERN` or `manifest:FILE.csv|.jsonl`; ValueError says why not.

    A regex names the speaker with a group `(?P<speaker>…)`, or its only group, or (no
    group) the whole match; it is searched in the POSIX path relative to the input.
    """
    if text in ("dir", "file"):
        return SplitRule(text)
    if text.startswith("re:"):
        try:
            pattern = re.compile(text[3:])
        except re.error as exc:
            raise ValueError(f"a valid regular expression after re: ({exc})") from None
        if pattern.groups > 1 and "speaker" not in pattern.groupindex:
            raise ValueError("one capture group, or one named (?P<speaker>…)")
        return SplitRule("re", pattern=pattern)
    if text.startswith("manifest:"):
        path = Path(text[len("manifest:") :])
        if path.suffix.lower() not in (".csv", ".jsonl"):
            raise ValueError("manifest:FILE with FILE a .csv or .jsonl file")
        return SplitRule("manifest", manifest=path)
    raise ValueError("dir, file, re:PATTERN or manifest:FILE")


def regex_group(pattern: re.Pattern[str], path: str) -> str | None:
    """The speaker a regex extracts from `path`; None when it does not match (or is empty)."""
    m = pattern.search(path)
    if m is None:
        return None
    if "speaker" in pattern.groupindex:
        name = m.group("speaker")
    else:
        name = m.group(1) if pattern.groups == 1 else m.group(0)
    return name or None


def dir_group(path: str) -> str:
    """The top-level folder; a file at the top is its own group."""
    return path.split("/", 1)[0]


# ---------------------------------------------------------------------------------------
# Manifests: a corpus's own split (path → split) or speakers (path → speaker)
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    """column is "split" (taken as given) or "speaker" (groups for the hash walk)."""

    column: str
    table: dict[str, str]


def manifest_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_manifest(path: Path, expected_sha256: str) -> Manifest:
    """Rows `path,split` or `path,speaker` (CSV with a header, or JSON lines); paths are
    POSIX, relative to the input. Errors name the file and line."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SplitError(f"split manifest {path}: cannot read it ({exc})") from None
    if hashlib.sha256(data).hexdigest() != expected_sha256:
        raise SplitError(
            f"split manifest {path} changed since the config was made (sha256 "
            f"{expected_sha256[:12]}…); rerun to plan with its new content"
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SplitError(f"split manifest {path}: not UTF-8 ({exc})") from None
    rows = _csv_rows(path, text) if path.suffix.lower() == ".csv" else _jsonl_rows(path, text)
    return _manifest_table(path, rows)


def _csv_rows(path: Path, text: str) -> Iterable[tuple[int, dict[str, Any]]]:
    reader = csv.DictReader(io.StringIO(text))
    for row in reader:
        yield reader.line_num, row


def _jsonl_rows(path: Path, text: str) -> Iterable[tuple[int, dict[str, Any]]]:
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SplitError(f"split manifest {path}:{n}: not JSON ({exc})") from None
        if not isinstance(row, dict):
            raise SplitError(f"split manifest {path}:{n}: expected an object, got {line!r}")
        yield n, row


def _manifest_table(path: Path, rows: Iterable[tuple[int, dict[str, Any]]]) -> Manifest:
    """One column for the whole file: `split` when present (it wins), else `speaker`."""
    column: str | None = None
    table: dict[str, str] = {}
    for n, row in rows:
        if column is None:
            column = "split" if "split" in row else "speaker" if "speaker" in row else None
            if column is None or "path" not in row:
                raise SplitError(
                    f"split manifest {path}:{n}: expected columns path and split or speaker"
                )
        rel, value = row.get("path"), row.get(column)
        if not isinstance(rel, str) or not rel or not isinstance(value, str) or not value:
            raise SplitError(f"split manifest {path}:{n}: expected non-empty path and {column}")
        if column == "split" and value not in SPLITS:
            raise SplitError(f"split manifest {path}:{n}: split {value!r}, expected train or val")
        rel = rel.removeprefix("./")
        if table.setdefault(rel, value) != value:
            raise SplitError(f"split manifest {path}:{n}: {rel!r} listed twice, differently")
    if column is None:
        raise SplitError(f"split manifest {path}: no rows")
    return Manifest(column, table)


# ---------------------------------------------------------------------------------------
# The walk: whole groups in hash order until val holds its share
# ---------------------------------------------------------------------------------------


def group_hash(name: str, seed: int) -> int:
    """The seeded order groups are walked in (the same hash as the unit packing's)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "big")


def val_target_seconds(total: float, val_fraction: float, min_val_seconds: float) -> float:
    """What val should hold: the fraction asked, raised to min_val_seconds (capped at
    MIN_VAL_MAX_SHARE of the audio); nothing when no val is asked for."""
    if val_fraction <= 0 or total <= 0:
        return 0.0
    return max(val_fraction * total, min(min_val_seconds, MIN_VAL_MAX_SHARE * total))


def choose_val_groups(
    seconds: dict[str, float], target: float, seed: int, floor: float = 0.0
) -> list[str]:
    """Groups for val, in walk order: a prefix of the hash order, ending within one group
    of `target`.

    Groups holding ≥ 2 × target are skipped (one alone would overshoot more than an empty
    val misses). The rest are taken whole, in hash order, while the running total stays ≤
    target; the first one that does not fit (the one straddling the boundary) is taken if
    that lands closer to the target — or if val is under `floor` (min_val_seconds, a
    minimum) and taking it keeps val within MIN_VAL_MAX_SHARE of the audio — and the walk
    stops there. So a group's split moves only when the totals move the boundary across
    it. Train always keeps one group.
    """
    audio = sorted((g for g, s in seconds.items() if s > 0), key=lambda g: (group_hash(g, seed), g))
    if target <= 0 or len(audio) < 2:
        return []
    val: list[str] = []
    running = 0.0
    ceiling = MIN_VAL_MAX_SHARE * sum(seconds.values())
    for g in (g for g in audio if seconds[g] < 2 * target):
        if len(val) + 1 == len(audio):
            break
        s = seconds[g]
        if running + s <= target:
            val.append(g)
            running += s
            continue
        closer = running + s - target < target - running
        if closer or (running < floor and running + s <= ceiling):  # the straddler
            val.append(g)
        break
    if not val:  # every group is ≥ 2 × target: the smallest one, or no validation at all
        val.append(min(audio, key=lambda g: (seconds[g], group_hash(g, seed), g)))
    return val


# ---------------------------------------------------------------------------------------
# The plan for a whole corpus
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SplitItem:
    """What the split needs of one file: its path and the audio it will contribute."""

    path: str
    seconds: float  # header duration if the file will be decoded, else 0
    decodes: bool  # decodable and not a duplicate


@dataclass
class SplitPlan:
    """Each file's split and group, the figures behind them and what went wrong."""

    split_of: dict[str, str]
    group_of: dict[str, str]
    asked_fraction: float | None  # None: the manifest's split is taken as given
    target_seconds: float
    seconds: dict[str, float]  # per split, header seconds of the files that decode
    groups: dict[str, int]  # per split, groups holding such files
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        total = sum(self.seconds.values())
        share = self.seconds["val"] / total if total else 0.0
        asked = (
            "as the manifest says"
            if self.asked_fraction is None
            else (f"asked {self.asked_fraction:.1%}, target {self.target_seconds:.0f} s")
        )
        return (
            f"split: val {self.groups['val']} of {sum(self.groups.values())} groups, "
            f"{self.seconds['val']:.0f} s of {total:.0f} s decodable audio "
            f"({share:.1%}; {asked})"
        )


def group_files(items: list[SplitItem], rule: SplitRule, manifest: Manifest | None) -> dict:
    """path → group. A decodable file the regex misses is an error (never a wrong group);
    files that will not be decoded, or a manifest leaves out, are their own group."""
    groups: dict[str, str] = {}
    missed: list[str] = []
    for it in items:
        if rule.kind == "dir":
            g = dir_group(it.path)
        elif rule.kind == "re":
            g = regex_group(rule.pattern, it.path)  # type: ignore[arg-type]
            if g is None and it.decodes:
                missed.append(it.path)
        elif manifest is not None and manifest.column == "speaker":
            g = manifest.table.get(it.path)
        else:
            g = None
        groups[it.path] = g if g is not None else it.path
    if missed:
        raise SplitError(
            f"split_by {rule.pattern.pattern!r}: {len(missed)} audio files match no speaker, "  # type: ignore[union-attr]
            f"e.g. {missed[:_EXAMPLES]}; widen the pattern, or use manifest:FILE"
        )
    return groups


def groups_of(
    paths: list[str], split_by: str, manifest_sha256: str = ""
) -> tuple[dict[str, str], bool]:
    """path → group for files that were decoded (index.json counts groups per split), and
    whether a manifest gave the split itself (then no fraction was asked for)."""
    rule = parse_split_by(split_by)
    manifest = read_manifest(rule.manifest, manifest_sha256) if rule.manifest else None
    given = manifest is not None and manifest.column == "split"
    return group_files([SplitItem(p, 0.0, True) for p in paths], rule, manifest), given


def plan_splits(
    items: list[SplitItem],
    split_by: str,
    val_fraction: float,
    min_val_seconds: float,
    seed: int,
    manifest_sha256: str = "",
) -> SplitPlan:
    """Every file's split: from the manifest's split column as given, else by the walk."""
    rule = parse_split_by(split_by)
    manifest = read_manifest(rule.manifest, manifest_sha256) if rule.manifest else None
    warnings = _manifest_warnings(items, manifest) if manifest else []
    group_of = group_files(items, rule, manifest)
    seconds: dict[str, float] = {}
    for it in items:
        if it.decodes:
            seconds[group_of[it.path]] = seconds.get(group_of[it.path], 0.0) + it.seconds
    total = sum(seconds.values())
    if manifest is not None and manifest.column == "split":
        split_of = {it.path: manifest.table.get(it.path, "train") for it in items}
        asked, target = None, 0.0
    else:
        asked = val_fraction
        target = val_target_seconds(total, val_fraction, min_val_seconds)
        floor = min_val_seconds if val_fraction > 0 else 0.0
        val = set(choose_val_groups(seconds, target, seed, floor))
        split_of = {it.path: "val" if group_of[it.path] in val else "train" for it in items}
    plan = SplitPlan(
        split_of=split_of,
        group_of=group_of,
        asked_fraction=asked,
        target_seconds=target,
        seconds={s: 0.0 for s in SPLITS},
        groups={s: 0 for s in SPLITS},
        warnings=warnings,
    )
    _tally(plan, items)
    plan.warnings += _size_warnings(plan, seconds, val_fraction, min_val_seconds)
    return plan


def _tally(plan: SplitPlan, items: list[SplitItem]) -> None:
    groups: dict[str, set[str]] = {s: set() for s in SPLITS}
    for it in items:
        if it.decodes and it.seconds > 0:
            split = plan.split_of[it.path]
            plan.seconds[split] += it.seconds
            groups[split].add(plan.group_of[it.path])
    plan.groups = {s: len(groups[s]) for s in SPLITS}


def _manifest_warnings(items: list[SplitItem], manifest: Manifest) -> list[str]:
    """Audio files the manifest leaves out, and manifest rows naming no file."""
    out = []
    paths = {it.path for it in items}
    missing = [it.path for it in items if it.decodes and it.path not in manifest.table]
    if missing:
        where = "train" if manifest.column == "split" else "a group of its own (by file)"
        out.append(
            f"{len(missing)} audio files are not in the split manifest, e.g. "
            f"{missing[:_EXAMPLES]}; each goes to {where}"
        )
    stale = sorted(p for p in manifest.table if p not in paths)
    if stale:
        out.append(
            f"{len(stale)} split manifest rows name no file under the input, e.g. "
            f"{stale[:_EXAMPLES]}"
        )
    return out


def _size_warnings(
    plan: SplitPlan, seconds: dict[str, float], val_fraction: float, min_val_seconds: float
) -> list[str]:
    """Say when the corpus cannot give the val asked for, and why."""
    total = sum(seconds.values())
    val = plan.seconds["val"]
    if plan.asked_fraction is None:
        if val >= min_val_seconds:
            return []
        return [
            f"the manifest's val holds {val:.0f} s, less than min_val_seconds = "
            f"{min_val_seconds:.0f} s; it is taken as given"
        ]
    if val_fraction <= 0:
        return []
    audio_groups = sum(1 for s in seconds.values() if s > 0)
    if audio_groups < 2:
        return [
            f"no val split: {audio_groups} group holds audio and train keeps one; "
            "use --split-by file or a speaker regex for a finer split"
        ]
    out = []
    if plan.groups["val"] == 1 and val >= 2 * plan.target_seconds:  # only the fallback
        out.append(
            f"val is one group of {val:.0f} s ({val / total:.1%}) for a target of "
            f"{plan.target_seconds:.0f} s: every group holds ≥ 2 × the target; "
            "use --split-by file or a speaker regex for a finer split"
        )
    if val < min_val_seconds:
        why = (
            f"the corpus holds {total:.0f} s of audio and min_val_seconds takes at most "
            f"{MIN_VAL_MAX_SHARE:.0%} of it"
            if MIN_VAL_MAX_SHARE * total < min_val_seconds
            else f"val is whole groups, and the next one in hash order would take it over "
            f"{MIN_VAL_MAX_SHARE:.0%} of the audio"
        )
        out.append(
            f"val holds {val:.0f} s, less than min_val_seconds = {min_val_seconds:.0f} s: {why}"
        )
    return out
