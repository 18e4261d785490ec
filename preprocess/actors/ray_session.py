"""The Ray runtime of one pipeline run: join a cluster, or start a private local one.

`ray_session` is the one owner of start, join and shutdown. A local Ray it starts
advertises 127.0.0.1, runs no dashboard unless asked, hands the thread caps to every worker
(inherited for a local Ray, through the job's runtime_env on a cluster) and, on exit, is
shut down and its temp dir (sessions, logs, sockets) removed, so a run leaves no process
and nothing in /tmp. A joined cluster (`--address`) is left running: it belongs to whoever
started it.

Ray 2.60's gRPC servers (GCS, raylet, workers) bind the wildcard address whatever the node
IP (`GrpcServer::Run` hard-codes 0.0.0.0), so a local Ray is reachable from the network;
Ray's token authentication, which a new local Ray enables unless RAY_AUTH_MODE says
otherwise, is what guards them. Its plain-HTTP Prometheus exporters have no token: the
agent's (on 0.0.0.0, a random port) is switched off with metrics collection, and the
dashboard's and autoscaler's (0.0.0.0:44227 and :44217; Ray resolves 127.0.0.1 to the
node's address, so they never bind loopback) are given a port no socket can take, the one
way Ray 2.60 leaves to keep them closed: each logs the failure to its own log and goes on.
docs/PREPROCESS.md says so. A watchdog (`ray_watchdog`) stops a local Ray whose driver was
killed with SIGKILL.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from preprocess.actors.ray_watchdog import alive

log = logging.getLogger(__name__)

# Every worker computes single-threaded: parallelism comes from actors, and nested
# OpenMP/MKL/Numba threads on the same cores only spin against each other.
WORKER_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "NUMBA_NUM_THREADS": "1",
}
# A local Ray's daemons read these at start. 65536 cannot be bound, so the dashboard's and
# the autoscaler's unauthenticated metrics servers fail to start (module docstring).
CLOSED_METRICS_PORTS = {"DASHBOARD_METRIC_PORT": "65536", "AUTOSCALER_METRIC_PORT": "65536"}
LOCAL_SYSTEM_CONFIG = {"enable_metrics_collection": False}  # no metrics HTTP on the agent
# Ray warns on every start that it enabled token auth: for a local run that is the intended
# state, not news (docs/PREPROCESS.md says it once).
_TOKEN_NOTICE_LOGGER = "ray._private.authentication.authentication_token_setup"


def available_cpus() -> int:
    """CPUs this process may actually use: its affinity mask, capped by a cgroup v2 quota."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        n = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)


class RayStartError(RuntimeError):
    """Ray could not be started or joined; the message is one line for the CLI."""


@dataclass(frozen=True)
class RaySession:
    """What the pipeline needs to know about the Ray it runs on."""

    workers: int  # actors to start
    local: bool  # True when this run started (and will stop) the Ray
    temp_dir: Path | None  # the local Ray's temp dir, removed on exit


@contextmanager
def ray_session(
    address: str | None = None,
    workers: int | None = None,
    dashboard: bool = False,
    stop_in_background: bool = False,
) -> Iterator[RaySession]:
    """Join `address` (e.g. "auto") or start a local Ray with `workers` CPUs.

    `workers` None means every CPU available: this process's (cgroup/affinity aware) for a
    local Ray, the cluster's for a joined one. A Ray already initialized in this process
    (a test, a notebook) is used as it is and left running.

    `stop_in_background`: after a block that ended normally, a local Ray is stopped by a
    thread, so the caller's next work (assembly, the report) overlaps the ≈1.5 s that
    `ray.shutdown` waits for its daemons; `wait_for_stop()` joins it, and so does the next
    `ray_session` and the interpreter's exit (the thread is not a daemon). After an error
    or Ctrl-C it is stopped before the exception leaves the block.
    """
    import ray

    wait_for_stop()
    if workers is not None and workers <= 0:
        raise ValueError(f"--workers {workers}: expected a positive number of workers")
    if ray.is_initialized():
        yield RaySession(workers or _cluster_cpus(ray), local=False, temp_dir=None)
        return
    # Workers' output stays in Ray's logs: native decoders print to stderr (libmpg123's
    # "dequantization failed" for each damaged MP3 frame), which Ray would interleave with
    # the progress bars. What a user must see comes back through task results.
    common = {
        "include_dashboard": dashboard,
        "log_to_driver": False,
        "logging_level": logging.WARNING,  # not "Started a local Ray instance." on every run
    }
    if address:
        # A cluster's workers were forked by raylets started elsewhere: the caps travel in
        # the job's runtime_env (its agent adds a few seconds to the first actor start).
        hint = "is a Ray cluster running there (`ray status`)?"
        with start_errors(f"could not join the Ray cluster at {address}", hint):
            ray.init(address=address, runtime_env={"env_vars": dict(WORKER_ENV)}, **common)
        try:
            yield RaySession(workers or _cluster_cpus(ray), local=False, temp_dir=None)
        finally:
            ray.shutdown()  # disconnects this driver; the cluster keeps running
        return
    workers = workers or available_cpus()
    root = _short_temp_root()
    reap_stale_temp_dirs(Path(root or tempfile.gettempdir()))
    temp = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=root))
    (temp / OWNER_FILE).write_text(str(os.getpid()))
    watchdog = Watchdog.start(temp)

    try:
        # A local Ray's workers inherit the raylet's environment, which is this process's
        # at ray.init: setting the caps here costs nothing, where a runtime_env made every
        # actor wait ~5 s for Ray's runtime-env agent (measured, 2 cores).
        hint = "a busy machine can time Ray's start-up out: run the command again"
        with (
            start_errors("could not start a local Ray", hint),
            environment({**WORKER_ENV, **CLOSED_METRICS_PORTS}),
            quiet_logger(_TOKEN_NOTICE_LOGGER),
        ):
            ray.init(
                num_cpus=workers,
                _temp_dir=str(temp),
                _node_ip_address="127.0.0.1",
                dashboard_host="127.0.0.1",
                _system_config=LOCAL_SYSTEM_CONFIG,
                **common,
            )
        yield RaySession(workers, local=True, temp_dir=temp)
    except BaseException:
        _stop_local(temp, watchdog)  # an error or Ctrl-C: stop now, with nothing else running
        raise
    else:
        if stop_in_background:
            _stop_in_thread(temp, watchdog)
        else:
            _stop_local(temp, watchdog)


