"""Work order on the actor pool (preprocess/actors/schedule.py) and the actors' warm-up, without
Ray: a pool stand-in runs each task when it is taken back."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from tqdm import tqdm

from preprocess.actors.schedule import (
    MAX_WORKER_DEATHS,
    TaskFailed,
    WorkerDeaths,
    fingerprint_on,
    run_on_pool,
    utilization,
)
from preprocess.actors.unit import (
    IN_PROGRESS,
    SPOOL_NAME,
    WARM_UP_DIR,
    InProgressMarker,
    start_worker,
    take_file_in_progress,
    warm_up,
)
from preprocess.config import load_config
from preprocess.measure import stage_times
from preprocess.plan.planner import InputFile, ShardGroup, WorkUnit

_TIMES = {"cpu": {"segment": 0.01}, "wall": {"segment": 0.01}}


class _Pool:
    """ActorTasks' submit/has_free/has_next/get_next_unordered over `actors` fake actors;
    records the order tasks were submitted in. A unit in `die` dies (TaskFailed) while
    reading the file given there, as many times as it is listed."""

    def __init__(self, actors: int, work=None, die: dict[int, list[str]] | None = None):
        self.free, self.pending, self.order = actors, [], []
        self.work, self.die, self.crashed_seen, self.deaths = work, die or {}, [], 0
        self.spools_seen: list[list[int]] = []
        self.actor = SimpleNamespace(
            process=SimpleNamespace(remote=self._process),
            write_group=SimpleNamespace(remote=self._write_group),
        )

    def _process(self, unit: dict, table: list, scan_only: bool, crashed: dict) -> dict:
        self.order.append(f"u{unit['unit_id']}")
        self.crashed_seen.append(dict(crashed))
        if self.die.get(unit["unit_id"]):
            reading = self.die[unit["unit_id"]].pop(0)
            partial = self.work / "units" / f"unit-{unit['unit_id']:06d}.partial"
            partial.mkdir(parents=True, exist_ok=True)
            if reading is not None:  # None: died before its first file
                (partial / IN_PROGRESS).write_text(reading)
            self.deaths += 1
            return TaskFailed(("unit", unit["unit_id"]), RuntimeError("actor died"))
        return {
            "unit_id": unit["unit_id"],
            "files": len(unit["paths"]),
            "seconds": 10.0,
            "_stage_times": _TIMES,
            "_peak_rss_mb": 100.0,
        }

    def _write_group(self, group: dict, unit_keys: dict) -> dict:
        self.order.append(f"g{group['group_id']}")
        self.spools_seen.append(sorted(_spools(self.work)) if self.work else [])
        return {
            "shard_group": group["group_id"],
            "units": sorted({u for u, _ in group["members"]}),
            "shards": [{}],
            "_stage_times": _TIMES,
        }

    def has_free(self) -> bool:
        return self.free > 0

    def submit(self, fn, tag) -> None:
        assert self.free > 0, "a task went to a busy actor"
        self.free -= 1
        self.pending.append(fn(self.actor, tag))

    def has_next(self) -> bool:
        return bool(self.pending)

    def get_next_unordered(self) -> dict:
        self.free += 1
        n = len(self.order)
        result = self.pending.pop(0)
        if isinstance(result, TaskFailed):
            raise result
        return result | {"_node_id": "node", "_pid": 1, "_span": [n, n + 1.0]}


def _units(groups: list[list[int]]) -> tuple[list[WorkUnit], dict[int, ShardGroup]]:
    """Units 0…n with one file each, and shard groups taking that file of the units listed
    (a unit may be listed by several groups: its files split between them)."""
    ids = sorted({i for g in groups for i in g})
    units = [WorkUnit(i, [f"f{i}.wav"], 10.0) for i in ids]
    by_group = {g: ShardGroup(g, "train", [(i, 0) for i in us]) for g, us in enumerate(groups)}
    return units, by_group


def _spools(work) -> list[int]:
    """Units whose spool is on disk under `work`."""
    return [int(p.parent.name[5:]) for p in work.glob(f"units/unit-*/{SPOOL_NAME}")]


def _run(todo, groups, units, tmp_path, actors=1, pool=None) -> list[str]:
    pool = pool or _Pool(actors)
    by_path = {
        p: InputFile(path=p, bytes=1, sha256="x", is_audio_extension=True)
        for u in units
        for p in u.paths
    }
    keys = {u.unit_id: f"k{u.unit_id}" for u in units}
    with tqdm(total=len(by_path), disable=True) as bar:
        figures = run_on_pool(todo, groups, keys, by_path, pool, tmp_path, False, bar)
    assert figures["stage_times"]["cpu"]["segment"] == pytest.approx(
        0.01 * (len(pool.order) - pool.deaths)
    )
    assert pool.free == actors
    return pool.order


def test_a_group_is_written_as_soon_as_its_units_are_done(tmp_path):
    """Before: every group waited for the last unit (u0 u1 u2 u3 g0 g1)."""
    units, groups = _units([[0, 1], [2, 3]])
    assert _run(units, groups, units, tmp_path) == ["u0", "u1", "g0", "u2", "u3", "g1"]


def test_groups_whose_units_a_killed_run_finished_go_first(tmp_path):
    units, groups = _units([[0, 1], [2, 3]])
    todo = [u for u in units if u.unit_id >= 2]  # units 0 and 1 committed, group 0 not
    assert _run(todo, groups, units, tmp_path) == ["g0", "u2", "u3", "g1"]


def test_a_dead_workers_unit_goes_out_again(tmp_path):
    """A worker killed once (out of memory, say) costs its task, not the run."""
    units, groups = _units([[0, 1]])
    pool = _Pool(1, tmp_path, die={1: ["f1.wav"]})
    assert _run(units, groups, units, tmp_path, pool=pool) == ["u0", "u1", "u1", "g0"]
    assert pool.crashed_seen == [{}, {}, {}]  # once is chance: the file is read again


def test_a_file_that_kills_its_worker_twice_is_rejected_and_the_run_goes_on(tmp_path):
    units, groups = _units([[0]])
    units[0] = WorkUnit(0, ["a.wav", "bad.wav"], 10.0)
    pool = _Pool(1, tmp_path, die={0: ["bad.wav", "bad.wav"]})
    assert _run(units, groups, units, tmp_path, pool=pool) == ["u0", "u0", "u0", "g0"]
    assert pool.crashed_seen[:2] == [{}, {}]
    assert list(pool.crashed_seen[2]) == ["bad.wav"]
    assert "died twice while reading this file" in pool.crashed_seen[2]["bad.wav"]


def test_the_in_progress_marker_names_the_last_file_even_after_a_longer_one(tmp_path):
    """The worker rewrites the marker in place for every file; a dead worker's marker must
    name the file it was reading, not the tail of a longer path read before it."""
    partial = tmp_path / "units" / "unit-000003.partial"
    partial.mkdir(parents=True)
    marker = InProgressMarker(partial / IN_PROGRESS)
    marker.reading("folder/a-long-file-name-read-first.wav")
    marker.reading("తెలుగు/b.wav")
    marker.close()  # the worker died here: the file stays
    assert take_file_in_progress(tmp_path, 3) == "తెలుగు/b.wav"
    assert take_file_in_progress(tmp_path, 3) is None  # taken once


def test_workers_that_keep_dying_stop_the_run_with_one_line(tmp_path):
    units, groups = _units([[0]])
    pool = _Pool(1, tmp_path, die={0: [None] * (MAX_WORKER_DEATHS + 1)})
    with pytest.raises(WorkerDeaths, match="run the same command again to resume"):
        _run(units, groups, units, tmp_path, pool=pool)


def test_two_actors_run_every_task_once_and_log_each(tmp_path):
    units, groups = _units([[0], [1, 2], [3, 4, 5]])
    order = _run(units, groups, units, tmp_path, actors=2)
    assert sorted(order) == sorted([f"u{i}" for i in range(6)] + ["g0", "g1", "g2"])
    for g, group in groups.items():  # a group after all of its units
        assert all(order.index(f"u{u}") < order.index(f"g{g}") for u in group.unit_ids())
    log = [json.loads(line) for line in (tmp_path / "run-log.jsonl").read_text().splitlines()]
    assert len(log) == 9 and all(e["end"] > e["start"] for e in log)


def test_a_units_spool_is_freed_once_no_group_still_needs_it(tmp_path):
    """Unit 1's files went to both splits: its spool outlives the first group's write and
    is gone after the second; units no group reads keep theirs (a later round may)."""
    units, groups = _units([[0, 1], [1, 2]])
    for u in [0, 1, 2, 3]:
        (tmp_path / "units" / f"unit-{u:06d}").mkdir(parents=True)
        (tmp_path / "units" / f"unit-{u:06d}" / SPOOL_NAME).write_bytes(b"x")
    pool = _Pool(1, tmp_path)
    assert _run([], groups, units, tmp_path, pool=pool) == ["g0", "g1"]
    assert pool.spools_seen == [[0, 1, 2, 3], [1, 2, 3]]
    assert sorted(_spools(tmp_path)) == [3]


def test_utilization_counts_busy_time_and_the_idle_tail():
    spans = {"a": [(0.0, 2.0), (2.0, 4.0)], "b": [(0.0, 3.0)]}
    u = utilization(spans, workers=2)
    assert u["window_s"] == 4.0
    assert u["busy"] == pytest.approx(7.0 / 8.0)
    assert u["tail_idle_s"] == pytest.approx(1.0)  # b waited from 3 s to 4 s
    idle_worker = utilization(spans, workers=3)  # one worker never got a task
    assert idle_worker["tail_idle_s"] == pytest.approx(5.0)
    assert utilization({}, workers=2)["busy"] == 0.0


@pytest.mark.parametrize(
    "knobs", [{}, {"max_utterance_seconds": 1.0}, {"min_utterance_seconds": 4.0}]
)
def test_worker_warm_up_keeps_its_file_and_leaves_no_scratch(tmp_path, knobs):
    """The warm-up file must go through the whole path (a rejected one would skip the
    cutting and encode code), whatever the utterance cap and minimum."""
    cfg = load_config(**knobs)
    assert warm_up(cfg, tmp_path) == "kept"
    assert list((tmp_path / WARM_UP_DIR).iterdir()) == []


def test_a_failed_warm_up_is_one_warning_and_leaves_no_laps(tmp_path):
    """A worker whose warm-up fails still starts (the first unit pays the cost instead),
    and neither a failed nor a good warm-up leaves laps for the first unit's stage times."""
    cfg = load_config()
    blocked = tmp_path / "work"
    blocked.write_text("a file where the work dir should be")  # the scratch dir can't be made
    warning = start_worker(cfg, blocked)
    assert warning.startswith("preprocess: warning: worker warm-up failed")
    assert "\n" not in warning
    assert stage_times.CLOCK.take() == {"cpu": {}, "wall": {}}
    assert start_worker(cfg, tmp_path) is None  # good: its decode/segment laps discarded too
    assert stage_times.CLOCK.take() == {"cpu": {}, "wall": {}}


