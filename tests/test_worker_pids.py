"""`dpt preempt` (a node's shutdown hook) signals the training workers this machine registered, and only them."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.helpers.cli import dpt
from training import worker_pids

# A stand-in for a training worker: registers itself, then on SIGTERM takes `grace` seconds (its checkpoint)
# and exits; with grace < 0 it ignores SIGTERM.
WORKER = """
import signal, sys, time
from training import worker_pids
grace = float(sys.argv[1])
def stop(signum, frame):
    if grace >= 0:
        time.sleep(grace)
        sys.exit(0)
signal.signal(signal.SIGTERM, stop)
worker_pids.register()
print("ready", flush=True)
time.sleep(120)
"""


@pytest.fixture
def registry(tmp_path, monkeypatch):
    monkeypatch.setenv(worker_pids.PID_DIR_ENV, str(tmp_path / "workers"))
    return tmp_path / "workers"


def _worker(grace: float) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", WORKER, str(grace)], stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert process.stdout.readline().strip() == "ready"
    return process


def _preempt(*args: str) -> subprocess.CompletedProcess:
    return dpt("preempt", *args, timeout=60)


def test_preempt_signals_the_registered_workers_and_waits_for_their_exit(registry):
    workers = [_worker(grace=1.0), _worker(grace=0.2)]
    try:
        assert worker_pids.registered() == sorted(w.pid for w in workers)
        started = time.monotonic()
        result = _preempt("--wait", "30")
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "dpt preempt: SIGTERM to 2 training workers; all have checkpointed and exited"
        assert time.monotonic() - started >= 1.0  # it waited for the slower one's checkpoint
        assert [w.wait(timeout=10) for w in workers] == [0, 0]
        assert worker_pids.registered() == [] and os.listdir(registry) == []  # exited: their files are gone
    finally:
        for w in workers:
            w.kill()


def test_a_worker_that_does_not_exit_in_time_is_reported_and_fails_the_hook(registry):
    worker = _worker(grace=-1)
    try:
        result = _preempt("--wait", "1")
        assert result.returncode == 1
        assert result.stdout.strip() == (f"dpt preempt: SIGTERM to 1 training workers; 1 still running after 1 s "
                                         f"(pids {worker.pid})")
        assert worker.poll() is None
    finally:
        worker.kill()


def test_stale_and_reused_pids_are_never_signalled(registry):
    registry.mkdir()
    (registry / "999999999").write_text("123")  # a pid that does not run
    # This test's own pid with another start time: the pid of an exited worker, reused by another process.
    (registry / str(os.getpid())).write_text("1")
    (registry / "notes.txt").write_text("not a pid file")
    result = _preempt("--wait", "5")
    assert result.returncode == 0  # this process is alive, unsignalled
    assert result.stdout.strip() == f"dpt preempt: no training worker runs on this machine (registry {registry})"
    assert sorted(os.listdir(registry)) == ["notes.txt"]


def test_a_negative_wait_is_refused_in_one_line(registry):
    result = _preempt("--wait", "-1")
    assert result.returncode == 1 and result.stderr == "dpt preempt: error: --wait must be >= 0 seconds, got -1.0\n"
