"""The architecture as `ls` shows it: one-way imports between preprocess's subpackages, and
a provenance stamp that covers exactly the code that shapes the output bytes."""

from __future__ import annotations

import json
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from preprocess.plan.provenance import code_version
from tests.conftest import REPO

# The stages of a run, in the order their arrows point: each imports only earlier ones.
STAGES = ("preprocess.plan", "preprocess.actors", "preprocess.out")


def modules_of(package: str) -> list[str]:
    path = REPO / package.replace(".", "/")
    return [
        f"{package}.{m.name}" for m in pkgutil.iter_modules([str(path)]) if m.name != "__main__"
    ]


ORCHESTRATION = {
    f"preprocess.{m.name}"
    for m in pkgutil.iter_modules([str(REPO / "preprocess")])
    if not m.ispkg and m.name != "config"  # config is data every part may read
}.union(*(modules_of(stage) for stage in STAGES))


def loaded_after_importing(modules: list[str]) -> set[str]:
    """Every module a fresh interpreter holds after importing `modules`."""
    code = (
        "import importlib, json, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return set(json.loads(proc.stdout.splitlines()[-1]))


def under(loaded: set[str], *packages: str) -> set[str]:
    return {m for m in loaded if any(m == p or m.startswith(p + ".") for p in packages)}


def config_and_its_needs() -> set[str]:
    """The config and what it imports to validate itself (split_by's syntax, split.py)."""
    return loaded_after_importing(["preprocess.config"]) & ORCHESTRATION


@pytest.mark.parametrize("stage", range(len(STAGES)))
def test_each_stage_imports_only_the_stages_before_it(stage):
    loaded = loaded_after_importing(modules_of(STAGES[stage]))
    later = set(STAGES[stage + 1 :]) | {"preprocess.pipeline", "preprocess.run"}
    assert not under(loaded, *later)


def test_measure_imports_nothing_but_config_and_no_ray():
    loaded = loaded_after_importing(modules_of("preprocess.measure"))
    assert not under(loaded, "preprocess.diagnose", "preprocess.synth", "ray")
    assert not loaded & (ORCHESTRATION - config_and_its_needs())


def test_the_pipeline_never_imports_the_diagnosis_or_the_demo_generator():
    loaded = loaded_after_importing(["preprocess.pipeline", "preprocess.run"])
    assert "preprocess.measure.scan" in loaded
    assert not under(loaded, "preprocess.diagnose", "preprocess.synth")


def test_the_diagnosis_library_reads_outputs_without_the_pipeline_or_ray():
    library = [m for m in modules_of("preprocess.diagnose") if m != "preprocess.diagnose.cli"]
    loaded = loaded_after_importing(library)
    assert "preprocess.measure.policy" in loaded  # decisions re-made by the real rules
    assert not under(loaded, "preprocess.synth", "ray")
    assert not loaded & (ORCHESTRATION - {"preprocess.out.stats_store"} - config_and_its_needs())


def test_the_demo_generator_imports_nothing_of_the_pipeline():
    loaded = loaded_after_importing(modules_of("preprocess.synth"))
    assert under(loaded, "preprocess") == {"preprocess"} | under(loaded, "preprocess.synth")


@pytest.fixture
def source_copy(tmp_path) -> Path:
    """preprocess/ and shards/ sources copied, so a test can edit them."""
    for package in ("preprocess", "shards"):
        shutil.copytree(
            REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    return tmp_path


@pytest.mark.parametrize(
    "edited",
    [
        "preprocess/diagnose/report.py",
        "preprocess/synth/classes.py",
        "preprocess/run.py",
        "preprocess/summary.py",
        "preprocess/actors/ray_session.py",
        "preprocess/actors/schedule.py",
        "preprocess/__init__.py",
        "preprocess/measure/stage_times.py",
        "shards/loader.py",
    ],
)
def test_code_version_ignores_code_that_shapes_no_output_byte(source_copy, edited):
    before = code_version(source_copy)
    with open(source_copy / edited, "a", encoding="utf-8") as f:
        f.write("\n# reworded\n")
    assert code_version(source_copy) == before


@pytest.mark.parametrize(
    "edited",
    [
        "preprocess/measure/policy.py",
        "preprocess/measure/kernels.py",
        "preprocess/actors/unit.py",
        "preprocess/actors/shard_group.py",
        "preprocess/plan/split.py",
        "preprocess/out/assemble.py",
        "shards/atomic.py",
        "preprocess/config.py",
        "shards/writer.py",
        "shards/format.py",
    ],
)
def test_code_version_changes_with_code_that_shapes_the_output(source_copy, edited):
    before = code_version(source_copy)
    with open(source_copy / edited, "a", encoding="utf-8") as f:
        f.write("\n# changed\n")
    assert code_version(source_copy) != before


def test_code_version_is_the_same_for_a_copy_of_the_sources(source_copy):
    """A `ray job` upload or an install hashes the same bytes under another root."""
    assert code_version(source_copy) == code_version()


def test_preprocessing_workers_never_import_torch():
    """Workers write shards without webdataset's tar writer or gopen: importing either
    pulls in torch (~3 CPU-s and ~160 MB per worker) for nothing."""
    loaded = loaded_after_importing(["preprocess.pipeline", "preprocess.actors.unit", "shards"])
    assert not under(loaded, "torch", "webdataset")


def test_importing_the_bitstream_does_not_load_torch():
    """`telucodec` exports its API lazily: a tool that only parses .tcq headers stays light."""
    loaded = loaded_after_importing(["telucodec", "telucodec.bitstream"])
    assert not under(loaded, "torch")


def test_the_public_api_resolves_to_the_defining_modules():
    import telucodec
    from telucodec.checkpoint import load_codec
    from telucodec.model import Codec

    assert telucodec.Codec is Codec and telucodec.load_codec is load_codec
    with pytest.raises(AttributeError):
        telucodec.no_such_name  # noqa: B018
