"""End-to-end fixtures, made once per test run and shared: a small synthetic corpus with its
ground truth, and that corpus preprocessed (2 workers, small shards: several units)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import preprocess, read_jsonl, run_cmd


@pytest.fixture(scope="session")
def synth_corpus(tmp_path_factory) -> tuple[Path, list[dict]]:
    """About 1.5 minutes of procedural speech with every planted fault, and its truth."""
    root = tmp_path_factory.mktemp("synth") / "corpus"
    run_cmd(
        [
            "-m",
            "preprocess.synth",
            str(root),
            "--minutes",
            "1.5",
            "--seed",
            "7",
            "--engine",
            "procedural",
        ]
    )
    truth = read_jsonl(root.with_name(root.name + ".truth.jsonl"))
    return root, truth


@pytest.fixture(scope="session")
def synth_out(synth_corpus, tmp_path_factory) -> Path:
    """The synth corpus preprocessed with 2 workers and small shards (several units)."""
    out = tmp_path_factory.mktemp("out") / "w2"
    preprocess(synth_corpus[0], out, "--workers", "2", "--shard-mb", "0.3")
    return out
