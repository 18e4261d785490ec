"""The commands as a user runs them from a shell: real entry points, real exit codes, what
reaches the terminal."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO
from tests.unit.test_synth import ARGS, EXPECTED


def test_synth_cli_prints_a_summary_per_class(tmp_path):
    out = tmp_path / "corpus"
    proc = subprocess.run(
        [sys.executable, "-m", "preprocess.synth", str(out), "--seed", "7", *ARGS],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in EXPECTED:
        assert name in proc.stdout
    assert "total" in proc.stdout and "truth:" in proc.stdout


def test_both_commands_exit_2_with_one_line_from_the_shell(tmp_path):
    """The same, through the real entry points: no traceback on stderr."""
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"frame_ms": 0}))
    (tmp_path / "in").mkdir()
    for args in (
        ["-m", "preprocess.run", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "o")],
        ["-m", "preprocess.diagnose", str(tmp_path / "in")],
    ):
        proc = subprocess.run(
            [sys.executable, *args, "--config", str(config)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith("preprocess: error: config file ")
        assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
    assert not (tmp_path / "o").exists() and not (REPO / "in.diagnose").exists()
