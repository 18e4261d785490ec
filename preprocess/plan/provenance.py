"""`code_version`: which code shaped an OUT's bytes, stamped into its index.json.

The version is the package version plus a hash of the sources that decide what lands in
OUT — the config and pipeline, preprocess/plan/, actors/ (but how Ray starts and the order
work is scheduled in), out/ and measure/, and the write side of shards/ (sample format, tar
writer, index, atomic writes). It is the same wherever the code runs (a
checkout, a `ray job` upload, an install) and changes whenever that code does, committed
or not.

Left out, because they never change an output byte: the diagnosis (preprocess/diagnose/,
whose report is regenerated from OUT at any time), the demo-corpus generator
(preprocess/synth/, never imported by the pipeline), the CLI's text, the summary printer,
how Ray is started, the order work is scheduled in (actors/schedule.py), the lap
timers (preprocess/measure/stage_times.py: they time stages, their figures go to the
driver, never into OUT), docstring-only package files, and the shard readers
(shards/reader.py, shards/loader.py). Rewording a report or the training loader therefore
no longer restamps every index.json.
"""

from __future__ import annotations

import functools
import hashlib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
# Paths under preprocess/ that shape no output byte: the CLI, the printer, how Ray starts and
# stops, the order work is scheduled in, OUT's run lock, the lap timers, docstring-only
# package files, and the diagnosis and demo generator as a whole.
_PREPROCESS_NOT_OUTPUT = frozenset(
    {
        "run.py",
        "summary.py",
        "actors/ray_session.py",
        "actors/ray_watchdog.py",
        "actors/schedule.py",
        "out/lock.py",
        "measure/stage_times.py",
    }
)
_PREPROCESS_NOT_OUTPUT_DIRS = ("diagnose", "synth")
_SHARDS_READ_SIDE = frozenset({"reader.py", "loader.py"})


def output_sources(root: Path = REPO_ROOT) -> list[Path]:
    """The source files `code_version` hashes, in a fixed order."""
    pre, shards = root / "preprocess", root / "shards"
    files = []
    for path in sorted(pre.rglob("*.py")):
        rel = path.relative_to(pre).as_posix()
        if (
            path.name == "__init__.py"
            or rel in _PREPROCESS_NOT_OUTPUT
            or rel.split("/", 1)[0] in _PREPROCESS_NOT_OUTPUT_DIRS
        ):
            continue
        files.append(path)
    files += [p for p in sorted(shards.glob("*.py")) if p.name not in _SHARDS_READ_SIDE]
    return files


def code_version(root: Path = REPO_ROOT) -> str:
    """`<package version>+src.<12 hex>`: a hash of `output_sources(root)`, each keyed by
    its path relative to `root`, so moving a module changes it too."""
    try:
        v = version("telucodec")
    except PackageNotFoundError:
        v = "unknown"
    h = hashlib.sha256()
    for src in output_sources(root):
        h.update(src.relative_to(root).as_posix().encode() + b"\0" + src.read_bytes())
    return f"{v}+src.{h.hexdigest()[:12]}"


@functools.cache
def running_code_version() -> str:
    """`code_version()` of the code this process runs, hashed once: its sources do not
    change during a run, and unit keys (one per unit) and index.json then carry one value."""
    return code_version()
