"""Train/val split: which group each file belongs to, and which groups go to val.

A group is what must never straddle the split — a speaker (top-level folder with
`split_by = "dir"`, a regex capture with `"re:PATTERN"`, a manifest column with
`"manifest:FILE"`) or the file itself (`"file"`).

The split stays put as the corpus grows, and that wins over the exact share: a model
trained on one version must not be scored on its own training data from the next. So a
group is val when its seeded hash falls below `val_fraction` of the hash space, which looks
at its name alone; only when those groups hold less than the floor (`min_val_seconds`, or
0.8 × the share asked) are the next groups in hash order topped up (`choose_val_groups`
says what can still move). Where the folders of `"dir"` are too few or too large for whole
ones to hold val (one folder of files, the commonest layout), the split falls back to
files, and one warning line says so.

The measure is the audio each file gives its utterances once the decisions are made (its
`valid_seconds`): the split is planned after every file is scanned, so a group whose files
are all rejected never counts, and val holds its share of what training will see.
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
    """column is "split" (taken as given) or "speaker" (groups for the hash split)."""

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
# Choosing val: a hash threshold, topped up to the floor
# ---------------------------------------------------------------------------------------

# The share val may give, as multiples of the share asked: the top-up fills val to the
# lower one and never takes a group that would carry val past the upper one.
SHARE_TOLERANCE = (0.8, 1.25)
_HASH_SPACE = 1 << 64  # group_hash is the first 8 bytes of a sha256


def group_hash(name: str, seed: int) -> int:
    """A group's seeded place in [0, 2**64) (the same hash as the unit packing's)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "big")


def hash_threshold(val_fraction: float) -> int:
    """Groups hashing below this are val, whatever else the corpus holds."""
    return int(val_fraction * _HASH_SPACE)


def val_target_seconds(total: float, val_fraction: float, min_val_seconds: float) -> float:
    """What val should hold: the fraction asked, raised to min_val_seconds (capped at
    MIN_VAL_MAX_SHARE of the audio); nothing when no val is asked for."""
    if val_fraction <= 0 or total <= 0:
        return 0.0
    return max(val_fraction * total, min(min_val_seconds, MIN_VAL_MAX_SHARE * total))


@dataclass(frozen=True)
class ValBounds:
    """Seconds of audio: what val should hold (`target`), what a top-up fills it to
    (`floor`), and what no topped-up group may carry it past (`ceiling`)."""

    target: float
    floor: float
    ceiling: float


def val_bounds(total: float, val_fraction: float, min_val_seconds: float) -> ValBounds:
    """target as `val_target_seconds`; floor SHARE_TOLERANCE[0] × the share asked, raised
    to min_val_seconds (capped alike); ceiling SHARE_TOLERANCE[1] × target. All 0 when no
    val is asked for."""
    target = val_target_seconds(total, val_fraction, min_val_seconds)
    if target <= 0:
        return ValBounds(0.0, 0.0, 0.0)
    minimum = min(min_val_seconds, MIN_VAL_MAX_SHARE * total)
    low, high = SHARE_TOLERANCE
    return ValBounds(target, max(low * val_fraction * total, minimum), high * target)


@dataclass(frozen=True)
class ValChoice:
    """The val groups in hash order: the first `threshold` of them by the hash threshold,
    the rest by the top-up; or, with `smallest`, the one group of the last resort."""

    groups: list[str]
    threshold: int
    smallest: bool = False

    @property
    def topped_up(self) -> int:
        return 0 if self.smallest else len(self.groups) - self.threshold


def choose_val_groups(
    seconds: dict[str, float], val_fraction: float, seed: int, bounds: ValBounds
) -> ValChoice:
    """The val groups of `seconds` (group → audio seconds); groups without audio never.

    1. Threshold: every group whose `group_hash` falls below `hash_threshold(val_fraction)`.
       Its side depends on its name and the seed alone.
    2. Top-up, only while val holds less than `bounds.floor`: the next groups in hash
       order, whole, until val reaches the floor, stopping short at a group that would
       carry it past `bounds.ceiling`. So val is always every group below one hash cut.
    3. Last resort, when neither took a group: the smallest group, so a corpus of a few
       large groups still validates on something (a warning says so).
    Train always keeps at least one group.

    Stability as the corpus grows (more files in old groups, new groups): a group the
    threshold placed never changes side. A strict guarantee for the top-up is impossible
    without remembering the last split (it fills a gap that growth changes), so while a
    top-up is at work, before or after the growth, these can happen: a topped-up group
    returns to train once val reaches the floor without it (the threshold part grew, e.g.
    5 % of the audio outgrew min_val_seconds); a train group is topped up when the floor
    rose faster than val (the share floor of a growing corpus whose threshold part lags,
    min_val_seconds capped at a quarter of a corpus under 4 × min_val_seconds, or a split
    that was short of its floor: a warning said so). While the floor stays put
    (min_val_seconds on a corpus of 4 × to 1 / val_fraction × min_val_seconds: 20 to 100
    minutes by default) no train group ever joins val. The last resort follows whichever
    group is smallest; the one group train keeps (when every group hashes under the
    threshold) joins val once another group arrives.
    """
    hashes = {g: group_hash(g, seed) for g, s in seconds.items() if s > 0}
    order = sorted(hashes, key=lambda g: (hashes[g], g))
    if bounds.target <= 0 or len(order) < 2:
        return ValChoice([], 0)
    cut = hash_threshold(val_fraction)
    threshold = min(sum(1 for g in order if hashes[g] < cut), len(order) - 1)
    val = order[:threshold]
    held = sum(seconds[g] for g in val)
    for g in order[threshold : len(order) - 1]:
        if held >= bounds.floor or held + seconds[g] > bounds.ceiling:
            break
        val.append(g)
        held += seconds[g]
    if not val:
        return ValChoice([min(order, key=lambda g: (seconds[g], hashes[g], g))], 0, True)
    return ValChoice(val, threshold)


