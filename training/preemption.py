"""Preemption: a training asked to stop (SIGTERM) leaves a checkpoint at the current step, and resumes from it.

Two ways a stop arrives, one way it is honoured:

- SIGTERM to a training worker process, with the platform's grace period before SIGKILL (a spot VM's
  shutdown signals every process; on Kubernetes only the container's PID 1 gets it, and Ray's reaper gives
  the worker processes 1 s: a pod's preStop hook runs ``dpt preempt``, which signals the training workers
  that :mod:`training.worker_pids` registered). Python runs
  signal handlers on a process's main thread, and Ray Train runs the training function on another one:
  :class:`WorkerSigterm` installs the handler on each worker's main thread (a Ray Train worker callback),
  and it only records the request; it runs when that thread next runs Python (seconds at most, measured).
  Then the training function raises :class:`Preempted` after the checkpoint: Ray Train restarts the worker
  group from it, as after any worker failure (counted in ``run.max_failures``).
- SIGTERM to the driver (``ray job stop``, which signals the job's entrypoint only; a ``kill`` of
  ``dpt train``): the workers are not the driver's children and get nothing. :class:`DriverStop` records
  it, and a thread hands it to a small actor (:class:`StopBoard`) that rank 0 waits on (:func:`watch_board`).
  Then the training function returns after the checkpoint: the run is over, and the same command again
  continues it from that checkpoint.

At each step boundary every rank calls :func:`agreed_stop`: one all_reduce (MAX) of a one-element integer, so
that a request seen by any rank stops every rank after the same step (DDP needs them in step). Measured on
gloo: 2.3 ms on two busy CPU cores, where a step of the tests' tiny model takes ~300 ms; on GPU its
``.item()`` is one more host sync per step, where the step's logged losses already sync. The step in
progress when the signal arrives is completed; the stop checkpoint is at the step count the ranks reach
then, written like a periodic one (``meta.json`` adds ``stopped_by``, which the resumed attempt's restart
tag repeats).

A second SIGTERM does what the first would have done without this module (the previous handler: Ray's
exits the process at once). Ray Train's own node-drain path (``PreemptionWatcher``,
``ray.train.get_preemption_info``) is separate: it fires on a Ray node drain (the autoscaler's), not on a
signal, and is not used here. ``WorkerCallback`` is a Ray Train DeveloperAPI (Ray is pinned, 2.60).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import threading
from collections.abc import Iterator

import ray
import torch
import torch.distributed as dist
from ray.train.v2._internal.execution.callback import WorkerCallback

from training import worker_pids

# Stop reasons, as integers for the all_reduce; MAX picks the stronger: a stopped driver ends the run even
# when a worker also got SIGTERM (a restart would have no driver to report to).
SIGTERM, STOPPED = 1, 2
REASONS = {SIGTERM: "sigterm", STOPPED: "stopped"}
EXIT_CODE = 128 + signal.SIGTERM  # what a process ended by SIGTERM returns, by shell convention


class Preempted(RuntimeError):
    """Raised by the training function after the checkpoint at the step a worker's SIGTERM stopped it at."""


class _Request:
    """This process's stop request: the strongest reason asked so far (0: none) and the SIGTERMs received."""

    code = 0
    sigterms = 0


_request = _Request()


def request(code: int) -> None:
    """Ask this process's training to stop at the next step boundary (safe from a signal handler)."""
    _request.code = max(_request.code, code)


def requested() -> int:
    return _request.code


def _install_sigterm(on_first) -> object:
    """SIGTERM handler: the first calls ``on_first`` (it must only set flags), a second the previous handler;
    returns the previous handler."""
    previous = signal.getsignal(signal.SIGTERM)

    def handler(signum, frame):
        _request.sigterms += 1
        if _request.sigterms == 1:
            on_first()
        elif callable(previous):
            previous(signum, frame)
        else:  # SIG_DFL (or SIG_IGN, which a second signal should not turn into a hang either)
            sys.exit(EXIT_CODE)

    signal.signal(signal.SIGTERM, handler)
    return previous


