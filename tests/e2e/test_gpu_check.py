"""The GPU recipe's check, kept alive on CPU: `benchmarks/gpu_check.sh` with the `tiny` codec
installs a carried wheel for a module that does not import, trains under its budget and
prints the summary a GPU run would; its failures are one line. Also `train_ds.py --compile`
(nn.Module.compile in place: same checkpoint keys) and the throughput block of metrics.json.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import math
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.e2e.test_train import (
    _train_args,
    clean_shm,  # noqa: F401  (fixture)
    make_shard_dir,
    metrics_of,
    run_training,
)

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"
PRESENT = "deepspeed webdataset soundfile soxr zarr"


def probe_wheel(
    folder: Path, name: str = "gpu_check_probe", version: str = "1.0", requires: tuple = ()
) -> Path:
    """A minimal wheel of a one-line module `name` (by default one no environment has)."""
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    files = {
        f"{name}.py": "VALUE = 1\n",
        f"{info}/METADATA": meta + "".join(f"Requires-Dist: {r}\n" for r in requires),
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    with zipfile.ZipFile(wheel, "w") as z:
        for path, text in files.items():
            z.writestr(path, text)
        z.writestr(f"{info}/RECORD", "".join(f"{p},,\n" for p in [*files, f"{info}/RECORD"]))
    return wheel


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def gpu_check(tmp_path: Path, **settings: str) -> subprocess.CompletedProcess:
    """`bash benchmarks/gpu_check.sh` with this interpreter and GPU_CHECK_* `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPU_CHECK_")}
    env.pop("PYTHONPATH", None)
    env.update(
        GPU_CHECK_PYTHON=sys.executable,
        GPU_CHECK_RUNS=str(tmp_path / "runs"),
        GPU_CHECK_SITE=str(tmp_path / "site"),
        OMP_NUM_THREADS="1",
    )
    env.update({f"GPU_CHECK_{k.upper()}": v for k, v in settings.items()})
    return subprocess.run(
        ["bash", str(SCRIPT)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
@pytest.mark.usefixtures("clean_shm")
def test_gpu_check_installs_what_is_missing_trains_tiny_and_prints_the_summary(tmp_path):
    data = make_shard_dir(tmp_path / "out")
    probe_wheel(tmp_path / "wheels")
    proc = gpu_check(
        tmp_path,
        model="tiny",
        data=str(data),
        wheels=str(tmp_path / "wheels"),
        modules=f"{PRESENT} gpu_check_probe",
        steps="3",
        seconds="120",
        batch="2",
        workers="1",
        args="--segment-seconds 0.5 --log-every 1",
        report=str(tmp_path / "report"),
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    # (1) only the module that did not import was installed, into the check's own folder.
    assert "installing 1 carried wheels for: gpu_check_probe" in out
    assert (tmp_path / "site" / "gpu_check_probe.py").is_file()
    # (3) the summary, in short lines.
    setup = "gpu_check: tiny (0.1 M parameters) on cpu, fp32, compile off, micro batch 2 x 0.50 s"
    assert f"\n{setup}, 1 rank\n" in out
    rates = r"[\d.]+ steps/s, [\d.]+ samples/s$"
    assert re.search(r"^speed: 3 steps in \d+ s: " + rates, out, re.M)
    assert re.search(r"^after the first step \([\d.]+ s\): " + rates, out, re.M)
    assert "\npeak GPU memory: n/a on CPU\n" in out
    assert re.search(r"^final loss \(step 3\): [-\d.e]+, grad norm [\d.e-]+, lr ", out, re.M)
    assert re.search(r"^loss terms: codebook [-\d.e]+, commitment .*, l1 .*, mel ", out, re.M)
    number = r"-?[\d.]+"
    for kbps in ("1.5", "3", "6"):
        # PESQ-WB and STOI of the default perceptual subset (all 14 val windows of 0.5 s).
        figures = (
            rf"masked SNR {number} dB, SI-SDR {number} dB, mel [\d.]+, "
            rf"PESQ-WB [\d.]+, STOI [\d.]+ \(14 items\)$"
        )
        line = rf"^val {kbps} kbps: {figures}"
        assert re.search(line, out, re.M), out
    assert re.search(r"^verdict: (SUCCESS|FAILURE|UNDECIDED) at 6 kbps: masked SNR ", out, re.M)
    assert re.search(r"^gpu_check: done in \d+ s \(install \d+ s, training \d+ s\)$", out, re.M)
    summary = out[out.index(setup) :].splitlines()
    assert len(summary) == 11 and all(len(line) <= 110 for line in summary), "short lines"
    # metrics.json's throughput block, which the summary read.
    speed = metrics_of(tmp_path / "runs", "gpu_check")["throughput"]
    assert speed["steps"] == 3 and speed["device"] == "cpu"
    assert speed["peak_gpu_memory_bytes"] is None
    assert speed["samples_per_s"] == pytest.approx(2 * speed["steps_per_s"])
    assert speed["steady_steps_per_s"] > 0 and 0 < speed["first_step_seconds"] < speed["seconds"]
    report = sorted(p.name for p in (tmp_path / "report").iterdir())
    assert report == ["curves.png", "metrics.json", "run_config.json", "summary.txt", "train.log"]


def test_missing_data_dir_is_one_line_error_and_nonzero_exit(tmp_path):
    proc = gpu_check(tmp_path, data=str(tmp_path / "nowhere"))
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"gpu_check.sh: error: no preprocess OUT at {tmp_path / 'nowhere'} (no index.json); "
        "run python benchmarks/gpu_carry.py or set GPU_CHECK_DATA"
    )
    assert proc.stdout == ""


def test_module_that_does_not_import_and_has_no_carried_wheel_is_one_line_error(tmp_path):
    data = make_shard_dir(tmp_path / "out", train=(2,), val=(2,))
    (tmp_path / "wheels").mkdir()
    proc = gpu_check(
        tmp_path, data=str(data), wheels=str(tmp_path / "wheels"), modules="gpu_check_absent"
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"gpu_check.sh: error: cannot import gpu_check_absent, and {tmp_path / 'wheels'} "
        "holds no wheel that is not installed already"
    )


def test_carried_wheels_install_when_absent_or_when_the_installed_version_is_too_old(tmp_path):
    """What the GPU image lacks goes in, with the carried dependencies it asks a newer version
    of (pydantic wants typing-extensions >= 4.16); what is installed and fits stays out."""
    wheels = tmp_path / "wheels"
    probe_wheel(
        wheels, requires=("gpu_check_dep", "packaging>=999", "pytest", 'numpy; extra == "x"')
    )
    probe_wheel(wheels, "gpu_check_dep")
    probe_wheel(wheels, "packaging", "999.0")  # installed here, but older than the probe asks
    probe_wheel(wheels, "pytest", "0.1")  # installed here and unconstrained: stays out
    probe_wheel(wheels, "numpy", "0.1")  # only an extra asks for it
    needed = _load_script("gpu_check_wheels").needed(wheels)
    assert [w.name.split("-")[0] for w in needed] == [
        "gpu_check_dep",
        "gpu_check_probe",
        "packaging",
    ]


def test_summary_gives_gpu_memory_in_gib_and_the_precision():
    summary = _load_script("gpu_check_summary")
    speed = {
        "device": "NVIDIA H200",
        "steps": 1200,
        "seconds": 300.0,
        "steps_per_s": 4.0,
        "samples_per_s": 64.0,
        "first_step_seconds": 40.0,
        "steady_steps_per_s": 4.6,
        "steady_samples_per_s": 73.6,
        "peak_gpu_memory_bytes": 12 * 1024**3,
    }
    assert summary.speed_lines(speed) == [
        "speed: 1200 steps in 300 s: 4.00 steps/s, 64.0 samples/s",
        "after the first step (40.0 s): 4.60 steps/s, 73.6 samples/s",
        "peak GPU memory: 12.00 GiB (allocated, rank 0)",
    ]
    run_config = {
        "args": {"model_config": "base", "compile": True},
        "deepspeed": {"bf16": {"enabled": True}},
        "data": {"crop_samples": 8000, "micro_batch": 16},
        "model": {"sample_rate": 16000},
        "parameters": 74_000_000,
        "world_size": 1,
    }
    assert summary.setup_line(run_config, speed) == (
        "gpu_check: base (74.0 M parameters) on NVIDIA H200, bf16, compile on, "
        "micro batch 16 x 0.50 s, 1 rank"
    )


def test_compile_in_place_keeps_the_state_dict_keys_and_the_module_copyable():
    """--compile must not change what checkpoints and the export hold (nor break the bf16
    export's deepcopy)."""
    from telucodec.configs import get_config
    from telucodec.discriminator import MultiScaleSTFTDiscriminator
    from telucodec.model import Codec
    from training.engines import compile_in_place

    cfg = get_config("base")
    model, disc = Codec(cfg), MultiScaleSTFTDiscriminator(cfg)
    keys = list(model.state_dict()), list(disc.state_dict())
    compile_in_place(model.encoder, model.decoder)
    compile_in_place(disc)
    assert (list(model.state_dict()), list(disc.state_dict())) == keys
    assert model.encoder._compiled_call_impl is not None
    assert model.quantizer._compiled_call_impl is None  # stays eager
    assert list(copy.deepcopy(model).state_dict()) == keys[0]


@pytest.mark.slow
def test_compiled_tiny_run_trains_and_exports_the_same_keys_as_an_eager_one(tmp_path):
    """Two steps of `train_ds.py --compile` on CPU (inductor's C++ backend; minutes on a cold
    compile cache): finite losses, and its export loads like an eager run's."""
    from telucodec.checkpoint import load_codec

    data = make_shard_dir(tmp_path / "out", train=(4,), val=(2,))
    ckpt = tmp_path / "ckpt"
    for name, extra in (("eager", ()), ("compiled", ("--compile",))):
        cmd = _train_args(data, ckpt, name, "--max-steps", "2", *extra)
        run_training([sys.executable, *cmd], timeout=900)
    m = metrics_of(ckpt, "compiled")
    assert m["step"] == 2 and all(math.isfinite(r["loss"]) for r in m["history"]["train"])
    assert json.loads((ckpt / "compiled" / "run_config.json").read_text())["args"]["compile"]
    eager, compiled = load_codec(ckpt / "eager" / "final"), load_codec(ckpt / "compiled" / "final")
    assert list(compiled.state_dict()) == list(eager.state_dict())
