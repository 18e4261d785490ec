"""Which carried wheels this machine needs, for benchmarks/gpu_check.sh: each wheel whose
distribution is not installed, and each carried dependency of those whose installed version
does not satisfy them (the GPU image may hold an older typing-extensions than pydantic asks
for). gpu_check.sh installs them with `pip --no-deps --target`, which resolves nothing
itself; this is the small part of resolving it needs. One wheel path a line.

    python benchmarks/gpu_check_wheels.py WHEELS_DIR
"""

from __future__ import annotations

import re
import sys
import zipfile
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement


def canonical(name: str) -> str:
    """PEP 503 name: `PyYAML` and `pyyaml`, `typing_extensions` and `typing-extensions` meet."""
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_requirements(wheel: Path, env: dict[str, str] | None = None) -> list[Requirement]:
    """The wheel's Requires-Dist that apply where `env` says (markers; no extras), by default
    on this interpreter."""
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        lines = z.read(meta).decode().splitlines()
    reqs = []
    for line in lines:
        if line.startswith("Requires-Dist:"):
            req = Requirement(line.split(":", 1)[1].strip())
            if req.marker is None or req.marker.evaluate({"extra": "", **(env or {})}):
                reqs.append(req)
    return reqs


def installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def needed(folder: Path) -> list[Path]:
    """The wheels of `folder` to install here (see the module docstring)."""
    wheels = {canonical(w.name.split("-")[0]): w for w in folder.glob("*.whl")}
    chosen = {name for name in wheels if installed_version(name) is None}
    pending = list(chosen)
    while pending:
        for req in wheel_requirements(wheels[pending.pop()]):
            dep = canonical(req.name)
            if dep not in wheels or dep in chosen:
                continue
            version = installed_version(dep)
            if version is None or not req.specifier.contains(version, prereleases=True):
                chosen.add(dep)
                pending.append(dep)
    return sorted(wheels[name] for name in chosen)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python benchmarks/gpu_check_wheels.py WHEELS_DIR")
    for wheel in needed(Path(sys.argv[1])):
        print(wheel)
