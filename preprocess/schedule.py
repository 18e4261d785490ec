"""Run work units and shard-group writes on the actor pool, each group as soon as its units
are done.

A group whose units are all committed goes ahead of the remaining units, so its units'
spools are freed early and one long unit does not hold back every group's write. (On the
benchmark corpus, units of ≈120 s kept the idle tail under 0.2 worker-seconds either way:
docs/BENCHMARKS.md §4.) Tasks go out only to a free actor: `ActorPool` queues the rest
first in, first out, which would put a ready group behind every unit. The order of the work
never changes a byte of the output: units and groups commit independently, from the plan
alone.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray.util import ActorPool
from tqdm import tqdm

from preprocess.measure.stage_times import add_times
from preprocess.plan import InputFile, WorkUnit


def run_on_pool(
    todo: list[WorkUnit],
    groups: dict[int, list[WorkUnit]],
    keys: dict[int, str],
    by_path: dict[str, InputFile],
    pool: ActorPool,
    log_path: Path,
    scan_only: bool,
    bar: tqdm,
) -> dict[str, Any]:
    """Process `todo` and write `groups` (those not yet committed); returns run figures
    (peak worker RSS in MB, summed stage times, each worker's busy spans). Appends one
    line per unit and group (node, process, CPU seconds, start and end) to `log_path`."""
    figures: dict[str, Any] = {"peak_rss_mb": 0.0, "stage_times": {}, "spans": {}}
    units = deque(todo)
    todo_ids = {u.unit_id for u in todo}
    waiting = {g: {u.unit_id for u in us} & todo_ids for g, us in groups.items()}
    ready = deque(g for g, left in waiting.items() if not left)
    hours, t0 = 0.0, time.perf_counter()

    def next_task() -> Callable | None:
        if ready:
            group = ready.popleft()
            members = groups[group]
            unit_keys = {u.unit_id: keys[u.unit_id] for u in members}
            return lambda a, _: a.write_group.remote(
                group, [u.to_dict() for u in members], unit_keys
            )
        if units:
            unit = units.popleft()
            table = [vars(by_path[p]) for p in unit.paths]
            return lambda a, _: a.process.remote(unit.to_dict(), table, scan_only)
        return None

    with open(log_path, "a", encoding="utf-8") as log:
        while True:
            while pool.has_free() and (task := next_task()) is not None:
                pool.submit(task, None)
            if not pool.has_next():
                break
            done = pool.get_next_unordered()
            add_times(figures["stage_times"], done["_stage_times"])
            if "unit_id" in done:
                entry = {k: done[k] for k in ("unit_id", "files", "seconds")}
                entry["cpu_s"] = round(sum(done["_stage_times"]["cpu"].values()), 4)
                figures["peak_rss_mb"] = max(figures["peak_rss_mb"], done["_peak_rss_mb"])
                group = done["shard_group"]
                if group in waiting:
                    waiting[group].discard(done["unit_id"])
                    if not waiting[group]:
                        ready.append(group)
                hours += done["seconds"] / 3600.0
                bar.update(done["files"])
                rate = hours / max(time.perf_counter() - t0, 1e-9)
                bar.set_postfix_str(f"{hours:.2f} h audio, {rate * 3600:.0f} audio-s/s")
            else:
                entry = {"shard_group": done["shard_group"], "shards": len(done["shards"])}
            start, end = done["_span"]
            worker = f"{done['_node_id']}:{done['_pid']}"
            figures["spans"].setdefault(worker, []).append((start, end))
            entry.update(node_id=done["_node_id"], pid=done["_pid"])
            entry.update(start=round(start, 3), end=round(end, 3))
            log.write(json.dumps(entry) + "\n")
            log.flush()
    return figures


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
