"""Fill .gpu_carry/ on a machine that can download, for benchmarks/gpu_check.sh on one that
cannot: the GPU machines lent to this project have Python 3.12 with torch, numpy, numba,
tensorboard and safetensors, but no deepspeed, webdataset, soundfile, soxr or zarr, and no
network.

    python benchmarks/gpu_carry.py [--dest .gpu_carry] [--minutes 15] [--python312 PATH]

.gpu_carry/wheels/  cp312 manylinux x86_64 wheels of the packages the check needs that the
                    GPU image lacks, and of their dependencies it lacks, at the versions
                    pyproject.toml pins (dependencies: this venv's versions). deepspeed and pesq
                    are sdists on PyPI: deepspeed is built here as a pure-Python wheel
                    (DS_BUILD_OPS=0, no kernels; training uses torch's AdamW), pesq by a Python
                    3.12 (--python312), since it is a C extension.
.gpu_carry/out/     a preprocess OUT of a generated corpus (`python -m preprocess.synth`, then
                    `python -m preprocess.run --no-report`), built once per --minutes/--seed.

Wheels and OUT together must fit, with the working tree, in the 64 MiB a device run carries;
the script measures that and refuses to finish over it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from importlib import metadata
from pathlib import Path

from gpu_check_wheels import canonical, wheel_requirements  # beside this script
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

REPO = Path(__file__).resolve().parent.parent
CARRY_LIMIT = 64 * 1024**2  # what a device run takes along: working tree + carried paths
MIB = 1024**2

# What gpu_check.sh makes sure imports: the training stack, the preprocess I/O libraries, and
# the perceptual metrics validation may score.
TOP = ("deepspeed", "webdataset", "soundfile", "soxr", "zarr", "pesq", "pystoi")
# Distributions the GPU image already holds, as far as they turn up among TOP's dependencies:
# the device notes' package list (read on 2026-11-17), with the versions they give. A
# dependency found here is left behind when its version is known to fit, or unknown and
# unconstrained; otherwise it is carried too, and gpu_check.sh installs it only where the
# machine's own version does not fit (benchmarks/gpu_check_wheels.py).
DEVICE_HAS: dict[str, str | None] = {
    "torch": "2.11.0", "numpy": "2.5.2", "triton": "3.6.0", "scipy": None, "einops": None,
    "msgpack": None, "ninja": None, "nvidia-ml-py": None, "packaging": None, "psutil": None,
    "py-cpuinfo": None, "pyyaml": None, "tqdm": None, "typing-extensions": None,
}  # fmt: skip
# The device's interpreter: CPython 3.12 on Linux x86-64 (for dependency markers and tags).
TARGET_ENV = {
    "python_version": "3.12",
    "python_full_version": "3.12.3",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "extra": "",
}
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64", "linux_x86_64")  # fmt: skip


def pinned_versions() -> dict[str, str]:
    """`name==version` pins of pyproject.toml's dependencies, by canonical name."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = {}
    for line in project["dependencies"]:
        req = Requirement(line)
        exact = [s.version for s in req.specifier if s.operator == "=="]
        if exact:
            pins[canonical(req.name)] = exact[0]
    return pins


def version_for(name: str, specifier: SpecifierSet, pins: dict[str, str]) -> str:
    """pyproject's pin, else this venv's installed version, else the newest pip finds."""
    if name in pins:
        return f"{name}=={pins[name]}"
    try:
        installed = metadata.version(name)
    except metadata.PackageNotFoundError:
        return f"{name}{specifier}"
    if specifier.contains(installed, prereleases=True):
        return f"{name}=={installed}"
    return f"{name}{specifier}"


def wheel_name(path: Path) -> str:
    return canonical(path.name.split("-")[0])


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def last_error(proc: subprocess.CompletedProcess) -> str:
    """The last ERROR line of a pip/python run, else its last line."""
    lines = (proc.stderr or proc.stdout).strip().splitlines() or ["no output"]
    errors = [line for line in lines if "ERROR" in line or "error" in line]
    return (errors or lines)[-1].strip()


def fetch(requirement: str, dest: Path, python312: str | None) -> Path:
    """One wheel for the device into `dest`: a binary from the index, else built from the
    sdist (deepspeed here, pure Python; anything else by the Python 3.12)."""
    before = set(dest.glob("*.whl"))
    platforms = [a for p in PLATFORMS for a in ("--platform", p)]
    download = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(dest)]
    target = ["--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp"]
    proc = run([*download, *target, *platforms, requirement])
    if proc.returncode != 0:
        name = canonical(Requirement(requirement).name)
        if name == "deepspeed":
            # No kernels built (DS_BUILD_OPS=0); built against this venv's torch, hence no
            # build isolation, which would download a second torch.
            env = {**os.environ, "DS_BUILD_OPS": "0"}
            build = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps"]
            proc = run([*build, "--no-build-isolation", "-w", str(dest), requirement], env=env)
        elif python312:
            build = [python312, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dest)]
            proc = run([*build, requirement])
        if proc.returncode != 0:
            hint = "" if python312 else " (a C extension sdist needs --python312)"
            why = last_error(proc)
            raise SystemExit(f"gpu_carry: error: no cp312 wheel for {requirement}{hint}: {why}")
    new = sorted(set(dest.glob("*.whl")) - before)
    return new[0] if new else existing_wheel(dest, Requirement(requirement))