def too_coarse(seconds: dict[str, float], bounds: ValBounds) -> bool:
    """Whether no choice of whole groups can hold val within bounds: fewer than two groups
    hold audio, or those that fit under the ceiling (train keeping the largest) hold less
    than the floor together. Looks at sizes only, not at the seed."""
    sizes = sorted(s for s in seconds.values() if s > 0)
    if bounds.target <= 0:
        return False
    return len(sizes) < 2 or sum(s for s in sizes[:-1] if s <= bounds.ceiling) < bounds.floor


# ---------------------------------------------------------------------------------------
# The plan for a whole corpus
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SplitItem:
    """What the split needs of one file: its path and the audio it will contribute."""

    path: str
    seconds: float  # the audio it gives its utterances if kept, else 0
    kept: bool  # kept by the decisions


@dataclass
class SplitPlan:
    """Each file's split and group, the figures behind them and what went wrong."""

    split_of: dict[str, str]
    group_of: dict[str, str]
    asked_fraction: float | None  # None: the manifest's split is taken as given
    target_seconds: float
    seconds: dict[str, float]  # per split, the kept audio (utterance seconds)
    groups: dict[str, int]  # per split, groups holding such files
    warnings: list[str] = field(default_factory=list)
    # The split_by the groups come from: "file" where "dir" fell back to files.
    grouping: str = "dir"
    bounds: ValBounds = field(default_factory=lambda: ValBounds(0.0, 0.0, 0.0))
    choice: ValChoice = field(default_factory=lambda: ValChoice([], 0))

    def summary(self) -> str:
        total = sum(self.seconds.values())
        share = self.seconds["val"] / total if total else 0.0
        asked = (
            "as the manifest says"
            if self.asked_fraction is None
            else (f"asked {self.asked_fraction:.1%}, target {self.target_seconds:.0f} s")
        )
        by = f" by {self.grouping}" if self.grouping in ("file", "dir") else ""
        return (
            f"split: val {self.groups['val']} of {sum(self.groups.values())} groups{by}, "
            f"{self.seconds['val']:.0f} s of {total:.0f} s kept audio "
            f"({share:.1%}; {asked})"
        )


def group_files(items: list[SplitItem], rule: SplitRule, manifest: Manifest | None) -> dict:
    """path → group. A kept file the regex misses is an error (never a wrong group);
    files that will not be decoded, or a manifest leaves out, are their own group."""
    groups: dict[str, str] = {}
    missed: list[str] = []
    for it in items:
        if rule.kind == "dir":
            g = dir_group(it.path)
        elif rule.kind == "re":
            g = regex_group(rule.pattern, it.path)  # type: ignore[arg-type]
            if g is None and it.kept:
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


def plan_splits(
    items: list[SplitItem],
    split_by: str,
    val_fraction: float,
    min_val_seconds: float,
    seed: int,
    manifest_sha256: str = "",
) -> SplitPlan:
    """Every file's split: from the manifest's split column as given, else by
    `choose_val_groups`; `dir` falls back to files where folders are `too_coarse` (so a
    corpus that grows across that line is regrouped; one folder of files never is)."""
    rule = parse_split_by(split_by)
    manifest = read_manifest(rule.manifest, manifest_sha256) if rule.manifest else None
    warnings = _manifest_warnings(items, manifest) if manifest else []
    group_of = group_files(items, rule, manifest)
    seconds = _group_seconds(items, group_of)
    total = sum(seconds.values())
    grouping = split_by
    bounds, choice = ValBounds(0.0, 0.0, 0.0), ValChoice([], 0)
    if manifest is not None and manifest.column == "split":
        split_of = {it.path: manifest.table.get(it.path, "train") for it in items}
        asked: float | None = None
    else:
        asked = val_fraction
        bounds = val_bounds(total, val_fraction, min_val_seconds)
        if rule.kind == "dir" and too_coarse(seconds, bounds):
            by_file = {it.path: it.path for it in items}
            file_seconds = _group_seconds(items, by_file)
            if _audio_groups(file_seconds) > _audio_groups(seconds):
                warnings.append(_fallback_line(seconds, bounds))
                group_of, seconds, grouping = by_file, file_seconds, "file"
        choice = choose_val_groups(seconds, val_fraction, seed, bounds)
        val = set(choice.groups)
        split_of = {it.path: "val" if group_of[it.path] in val else "train" for it in items}
    plan = SplitPlan(
        split_of=split_of,
        group_of=group_of,
        asked_fraction=asked,
        target_seconds=bounds.target,
        seconds={s: 0.0 for s in SPLITS},
        groups={s: 0 for s in SPLITS},
        warnings=warnings,
        grouping=grouping,
        bounds=bounds,
        choice=choice,
    )
    _tally(plan, items)
    plan.warnings += _size_warnings(plan, seconds, val_fraction, min_val_seconds)
    return plan


