"""Run work units and shard-group writes on the actor pool, each group as soon as its units
are done.

A run has two rounds (`preprocess.pipeline`): every unit, then, once the split is decided
on the kept audio, the shard groups (with any unit a rerun must redo for them, each group
as soon as its units are). A unit's spool is freed as soon as no group still to be
written needs it. Tasks go out only to a free actor: `ActorPool` queues the rest first in,
first out, which would put a ready group behind every unit. The order of the work never
changes a byte of the output: units and groups commit independently, from the plan and
the decisions alone.

A worker process that dies (out of memory, a crash in a native decoder) costs its task,
not the run: Ray restarts the actor and the task goes out again. A file that was being
read when the same unit's worker died twice is rejected `corrupt` and not read again, so
a file that crashes its decoder every time cannot stop the job either.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tqdm import tqdm

from preprocess.actors.unit import free_spool, take_file_in_progress
from preprocess.measure.stage_times import add_times
from preprocess.plan.planner import InputFile, ShardGroup, WorkUnit

# Worker deaths a run survives before it stops with an error: a worker that cannot even
# start (its warm-up crashing) must not restart forever.
MAX_WORKER_DEATHS = 20
CRASHED_DETAIL = (
    "the worker process died twice while reading this file (a crash in its decoder, or "
    "out of memory); not read again"
)


class TaskFailed(RuntimeError):
    """A task's worker died; `tag` is what was submitted with it."""

    def __init__(self, tag: Any, cause: BaseException):
        super().__init__(f"{tag}: {cause}")
        self.tag = tag


class WorkerDeaths(RuntimeError):
    """Workers kept dying; the message is one line for the CLI."""


def _count_death(died: int, where: str) -> int:
    """`died` + 1, or WorkerDeaths once that passes MAX_WORKER_DEATHS (one budget per run
    phase, so a worker that cannot start does not restart forever)."""
    died += 1
    if died > MAX_WORKER_DEATHS:
        raise WorkerDeaths(
            f"worker processes died {died} times (the last {where}): out of memory? "
            "Finished work is kept: run the same command again to resume"
        )
    return died


class ActorTasks:
    """Ray's ActorPool submit/has_free/has_next/get_next_unordered over `actors`, except
    that a task whose actor died raises TaskFailed with its tag (ActorPool drops the
    failed task and raises the bare error, so it could not be sent out again)."""

    def __init__(self, actors: list[Any]):
        self._free = deque(actors)
        self._running: dict[Any, tuple[Any, Any]] = {}

    def has_free(self) -> bool:
        return bool(self._free)

    def submit(self, fn: Callable, tag: Any) -> None:
        actor = self._free.popleft()
        self._running[fn(actor, tag)] = (actor, tag)

    def has_next(self) -> bool:
        return bool(self._running)

    def get_next_unordered(self) -> Any:
        import ray

        [ref], _ = ray.wait(list(self._running), num_returns=1)
        actor, tag = self._running.pop(ref)
        try:
            result = ray.get(ref)
        # OutOfMemoryError: Ray's memory monitor killed the worker (it acts before the
        # kernel's OOM killer), a RayError but not a RayActorError.
        except (ray.exceptions.RayActorError, ray.exceptions.OutOfMemoryError) as exc:
            _wait_until_alive(actor)  # else a task sent now fails on the dead process too
            self._free.append(actor)
            raise TaskFailed(tag, exc) from exc
        self._free.append(actor)
        return result


RESTART_WAIT_S = 180.0  # a restart is a worker start and warm-up: seconds, even on a busy node


