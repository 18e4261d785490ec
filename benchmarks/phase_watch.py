"""Time the phases of `python -m preprocess.run` from outside: wall, CPU and RSS per phase.

The benchmark must time the default command exactly as a user runs it, and the CLI
reports no per-phase figures of its own (its `run_pipeline` return value has stage laps,
but the CLI prints only `elapsed`). So the phases are read from what any observer sees:

- the progress bars on stderr (`plan: hash+probe`, `scan`, `shard`): first and last refresh;
- OUT's files appearing, each written atomically in assembly's order: `files.jsonl`,
  `stats.zarr`, `index.json`;
- the summary table and the `report: PATH` line on stdout, then the process's exit;

and CPU and memory from /proc, sampled every `interval` seconds over the command's whole
process tree (the driver; Ray's workers, by their `ray::`/`default_worker.py` command
lines; Ray's own daemons). CPU at a phase boundary is interpolated between samples; a
process's last sample stands for it after it exits (the CPU it spends in its final
interval is missed; the run's total from `wait4` is printed beside the sum to show how
much). Peak RSS is each process's VmHWM, so a peak between samples is not missed.

The pipeline's own phase clock (`preprocess.run --timings`: driver thread CPU and the
workers' process CPU per phase, exact) is printed beside this outside view by
benchmarks/preprocess_bench.py; this view adds what only an observer sees: Ray's own
daemons, peak RSS per role, the machine's load, and the exit that waits for Ray to stop.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")
_RESCAN_S = 1.0  # full /proc walks for new descendants; known pids are read every sample
ROLES = ("driver", "workers", "ray")


@dataclass
class Sample:
    t: float  # perf_counter
    cpu: dict[str, float]  # role → CPU-s so far
    load1: float
    busy: float  # the machine's busy CPU-s so far (/proc/stat)


@dataclass
class Watched:
    """What `watch` saw: samples, first/last time of each marker, output, exit."""

    t0: float
    t_exit: float
    returncode: int
    samples: list[Sample]
    marks: dict[str, list[float]]  # marker → [first seen, last seen]
    peak_rss_mb: dict[str, float]  # role → max VmHWM of its processes
    stdout: list[str]
    stderr: list[str]
    rusage_cpu_s: float  # user + system of the whole reaped tree (wait4)
    processes: dict[str, int] = field(default_factory=dict)  # role → processes seen

    def cpu_at(self, t: float) -> dict[str, float]:
        """CPU-s per role at time `t`, linear between the samples around it."""
        s = self.samples
        if not s:
            return dict.fromkeys(ROLES, 0.0)
        if t <= s[0].t:
            return dict(s[0].cpu)
        for a, b in zip(s, s[1:], strict=False):
            if a.t <= t <= b.t:
                w = (t - a.t) / max(b.t - a.t, 1e-9)
                return {r: a.cpu[r] + w * (b.cpu[r] - a.cpu[r]) for r in ROLES}
        return dict(s[-1].cpu)

    def machine_at(self, t: float) -> tuple[float, float]:
        """(1-min load average, machine busy CPU-s) of the sample nearest `t`."""
        best = min(self.samples, key=lambda x: abs(x.t - t))
        return best.load1, best.busy


def _stat(pid: int) -> tuple[int, int, float] | None:
    """(ppid, starttime, CPU-s) of `pid`, or None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    rest = raw[raw.rfind(b")") + 2 :].split()
    return int(rest[1]), int(rest[19]), (int(rest[11]) + int(rest[12])) / _TICK


def _hwm_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _role(pid: int, root: int) -> str:
    if pid == root:
        return "driver"
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return "ray"
    return "workers" if cmd.startswith(b"ray::") or b"default_worker.py" in cmd else "ray"


def _busy_cpu_s() -> float:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / _TICK


class _TreeSampler(threading.Thread):
    """Samples the CPU and peak RSS of `root`'s process tree until `stop` is set, and
    the first time each of `paths` exists."""

    def __init__(self, root: int, interval: float, paths: dict[str, Path], marks: dict) -> None:
        super().__init__(daemon=True)
        self.root, self.interval, self.paths, self.marks = root, interval, paths, marks
        self.stop = threading.Event()
        self.known: dict[tuple[int, int], dict] = {}  # (pid, starttime) → role, cpu, hwm
        self.samples: list[Sample] = []
        self._last_scan = 0.0

    def _rescan(self) -> None:
        children: dict[int, list[int]] = {}
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                st = _stat(int(entry.name))
                if st is not None:
                    children.setdefault(st[0], []).append(int(entry.name))
        todo, tree = [self.root], []
        while todo:
            pid = todo.pop()
            tree.append(pid)
            todo += children.get(pid, [])
        for pid in tree:
            st = _stat(pid)
            if st is not None and (pid, st[1]) not in self.known:
                self.known[(pid, st[1])] = {"role": _role(pid, self.root), "cpu": 0.0, "hwm": 0.0}

    def sample(self) -> None:
        now = time.perf_counter()
        if now - self._last_scan >= _RESCAN_S:
            self._rescan()
            self._last_scan = now
        cpu = dict.fromkeys(ROLES, 0.0)
        for (pid, start), p in self.known.items():
            st = _stat(pid)
            if st is not None and st[1] == start:
                p["cpu"] = st[2]
                p["hwm"] = max(p["hwm"], _hwm_mb(pid))
            cpu[p["role"]] += p["cpu"]
        self.samples.append(Sample(now, cpu, os.getloadavg()[0], _busy_cpu_s()))
        for name, path in self.paths.items():
            if name not in self.marks and path.exists():
                self.marks[name] = [now, now]

    def run(self) -> None:
        while not self.stop.is_set():
            self.sample()
            self.stop.wait(self.interval)


