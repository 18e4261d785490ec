"""Planning the corpus: how many files of each class, in which folders, under which names.

Engine-independent and seeded: the same minutes and seed give the same FileSpecs, paths
included, whatever speech engine later renders them. Fault classes with a planner of
their own (`classes.CLASSES`) are planned first; then clean files fill the requested
duration, every audio file is placed in a speaker folder, and duplicates and non-audio
files, which depend on where the rest went, come last.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np

from preprocess.synth.classes import CLASSES, NOT_AUDIO_KINDS
from preprocess.synth.spec import (
    CLEAN_FORMATS,
    CLEAN_SECONDS,
    EXTENSIONS,
    SAMPLE_RATES,
    FileSpec,
    Folder,
    draw_timing,
    rng_stream,
)
from preprocess.synth.speech import random_voice

COPIES_DIR = "నకలు"  # "copies": a top-level folder of re-uploads, sorts after ASCII names


def class_counts(minutes: float) -> dict[str, int]:
    """Files per fault class for `minutes` of audio; clean is filled later by duration."""
    return {
        c.name: max(c.minimum, int(round(c.per_minute * minutes)))
        for c in CLASSES.values()
        if c.name != "clean"
    }


def plan_corpus(minutes: float, seed: int) -> list[FileSpec]:
    """The whole corpus as FileSpecs with paths, sorted by path. Engine-independent."""
    rng = rng_stream(seed, 0)
    counts = class_counts(minutes)
    specs: list[FileSpec] = []
    for name in sorted(counts):
        planner = CLASSES[name].plan
        if planner is None:
            continue  # planned below, once the rest of the corpus is known
        specs += [planner(rng, FileSpec(name, 0), k) for k in range(counts[name])]
    specs += _plan_clean(rng, minutes, specs, counts["duplicate"])
    for i, spec in enumerate(specs):
        spec.index = i
    folders = plan_folders(rng, minutes)
    _place_audio(rng, specs, folders)
    specs += _plan_duplicates(rng, specs, counts["duplicate"], len(specs))
    specs += _plan_not_audio(rng, folders, counts["not_audio"], len(specs), specs)
    specs.sort(key=lambda s: s.path)
    _check_unique_paths(specs)
    return specs


def _plan_clean(
    rng: np.random.Generator, minutes: float, faults: list[FileSpec], n_duplicates: int
) -> list[FileSpec]:
    """Clean files of 2–12 s until the requested minutes are reached.

    Clean speech stays the majority of the audio even when the one-of-each-class floor
    of the faults outweighs a tiny --minutes (then the total runs over).
    """
    fault_seconds = sum(s.seconds or 0.0 for s in faults)
    fault_seconds += n_duplicates * float(np.mean(CLEAN_SECONDS))
    budget = max(minutes * 60.0 - fault_seconds, 1.1 * fault_seconds)
    formats = [CLEAN_FORMATS[i] for i in rng.permutation(len(CLEAN_FORMATS))]
    rates = [SAMPLE_RATES[i] for i in rng.permutation(len(SAMPLE_RATES))]
    clean: list[FileSpec] = []
    total = 0.0
    while total < budget or len(clean) < CLASSES["clean"].minimum:
        k = len(clean)
        fmt, subtype = formats[k % len(formats)]
        peak_range = (-10.0, -4.0) if fmt == "OGG" else (-10.0, -2.0)  # vorbis overshoots
        spec = FileSpec("clean", 0, fmt, subtype, rates[k % len(rates)], (1, 1, 2)[k % 3])
        draw_timing(rng, spec, (CLEAN_SECONDS[0] - 0.2, CLEAN_SECONDS[1] - 0.8))
        spec.params["peak_dbfs"] = float(rng.uniform(*peak_range))
        clean.append(spec)
        total += spec.seconds or 0.0
    return clean


def plan_folders(rng: np.random.Generator, minutes: float) -> list[Folder]:
    """Speaker folders with session subfolders, some in Telugu script or with spaces.

    The last speaker is named in Telugu ("వక్త 05", "speaker 05"); sessions are named
    "session 1", a date, or "రికార్డింగ్ 2" ("recording 2"); some speakers keep files
    directly in their folder.
    """
    n_speakers = int(np.clip(2 + round(minutes / 2), 3, 16))
    folders: list[Folder] = []
    for k in range(1, n_speakers + 1):
        speaker = f"spk_{k:02d}" if k < n_speakers else f"వక్త {k:02d}"
        voice = random_voice(rng)
        if rng.random() < 0.3:
            folders.append(Folder(speaker, speaker, voice, bool(rng.random() < 0.3)))
        for j in range(1, int(rng.integers(1, 4)) + 1):
            style = int(rng.integers(3))
            name = (
                f"session {j}",
                f"2023-{j + 2:02d}-{int(rng.integers(1, 29)):02d}",
                f"రికార్డింగ్ {j}",
            )[style]
            folders.append(Folder(f"{speaker}/{name}", speaker, voice, style == 2))
    return folders


def _place_audio(rng: np.random.Generator, specs: list[FileSpec], folders: list[Folder]) -> None:
    """Put every audio-bearing spec into a random folder, numbered within the folder."""
    per_folder: Counter[str] = Counter()
    per_format: Counter[str] = Counter()
    for i in rng.permutation(len(specs)):
        s = specs[int(i)]
        folder = folders[int(rng.integers(len(folders)))]
        per_folder[folder.path] += 1
        n = per_folder[folder.path]
        stem = f"వాక్యం {n:02d}" if folder.telugu_names else f"utt_{n:04d}"
        spellings = EXTENSIONS[s.format or "WAV"]
        ext = spellings[per_format[s.format or "WAV"] % len(spellings)]
        per_format[s.format or "WAV"] += 1
        s.path = f"{folder.path}/{stem}{ext}"
        s.speaker, s.voice = folder.speaker, folder.voice


def _plan_duplicates(
    rng: np.random.Generator, specs: list[FileSpec], n: int, first_index: int
) -> list[FileSpec]:
    """Byte copies of clean files under names that sort after the original.

    The policy keeps the first of a group in sorted path order, so placing every copy
    after its original makes the truth simple: original kept `ok`, copies `duplicate`.
    Copies go next to the original ("utt_0007_copy.wav": '_' sorts after '.'), into a
    later speaker's folder, or under the Telugu `COPIES_DIR` (after all ASCII names).
    """
    used = {s.path.casefold() for s in specs}
    clean = sorted((s for s in specs if s.cls == "clean"), key=lambda s: s.path)
    speakers = sorted({s.speaker for s in specs if s.speaker})
    copies: list[FileSpec] = []
    for k in range(n):
        original = clean[int(rng.integers(len(clean)))]
        folder, name = original.path.rsplit("/", 1)
        stem, ext = name.rsplit(".", 1)
        candidates = [
            f"{folder}/{stem}_copy.{ext}",
            f"{folder}/{stem}_copy{k + 2}.{ext}",
            f"{COPIES_DIR}/{original.path}",
        ]
        candidates += [f"{sp}/{name}" for sp in speakers if sp > (original.speaker or "")]
        candidates = [c for c in candidates if c > original.path and c.casefold() not in used]
        path = candidates[int(rng.integers(len(candidates)))]
        used.add(path.casefold())
        copy = dataclasses.replace(
            original,
            cls="duplicate",
            index=first_index + k,
            path=path,
            speaker=path.split("/", 1)[0],
            duplicate_of=original.path,
            params={},
        )
        copies.append(copy)
    return copies


def _plan_not_audio(
    rng: np.random.Generator,
    folders: list[Folder],
    n: int,
    first_index: int,
    specs: list[FileSpec],
) -> list[FileSpec]:
    """README.txt at the top, then transcripts, cover art and CSVs in speaker folders."""
    used = {s.path.casefold() for s in specs}
    out: list[FileSpec] = []
    for k in range(n):
        kind = NOT_AUDIO_KINDS[k % len(NOT_AUDIO_KINDS)]
        if k == 0:
            path, speaker = kind, None
        else:
            order = rng.permutation(len(folders))
            free = [
                folders[int(i)]
                for i in order
                if f"{folders[int(i)].path}/{kind}".casefold() not in used
            ]
            folder = free[0] if free else folders[int(order[0])]
            stem, ext = kind.rsplit(".", 1)
            path = f"{folder.path}/{kind}" if free else f"{folder.path}/{stem}_{k}.{ext}"
            speaker = folder.speaker
        used.add(path.casefold())
        out.append(
            FileSpec(
                "not_audio", first_index + k, path=path, speaker=speaker, params={"kind": kind}
            )
        )
    return out


def _check_unique_paths(specs: list[FileSpec]) -> None:
    """Paths must be unique even on a case-insensitive file system."""
    seen: dict[str, str] = {}
    for s in specs:
        key = s.path.casefold()
        if key in seen:
            raise AssertionError(f"planned paths collide: {seen[key]!r} and {s.path!r}")
        seen[key] = s.path
