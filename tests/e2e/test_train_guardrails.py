"""Training's guardrails (issue 21, defect 10 and training's part of 6 and 8), tried as a new
user would: a train split smaller than one batch trains; a resume on another number of ranks
than a ZeRO checkpoint was saved with is one line; the verdict tests SI-SDR as well as SNR
and names what it tested; validation shows progress; a full disk at a checkpoint save and
SIGINT / SIGTERM are one line with the exit status of the contract, no worker left behind.

The end-to-end cases run `train_ds.py` on the tiny shard fixtures of tests/e2e/test_train.py.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from telucodec.evaluate import MetricSums
from tests.e2e.test_train import (
    BIN,
    REPO,
    _env,
    _train_args,
    clean_shm,  # noqa: F401  (a fixture, used by name)
    free_port,
    make_shard_dir,
    metrics_of,
    run_training,
    speechlike,
)
from training import checkpoints, validate
from training.args import parse_args
from training.checkpoints import TrainState, check_resume_world
from training.report import CRITERION, headline, opus_line, succeeded, verdict


def default_workers(cmd: list[str]) -> list[str]:
    """The fixtures' command line with the default --num-workers (2) instead of their 1."""
    i = cmd.index("--num-workers")
    return cmd[:i] + cmd[i + 2 :]


# --------------------------------------------------------- a train split under one batch


def test_a_train_split_smaller_than_one_batch_trains(tmp_path):
    """One train segment, batches of 2 and the default two loader workers: an epoch is one
    batch, drawn with repetition (it was `AssertionError: (1, 2)` at the third batch)."""
    data = make_shard_dir(tmp_path / "out", train=(1,), val=(2,))
    cmd = _train_args(data, tmp_path / "ckpt", "one", "--max-steps", "4", "--segment-seconds", "1")
    proc = run_training([sys.executable, *default_workers(cmd)])
    assert "1 train windows of 1 s are fewer than one batch on every rank (2 x 1" in proc.stdout
    m = metrics_of(tmp_path / "ckpt", "one")
    assert m["step"] == 4 and [r["step"] for r in m["history"]["train"]] == [1, 2, 3, 4]
    assert [e["epoch"] for e in m["history"]["data_errors"]] == [0, 1, 2, 3]


# ------------------------------------------------------------ resume on another world size