def _wait_until_alive(actor: Any) -> None:
    """Return once Ray has restarted a dead actor (max_restarts) and it answers; raise
    WorkerDeaths if it does not within RESTART_WAIT_S."""
    import ray

    deadline = time.monotonic() + RESTART_WAIT_S
    while time.monotonic() < deadline:
        try:
            ray.get(actor.__ray_ready__.remote(), timeout=10)
            return
        except ray.exceptions.RayActorError as exc:
            if getattr(exc, "actor_init_failed", False):  # dead for good: no restart comes
                first_line = (str(exc).strip().splitlines() or [""])[0]
                raise WorkerDeaths(f"a worker process could not start again: {first_line}") from exc
            time.sleep(0.2)
        except ray.exceptions.GetTimeoutError:
            pass
    raise WorkerDeaths(
        f"a worker process died and did not come back within {RESTART_WAIT_S:g} s; "
        "finished units are kept: run the same command again to resume"
    )


def run_on_pool(
    todo: list[WorkUnit],
    groups: dict[int, ShardGroup],
    keys: dict[int, str],
    by_path: dict[str, InputFile],
    pool: Any,
    work: Path,
    scan_only: bool,
    bar: tqdm,
    crashed: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Process `todo` and write `groups` (those not yet committed) on `pool` (an
    ActorTasks); returns run figures (peak worker RSS in MB, summed stage times, each
    worker's busy spans). `crashed` names files an earlier round found killing a worker
    (not read again). A unit's spool is deleted once every group in `groups` that takes
    samples from it is written. Appends one line per unit and group (node, process, CPU
    seconds, start and end) to `work/run-log.jsonl`. Raises WorkerDeaths past
    MAX_WORKER_DEATHS."""
    figures: dict[str, Any] = {"peak_rss_mb": 0.0, "stage_times": {}, "spans": {}}
    units = deque(todo)
    todo_ids = {u.unit_id for u in todo}
    waiting = {g: set(group.unit_ids()) & todo_ids for g, group in groups.items()}
    ready = deque(g for g, left in waiting.items() if not left)
    groups_of_unit: dict[int, list[int]] = {}  # unit → the groups that read its spool
    for g, group in groups.items():
        for unit_id in group.unit_ids():
            groups_of_unit.setdefault(unit_id, []).append(g)
    # unit → groups still to be written that read its spool
    needed_by = Counter({u: len(gs) for u, gs in groups_of_unit.items()})
    hours, t0 = 0.0, time.perf_counter()

    by_id = {u.unit_id: u for u in todo}
    for unit in todo:  # a marker left by a killed run names nothing this run read
        take_file_in_progress(work, unit.unit_id)
    crashed = dict(crashed or {})  # files that killed a worker twice → their detail
    died_reading: dict[tuple[int, str], int] = {}  # (unit, file in progress) → deaths
    died = 0

    def next_task() -> tuple[Callable, tuple[str, int]] | None:
        if ready:
            group = groups[ready.popleft()]
            unit_keys = {u: keys[u] for u in group.unit_ids()}
            return lambda a, _: a.write_group.remote(group.to_dict(), unit_keys), (
                "group",
                group.group_id,
            )
        if units:
            unit = units.popleft()
            table = [vars(by_path[p]) for p in unit.paths]
            skip = {p: crashed[p] for p in unit.paths if p in crashed}
            return lambda a, _: a.process.remote(unit.to_dict(), table, scan_only, skip), (
                "unit",
                unit.unit_id,
            )
        return None

    def send_again(tag: tuple[str, int]) -> None:
        nonlocal died
        kind, ident = tag
        where = f"shard group {ident}" if kind == "group" else f"unit {ident}"
        died = _count_death(died, f"on {where}")
        if kind == "group":
            ready.appendleft(ident)
            tqdm.write(
                f"preprocess: warning: a worker died writing {where}; sending it again",
                file=sys.stderr,
            )
            return
        path = take_file_in_progress(work, ident)
        reading = f"reading {path}" if path else "before its first file"
        if path:
            died_reading[(ident, path)] = died_reading.get((ident, path), 0) + 1
        if path and died_reading[(ident, path)] >= 2:
            crashed[path] = CRASHED_DETAIL
            tqdm.write(
                f"preprocess: warning: a worker died twice {reading} ({where}): "
                "that file is rejected as corrupt",
                file=sys.stderr,
            )
        else:
            tqdm.write(
                f"preprocess: warning: a worker died {reading} ({where}); sending it again",
                file=sys.stderr,
            )
        units.appendleft(by_id[ident])

    with open(work / "run-log.jsonl", "a", encoding="utf-8") as log:
        while True:
            while pool.has_free() and (task := next_task()) is not None:
                pool.submit(*task)
            if not pool.has_next():
                break
            try:
                done = pool.get_next_unordered()
            except TaskFailed as failed:
                send_again(failed.tag)
                continue
            add_times(figures["stage_times"], done["_stage_times"])
            if "unit_id" in done:
                entry = {k: done[k] for k in ("unit_id", "files", "seconds")}
                entry["cpu_s"] = round(sum(done["_stage_times"]["cpu"].values()), 4)
                figures["peak_rss_mb"] = max(figures["peak_rss_mb"], done["_peak_rss_mb"])
                for group in groups_of_unit.get(done["unit_id"], ()):
                    waiting[group].discard(done["unit_id"])
                    if not waiting[group]:
                        ready.append(group)
                if not groups:  # the scan round counts files; the shard round, groups
                    hours += done["seconds"] / 3600.0
                    bar.update(done["files"])
                    rate = hours / max(time.perf_counter() - t0, 1e-9)
                    bar.set_postfix_str(f"{hours:.2f} h audio, {rate * 3600:.0f} audio-s/s")
            else:
                entry = {"shard_group": done["shard_group"], "shards": len(done["shards"])}
                for unit_id in done["units"]:
                    needed_by[unit_id] -= 1
                    if needed_by[unit_id] == 0:
                        free_spool(work, unit_id)
                bar.update(1)
            start, end = done["_span"]
            worker = f"{done['_node_id']}:{done['_pid']}"
            figures["spans"].setdefault(worker, []).append((start, end))
            entry.update(node_id=done["_node_id"], pid=done["_pid"])
            entry.update(start=round(start, 3), end=round(end, 3))
            log.write(json.dumps(entry) + "\n")
            log.flush()
    return figures


def fingerprint_on(pool: Any, batches: list[list[str]]) -> Iterator[list[dict]]:
    """Hash-and-probe records of every batch, in completion order, on `pool` (an
    ActorTasks); a batch whose worker died goes out again (within MAX_WORKER_DEATHS)."""
    todo, died = deque(batches), 0
    while todo or pool.has_next():
        while pool.has_free() and todo:
            pool.submit(lambda a, batch: a.fingerprint.remote(batch), todo.popleft())
        try:
            yield pool.get_next_unordered()
        except TaskFailed as failed:
            died = _count_death(died, "while hashing and probing")
            tqdm.write(
                f"preprocess: warning: a worker died probing {failed.tag[0]} or a file "
                "after it in its batch; sending the batch again",
                file=sys.stderr,
            )
            todo.appendleft(failed.tag)


def utilization(spans: dict[str, list[tuple[float, float]]], workers: int) -> dict[str, float]:
    """How busy the workers were from the first task's start to the last one's end:
    `busy` (the share of workers × that window spent in tasks) and `tail_idle_s` (summed
    over workers: how long each sat idle after its last task while others still ran)."""
    ends = [end for s in spans.values() for _, end in s]
    starts = [start for s in spans.values() for start, _ in s]
    if not ends:
        return {"window_s": 0.0, "busy": 0.0, "tail_idle_s": 0.0}
    first, last = min(starts), max(ends)
    window = max(last - first, 1e-9)
    busy = sum(end - start for s in spans.values() for start, end in s)
    tail = sum(last - max(end for _, end in s) for s in spans.values())
    tail += (workers - len(spans)) * window  # a worker that never got a task
    return {"window_s": window, "busy": busy / (workers * window), "tail_idle_s": tail}
