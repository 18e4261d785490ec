"""How a preprocess run ends, whatever happens: one run per OUT (a lock that survives
kill -9), exit 1 for a result with nothing to train or validate on, one line for a full
disk, and 130/143 with one line and no Ray left behind on SIGINT/SIGTERM."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from preprocess import run as run_cli
from preprocess.actors import unit as unit_mod
from preprocess.config import PreprocessConfig
from preprocess.out import outdir
from preprocess.out.lock import LOCK_NAME, OutputLocked, output_lock
from preprocess.plan.planner import WorkUnit
from preprocess.summary import unusable_result
from tests.conftest import REPO, read_jsonl
from tests.e2e.test_ray_session import _processes_mentioning
from tests.e2e.test_robustness import _files, _speechlike

ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1"}


def _run(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m preprocess.run …` (no report), whatever its exit code."""
    return subprocess.run(
        [sys.executable, "-m", "preprocess.run", "--no-report", *args],
        cwd=REPO,
        env=env or ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _speech_corpus(root: Path, files_per_dir: int = 1, seconds: float = 3.0) -> Path:
    """Two top-level folders of distinct speech-like files."""
    for d, folder in enumerate(("spk1", "spk2")):
        (root / folder).mkdir(parents=True)
        for i in range(files_per_dir):
            x = _speechlike(seconds, 16000, seed=100 * d + i)
            sf.write(root / folder / f"utt{i}.wav", x, 16000)
    return root


def _snapshot(out: Path) -> dict[str, tuple[int, bytes]]:
    """Every entry under OUT with its mtime and (files) bytes."""
    snap = {}
    for p in sorted(out.rglob("*")):
        data = p.read_bytes() if p.is_file() else b""
        snap[p.relative_to(out).as_posix()] = (p.stat().st_mtime_ns, data)
    return snap


def _error_lines(stderr: str) -> list[str]:
    """stderr's lines of our own, without Ray's start notice and progress bars."""
    lines = [ln for chunk in stderr.split("\n") for ln in chunk.split("\r")]
    return [ln for ln in lines if ln.startswith("preprocess:")]


def _another_runs_output(out: Path) -> None:
    """An OUT that a run of another input wrote: `--overwrite` would clear it."""
    (out / "shards").mkdir(parents=True)
    (out / "shards" / "train-000000.tar").write_bytes(b"an earlier run's shard")
    stamp = {"tool": outdir.TOOL, "input": "/elsewhere", "config_digest": "0" * 16}
    (out / outdir.STAMP).write_text(json.dumps(stamp))


# --- one run per OUT ------------------------------------------------------------------


def test_a_run_on_an_output_another_process_holds_is_refused_and_touches_nothing(tmp_path):
    """Before: the second run crashed both or, with --overwrite, replaced the first's
    output without a word. Then the holder is killed with SIGKILL: no stale lock."""
    corpus = _speech_corpus(tmp_path / "in")
    out = tmp_path / "out"
    _another_runs_output(out)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from preprocess.out.lock import output_lock\n"
            "with output_lock(sys.argv[1]):\n"
            "    print('held', flush=True)\n"
            "    time.sleep(600)\n",
            str(out),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        before = _snapshot(out)
        refused = _run("--input", str(corpus), "--output", str(out), "--overwrite")
        assert refused.returncode == 1, refused.stderr
        assert "Traceback" not in refused.stderr
        assert refused.stderr.strip().splitlines() == [
            f"preprocess: error: {out} is in use by another preprocess run (PID {holder.pid}); "
            "wait for it to end or choose another --output"
        ]
        assert _snapshot(out) == before, "the refused run changed OUT"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    done = _run("--input", str(corpus), "--output", str(out), "--overwrite", "--val-fraction", "0")
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(read_jsonl(out / "files.jsonl")) == 2
    assert not (out / LOCK_NAME).exists(), "the lock file outlived the run"


def test_diagnose_refuses_to_write_its_report_into_an_output_a_run_holds(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "index.json").write_text("{}")  # an OUT to diagnose's eye; never read here
    (out / "files.jsonl").write_text("")
    with output_lock(out):
        proc = subprocess.run(
            [sys.executable, "-m", "preprocess.diagnose", str(out)],
            cwd=REPO,
            env=ENV,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"preprocess: error: {out} is in use by another preprocess run (PID {os.getpid()}); "
        "wait for it to end or choose another --output"
    ]
    assert not (out / "report").exists()


def test_the_lock_is_reentrant_in_one_process_and_leaves_no_file_or_folder(tmp_path):
    out = tmp_path / "new"
    with output_lock(out):
        assert (out / LOCK_NAME).read_text() == f"{os.getpid()}\n"
        with output_lock(out):  # the CLI holds it around the pipeline, which takes it too
            pass
        assert (out / LOCK_NAME).exists()
    assert not out.exists(), "a folder made only to hold the lock outlived it"
    out.mkdir()
    (out / "kept.txt").write_text("x")
    with output_lock(out):
        pass
    assert sorted(p.name for p in out.iterdir()) == ["kept.txt"]


def test_the_lock_file_alone_does_not_make_an_output_foreign(tmp_path):
    """claim_output judges OUT without its own lock file: an empty OUT stays claimable."""
    out = tmp_path / "out"
    with output_lock(out):
        outdir.claim_output(out, tmp_path, PreprocessConfig(), overwrite=False)
    assert (out / outdir.STAMP).is_file()


def test_a_held_lock_is_refused_in_another_process_even_after_the_file_was_replaced(tmp_path):
    """The holder's file is unlinked on release; a run that opened it meanwhile re-opens."""
    out = tmp_path / "out"
    code = (
        "import sys\nfrom preprocess.out.lock import OutputLocked, output_lock\n"
        "try:\n    with output_lock(sys.argv[1]):\n        print('got it')\n"
        "except OutputLocked as e:\n    print('refused')\n"
    )
    probe = [sys.executable, "-c", code, str(out)]
    with output_lock(out):
        held = subprocess.run(probe, cwd=REPO, capture_output=True, text=True, timeout=60)
    free = subprocess.run(probe, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert (held.stdout.strip(), free.stdout.strip()) == ("refused", "got it")
    assert issubclass(OutputLocked, RuntimeError)


# --- an empty result is a failure -----------------------------------------------------


def _index(files: int, train: int, val: int, val_fraction: float = 0.05, split_by="dir"):
    def split(segments: int) -> dict:
        return {"files": int(segments > 0), "segments": segments, "shards": int(segments > 0)}

    return {
        "input": "/in",
        "config": {"val_fraction": val_fraction, "split_by": split_by},
        "totals": {"files": files, "splits": {"train": split(train), "val": split(val)}},
    }


def test_unusable_results_are_named_and_usable_ones_are_not():
    assert unusable_result(_index(0, 0, 0)).startswith("no file found under /in")
    assert unusable_result(_index(3, 0, 0)).startswith("nothing kept: all 3 files were rejected")
    assert "val is empty although val_fraction is 0.05" in unusable_result(_index(3, 5, 0))
    assert unusable_result(_index(3, 5, 0, val_fraction=0.0)) is None
    assert unusable_result(_index(3, 5, 0, split_by="manifest:/m.csv")) is None
    assert unusable_result(_index(3, 5, 1)) is None


def test_an_empty_input_exits_1_with_one_line(tmp_path):
    (tmp_path / "in").mkdir()
    proc = _run("--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"))
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert _error_lines(proc.stderr)[-1] == (
        f"preprocess: error: no file found under {tmp_path / 'in'}: nothing to preprocess "
        "(--allow-empty accepts it)"
    )
    assert (tmp_path / "out" / "index.json").is_file(), "the OUT produced must stay"


def test_all_files_rejected_exits_1_and_allow_empty_accepts_it(tmp_path):
    """Before: a warning and exit 0, so a script or a cluster job could not tell."""
    root = tmp_path / "in"
    for folder in ("a", "b"):
        (root / folder).mkdir(parents=True)
        sf.write(root / folder / "silence.wav", np.zeros(3 * 16000, np.float32), 16000)
    args = ["--input", str(root), "--output", str(tmp_path / "out")]
    proc = _run(*args)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert _error_lines(proc.stderr)[-1].startswith(
        "preprocess: error: nothing kept: all 2 files were rejected"
    )
    assert {r["status"] for r in read_jsonl(tmp_path / "out" / "files.jsonl")} == {"rejected"}
    accepted = _run(*args, "--allow-empty")
    assert accepted.returncode == 0, accepted.stderr[-3000:]
    assert "(accepted: --allow-empty)" in _error_lines(accepted.stderr)[-1]


def test_an_empty_val_when_one_was_asked_exits_1_saying_what_to_change(tmp_path):
    """One file cannot give both splits, whatever the grouping: train keeps it."""
    root = tmp_path / "in"
    root.mkdir()
    sf.write(root / "only.wav", _speechlike(4.0, 16000, seed=3), 16000)
    args = ["--input", str(root), "--output", str(tmp_path / "out"), "--split-by", "file"]
    proc = _run(*args, "--val-fraction", "0.5")
    assert proc.returncode == 1, proc.stderr[-3000:]
    line = _error_lines(proc.stderr)[-1]
    assert line.startswith("preprocess: error: val is empty although val_fraction is 0.5")
    assert "--val-fraction 0" in line and "--split-by file" in line


# --- a full disk ----------------------------------------------------------------------


def test_a_full_disk_while_processing_a_file_stops_the_unit_instead_of_calling_it_corrupt(
    tmp_path, monkeypatch
):
    """Before: ENOSPC writing a file's samples made the file `corrupt`, and the unit
    committed so, for every rerun to reuse."""
    root = tmp_path / "in"
    root.mkdir()
    sf.write(root / "a.wav", _speechlike(3.0, 16000, seed=1), 16000)

    def full(self, sample):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "work" / "x"))

    monkeypatch.setattr(unit_mod.EncodedSpool, "add", full)
    with pytest.raises(OSError) as caught:
        unit_mod.process_unit(
            WorkUnit(0, ["a.wav"]),
            _files(root, ["a.wav"]),
            root,
            tmp_path / "work",
            PreprocessConfig(),
        )
    assert caught.value.errno == errno.ENOSPC
    assert not (tmp_path / "work/units/unit-000000").exists(), "a unit committed on a full disk"