def test_a_probe_batch_whose_worker_died_goes_out_again():
    class Probes:
        def __init__(self):
            self.sent, self.running, self.failed_once = [], [], False

        def has_free(self):
            return not self.running

        def submit(self, fn, batch):
            self.sent.append(batch)
            self.running.append(batch)

        def has_next(self):
            return bool(self.running)

        def get_next_unordered(self):
            batch = self.running.pop()
            if batch == ["b.wav"] and not self.failed_once:
                self.failed_once = True
                raise TaskFailed(batch, RuntimeError("actor died"))
            return [{"path": p} for p in batch]

    pool = Probes()
    got = [r["path"] for recs in fingerprint_on(pool, [["a.wav"], ["b.wav"]]) for r in recs]
    assert got == ["a.wav", "b.wav"] and pool.sent == [["a.wav"], ["b.wav"], ["b.wav"]]


def test_the_phase_clock_records_each_phase_in_order_with_the_workers_cpu():
    from preprocess.measure.stage_times import PhaseClock

    clock, spent = PhaseClock(), iter([10.0, 12.5, 12.5, 20.0])
    with clock.phase("listing"):  # no workers yet: their CPU is unknown, not 0
        pass
    clock.workers_cpu = lambda: next(spent)
    with clock.phase("scan"):
        pass
    clock.begin("shard")
    clock.end()
    clock.end()  # nothing open: nothing recorded
    assert [r["phase"] for r in clock.rows] == ["listing", "scan", "shard"]
    assert [r["workers_cpu_s"] for r in clock.rows] == [None, 2.5, 7.5]
    assert all(r["wall_s"] >= 0 and r["driver_cpu_s"] >= 0 for r in clock.rows)
    lines = clock.lines()
    assert lines[0].startswith("phase") and lines[-1].startswith("total")
    assert len(lines) == 5 and lines[2].split()[-1] == "2.5"