_stopping: threading.Thread | None = None  # a local Ray being stopped in the background


class Watchdog:
    """The `ray_watchdog` process of one local Ray and the pipe that keeps it waiting."""

    def __init__(self, process: subprocess.Popen | None, pipe: int | None):
        self.process, self.pipe = process, pipe

    @classmethod
    def start(cls, temp: Path) -> Watchdog:
        """Best effort: without /proc (not Linux) or if it cannot start, the next run's
        `reap_stale_temp_dirs` is what is left for a killed run."""
        if not Path("/proc/self/fd").is_dir():
            return cls(None, None)
        read_end, write_end = os.pipe()  # not inheritable: Ray's daemons never hold it
        try:
            process = subprocess.Popen(
                [sys.executable, "-I", str(Path(__file__).with_name("ray_watchdog.py")), str(temp)],
                stdin=read_end,
                start_new_session=True,  # a terminal's Ctrl-C is the driver's to handle
            )
        except OSError:
            os.close(write_end)
            return cls(None, None)
        finally:
            os.close(read_end)
        return cls(process, write_end)

    def release(self) -> None:
        """Let it go once the Ray is stopped and its dir removed: it finds nothing to do."""
        if self.pipe is not None:
            os.close(self.pipe)
            self.pipe = None
        if self.process is not None:
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None


def _stop_local(temp: Path, watchdog: Watchdog) -> None:
    import ray

    try:
        ray.shutdown()
        # Only once Ray is down: a dir removed under live daemons would hide them from the
        # next run's reaper.
        shutil.rmtree(temp, ignore_errors=True)
    finally:
        watchdog.release()


def _stop_quietly(temp: Path, watchdog: Watchdog) -> None:
    """`_stop_local` for the background thread: a failure is one line, not a thread
    traceback (the run's output is complete by then; kill -9 leftovers are reaped by the
    next run)."""
    try:
        _stop_local(temp, watchdog)
    except Exception as exc:
        log.warning("stopping the local Ray failed: %s", exc)


def _stop_in_thread(temp: Path, watchdog: Watchdog) -> None:
    global _stopping
    _stopping = threading.Thread(target=_stop_quietly, args=(temp, watchdog), name="ray-stop")
    _stopping.start()


def wait_for_stop() -> None:
    """Return once a local Ray stopped in the background is down and its temp dir gone."""
    global _stopping
    if _stopping is not None:
        _stopping.join()
        _stopping = None


@contextmanager
def start_errors(what: str, hint: str) -> Iterator[None]:
    """Any failure of ray.init (a start-up timeout on an overloaded machine, a cluster that
    is not there) → RayStartError with its first line and `hint`, instead of Ray's
    traceback."""
    try:
        yield
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise RayStartError(f"{what}: {first[:300]} ({hint})") from exc


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """os.environ with `values` set inside the block, restored after it."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextmanager
def quiet_logger(name: str) -> Iterator[None]:
    """The logger `name` shows errors only inside the block."""
    logger = logging.getLogger(name)
    saved = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(saved)


TEMP_PREFIX = "tcray-"
OWNER_FILE = "owner.pid"  # the PID of the run that made the temp dir


def reap_stale_temp_dirs(root: Path) -> list[Path]:
    """Remove the temp dirs under `root` that killed runs left (kill -9 skips every
    `finally`): those whose owner PID is gone and that no live process names on its command
    line (a Ray daemon of that session). A dir of a live run, or one without an owner file,
    is never touched. Returns the dirs removed."""
    removed = []
    for d in sorted(root.glob(TEMP_PREFIX + "*")):
        try:
            pid = int((d / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        if alive(pid) or _named_by_a_process(str(d)):
            continue
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d)
    return removed


def _named_by_a_process(text: str) -> bool:
    """Whether any process's command line contains `text`; True when /proc cannot tell."""
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if text.encode() in (entry / "cmdline").read_bytes():
                return True
        except OSError:
            continue
    return False


def _short_temp_root() -> str | None:
    """$TMPDIR when it is short, else /tmp: Ray's socket paths under the temp dir must stay
    under ~107 characters, which a long $TMPDIR (e.g. a pytest tmp_path) would break."""
    root = os.environ.get("TMPDIR", "")
    if root and len(root) <= 48 and os.path.isdir(root):
        return root
    return "/tmp" if os.path.isdir("/tmp") else None


def _cluster_cpus(ray) -> int:
    return max(1, int(ray.cluster_resources().get("CPU", 1)))