class WorkerSigterm(WorkerCallback):
    """Ray Train worker callback: each worker records a SIGTERM as a stop request (see the module docstring).
    ``after_init_train_context`` runs on the worker actor's main thread, the one that may set handlers."""

    def after_init_train_context(self):
        _request.code, _request.sigterms = 0, 0  # a fresh worker group: nothing asked yet
        _install_sigterm(lambda: request(SIGTERM))
        worker_pids.register()  # for `dpt preempt`, a node's shutdown hook


def agreed_stop(world: int, device: torch.device) -> str | None:
    """The stop reason every rank agrees on at this step boundary (``"sigterm"``, ``"stopped"``), or None.
    A collective: every rank calls it after every step."""
    code = requested()
    if world > 1:
        flag = torch.tensor([code], dtype=torch.int32, device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        code = int(flag.item())
    return REASONS.get(code)


def wait_committed():
    """Wait until Ray Train has registered every checkpoint this worker reported, so that the restart that
    follows (or the next run) starts from the stop checkpoint, not the one before; returns the latest
    (``ray.train.Checkpoint``) or None."""
    import ray.train

    reported = ray.train.get_all_reported_checkpoints(consistency_mode=ray.train.CheckpointConsistencyMode.COMMITTED)
    return reported[-1].checkpoint if reported else None


def stopped_line(reason: str, step: int, checkpoint: str | None) -> str:
    """The one line that says where a SIGTERM stopped training (``reason``: one of :data:`REASONS`)."""
    if reason == "sigterm":
        return (f"stopped by SIGTERM (to a worker) at step {step}, checkpoint {checkpoint}: Ray Train restarts the "
                f"workers from it (run.max_failures)")
    return (f"stopped by SIGTERM (to the driver) at step {step}, checkpoint {checkpoint}: the same command "
            f"continues the run from there")


@ray.remote(num_cpus=0, max_restarts=0)
class StopBoard:
    """The driver's stop request, for rank 0 to wait on (an async actor: ``wait`` calls do not block ``ask``)."""

    def __init__(self):
        self._code = 0
        self._asked = asyncio.Event()

    async def ask(self, code: int) -> None:
        self._code = max(self._code, code)
        self._asked.set()

    async def wait(self, timeout_s: float) -> int:
        """The request (0: none yet), as soon as there is one or after ``timeout_s`` seconds."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._asked.wait(), timeout_s)
        return self._code


def watch_board(board, done: threading.Event, poll_s: float = 5.0) -> threading.Thread:
    """A daemon thread that turns the driver's request on ``board`` into this process's, until ``done``."""

    def watch():
        while not done.is_set():
            try:
                code = ray.get(board.wait.remote(poll_s))
            except ray.exceptions.RayError:  # the driver is gone: Ray ends its job's workers too
                return
            if code:
                request(code)
                return

    thread = threading.Thread(target=watch, name="dpt-stop-watch", daemon=True)
    thread.start()
    return thread


class DriverStop:
    """The driver's side: a SIGTERM while training becomes a stop request on the :class:`StopBoard`."""

    def __init__(self):
        self.board = StopBoard.remote()
        self.asked = threading.Event()

    @contextlib.contextmanager
    def on_sigterm(self) -> Iterator[None]:
        """Around ``trainer.fit()``: the first SIGTERM asks the workers to stop (the handler only sets an event;
        a thread tells the board), a second one exits as before. Only the main thread can set handlers:
        elsewhere (a driver run in a thread) nothing is installed. The board ends with the block."""
        main = threading.current_thread() is threading.main_thread()
        done = threading.Event()

        def forward():
            while not (self.asked.wait(1.0) or done.is_set()):
                pass
            if self.asked.is_set():
                with contextlib.suppress(ray.exceptions.RayError):
                    ray.get(self.board.ask.remote(STOPPED), timeout=30)

        if main:
            _request.sigterms = 0
            threading.Thread(target=forward, name="dpt-stop-forward", daemon=True).start()
            previous = _install_sigterm(self.asked.set)
        try:
            yield
        finally:
            if main:
                signal.signal(signal.SIGTERM, previous)
            done.set()
            with contextlib.suppress(Exception):  # never hide why fit() ended (Ray may be gone by now)
                ray.kill(self.board)
