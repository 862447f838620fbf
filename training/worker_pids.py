"""This machine's training workers, each registered by a file, so that a node's shutdown hook can signal them.

On Kubernetes a pod's deletion (a node drain, a spot reclaim) sends SIGTERM to the container's PID 1 only, and
Ray then gives its worker processes about 1 s: too little for the checkpoint at the current step that
:mod:`training.preemption` writes on a worker's SIGTERM. A ``preStop`` hook runs before that SIGTERM, with the
pod's whole grace period: ``dpt preempt`` (:mod:`training.preempt_command`) signals the registered workers and
waits until they have exited.

Each worker writes ``<dir>/<pid>`` holding its process start time (``/proc/<pid>/stat``, field 22, clock ticks
since boot) when its train context starts. A file whose pid no longer runs, or now runs another process (the
start time differs: the pid was reused), is stale: it is removed and never signalled. ``<dir>`` is
``$DPT_WORKER_PID_DIR``, else ``dpt-train-workers`` in the system's temp directory (one per machine or pod).
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import time

PID_DIR_ENV = "DPT_WORKER_PID_DIR"


def pid_dir() -> str:
    return os.environ.get(PID_DIR_ENV) or os.path.join(tempfile.gettempdir(), "dpt-train-workers")


def _start_time(pid: int) -> str | None:
    """The process's start time (clock ticks since boot), or None when ``pid`` does not run (an exited process
    that its parent has not reaped yet, a zombie, has ended too)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
    except OSError:
        return None
    # Field 2 (the command name, in parentheses) may hold spaces: count the fields after its closing ')'.
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else fields[19]


def register() -> None:
    """Record this process as a training worker of this machine (written atomically: write, then rename)."""
    directory = pid_dir()
    os.makedirs(directory, exist_ok=True)
    pid = os.getpid()
    path = os.path.join(directory, str(pid))
    with open(path + ".tmp", "w", encoding="ascii") as f:
        f.write(_start_time(pid) or "")
    os.replace(path + ".tmp", path)


def registered() -> list[int]:
    """The pids of the registered workers that still run; stale files are removed."""
    directory = pid_dir()
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    alive = []
    for name in names:
        if not name.isdigit():
            continue
        path = os.path.join(directory, name)
        try:
            with open(path, encoding="ascii") as f:
                recorded = f.read().strip()
        except OSError:
            continue
        if recorded and recorded == _start_time(int(name)):
            alive.append(int(name))
        else:
            with contextlib.suppress(OSError):
                os.remove(path)
    return sorted(alive)


def signal_and_wait(wait_s: float, poll_s: float = 0.5) -> tuple[list[int], list[int]]:
    """SIGTERM every registered worker, then wait until they have exited or ``wait_s`` seconds have passed.
    Returns (the pids signalled, those still running at the end)."""
    signalled = []
    for pid in registered():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            signalled.append(pid)
    deadline = time.monotonic() + wait_s
    running = signalled
    while running and time.monotonic() < deadline:
        time.sleep(poll_s)
        alive = set(registered())
        running = [pid for pid in running if pid in alive]
    return signalled, running
