"""The preprocessing pipeline end to end, on Ray: plan → scan → split → shard → assemble.

A pool of Ray actors (one per worker) hashes and probes files, then processes work units
(scan, decide, cut and encode utterances into a spool). Once every unit is done, the driver
splits the *kept* audio into train and val and packs each split's files into shard
groups; the actors write each group's shard from the spools (no single writer) while the
driver only plans and assembles. Units and groups commit atomically, so a rerun after
kill -9 skips finished ones.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import ray
from tqdm import tqdm

from preprocess.actors.ray_session import ray_session
from preprocess.actors.records import file_record
from preprocess.actors.schedule import (
    CRASHED_DETAIL,
    ActorTasks,
    fingerprint_on,
    run_on_pool,
    utilization,
)
from preprocess.actors.shard_group import group_is_done, group_key, write_group
from preprocess.actors.unit import (
    WARM_UP_DIR,
    process_unit,
    read_unit_records,
    start_worker,
    unit_dir,
    unit_is_done,
    unit_key,
)
from preprocess.config import PreprocessConfig
from preprocess.measure import stage_times
from preprocess.measure.policy import Decision, reject, undecodable
from preprocess.measure.stage_times import PhaseClock, add_times
from preprocess.out.lock import OutputLocked, output_lock
from preprocess.out.outdir import OutputConflict, check_input_unchanged, claim_output
from preprocess.plan.planner import (
    InputFile,
    ShardGroup,
    WorkUnit,
    assign_splits,
    check_split,
    fingerprint,
    input_digest,
    kept_items,
    list_inputs,
    make_shard_groups,
    make_units,
    mark_duplicates,
    needs_decoding,
)
from preprocess.plan.split import SplitPlan
from shards.atomic import atomic_write_text

log = logging.getLogger(__name__)

_FINGERPRINT_BATCH = 32
FINGERPRINTS = "fingerprints.jsonl"  # in OUT/.work: hashes a killed run already took

__all__ = ["OutputConflict", "OutputLocked", "UsageError", "check_run_paths", "run_pipeline"]


@ray.remote
class UnitWorker:
    """One per worker core, started once per run: hashes and probes files for the plan,
    then processes whole units and writes their shard parts."""

    def __init__(self, input_root: str, work: str, cfg: dict[str, Any]):
        self.input_root = Path(input_root)
        self.work = Path(work)
        self.cfg = PreprocessConfig.from_dict(cfg)
        self.start_warning = start_worker(self.cfg, self.work)
        self.plan_times: dict[str, dict[str, float]] = {}
        # This process's CPU so far: Ray's worker start, our imports, Numba's start. A
        # fixed cost per worker, which the benchmark reports apart from the per-hour work.
        self.startup_cpu_s = _process_cpu_s()

    # `stage_times.CLOCK`, never a name imported from it: Ray pickles this class by value,
    # and an imported CLOCK would be a copy that the measured code never laps (seen: every
    # worker stage read 0 s).
    def fingerprint(self, paths: list[str]) -> list[dict]:
        stage_times.CLOCK.restart()
        recs = fingerprint(self.input_root, paths, self.cfg.extra_audio_extensions)
        stage_times.CLOCK.lap("plan")
        add_times(self.plan_times, stage_times.CLOCK.take())  # not a unit's: usage() has it
        return recs

    def started(self) -> str | None:
        """Once this actor is up: its start-up warning, for the driver to print (workers'
        own output stays in Ray's logs)."""
        return self.start_warning

    def cpu_s(self) -> float:
        """This worker process's CPU seconds so far (the driver's phase clock reads it)."""
        return _process_cpu_s()

    def usage(self) -> dict[str, Any]:
        """This worker's CPU seconds so far, at start-up, and stage times not yet reported
        (benchmark)."""
        times = stage_times.CLOCK.take()
        add_times(times, self.plan_times)
        self.plan_times = {}
        return {
            "process_cpu_s": _process_cpu_s(),
            "startup_cpu_s": self.startup_cpu_s,
            "stage_times": times,
        }

    def process(
        self,
        unit: dict[str, Any],
        files: list[dict[str, Any]],
        scan_only: bool = False,
        crashed: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        stage_times.CLOCK.restart()
        start = time.time()
        table = {f["path"]: InputFile(**f) for f in files}
        done = process_unit(
            WorkUnit(**unit), table, self.input_root, self.work, self.cfg, scan_only, crashed
        )
        # Peak RSS of this worker process so far: reported, never written to OUT.
        done["_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return _where_and_when(done, start)

    def write_group(self, group: dict[str, Any], unit_keys: dict[int, str]) -> dict[str, Any]:
        stage_times.CLOCK.restart()
        start = time.time()
        done = write_group(ShardGroup.from_dict(group), unit_keys, self.work, self.cfg)
        return _where_and_when(done, start)


def _where_and_when(done: dict[str, Any], start: float) -> dict[str, Any]:
    """Which node and process ran a task, from when to when (epoch seconds) and its stage
    times: for the run log and the benchmark, never written to OUT."""
    done["_stage_times"] = stage_times.CLOCK.take()
    done["_node_id"] = ray.get_runtime_context().get_node_id()
    done["_pid"] = os.getpid()
    done["_span"] = [start, time.time()]
    return done


def _workers_cpu(actors: list[Any]) -> float | None:
    """The actors' process CPU seconds summed, for the phase clock; None when one cannot
    answer within seconds (dead, restarting, busy past a signal): a figure, never a hang."""
    try:
        return sum(ray.get([a.cpu_s.remote() for a in actors], timeout=10))
    except (ray.exceptions.RayError, TimeoutError):
        return None


def _process_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _plan(
    input_root: Path, cfg: PreprocessConfig, work: Path, actors: list[Any], clock: PhaseClock
) -> list[InputFile]:
    """List, hash and probe every file (on the worker actors; a batch whose worker died is
    sent again), then dedupe. Entries that cannot be read (bad names, FIFOs, broken
    links…) join with their reason."""
    with clock.phase("listing"):
        listing = list_inputs(input_root)
        paths = listing.files
        cache = _load_fingerprint_cache(work / FINGERPRINTS, input_root)
    todo = [p for p in paths if p not in cache]
    batches = [todo[i : i + _FINGERPRINT_BATCH] for i in range(0, len(todo), _FINGERPRINT_BATCH)]
    with _phase_bar(
        clock, "hash + probe", "plan: hash+probe", len(paths), len(todo), "file"
    ) as bar:
        # Each file's stat key is taken before a worker reads it: a file changed while or
        # after it is hashed then has a new ctime, and a rerun hashes it again (a key taken
        # after the hash would pair the old hash with the new file).
        stats = {p: _stat_key_or_none(input_root, p) for p in todo}
        # Each batch's hashes are appended as they arrive, so a kill keeps what is hashed;
        # the end rewrites the cache whole (a load takes the last line of a path).
        with open(work / FINGERPRINTS, "a", encoding="utf-8") as journal:
            for recs in fingerprint_on(ActorTasks(actors), batches):
                lines = [_cache_line(stats[rec["path"]], rec) for rec in recs]
                for rec, line in zip(recs, lines, strict=True):
                    cache[rec["path"]] = CachedHash(rec, line)
                    bar.update(1)
                journal.write("".join(lines))
                journal.flush()
        atomic_write_text(work / FINGERPRINTS, "".join(cache[p].line for p in paths if p in cache))
    files = [InputFile(**cache[p].rec) for p in paths] + listing.skipped
    files.sort(key=lambda f: f.path)
    mark_duplicates(files)
    return files


def _stat_key(root: Path, rel: str) -> list[int]:
    """Size, mtime, ctime and inode: a rewrite that restores size and mtime (`touch -r`,
    `cp -p` over it) still changes ctime or the inode, so the file is hashed again."""
    st = (root / rel).stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


class CachedHash(NamedTuple):
    """A file's hash-and-probe record and its line in the cache (with its stat key)."""

    rec: dict[str, Any]
    line: str


def _stat_key_or_none(root: Path, rel: str) -> list[int] | None:
    try:
        return _stat_key(root, rel)
    except OSError:
        return None  # gone or unreadable: judged by the worker, not cached


def _load_fingerprint_cache(path: Path, root: Path) -> dict[str, CachedHash]:
    """Hashes from an earlier (killed) run, reused only if the file's stat key matches. A
    cache that cannot be read is a cache missed: the files are hashed again."""
    out: dict[str, CachedHash] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return out
    for line in lines:
        try:
            entry = json.loads(line)
            if _stat_key(root, entry["rec"]["path"]) == entry["stat"]:
                out[entry["rec"]["path"]] = CachedHash(entry["rec"], line + "\n")
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return out


def _cache_line(stat: list[int] | None, rec: dict[str, Any]) -> str:
    """One cache line: a file's stat key, taken before it was read, and its record ("" if
    it could not be stat'ed)."""
    if stat is None:
        return ""
    return json.dumps({"stat": stat, "rec": rec}, ensure_ascii=False) + "\n"


def plan_decision(f: InputFile) -> Decision:
    if f.plan_reason is not None:
        return reject(f.plan_reason, f.probe_error)
    if f.duplicate_of is not None:
        return reject("duplicate", f"same bytes as {f.duplicate_of}")
    if f.is_unsupported_audio:
        ext = Path(f.path).suffix.lower()
        return reject(
            "unsupported_format",
            f"libsndfile cannot decode {ext} ({f.probe_error}); convert it first, e.g. "
            f"`ffmpeg -i in{ext} out.flac`",
        )
    return undecodable(f.probe_error, f.is_audio_extension)


class UsageError(ValueError):
    """A run refused before any work began (a bad path or flag): the CLI's exit 2."""


def check_run_paths(
    input_root: str | Path, output: str | Path, workers: int | None = None
) -> tuple[Path, Path]:
    """The input and output as absolute paths, or UsageError with one line: judged
    before OUT is locked or created."""
    input_root = Path(input_root).resolve()
    out = Path(output).resolve()
    if not input_root.is_dir():
        raise UsageError(f"input {input_root} is not a directory")
    if workers is not None and workers <= 0:
        raise UsageError(f"--workers {workers}: expected a positive number of workers")
    if out == input_root or input_root in out.parents:
        raise UsageError(f"output {out} must not lie inside the input {input_root}")
    if out in input_root.parents:  # --overwrite clears OUT's folders: the input with them
        raise UsageError(f"input {input_root} must not lie inside the output {out}")
    return input_root, out


def run_pipeline(
    input_root: str | Path,
    output: str | Path,
    cfg: PreprocessConfig,
    workers: int | None = None,
    address: str | None = None,
    overwrite: bool = False,
    keep_work: bool = False,
    scan_only: bool = False,
    dashboard: bool = False,
    stop_ray_in_background: bool = False,
) -> dict[str, Any]:
    """Preprocess `input_root` into `output`; returns index.json's content.

    `scan_only` runs the same planning, actors and kernels but writes no shards: the
    files.jsonl, stats.zarr and index.json that `preprocess.diagnose` reads.
    `stop_ray_in_background` (the CLIs) lets assembly and the report overlap a local Ray's
    shutdown; see `ray_session`. OUT is locked for the whole run (`out/lock.py`): a run on
    an OUT another process holds raises OutputLocked having touched nothing.
    """
    from preprocess.out.assemble import Outcome, assemble

    input_root, out = check_run_paths(input_root, output, workers)
    with output_lock(out):  # before OUT is read, cleared or written: one run per OUT
        claim_output(out, input_root, cfg, overwrite)  # before Ray starts or anything is written
        work = out / ".work"
        work.mkdir(exist_ok=True)
        log.info("preprocess: %s → %s", input_root, out)
        log.info(config_line(cfg))
        clock = PhaseClock()
        clock.begin("start-up: Ray")
        with ray_session(address, workers, dashboard, stop_ray_in_background) as session:
            clock.end()
            done = _run_on_ray(
                input_root, out, cfg, work, session.workers, scan_only, overwrite, clock
            )
        # Thread CPU: a local Ray may be stopping in another thread of this process meanwhile.
        t_assemble, cpu_assemble = time.perf_counter(), time.thread_time()
        index = assemble(
            out,
            work,
            cfg,
            Outcome(done.units, done.rounds.records, done.plan_records, done.rounds.split),
            done.rounds.groups,
            input_root,
            done.digest,
            scan_only,
            clock,
        )
        assembly = {
            "cpu": {"assemble": time.thread_time() - cpu_assemble},
            "wall": {"assemble": time.perf_counter() - t_assemble},
        }
        if not keep_work:
            for scratch in ("units", "groups", WARM_UP_DIR):
                shutil.rmtree(work / scratch, ignore_errors=True)
    # Run figures for the benchmark (keys with "_" are never written to index.json): the
    # pipeline's own time, Ray up to units done plus assembly; Ray's start and stop are
    # fixed costs the benchmark times apart.
    index["_elapsed_s"] = done.wall_s + assembly["wall"]["assemble"]
    index["_worker_peak_rss_mb"] = done.peak_rss_mb
    add_times(done.stage_times, assembly)
    index["_stage_times"] = done.stage_times
    index["_worker_cpu_s"] = done.worker_cpu_s
    index["_worker_startup_cpu_s"] = done.worker_startup_cpu_s
    index["_utilization"] = done.utilization
    index["_driver_cpu_s"] = done.driver_cpu_s + assembly["cpu"]["assemble"]
    index["_phases"] = clock.rows
    return index


@dataclass
class _Rounds:
    """What the two rounds of `_run_units` decided, for assembly, and their run figures."""

    records: dict[int, list[dict[str, Any]]]  # unit → its files.jsonl records
    split: SplitPlan
    groups: list[ShardGroup]
    figures: dict[str, Any]


def _run_units(
    units: list[WorkUnit],
    files: list[InputFile],
    plan_records: list[dict[str, Any]],
    input_root: Path,
    work: Path,
    cfg: PreprocessConfig,
    actors: list[Any],
    clock: PhaseClock,
    scan_only: bool = False,
) -> _Rounds:
    """Two rounds on the worker actors (`schedule.run_on_pool`; a dead worker's task goes
    out again), with the split between them:

    1. scan: every unit not yet committed (scan, decide, cut, encode into its spool);
    2. the split of the kept audio (`assign_splits`) and the shard groups packed from it
       (`make_shard_groups`); then every group not yet committed is written, each as soon
       as its units are (a rerun redoes a unit whose spool a group still needs).

    A unit is reused only with its `unit_key`; a group only with its `group_key` (split,
    members and their units' keys) and all its shard parts. The run log
    `work/run-log.jsonl` gets one line per unit and group (node, process, CPU, time).
    """
    by_path = {f.path: f for f in files}
    keys = {u.unit_id: unit_key(u, by_path, cfg) for u in units}
    todo = [
        u for u in units if not unit_is_done(work, u.unit_id, keys[u.unit_id], scan_only, False)
    ]
    total_files = sum(len(u.paths) for u in units)
    pool = ActorTasks(actors)
    todo_files = sum(len(u.paths) for u in todo)
    with _phase_bar(clock, "scan", "scan", total_files, todo_files, "file") as bar:
        figures = run_on_pool(todo, {}, keys, by_path, pool, work, scan_only, bar)
    clock.begin("split + shard groups")
    records = {u.unit_id: read_unit_records(work, u.unit_id) for u in units}
    every = [r for rs in records.values() for r in rs] + plan_records
    split = assign_splits(kept_items(every), cfg)
    if scan_only:
        clock.end()
        return _Rounds(records, split, [], figures)
    groups = make_shard_groups(units, records, split.split_of, cfg)
    # The groups that read the most units first (val's, whose files are spread over most
    # units): their spools are freed soonest, so scratch peaks near the encoded corpus.
    # Write order never changes a byte.
    pending = {
        g.group_id: g
        for g in sorted(groups, key=lambda g: (-len(g.unit_ids()), g.group_id))
        if not group_is_done(work, g.group_id, group_key(g, keys, cfg.digest()))
    }
    needed = {u for g in pending.values() for u in g.unit_ids()}
    redo = [
        u
        for u in units
        if u.unit_id in needed and not unit_is_done(work, u.unit_id, keys[u.unit_id])
    ]
    crashed = {p: CRASHED_DETAIL for u in redo for p in _crashed_files(work, u.unit_id)}
    clock.end()
    with _phase_bar(clock, "shard", "shard", len(groups), len(pending), "shard") as bar:
        second = run_on_pool(redo, pending, keys, by_path, pool, work, False, bar, crashed)
    _merge_figures(figures, second)
    _check_redone(work, redo, records)
    return _Rounds(records, split, groups, figures)


class RedoDiffers(RuntimeError):
    """A unit redone for its spool decided differently from the records the split was
    planned on; the message is one line for the CLI."""


def _check_redone(work: Path, redo: list[WorkUnit], records: dict[int, list[dict]]) -> None:
    """A unit redone in the shard round (its spool was freed) must give the records the
    split and the groups were planned from; otherwise shards and files.jsonl would
    disagree. It can differ only when a worker died reading one of its files this time."""
    for unit in redo:
        again = read_unit_records(work, unit.unit_id)
        if again != records[unit.unit_id]:
            changed = [
                a["path"] for a, b in zip(again, records[unit.unit_id], strict=False) if a != b
            ]
            raise RedoDiffers(
                f"unit {unit.unit_id}, redone for its samples, decided otherwise than at first "
                f"({', '.join(changed[:3]) or 'its files'}: a worker died reading it?); run "
                "the same command again to plan from what is on disk now"
            )


@contextmanager
def _phase_bar(
    clock: PhaseClock, phase: str, desc: str, total: int, todo: int, unit: str
) -> Iterator[tqdm]:
    """A phase of `clock` with its progress bar: `total` items, `todo` of them still to do."""
    with (
        clock.phase(phase),
        tqdm(total=total, initial=total - todo, desc=desc, unit=unit, dynamic_ncols=True) as bar,
    ):
        yield bar


def _crashed_files(work: Path, unit_id: int) -> list[str]:
    """Files that killed a worker when this unit was first run (its done.json), so a
    rerun that redoes the unit for its spool does not read them again."""
    try:
        return json.loads((unit_dir(work, unit_id) / "done.json").read_text())["crashed"]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def _merge_figures(into: dict[str, Any], more: dict[str, Any]) -> None:
    into["peak_rss_mb"] = max(into["peak_rss_mb"], more["peak_rss_mb"])
    add_times(into["stage_times"], more["stage_times"])
    for worker, spans in more["spans"].items():
        into["spans"].setdefault(worker, []).extend(spans)


def config_line(cfg: PreprocessConfig) -> str:
    """The settings a person checks first, on one short line; index.json keeps them all."""
    norm = f"{cfg.target_lufs:g} LUFS" if cfg.normalize else "off"
    return (
        f"config: preset {cfg.preset}, utterances ≤ {cfg.max_utterance_seconds:g} s at "
        f"{cfg.sample_rate} Hz, normalize {norm}, val {100 * cfg.val_fraction:g} % by "
        f"{cfg.split_by} (≥ {cfg.min_val_seconds:g} s), {cfg.shard_mb:g} MB shards "
        "(all settings: index.json)"
    )


@dataclass
class _RayWork:
    """What the Ray part of a run hands to assembly, plus its run figures."""

    units: list[WorkUnit]
    plan_records: list[dict[str, Any]]
    rounds: _Rounds
    digest: str
    stage_times: dict[str, dict[str, float]]
    peak_rss_mb: float
    worker_cpu_s: float
    worker_startup_cpu_s: float
    utilization: dict[str, float]  # schedule.utilization of the units and group writes
    wall_s: float  # from Ray up to here: Ray's own start and stop are timed apart
    driver_cpu_s: float


def _run_on_ray(
    input_root: Path,
    out: Path,
    cfg: PreprocessConfig,
    work: Path,
    workers: int,
    scan_only: bool,
    overwrite: bool,
    clock: PhaseClock,
) -> _RayWork:
    """Plan and process every unit and shard group on actors; Ray is up."""
    t0, cpu0 = time.perf_counter(), time.process_time()
    # One CPU each, spread: on a cluster, actors go to every node rather than filling the
    # first (an actor holds no CPU by default, and SPREAD alone put both on one node).
    cpus = int(ray.cluster_resources().get("CPU", workers))
    if workers > cpus:
        log.info("%d workers asked, the cluster has %d CPUs: using %d", workers, cpus, cpus)
        workers = max(1, cpus)
    # A worker that dies (out of memory, a native decoder's crash) is restarted by Ray;
    # schedule.run_on_pool sends its task out again, so a death costs a task, not the run.
    spread = UnitWorker.options(
        num_cpus=1, scheduling_strategy="SPREAD", max_restarts=-1, max_task_retries=0
    )
    clock.begin("start-up: actors")
    actors = [spread.remote(str(input_root), str(work), cfg.to_dict()) for _ in range(workers)]
    try:
        for warning in sorted({w for w in ray.get([a.started.remote() for a in actors]) if w}):
            log.warning(warning.removeprefix("preprocess: warning: "))
        clock.end()
        clock.workers_cpu = lambda: _workers_cpu(actors)
        files = _plan(input_root, cfg, work, actors, clock)
        with clock.phase("plan: dedupe, units"):
            digest = input_digest(files)
            check_input_unchanged(out, files, digest, overwrite)
            check_split(files, cfg)  # its errors before the scan, the split after it
            units = make_units(files, cfg)
            plan_records = [
                file_record(f, plan_decision(f)) for f in files if not needs_decoding(f)
            ]
        rounds = _run_units(
            units, files, plan_records, input_root, work, cfg, actors, clock, scan_only
        )
        usage = ray.get([a.usage.remote() for a in actors])
    finally:
        clock.workers_cpu = None
        for actor in actors:
            ray.kill(actor)
    figures = rounds.figures
    times = figures["stage_times"]
    for u in usage:
        add_times(times, u["stage_times"])
    return _RayWork(
        units=units,
        plan_records=plan_records,
        rounds=rounds,
        digest=digest,
        stage_times=times,
        peak_rss_mb=figures["peak_rss_mb"],
        worker_cpu_s=sum(u["process_cpu_s"] for u in usage),
        worker_startup_cpu_s=sum(u["startup_cpu_s"] for u in usage),
        utilization=utilization(figures["spans"], workers),
        wall_s=time.perf_counter() - t0,
        driver_cpu_s=time.process_time() - cpu0,
    )
