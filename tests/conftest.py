"""Shared by both suites: the repo root, running a repo command, reading JSONL, logging as the
CLI does. The end-to-end fixtures (a corpus and one preprocessed OUT per test run) live in
tests/e2e/conftest.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def run_cmd(args: list[str], timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    """Run a repo command with the test interpreter; fail with its output on error."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    env.update(kw.pop("env", {}))
    proc = subprocess.run(
        [sys.executable, *args],
        cwd=kw.pop("cwd", REPO),
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"command {args} failed ({proc.returncode}):\n"
            f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    return proc


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def preprocess(
    corpus: Path, out: Path, *extra: str, script: bool = False
) -> subprocess.CompletedProcess:
    entry = [str(REPO / "preprocess" / "run.py")] if script else ["-m", "preprocess.run"]
    return run_cmd([*entry, "--input", str(corpus), "--output", str(out), "--no-report", *extra])


@pytest.fixture(autouse=True, scope="session")
def preprocess_messages_as_the_cli_shows_them():
    """In-process calls into the preprocess library log as a run does: facts on stdout,
    `preprocess: warning: …` lines on stderr (tests read them with capsys)."""
    from preprocess.run import configure_logging

    configure_logging()
