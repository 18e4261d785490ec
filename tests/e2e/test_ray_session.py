"""The default commands start their own Ray and leave nothing behind: no process, no temp dir."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import ray

from preprocess.actors.ray_session import available_cpus, ray_session
from tests.conftest import REPO, read_jsonl, run_cmd


def _processes_mentioning(text: str) -> list[int]:
    """PIDs whose command line mentions `text` (a Ray process names its temp dir there)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd:
            pids.append(int(entry.name))
    return pids


@pytest.fixture
def leaves_nothing_behind(monkeypatch):
    """A private, short TMPDIR for the run's local Ray (ray_session puts its temp dir
    there); afterwards it must be empty and no process may still name it. Scoped to this
    test's own Ray, so Ray runs of other jobs on the machine do not count."""
    root = Path(tempfile.mkdtemp(prefix="tcrt-", dir="/tmp"))
    sessions = set(glob.glob("/tmp/ray/session_*"))
    monkeypatch.setenv("TMPDIR", str(root))
    try:
        yield {"TMPDIR": str(root)}
        assert not _processes_mentioning(str(root)), "a Ray process of the run survived it"
        assert not list(root.iterdir()), f"left in TMPDIR: {sorted(root.iterdir())}"
        assert set(glob.glob("/tmp/ray/session_*")) <= sessions, "a session in /tmp/ray"
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_preprocess_runs_with_its_defaults_and_leaves_no_ray_behind(
    synth_corpus, tmp_path, leaves_nothing_behind
):
    corpus, truth = synth_corpus
    out = tmp_path / "out"
    proc = run_cmd(
        ["-m", "preprocess.run", "--input", str(corpus), "--output", str(out)],
        env=leaves_nothing_behind,
    )
    assert len(read_jsonl(out / "files.jsonl")) == len(truth)
    assert (out / "report" / "report.md").is_file()
    assert "Traceback" not in proc.stderr


def test_diagnose_of_a_raw_corpus_runs_with_its_defaults(
    synth_corpus, tmp_path, leaves_nothing_behind
):
    corpus, _ = synth_corpus
    out = tmp_path / "scan"
    run_cmd(
        ["-m", "preprocess.diagnose", str(corpus), "--out", str(out)], env=leaves_nothing_behind
    )
    assert (out / "report" / "report.md").is_file()


