"""`ray job submit` against a local head runs the same pipeline with the same bytes."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.test_pipeline import SHARD_MB, tree_digest

RAY = Path(sys.executable).with_name("ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_head(tmp_path):
    """A `ray start --head` with its dashboard on 127.0.0.1, stopped afterwards."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    port, dash = _free_port(), _free_port()
    temp = Path("/tmp") / f"tcray-head-{os.getpid()}"
    subprocess.run(
        [
            str(RAY),
            "start",
            "--head",
            f"--port={port}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dash}",
            "--num-cpus=2",
            f"--temp-dir={temp}",
            "--include-dashboard=true",
        ],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    try:
        yield f"http://127.0.0.1:{dash}", env
    finally:
        subprocess.run([str(RAY), "stop", "--force"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
def test_ray_job_submit_gives_the_same_output_as_a_local_run(
    ray_head, synth_corpus, synth_out, tmp_path
):
    address, env = ray_head
    out = tmp_path / "job-out"
    proc = subprocess.run(
        [
            str(RAY),
            "job",
            "submit",
            "--address",
            address,
            "--working-dir",
            str(REPO),
            "--",
            sys.executable,
            "preprocess/run.py",
            "--input",
            str(synth_corpus[0]),
            "--output",
            str(out),
            "--address",
            "auto",
            "--workers",
            "2",
            "--shard-mb",
            SHARD_MB,
            "--no-report",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "succeeded" in proc.stdout + proc.stderr
    assert tree_digest(out) == tree_digest(synth_out)