def test_a_phase_that_fails_keeps_its_error_and_never_asks_the_workers():
    """A phase ending in WorkerDeaths must end the run with that one line: asking dead
    or restarting actors for their CPU raised RayActorError over it (or hung)."""
    from preprocess.measure.stage_times import PhaseClock

    clock = PhaseClock()
    asked = []
    clock.workers_cpu = lambda: asked.append(1) or 5.0
    with pytest.raises(WorkerDeaths, match="died"), clock.phase("scan"):
        raise WorkerDeaths("worker processes died 21 times")
    assert asked == [1]  # once at the start, not at the failed end
    assert clock.rows[0]["phase"] == "scan" and clock.rows[0]["workers_cpu_s"] is None
    clock.workers_cpu = lambda: None  # an actor that cannot answer: no figure, no error
    with clock.phase("shard"):
        pass
    assert clock.rows[1]["workers_cpu_s"] is None


def test_a_unit_redone_for_its_spool_must_decide_as_it_did_at_first(tmp_path):
    from preprocess.pipeline import RedoDiffers, _check_redone

    first = [{"path": "a.wav", "status": "kept"}, {"path": "b.wav", "status": "kept"}]
    udir = tmp_path / "units" / "unit-000003"
    udir.mkdir(parents=True)
    (udir / "files.jsonl").write_text("".join(json.dumps(r) + "\n" for r in first))
    unit = WorkUnit(3, ["a.wav", "b.wav"])
    _check_redone(tmp_path, [unit], {3: first})  # the same: fine
    again = [first[0], {"path": "b.wav", "status": "rejected"}]
    (udir / "files.jsonl").write_text("".join(json.dumps(r) + "\n" for r in again))
    with pytest.raises(RedoDiffers, match=r"unit 3, redone .* \(b\.wav: a worker died"):
        _check_redone(tmp_path, [unit], {3: first})