@pytest.mark.parametrize("workers", ["0", "-1"])
def test_nonpositive_workers_is_a_one_line_error_before_ray_starts(tmp_path, workers):
    corpus = tmp_path / "in"
    corpus.mkdir()
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "preprocess.run", "--input", str(corpus), "--output", str(out)]
        + ["--workers", workers],
        cwd=REPO,
        env={**os.environ, "RAY_AUTH_MODE": "disabled"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "--workers" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists(), "OUT was touched before the arguments were checked"


def test_available_cpus_respects_the_affinity_mask():
    assert 1 <= available_cpus() <= len(os.sched_getaffinity(0))


def test_a_local_ray_caps_worker_threads_and_is_gone_after_the_block(leaves_nothing_behind):
    import ray

    with ray_session(workers=1) as session:
        assert session.local and session.workers == 1
        assert session.temp_dir is not None and session.temp_dir.is_dir()
        env = ray.get(_worker_env.remote())
        assert env["OMP_NUM_THREADS"] == "1" and env["NUMBA_NUM_THREADS"] == "1"
    assert not ray.is_initialized()
    assert not session.temp_dir.exists()


def test_a_ray_stopped_in_the_background_is_gone_after_wait_for_stop(leaves_nothing_behind):
    """The CLIs draw the report while Ray stops: the block returns at once, the stop
    finishes by `wait_for_stop`, and a new session in the same process waits for it."""
    import ray

    from preprocess.actors.ray_session import wait_for_stop

    with ray_session(workers=1, stop_in_background=True) as first:
        assert ray.get(_worker_env.remote())["OMP_NUM_THREADS"] == "1"
    with ray_session(workers=1, stop_in_background=True) as second:  # waits for the first
        assert not first.temp_dir.exists()
        assert ray.get(_worker_env.remote())["OMP_NUM_THREADS"] == "1"
    wait_for_stop()
    assert not ray.is_initialized()
    assert not second.temp_dir.exists()


@ray.remote
def _worker_env() -> dict[str, str]:
    return dict(os.environ)


def test_a_ray_that_cannot_start_is_one_line_exit_1_and_leaves_nothing(
    synth_corpus, tmp_path, monkeypatch, capsys, leaves_nothing_behind
):
    """Ray's start-up timeout on a loaded machine used to surface as its traceback."""
    from preprocess.run import main

    def timed_out(**kwargs):
        raise Exception(
            "The current node timed out during startup. This could happen because some of "
            "the Ray processes failed to startup.\n(details on further lines)"
        )

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", timed_out)
    corpus, _ = synth_corpus
    assert main(["--input", str(corpus), "--output", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    assert err.startswith("preprocess: error: could not start a local Ray: The current node")
    assert "run the command again" in err


def test_a_killed_runs_temp_dir_is_reaped_and_live_ones_are_not(tmp_path):
    """kill -9 skips ray_session's clean-up; the next run removes what it left, and only
    that: not a live run's dir, not a dir a live process names, not a dir it did not make."""
    from preprocess.actors.ray_session import OWNER_FILE, reap_stale_temp_dirs

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    dead_pid = int(gone.stdout)
    dirs = {name: tmp_path / f"tcray-{name}" for name in ("dead", "live", "named", "foreign")}
    for d in dirs.values():
        d.mkdir()
        (d / "session_latest").mkdir()
    (dirs["dead"] / OWNER_FILE).write_text(str(dead_pid))
    (dirs["live"] / OWNER_FILE).write_text(str(os.getpid()))
    (dirs["named"] / OWNER_FILE).write_text(str(dead_pid))  # its owner died, a daemon did not
    daemon = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", str(dirs["named"])]
    )
    try:
        assert reap_stale_temp_dirs(tmp_path) == [dirs["dead"]]
    finally:
        daemon.kill()
        daemon.wait()
    assert not dirs["dead"].exists()
    assert all(dirs[n].is_dir() for n in ("live", "named", "foreign"))


def test_decoder_chatter_from_workers_stays_off_the_terminal(tmp_path, leaves_nothing_behind):
    """libmpg123 prints "dequantization failed" per damaged MP3 frame to the worker's
    stderr; Ray relayed each line, colour codes and all, between the progress bars."""
    import random

    import numpy as np
    import soundfile as sf

    corpus = tmp_path / "in" / "spk"
    corpus.mkdir(parents=True)
    t = np.arange(3 * 16000) / 16000
    sf.write(tmp_path / "x.mp3", 0.3 * np.sin(2 * np.pi * 220 * t), 16000, format="MP3")
    rng = random.Random(5)
    for k in range(3):
        data = bytearray((tmp_path / "x.mp3").read_bytes())
        for _ in range(40):
            data[rng.randrange(500, len(data))] = rng.randrange(256)
        (corpus / f"garbled{k}.mp3").write_bytes(bytes(data))
    out = tmp_path / "out"
    proc = run_cmd(
        ["-m", "preprocess.run", "--input", str(corpus.parent), "--output", str(out)]
        + ["--no-report", "--workers", "1", "--allow-empty"],
        env=leaves_nothing_behind,
    )
    relayed = [line for line in (proc.stdout + proc.stderr).splitlines() if "pid=" in line]
    assert not relayed, relayed[:3]
    assert len(read_jsonl(out / "files.jsonl")) == 3


def _wildcard_listeners(pids: set[int]) -> list[str]:
    """`PID:PORT` of the TCP sockets these processes listen on at 0.0.0.0 (IPv4 wildcard:
    plain HTTP servers; Ray's gRPC servers listen on the IPv6 wildcard, token-guarded)."""
    inodes = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, inode = fields[1], fields[3], fields[9]
        if state == "0A" and local.startswith("00000000:"):  # LISTEN on 0.0.0.0
            inodes[f"socket:[{inode}]"] = int(local.split(":")[1], 16)
    found = []
    for pid in pids:
        try:
            links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
        except OSError:
            continue
        found += [f"{pid}:{inodes[link]}" for link in links if link in inodes]
    return found


def test_a_local_ray_serves_no_unauthenticated_metrics_on_the_network(leaves_nothing_behind):
    """Ray's Prometheus exporters speak plain HTTP without a token; a local Ray must not
    open them beyond loopback (the agent's, the dashboard's and the autoscaler's)."""
    from preprocess.actors.ray_watchdog import processes_using

    with ray_session(workers=1) as session:
        ray.get(_worker_env.remote())
        pids = set(processes_using(session.temp_dir))
        assert len(pids) >= 3  # gcs, raylet, agents: the scan sees the session
        assert _wildcard_listeners(pids) == []


def test_a_local_ray_is_stopped_when_its_driver_is_killed(leaves_nothing_behind):
    """kill -9 skips every `finally`; the watchdog ends the session's daemons and removes
    its temp dir at once, instead of agents living on for minutes."""
    import signal
    import time

    from preprocess.actors.ray_watchdog import processes_using

    code = (
        "import sys, time\n"
        "from preprocess.actors.ray_session import ray_session\n"
        "with ray_session(workers=1) as s:\n"
        "    print(s.temp_dir, flush=True)\n"
        "    time.sleep(600)\n"
    )
    env = {**os.environ, **leaves_nothing_behind}
    driver = subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        temp = Path(driver.stdout.readline().strip())
        assert temp.is_dir() and processes_using(temp)
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        deadline = time.monotonic() + 30
        while (temp.exists() or processes_using(temp)) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not processes_using(temp), "a Ray daemon outlived its killed driver"
        assert not temp.exists()
    finally:
        driver.kill()
        driver.wait()
