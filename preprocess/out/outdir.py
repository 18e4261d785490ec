"""Who owns an OUT directory: one run's output, never a user's folder, never two runs mixed.

The pipeline writes `OUT/.preprocess-out.json` (the stamp: tool, input path, config
digest) before anything else, so it can tell an OUT it wrote from a folder a user made.
An OUT written before stamps existed is recognised by an index.json of our format. Rules:

- the caller holds OUT's lock (`lock.py`, the file `.lock`) before any of this: one run
  per OUT;
- a missing or empty OUT (`.lock` aside) is claimed;
- a non-empty OUT with neither stamp nor our index.json is refused, even with
  `--overwrite`: it is someone else's folder;
- an OUT of another input path or config is refused without `--overwrite`; with it,
  everything the previous run wrote is removed first;
- the same input path and config is a resume: finished units are reused by key, and a
  finished OUT (index.json) whose input *content* changed is refused without
  `--overwrite` (checked after planning hashed the input: `check_input_unchanged`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from preprocess.config import PreprocessConfig
from preprocess.plan.planner import InputFile
from shards import Index
from shards.atomic import DISK_FULL_ERRNOS, atomic_write_json
from shards.index import IndexFormatError

STAMP = ".preprocess-out.json"
LOCK_NAME = ".lock"  # preprocess/out/lock.py: held while a run reads or writes OUT
TOOL = "telucodec preprocess.run"
# What a run writes under OUT (besides the stamp); `--overwrite` removes exactly these.
RUN_OUTPUTS = ("shards", "stats.zarr", "stats.zarr.tmp", "report", ".work", "files.jsonl")
RUN_OUTPUT_GLOBS = ("index.json", "index.json.tmp*", "files.jsonl.tmp*", "manifest.jsonl*")


class OutputConflict(ValueError):
    """OUT holds something this run must not write into; the message says what to pass.
    A ValueError: a bad --output argument, reported as one line by every CLI."""


def claim_output(out: Path, input_root: Path, cfg: PreprocessConfig, overwrite: bool) -> None:
    """Make `out` this run's OUT before Ray starts, or raise OutputConflict having written
    nothing. The stamp is written before any other file, so a killed run's OUT is ours."""
    if out.exists() and not out.is_dir():
        raise OutputConflict(f"output {out} is a file; choose a directory")
    differs = ""
    if out.is_dir() and any(p.name != LOCK_NAME for p in out.iterdir()):
        previous = _previous_run(out)
        if previous is None:
            raise OutputConflict(
                f"output {out} is not empty and was not written by preprocess.run (no "
                f"{STAMP} or index.json of ours); choose a new or empty directory"
            )
        differs = _differences(previous, input_root, cfg)
        if differs and not overwrite:
            raise OutputConflict(
                f"{out} holds the output of {differs}; pass --overwrite to replace it, "
                "or choose another --output"
            )
    stamp = {"tool": TOOL, "input": str(input_root), "config_digest": cfg.digest()}
    try:
        if differs:
            clear_output(out, keep_work=False)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / STAMP, stamp, indent=1, sort_keys=True, ensure_ascii=False)
    except OSError as exc:  # read-only filesystem, no permission, a file in the way
        if exc.errno in DISK_FULL_ERRNOS:
            raise  # not a bad --output: the CLI says "no space left" (exit 1)
        raise OutputConflict(f"output {out} cannot be written: {exc.strerror or exc}") from exc


def _previous_run(out: Path) -> dict[str, Any] | None:
    """{input, config_digest} of the run that wrote `out`, or None if no run of ours did."""
    stamp = out / STAMP
    if stamp.exists() and not stamp.is_file():
        raise OutputConflict(f"{stamp} is not a file; choose another output folder")
    if stamp.is_file():
        try:
            data = json.loads(stamp.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise OutputConflict(f"{stamp}: unreadable stamp ({exc}); delete {out}") from exc
        if isinstance(data, dict) and data.get("tool") == TOOL:
            return data
        return None
    try:
        data = Index.load(out, check_version=False).data
    except (FileNotFoundError, IndexFormatError):
        return None
    if "config_digest" in data and "format_version" in data and "input" in data:
        return data
    return None


def _differences(previous: dict[str, Any], input_root: Path, cfg: PreprocessConfig) -> str:
    """'' when `previous` is this input path and config, else what differs, in words."""
    if previous.get("input") != str(input_root):
        return f"another input ({previous.get('input')}, now {input_root})"
    if previous.get("config_digest") != cfg.digest():
        return f"another config (digest {previous.get('config_digest')}, now {cfg.digest()})"
    return ""


def check_input_unchanged(out: Path, files: list[InputFile], digest: str, overwrite: bool) -> None:
    """After planning: a finished OUT of this input path whose files changed since is
    another input. Refuse without `--overwrite`; with it, remove the previous run's
    output (the fingerprint cache and units stay: units are reused only by key)."""
    try:
        index = Index.load(out, check_version=False).data
    except (FileNotFoundError, IndexFormatError):
        return  # unfinished run: a resume, which re-plans whatever changed
    if index.get("input_digest") in (None, digest):
        return
    if not overwrite:
        raise OutputConflict(
            f"{out} holds the output of {index.get('input')} as it was: "
            f"{_describe_change(out, files)} since; pass --overwrite to replace it, "
            "or choose another --output"
        )
    clear_output(out, keep_work=True)


def _describe_change(out: Path, files: list[InputFile]) -> str:
    """'2 files added, 1 changed, 0 removed (e.g. spk1/new.wav)' from the old files.jsonl."""
    old: dict[str, str] = {}
    try:
        with open(out / "files.jsonl", encoding="utf-8") as f:
            for line in f:
                rec = json.loads(line)
                old[rec["path"]] = rec["sha256"]
    except (OSError, ValueError, KeyError):
        return "its input changed"
    new = {f.path: f.sha256 for f in files}
    added = sorted(set(new) - set(old))
    removed = sorted(set(old) - set(new))
    changed = sorted(p for p in set(new) & set(old) if new[p] != old[p])
    example = (added + changed + removed)[:1]
    hint = f" (e.g. {example[0]})" if example else ""
    return f"{len(added)} files added, {len(changed)} changed, {len(removed)} removed{hint}"


def clear_output(out: Path, keep_work: bool) -> None:
    """Remove everything a previous run wrote under `out` (the stamp is rewritten after)."""
    for name in RUN_OUTPUTS:
        if keep_work and name == ".work":
            continue
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    for pattern in RUN_OUTPUT_GLOBS:
        for path in out.glob(pattern):
            path.unlink(missing_ok=True)