_BARS = {"plan: hash+probe": "hash+probe", "scan:": "scan", "shard:": "shard"}


def watch(
    cmd: list[str], cwd: Path, env: dict[str, str], out: Path, interval: float = 0.25
) -> Watched:
    """Run `cmd` (a preprocess run writing `out`) to its end, watching its phases."""
    marks: dict[str, list[float]] = {}
    lock = threading.Lock()
    stdout: list[str] = []
    stderr: list[str] = []

    def mark(name: str) -> None:
        now = time.perf_counter()
        with lock:
            marks.setdefault(name, [now, now])[1] = now

    def read(stream, sink: list[str], is_err: bool) -> None:
        buf = ""
        while chunk := stream.read1(65536):
            buf += chunk.decode("utf-8", "replace")
            *lines, buf = re.split(r"[\r\n]", buf)
            for line in lines:
                bar = next((m for p, m in _BARS.items() if line.startswith(p)), None)
                if bar is not None:
                    mark(bar)
                    continue
                if not line.strip():
                    continue
                if not is_err and line.startswith("reason") and "files" in line:
                    mark("summary")
                elif not is_err and line.startswith("report: "):
                    mark("report")
                sink.append(line)
        if buf.strip():
            sink.append(buf)

    t0 = time.perf_counter()
    before = os.times()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    paths = {n: out / n for n in ("files.jsonl", "stats.zarr", "index.json")}
    sampler = _TreeSampler(proc.pid, interval, paths, marks)
    sampler.start()
    readers = [
        threading.Thread(target=read, args=(proc.stdout, stdout, False), daemon=True),
        threading.Thread(target=read, args=(proc.stderr, stderr, True), daemon=True),
    ]
    for r in readers:
        r.start()
    returncode = proc.wait()
    t_exit = time.perf_counter()
    sampler.stop.set()
    sampler.join()
    for r in readers:
        r.join()
    after = os.times()
    roles: dict[str, float] = dict.fromkeys(ROLES, 0.0)
    counts: dict[str, int] = dict.fromkeys(ROLES, 0)
    for p in sampler.known.values():
        roles[p["role"]] = max(roles[p["role"]], p["hwm"])
        counts[p["role"]] += 1
    return Watched(
        t0=t0,
        t_exit=t_exit,
        returncode=returncode,
        samples=sampler.samples,
        marks=marks,
        peak_rss_mb=roles,
        stdout=stdout,
        stderr=stderr,
        rusage_cpu_s=(after.children_user - before.children_user)
        + (after.children_system - before.children_system),
        processes=counts,
    )


@dataclass
class Phase:
    name: str
    start: float
    end: float
    cpu: dict[str, float]  # role → CPU-s in the phase
    load: tuple[float, float]  # 1-min load at start, end
    busy: float  # the machine's busy CPU-s in the phase


def phases(w: Watched) -> list[Phase]:
    """The run cut at the boundaries an observer sees; a boundary not seen (a bar that
    never drew, a run that failed) merges its phase into the next."""
    m = w.marks
    cuts = [
        ("start-up: Ray, actors, listing", m.get("hash+probe", [None])[0]),
        ("hash + probe (plan)", m.get("hash+probe", [None, None])[1]),
        ("dedupe, units (driver)", m.get("scan", [None])[0]),
        ("scan", m.get("scan", [None, None])[1]),
        ("split + shard groups (driver)", m.get("shard", [None])[0]),
        ("shard", m.get("shard", [None, None])[1]),
        ("assembly: files.jsonl", m.get("files.jsonl", [None])[0]),
        ("assembly: stats.zarr", m.get("stats.zarr", [None])[0]),
        ("assembly: index.json", m.get("index.json", [None])[0]),
        ("summary", m.get("summary", [None])[0]),
        ("report", m.get("report", [None])[0]),
        ("exit (waits for Ray to stop)", w.t_exit),
    ]
    out: list[Phase] = []
    start = w.t0
    for name, end in cuts:
        if end is None or end < start:
            continue
        a, b = w.cpu_at(start), w.cpu_at(end)
        (la, ba), (lb, bb) = w.machine_at(start), w.machine_at(end)
        out.append(Phase(name, start, end, {r: b[r] - a[r] for r in ROLES}, (la, lb), bb - ba))
        start = end
    return out
