"""Runs on a real multi-node Ray cluster give the same bytes as a local run.

Both tests build their cluster with Ray's own `ray.cluster_utils.Cluster` (head + worker
node, each its own raylet with its own CPUs, on this machine) in a private temp dir, and
stop exactly the processes it started (`Cluster.shutdown`), never `ray stop --force`,
which would end every Ray on the machine, other people's included.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, preprocess
from tests.e2e.test_pipeline import SHARD_MB, tree_digest

RAY = Path(sys.executable).with_name("ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def two_node_cluster(monkeypatch) -> Iterator[tuple[object, str, dict[str, str]]]:
    """(cluster, dashboard URL, env for commands): a head and one worker node, 1 CPU each,
    dashboard on 127.0.0.1; everything under one /tmp/tcray-cl-* dir, removed afterwards."""
    from ray.cluster_utils import Cluster

    # A short path: Ray's socket paths must stay under ~107 characters. RAY_TMPDIR also
    # keeps Ray's `ray_current_cluster` address file out of the shared /tmp/ray.
    temp = Path(tempfile.mkdtemp(prefix="tcray-cl-", dir="/tmp"))
    monkeypatch.setenv("RAY_TMPDIR", str(temp))
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    dash = _free_port()
    node = {"num_cpus": 1, "temp_dir": str(temp / "ray"), "object_store_memory": 150 << 20}
    cluster = Cluster()
    try:
        cluster.add_node(
            **node, include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=dash
        )
        cluster.add_node(**node)
        cluster.wait_for_nodes()
        env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_TMPDIR": str(temp)}
        yield cluster, f"http://127.0.0.1:{dash}", env
    finally:
        cluster.shutdown()  # kills the processes of its own nodes, nothing else
        shutil.rmtree(temp, ignore_errors=True)


def _nodes_that_ran_units(out: Path) -> set[str]:
    log = out / ".work" / "run-log.jsonl"
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    return {e["node_id"] for e in entries if "unit_id" in e}


@pytest.mark.slow
def test_two_node_cluster_runs_units_on_both_nodes_with_identical_bytes(
    two_node_cluster, synth_corpus, synth_out, tmp_path
):
    cluster, _, _ = two_node_cluster
    out = tmp_path / "cluster-out"
    # run_cmd passes on this test's environment: RAY_TMPDIR and RAY_AUTH_MODE included.
    preprocess(
        synth_corpus[0], out, "--address", cluster.address, "--workers", "2", "--shard-mb", SHARD_MB
    )
    assert len(_nodes_that_ran_units(out)) == 2, "work ran on one node only"
    assert tree_digest(out) == tree_digest(synth_out)


@pytest.mark.slow
def test_ray_job_submit_gives_the_same_output_as_a_local_run(
    two_node_cluster, synth_corpus, synth_out, tmp_path
):
    _, address, env = two_node_cluster
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