def existing_wheel(dest: Path, req: Requirement) -> Path | None:
    """A wheel in `dest` for this requirement's name and versions, if there is one."""
    for wheel in dest.glob("*.whl"):
        version = wheel.name.split("-")[1]
        if wheel_name(wheel) == canonical(req.name) and req.specifier.contains(version, True):
            return wheel
    return None


def on_device(req: Requirement) -> bool:
    """Whether the GPU image's own copy of `req` will do (DEVICE_HAS)."""
    name = canonical(req.name)
    if name not in DEVICE_HAS:
        return False
    version = DEVICE_HAS[name]
    if version is None:
        return not str(req.specifier)
    return req.specifier.contains(version, prereleases=True)


def collect_wheels(dest: Path, python312: str | None) -> list[Path]:
    """TOP and every dependency the device lacks, one version each (stale ones removed)."""
    dest.mkdir(parents=True, exist_ok=True)
    pins = pinned_versions()
    queue = [Requirement(version_for(canonical(n), SpecifierSet(), pins)) for n in TOP]
    wanted: dict[str, Path] = {}
    while queue:
        req = queue.pop(0)
        name = canonical(req.name)
        if name in wanted:
            continue
        wheel = existing_wheel(dest, req) or fetch(str(req), dest, python312)
        wanted[name] = wheel
        print(f"  {wheel.name}", flush=True)
        for dep in wheel_requirements(wheel, TARGET_ENV):
            if canonical(dep.name) not in wanted and not on_device(dep):
                queue.append(Requirement(version_for(canonical(dep.name), dep.specifier, pins)))
    keep = set(wanted.values())
    for stale in set(dest.glob("*.whl")) - keep:
        stale.unlink()  # two versions of one package would stop the install on the device
    return sorted(keep)


def find_python312(given: str | None) -> str | None:
    """--python312, else `python3.12` on PATH or under pyenv; None if there is none."""
    if given:
        if shutil.which(given) is None:
            raise SystemExit(f"gpu_carry: error: --python312 {given}: no such interpreter")
        return given
    candidates = [shutil.which("python3.12")]
    candidates += sorted(str(p) for p in Path.home().glob(".pyenv/versions/3.12*/bin/python3.12"))
    for path in filter(None, candidates):
        if run([path, "--version"]).returncode == 0:
            return path
    return None


def build_data(out: Path, minutes: float, seed: int) -> None:
    """A preprocess OUT of a generated corpus; kept when one of these minutes/seed exists."""
    stamp = out / "gpu_carry.txt"
    recipe = f"preprocess.synth --minutes {minutes:g} --seed {seed}\n"
    if (out / "index.json").is_file() and stamp.is_file() and stamp.read_text() == recipe:
        print(f"data: {out} already built ({recipe.strip()})")
        return
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    with tempfile.TemporaryDirectory(prefix="gpu_carry_") as tmp:
        corpus = Path(tmp) / "corpus"
        steps = [
            ["-m", "preprocess.synth", str(corpus), "--minutes", f"{minutes:g}"],
            ["--seed", str(seed), "--no-progress"],
            ["-m", "preprocess.run", "--input", str(corpus), "--output", str(out)],
            ["--no-report", "--shard-mb", "2"],
        ]
        for first, rest in (steps[0:2], steps[2:4]):
            print(f"data: python {' '.join(first[:2])} ...", flush=True)
            proc = run([sys.executable, *first, *rest], cwd=REPO, env=env)
            if proc.returncode != 0:
                why = last_error(proc)
                raise SystemExit(f"gpu_carry: error: {' '.join(first[:2])} failed: {why}")
    stamp.write_text(recipe)


def tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def working_tree_bytes() -> int:
    """Tracked and untracked-not-ignored files: what a device run sends besides `carry`."""
    listed = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO)
    files = (REPO / p for p in listed.stdout.split("\0") if p)
    return sum(f.stat().st_size for f in files if f.is_file())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dest", type=Path, default=REPO / ".gpu_carry", help="the carried folder")
    p.add_argument("--minutes", type=float, default=15.0, help="generated corpus length")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--python312", default=None, help="a Python 3.12 to build pesq's wheel")
    args = p.parse_args(argv)

    print("wheels:", flush=True)
    wheels = collect_wheels(args.dest / "wheels", find_python312(args.python312))
    build_data(args.dest / "out", args.minutes, args.seed)

    wheel_bytes = sum(w.stat().st_size for w in wheels)
    data_bytes = tree_bytes(args.dest / "out")
    tree = working_tree_bytes()
    total = wheel_bytes + data_bytes + tree
    print(f"wheels: {len(wheels)} files, {wheel_bytes / MIB:.1f} MiB ({args.dest / 'wheels'})")
    print(f"data: {data_bytes / MIB:.1f} MiB ({args.dest / 'out'})")
    print(
        f"carry: {total / MIB:.1f} MiB with the working tree ({tree / MIB:.1f} MiB) "
        f"of the {CARRY_LIMIT / MIB:.0f} MiB a device run takes"
    )
    if total > CARRY_LIMIT:
        raise SystemExit("gpu_carry: error: over the carry limit; lower --minutes")
    print(
        'device: run(command="GPU_CHECK_REPORT=$OUT bash benchmarks/gpu_check.sh", '
        'carry=[".gpu_carry"], timeout_s=540)'
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