def test_a_full_disk_ends_the_run_with_one_line_and_exit_1(tmp_path, monkeypatch, capsys):
    """An ENOSPC at OUT's first write: before, `output … cannot be written`, exit 2 (a
    usage error); elsewhere in the run, a 73-line traceback."""
    (tmp_path / "in").mkdir()
    out = tmp_path / "out"
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)

    def full(path, *a, **kw):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(outdir, "atomic_write_json", full)
    code = run_cli.main(["--input", str(tmp_path / "in"), "--output", str(out), "--no-report"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.strip().splitlines() == [
        f"preprocess: error: no space left on device in {out} (writing {out / outdir.STAMP}): "
        "free some space, then run the same command again to continue (finished units are kept)"
    ]
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers


def test_a_full_disk_inside_a_ray_worker_is_one_line_naming_the_folder():
    """Ray hands a worker's OSError back as RayTaskError(OSError), errno unset on it."""
    from ray.exceptions import RayTaskError

    out = Path("/data/OUT")
    cause = OSError(errno.ENOSPC, "No space left on device", str(out / ".work/units/u/a.bin"))
    wrapped = RayTaskError("UnitWorker.process", "Traceback …\n" * 70, cause)
    for exc in (wrapped, wrapped.as_instanceof_cause()):
        code, line = run_cli.ending(exc, out)
        assert code == 1 and "\n" not in line
        assert line.startswith(f"preprocess: error: no space left on device in {out} (writing")
    quota = OSError(errno.EDQUOT, "Disk quota exceeded", "/scratch/tmp/x.bin")
    assert (
        "no space left on device (disk quota exceeded) in /scratch/tmp"
        in (run_cli.ending(quota, out)[1])
    )
    assert run_cli.ending(RuntimeError("a bug"), out) is None  # a bug keeps its traceback


# --- signals --------------------------------------------------------------------------


@pytest.fixture
def private_tmpdir():
    """A short TMPDIR for the run's local Ray, so its processes can be told apart."""
    root = Path(tempfile.mkdtemp(prefix="tcsg-", dir="/tmp"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _wait_for(proc: subprocess.Popen, ready, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, "the run ended before the signal"
        assert time.monotonic() < deadline, "the run never reached the phase"
        time.sleep(0.02)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "code", "phase"),
    [
        (signal.SIGINT, 130, "scan"),
        (signal.SIGTERM, 143, "scan"),
        (signal.SIGTERM, 143, "ray-start"),
    ],
)
def test_a_signal_ends_the_run_with_one_line_no_ray_left_and_the_rerun_continues(
    tmp_path, private_tmpdir, signum, code, phase
):
    """Before: SIGINT gave a KeyboardInterrupt traceback, SIGTERM exit 1 without a word."""
    corpus = _speech_corpus(tmp_path / "in", files_per_dir=4, seconds=60.0)
    out = tmp_path / "out"
    args = ["--input", str(corpus), "--output", str(out), "--workers", "1"]
    args += ["--val-fraction", "0"]
    env = {**ENV, "TMPDIR": str(private_tmpdir)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "preprocess.run", "--no-report", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        if phase == "scan":
            units = out / ".work" / "units"
            _wait_for(proc, lambda: any(units.glob("*.partial/in-progress")))
        else:
            _wait_for(proc, lambda: any(private_tmpdir.glob("tcray-*")))
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    word = "interrupted (SIGINT)" if signum == signal.SIGINT else "terminated (SIGTERM)"
    assert _error_lines(err) == [
        f"preprocess: {word}; run the same command again to continue (finished units are kept)"
    ], err[-3000:]
    assert not (out / "index.json").exists(), "the run finished before the signal"
    assert not _processes_mentioning(str(private_tmpdir)), "a Ray process outlived the run"
    assert not list(private_tmpdir.iterdir()), "the run's Ray temp dir outlived it"
    rerun = subprocess.run(
        [sys.executable, "-m", "preprocess.run", "--no-report", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert len(read_jsonl(out / "files.jsonl")) == 8


def test_a_shard_part_write_that_fails_part_way_leaves_no_open_file(tmp_path, monkeypatch):
    """A long-lived actor that hits ENOSPC mid-part closes and drops the part it was writing."""
    from types import SimpleNamespace

    import shards
    from preprocess.actors import shard_group

    meta = {"split": "train", "samples": 160, "valid": [[0, 160]], "source": "a.wav"}
    meta |= {"offset": 0, "gain_db": 0.0}
    samples = {
        k: {"__key__": k, "json": json.dumps(meta).encode(), "audio.npy": b"\0" * 64}
        for k in ("a", "b")
    }
    spool = SimpleNamespace(index=[(0, 64, 64)] * 2, get=lambda i, key: dict(samples[key]))
    writes, opened = [], []
    real_init, real_write = shards.ShardWriter.__init__, shards.ShardWriter.write_encoded

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        opened.append(self)

    def write(self, sample):
        writes.append(sample["__key__"])
        if len(writes) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(self, sample)

    monkeypatch.setattr(shard_group.ShardWriter, "__init__", init)
    monkeypatch.setattr(shard_group.ShardWriter, "write_encoded", write)
    cfg = PreprocessConfig()
    with pytest.raises(OSError, match="No space left"):
        group = shard_group.ShardGroup(0, "train", [(0, 0)])
        shard_group._write_parts(tmp_path, group, [(spool, [(0, "a"), (1, "b")])], cfg)
    [writer] = opened
    assert writer._raw.closed and list(tmp_path.iterdir()) == []


def test_signal_handlers_are_restored_after_a_signal_ends_an_in_process_run():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def body() -> int:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises Terminated here
        return 0

    with run_cli.signals_end_the_run():
        code = run_cli.run_cli(body, None)
    assert code == run_cli.EXIT_SIGTERM
    assert {s: signal.getsignal(s) for s in before} == before


def test_a_report_that_cannot_be_imported_is_a_warning_not_silence(tmp_path, monkeypatch, caplog):
    import builtins

    real_import = builtins.__import__

    def no_report(name, *args, **kwargs):
        if name == "preprocess.diagnose.report":
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_report)
    with caplog.at_level("WARNING", logger="preprocess.run"):
        run_cli._write_report(tmp_path)
    assert "report skipped: No module named 'matplotlib'" in caplog.text


def test_only_input_refused_before_work_is_exit_2_other_known_failures_exit_1(tmp_path):
    import shards

    usage = run_cli.USAGE_ERRORS
    refused = run_cli.ending(run_cli.UsageError("--workers 0: expected"), tmp_path, usage)
    assert refused == (run_cli.EXIT_USAGE, "preprocess: error: --workers 0: expected")
    for late in (
        shards.ShardFormatError("train-000000.tar: unreadable tar"),
        shards.IndexFormatError("OUT: index.json format_version 1"),
        FileNotFoundError("shard group 3: shard part p is missing"),
        ValueError("shard group 3: part-000.jsonl lists 4 utterances, its shard holds 5"),
    ):
        assert run_cli.ending(late, tmp_path, usage) == (
            run_cli.EXIT_FAILED,
            f"preprocess: error: {late}",
        )