def _fake_checkpoint(exp: Path, saved_ranks: int, zero: bool, tag: str = "step00000004") -> Path:
    """CKPT/NAME/checkpoints with `latest` → `tag`, laid out as DeepSpeed saves it."""
    tag_dir = exp / "checkpoints" / tag
    tag_dir.mkdir(parents=True)
    (exp / "checkpoints" / "latest").write_text(tag)
    (tag_dir / "mp_rank_00_model_states.pt").write_bytes(b"")
    for rank in range(saved_ranks):
        (tag_dir / f"rng_rank{rank:03d}.json").write_text("{}")
        if zero:
            (tag_dir / f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt").write_bytes(b"")
    return tag_dir


@pytest.mark.parametrize(("saved", "world"), [(2, 1), (1, 2)])
def test_resuming_a_zero_checkpoint_on_another_world_size_is_one_line_exit_2(
    tmp_path, monkeypatch, capsys, saved, world
):
    tag_dir = _fake_checkpoint(tmp_path / "ckpt" / "run", saved, zero=True)
    args = parse_args(["--data-dir", "x", "--checkpoint-dir", str(tmp_path / "ckpt")])
    args.experiment_name, args.resume = "run", True
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", str(world))
    with pytest.raises(SystemExit) as exc:
        check_resume_world(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"train_ds.py: error: --resume: {tag_dir} was saved by {saved} ranks")
    assert f"this run has {world}: resume on {saved} ranks" in err
    # The same world, a fresh start (no --resume) and a ZeRO 0 checkpoint all go ahead.
    monkeypatch.setenv("WORLD_SIZE", str(saved))
    check_resume_world(args)
    monkeypatch.setenv("WORLD_SIZE", str(world))
    args.resume = False
    check_resume_world(args)
    args.resume, args.experiment_name = True, "zero0"
    _fake_checkpoint(tmp_path / "ckpt" / "zero0", saved, zero=False)
    check_resume_world(args)


@pytest.mark.slow
@pytest.mark.usefixtures("clean_shm")
def test_two_rank_zero1_run_resumed_on_one_rank_is_refused_before_the_process_group(tmp_path):
    """Two ranks under the deepspeed launcher on 3 train segments (fewer than a batch on
    every rank, default workers), then `python train_ds.py --resume`: one line, exit 2,
    nothing else on stderr (it used to be DeepSpeed's ZeRORuntimeException traceback)."""
    data = make_shard_dir(tmp_path / "out", train=(3,), val=(2,))
    ckpt, port = tmp_path / "ckpt", free_port()
    steps = ("--max-steps", "2", "--save-every", "2", "--perceptual-items", "0")
    cmd = default_workers(_train_args(data, ckpt, "w2", *steps))
    launcher = [str(BIN / "deepspeed"), "--num_gpus", "2", "--master_port", str(port)]
    run_training([*launcher, *cmd], port=port)
    assert metrics_of(ckpt, "w2")["world_size"] == 2

    resumed = [sys.executable, *_train_args(data, ckpt, "w2", *steps, "--resume")]
    proc = subprocess.run(
        resumed, cwd=REPO, env=_env(free_port()), capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    tag_dir = ckpt / "w2" / "checkpoints" / "step00000002"
    assert proc.stderr.strip() == (
        f"train_ds.py: error: --resume: {tag_dir} was saved by 2 ranks with ZeRO, which splits "
        "the optimizer state 2 ways; this run has 1: resume on 2 ranks (deepspeed --num_gpus 2, "
        "torchrun --nproc_per_node 2), or start a new run from its exported weights "
        f"(--init-from {ckpt / 'w2' / 'final'})"
    )


# ---------------------------------------------------------------------------- the verdict


def _figures(snr_db: list[float], si_sdr_db: list[float]) -> dict:
    tally = MetricSums()
    tally.add_values("masked_snr_db", snr_db)
    tally.add_values("masked_si_sdr_db", si_sdr_db)
    return tally.summary()


def test_a_codec_worse_than_a_scaled_copy_of_its_input_is_never_a_success():
    """The issue's codec: masked SNR just above 0 dB with a tight interval (many items), SI-SDR
    far below 0. Scored from audio: a quiet shadow of the input plus noise."""
    rng = np.random.default_rng(0)
    ref = np.stack([speechlike(rng, 16000) for _ in range(20)])
    power = (ref**2).mean(axis=1, keepdims=True)
    est = 0.05 * ref + rng.standard_normal(ref.shape) * np.sqrt(0.05 * power)
    tally = MetricSums()
    tally.add(ref, est.astype(np.float32), np.ones(ref.shape, bool))
    figures = tally.summary()
    assert figures["masked_snr_db_ci95_lo"] > 0  # the old criterion alone said SUCCESS
    assert figures["masked_si_sdr_db_ci95_hi"] < -5
    assert verdict(figures) == "FAILURE" and not succeeded(figures)
    line = headline("6", figures)
    assert "SUCCESS" not in line
    assert (
        "FAILURE: SI-SDR < 0 dB with 95 % confidence (n = 20), although masked SNR > 0 dB" in line
    )
    assert f"success needs {CRITERION}" in line
    assert "; SI-SDR -1" in line  # the figure itself is on the final line


def test_a_good_codec_succeeds_and_the_verdict_says_what_it_tested():
    good = _figures([8.0, 9.0, 8.5, 9.5], [6.0, 7.0, 6.5, 7.5])
    assert verdict(good) == "SUCCESS" and succeeded(good)
    assert headline("6", good).endswith(
        "SUCCESS: masked SNR > 0 dB and SI-SDR > 0 dB, each with 95 % confidence (n = 4)"
    )
    # SI-SDR whose interval spans 0 dB: not yet a success.
    unsure = _figures([8.0, 9.0, 8.5, 9.5], [6.0, -7.0, 5.0, -4.0])
    assert verdict(unsure) == "UNDECIDED"
    assert "UNDECIDED: SI-SDR 95 % interval [" in headline("6", unsure)


def test_opus_comparison_is_printed_beside_the_verdict_when_opusenc_is_there(tmp_path, monkeypatch):
    """With opus-tools on PATH (stand-ins here that pass the 16-bit WAV through), export
    scores Opus at the headline bitrate on the first --perceptual-items val items."""
    from shards import Index
    from telucodec.configs import get_config
    from telucodec.model import Codec

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("opusenc", "opusdec"):
        script = bin_dir / tool
        script.write_text(
            f"#!{sys.executable}\nimport shutil, sys\nshutil.copy(sys.argv[-2], sys.argv[-1])\n"
        )
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    data = make_shard_dir(tmp_path / "out", train=(2,), val=(3,))
    cfg = get_config("tiny")
    run = SimpleNamespace(args=SimpleNamespace(perceptual_items=2), kbps=[1.5, 6.0], cfg=cfg)
    engines = SimpleNamespace(generator=SimpleNamespace(module=Codec(cfg)))
    data = SimpleNamespace(index=Index.load(data), window_samples=4000)
    result = validate.compare_with_opus(run, data, engines)
    assert result["kbps"] == "6" and result["items"] == 2
    assert result["opus"]["masked_si_sdr_db"] > 40  # the stand-in is a 16-bit copy
    line = opus_line(result["kbps"], result["telucodec"], result["opus"])
    assert line.startswith("Opus 6 kbps on the same 2 val items: SI-SDR ")
    assert "(ours " in line and "PESQ-WB" in line
    monkeypatch.setenv("PATH", "/nonexistent")
    assert (
        "opusenc and opusdec not found" in validate.compare_with_opus(run, None, engines)["skipped"]
    )


# ---------------------------------------------------------------- validation progress


def test_validation_shows_a_progress_bar_on_rank_0_sized_from_the_listed_items(capsys):
    batches = [{"n": i} for i in range(3)]
    run = SimpleNamespace(rank=0, world=2, kbps=[1.5, 3.0, 6.0])
    bar = validate.progress(iter(batches), run, 11, 2)  # 6 batches of 2: rank 0 has 0, 2, 4
    assert bar.total == 3 and not bar.disable
    assert list(bar) == batches
    assert "validating 11 items x 3 bitrates" in capsys.readouterr().out
    assert validate.progress(
        iter(batches), SimpleNamespace(**{**vars(run), "rank": 1}), 11, 2
    ).disable


def test_max_val_items_help_says_how_it_bounds_validation_time(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--max_val_items MAX_VAL_ITEMS first N val items only (0: all)" in text
    assert "grows with N x bitrates" in text and "N bounds it" in text


# ------------------------------------------------------------------- a full disk at a save


class _SavingEngine:
    """A stand-in DeepSpeed engine whose save writes one file, or fails as `fail` says."""

    def __init__(self):
        self.fail: BaseException | None = None

    def save_checkpoint(self, save_dir, tag, client_state=None, save_latest=True):
        (Path(save_dir) / tag / "mp_rank_00_model_states.pt").write_bytes(b"weights")
        if self.fail is not None:
            raise self.fail


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        # torch.save's zip writer on a full disk: no errno, a C++ message.
        RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"),
    ],
)
def test_a_full_disk_at_a_checkpoint_save_is_one_line_and_keeps_the_previous_one(
    tmp_path, monkeypatch, error
):
    monkeypatch.setattr(checkpoints.dist, "barrier", lambda: None)  # one rank, no group
    monkeypatch.setattr(checkpoints, "print0", print)
    monkeypatch.setattr(checkpoints, "free_bytes", lambda path: 1 << 20)  # 1 MiB left
    engine = _SavingEngine()
    engines = SimpleNamespace(generator=engine, discriminator=None)
    run = SimpleNamespace(
        ckpt_dir=tmp_path / "checkpoints", rank=0, world=1, args=SimpleNamespace(keep_checkpoints=3)
    )
    checkpoints.save_checkpoint(run, engines, TrainState(step=2))
    engine.fail = error
    with pytest.raises(SystemExit) as exc:
        checkpoints.save_checkpoint(run, engines, TrainState(step=4))
    message = exc.value.code
    assert isinstance(message, str) and "\n" not in message  # Python exits 1 with it
    assert message.startswith(
        f"train_ds.py: error: checkpoint {run.ckpt_dir / 'step00000004'}: no space left on device"
    )
    assert message.endswith("free space there, then --resume continues from step00000002")
    assert (run.ckpt_dir / "latest").read_text() == "step00000002"
    assert not (run.ckpt_dir / "step00000004").exists()  # the partial save's space is freed
    assert json.loads((run.ckpt_dir / "step00000002" / "manifest.sha256.json").read_text())


def test_a_save_that_fails_for_another_reason_keeps_its_traceback(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoints.dist, "barrier", lambda: None)
    engine = _SavingEngine()
    engine.fail = RuntimeError("a bug, not the disk")
    run = SimpleNamespace(
        ckpt_dir=tmp_path / "checkpoints", rank=0, world=1, args=SimpleNamespace(keep_checkpoints=3)
    )
    engines = SimpleNamespace(generator=engine, discriminator=None)
    with pytest.raises(RuntimeError, match="a bug"):
        checkpoints.save_checkpoint(run, engines, TrainState(step=2))


# ----------------------------------------------------------------------------- signals


def _children(pid: int) -> set[int]:
    """The processes whose parent is `pid` (its DataLoader workers)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def _running_with(marker: str) -> list[int]:
    """Processes (not zombies) whose command line holds `marker`."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().decode(errors="replace")
            state = (cmdline.parent / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in text and state != "Z":
            found.append(int(cmdline.parent.name))
    return found


@pytest.mark.parametrize(
    ("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"]
)
def test_a_signal_mid_training_is_one_line_no_worker_left_and_resume_continues(tmp_path, sig, code):
    data = make_shard_dir(tmp_path / "out", train=(5, 4))
    ckpt = tmp_path / "ckpt"
    steps = ("--max-steps", "500", "--save-every", "2", "--perceptual-items", "0")
    cmd = default_workers(_train_args(data, ckpt, "sig", *steps))
    with open(tmp_path / "stderr.txt", "w") as err:
        proc = subprocess.Popen(
            [sys.executable, *cmd],
            cwd=REPO,
            env=_env(free_port()),
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            start_new_session=True,  # a signal to this process only, not to pytest's group
        )
    try:
        deadline = time.time() + 180
        for line in proc.stdout:
            if "checkpoint saved:" in line:
                break
            assert time.time() < deadline, "no checkpoint"
        workers = _children(proc.pid)
        assert workers, "the loader's workers should be running"
        proc.send_signal(sig)
        proc.stdout.read()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    stderr = (tmp_path / "stderr.txt").read_text()
    assert proc.returncode == code, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    ours = [line for line in stderr.splitlines() if "interrupted" in line]
    latest = (ckpt / "sig" / "checkpoints" / "latest").read_text().strip()
    assert len(ours) == 1 and ours[0].startswith(
        f"train_ds.py: interrupted ({signal.Signals(sig).name}) at step "
    ), stderr[-3000:]
    assert ours[0].endswith(f"; --resume continues from {latest}")
    assert stderr.strip().splitlines()[-1] == ours[0]
    # Every worker was stopped and reaped before the run exited.
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)
    assert _running_with(str(tmp_path / "out")) == []

    saved = int(latest.removeprefix("step"))
    resumed = run_training(
        [
            sys.executable,
            *_train_args(data, ckpt, "sig", *steps[2:], "--max-steps", str(saved + 2), "--resume"),
        ]
    )
    assert f"resumed {ckpt / 'sig' / 'checkpoints'} at step {saved}" in resumed.stdout
    assert metrics_of(ckpt, "sig")["step"] == saved + 2


# ------------------------------------------------- refused inputs: config, shards, `latest`


def _one_line_exit_2(capsys, call) -> str:
    """`call()` refuses: exit 2 and one line on stderr, which is returned."""
    with pytest.raises(SystemExit) as exc:
        call()
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("train_ds.py: error: "), err
    return err


def test_a_missing_or_unusable_deepspeed_config_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    from training.setup import resolve_ds_config

    monkeypatch.setenv("RANK", "0")
    args = parse_args(["--data-dir", "x"])
    good = json.loads((REPO / "ds_config.json").read_text())
    cases = {"missing.json": None, "broken.json": "{not json", "list.json": "[1, 2]"}
    cases["noclip.json"] = json.dumps({k: v for k, v in good.items() if k != "gradient_clipping"})
    cases["zero3.json"] = json.dumps({**good, "zero_optimization": {"stage": 3}})
    expect = {
        "missing.json": "No such file",
        "broken.json": "not valid JSON",
        "list.json": "expected a JSON object",
        "noclip.json": "set gradient_clipping explicitly",
        "zero3.json": "zero_optimization.stage 3 is not supported; use 0 or 1",
    }
    for name, text in cases.items():
        path = tmp_path / name
        if text is not None:
            path.write_text(text)
        err = _one_line_exit_2(
            capsys, lambda p=path: resolve_ds_config(str(p), args, False, Path("tb"))
        )
        assert f"--deepspeed-config {path}: " in err and expect[name] in err, err


def test_missing_or_short_shards_are_named_and_no_intact_train_shard_is_refused(
    tmp_path, monkeypatch, capsys
):
    """Every train shard gone was a DataLoader worker traceback after 1000 failed draws;
    now it is one line naming them, exit 2. One shard short of its listed size is a note
    and training goes on (the stream skips and counts it)."""
    from training.setup import open_index

    monkeypatch.setenv("RANK", "0")
    monkeypatch.setattr("torch.distributed.get_rank", lambda: 0)  # print0, no process group
    data = make_shard_dir(tmp_path / "out", train=(2, 2), val=(2,))
    short = data / "shards" / "train-000001.tar"
    short.write_bytes(short.read_bytes()[:1024])
    assert open_index(str(data), 8000, 16000).entries("train")
    out = capsys.readouterr().out
    assert "note: --data-dir" in out and "train-000001.tar: 1024 bytes, index says" in out
    (data / "shards" / "train-000000.tar").unlink()
    err = _one_line_exit_2(capsys, lambda: open_index(str(data), 8000, 16000))
    assert "no train shard is intact" in err
    assert "train-000000.tar: listed in index.json but missing" in err
    assert "train-000001.tar: 1024 bytes" in err


@pytest.mark.parametrize("tag", ["../elsewhere", "/tmp/x", "step4", "step00000004/../../x"])
def test_a_latest_that_is_not_a_step_tag_is_refused_before_anything_is_read(
    tmp_path, monkeypatch, capsys, tag
):
    """`latest` naming `../x` would send --resume outside the checkpoint folder."""
    exp = tmp_path / "ckpt" / "run"
    _fake_checkpoint(exp, 1, zero=True)
    (exp / "checkpoints" / "latest").write_text(tag + "\n")
    args = parse_args(["--data-dir", "x", "--checkpoint-dir", str(tmp_path / "ckpt")])
    args.experiment_name, args.resume = "run", True
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    err = _one_line_exit_2(capsys, lambda: check_resume_world(args))
    assert f"--resume: {exp / 'checkpoints' / 'latest'} names {tag!r}" in err
    run = SimpleNamespace(ckpt_dir=exp / "checkpoints", rank=0)
    assert _one_line_exit_2(capsys, lambda: checkpoints.resume(run, None)) == err