def _group_seconds(items: list[SplitItem], group_of: dict[str, str]) -> dict[str, float]:
    """Audio seconds per group, of the kept files: a group of rejected, duplicate and
    undecodable files holds none, so it never counts toward val."""
    seconds: dict[str, float] = {}
    for it in items:
        if it.kept:
            seconds[group_of[it.path]] = seconds.get(group_of[it.path], 0.0) + it.seconds
    return seconds


def _audio_groups(seconds: dict[str, float]) -> int:
    return sum(1 for s in seconds.values() if s > 0)


def _tally(plan: SplitPlan, items: list[SplitItem]) -> None:
    groups: dict[str, set[str]] = {s: set() for s in SPLITS}
    for it in items:
        if it.kept and it.seconds > 0:
            split = plan.split_of[it.path]
            plan.seconds[split] += it.seconds
            groups[split].add(plan.group_of[it.path])
    plan.groups = {s: len(groups[s]) for s in SPLITS}


def _manifest_warnings(items: list[SplitItem], manifest: Manifest) -> list[str]:
    """Audio files the manifest leaves out, and manifest rows naming no file."""
    out = []
    paths = {it.path for it in items}
    missing = [it.path for it in items if it.kept and it.path not in manifest.table]
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


def _fallback_line(seconds: dict[str, float], bounds: ValBounds) -> str:
    """The one line that says `dir` gave way to files, and why."""
    folders = sorted((s, g) for g, s in seconds.items() if s > 0)
    if len(folders) == 1:
        return (
            f"split_by dir: all audio is in one folder ({folders[0][1]}/), which cannot be "
            "split in whole folders; splitting by file instead (one folder has no speakers "
            "to keep apart: if it has, name them with --split-by re:PATTERN or manifest:FILE)"
        )
    return (
        f"split_by dir: the {len(folders)} folders holding audio are too few or too large "
        f"to give val {bounds.floor:.0f}–{bounds.ceiling:.0f} s in whole folders (the "
        f"smallest holds {folders[0][0]:.0f} s); splitting by file instead, so a folder's "
        "files fall on both sides; to keep speakers apart name them with --split-by "
        "re:PATTERN or manifest:FILE"
    )


def _size_warnings(
    plan: SplitPlan, seconds: dict[str, float], val_fraction: float, min_val_seconds: float
) -> list[str]:
    """Say when the corpus cannot give the val asked for, why, and what to change."""
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
    finer = (
        "more, shorter files give a closer share"
        if plan.grouping == "file"
        else "a finer --split-by (file, or a speaker regex) gives a closer share"
    )
    audio_groups = _audio_groups(seconds)
    if audio_groups < 2:
        return [
            f"no val split: {audio_groups} group holds audio and train keeps one; "
            + ("the input needs two audio files at least" if plan.grouping == "file" else finer)
        ]
    b, share = plan.bounds, val / total
    out = []
    if plan.choice.smallest and val > b.ceiling:
        out.append(
            f"val is one group of {val:.0f} s ({share:.1%}) for a target of {b.target:.0f} s: "
            f"the groups are too large for whole ones to hold {b.floor:.0f}–{b.ceiling:.0f} s "
            f"and this is the smallest; {finer}"
        )
    elif val > b.ceiling:
        out.append(
            f"val holds {val:.0f} s ({share:.1%}) for an asked {val_fraction:.1%} (target "
            f"{b.target:.0f} s): the {plan.choice.threshold} groups whose hash falls under "
            f"{val_fraction:.1%} of the hash space hold that much, and a split that stays put "
            f"as the corpus grows never moves one out; {finer}"
        )
    whole = (
        f"val is whole groups in hash order, and the next one would carry it past "
        f"{b.ceiling:.0f} s (1.25 × the target); {finer}"
    )
    if val < min_val_seconds:
        why = []
        if MIN_VAL_MAX_SHARE * total < min_val_seconds:
            why.append(
                f"the corpus holds {total:.0f} s of audio and min_val_seconds takes at most "
                f"{MIN_VAL_MAX_SHARE:.0%} of it"
            )
        if val < b.floor:
            why.append(whole)
        out.append(
            f"val holds {val:.0f} s, less than min_val_seconds = {min_val_seconds:.0f} s: "
            + "; ".join(why)
        )
    elif val < b.floor:
        out.append(f"val holds {val:.0f} s ({share:.1%}) for an asked {val_fraction:.1%}: {whole}")
    return out
