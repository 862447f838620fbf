"""The outbox: a run's MLflow records handed over with a queue put and delivered by a background thread, so
that a training step never waits for the tracking server.

    outbox = Outbox(uri, run_id, spill_path)
    outbox.put("metrics", metrics=[[key, value, timestamp_ms, step], ...])    # returns at once
    pending = outbox.close(wait_s=30)    # None, or what the spill file still holds for MLflow

The thread sends the records in order, grouped into MLflow's batch requests, each in one short attempt
(``tracking_ops.ONE_ATTEMPT``, in effect while an outbox is open). When MLflow does not answer, the thread appends what it holds to the spill file
(:mod:`pipeline.tracking_spill`), and from then on everything newer after it, so memory holds only what arrives
between two attempts; it tries again 1, 2, 4 ... at most 10 s apart and, once MLflow answers, delivers the
file's pending records in file order before anything newer. An outbox started on a spill file that holds
pending records (an earlier attempt of the same run left them) delivers those first.

Not MLflow's own async logging (``log_batch(..., synchronous=False)``, ``MLFLOW_ENABLE_ASYNC_LOGGING``): in
MLflow 3.17 a batch that still fails after the client's retries is logged as an error and dropped, and batches
go out through a pool of ten threads, so their order is not kept. Checked against a server that was killed
and restarted on the same store: the steps logged while it was down never arrived.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import queue
import sys
import threading
import time
import uuid

from pipeline.tracking_ops import (HTTP_TIMEOUT_S, ONE_ATTEMPT, deliver, groups, http_attempts, metric_values,
                                   permanent, reason)
from pipeline.tracking_spill import Pending, SpillFile, without_credentials

FIRST_RETRY_S, MAX_RETRY_S, CLOSING_RETRY_S = 1.0, 10.0, 2.0
MAX_HELD = 100_000  # records kept in memory when even the spill file cannot be written (then the oldest go)
MAX_TAKE = 10_000  # records taken from the queue at once
_WAKE = object()  # put by close(): wakes a thread that waits for records

# MLflow's retry settings are process-wide environment variables, and C code (Ray's, torch's threads) reads the
# environment without a lock: they are set when the first outbox of the process opens and restored when the
# last one closes, by the thread that opens or closes it, never around each request by the delivery thread.
_settings_lock = threading.Lock()
_settings: contextlib.ExitStack | None = None
_open = 0


def _hold_one_attempt(hold: bool) -> None:
    """Count an outbox opening (``hold``) or closing; the first opening sets ONE_ATTEMPT, the last closing restores."""
    global _settings, _open
    with _settings_lock:
        _open += 1 if hold else -1
        if hold and _open == 1:
            _settings = contextlib.ExitStack()
            _settings.enter_context(http_attempts(ONE_ATTEMPT))
        elif not hold and _open == 0:
            _settings.close()
            _settings = None


class Outbox:
    """MLflow records of one run: ``put`` never waits; a daemon thread delivers them (see the module doc)."""

    def __init__(self, uri: str, run_id: str, spill_path: str, announce: bool = True):
        """``announce``: say in one line when MLflow stops answering and when it answers again."""
        self.uri, self.run_id, self.announce = uri, run_id, announce
        self._writer = uuid.uuid4().hex[:8]
        self.spill = SpillFile(spill_path, uri, self._writer)
        self.lost = 0  # metric values neither delivered nor kept (only when the spill file cannot be written)
        self._ids = itertools.count()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._held: list[dict] = []  # taken from the queue, neither delivered nor in the spill file
        self._backlog = False  # whether the spill file may hold pending records
        self._delay = FIRST_RETRY_S
        self._down = False
        self._client = None
        self._closing = threading.Event()
        self._close_deadline = math.inf
        self._alive_at = time.monotonic()  # when the thread last finished a request, delivered or not
        self._closed = False
        _hold_one_attempt(True)  # until close(): each request is one short attempt
        self._thread = threading.Thread(target=self._run, name=f"dpt-mlflow-outbox-{run_id[:8]}", daemon=True)
        self._thread.start()

    def put(self, kind: str, **fields) -> None:
        """Hand one record over (a queue put)."""
        self._queue.put({"id": f"{self._writer}:{next(self._ids)}", "run_id": self.run_id, "kind": kind, **fields})

    def close(self, wait_s: float = 30.0) -> Pending | None:
        """Deliver what is left: keep going while MLflow takes records, stop once it has not answered for
        ``wait_s`` seconds after this call (what was not delivered is then in the spill file). Returns what the
        spill file holds for MLflow, records of earlier attempts included, or None."""
        if not self._closed:
            self._closed = True
            start = time.monotonic()
            self._close_deadline = start + wait_s
            self._closing.set()
            self._queue.put(_WAKE)
            stuck_after = wait_s + 3 * HTTP_TIMEOUT_S  # a request outlives its timeouts: do not wait on it
            while self._thread.is_alive():
                self._thread.join(timeout=1.0)
                if time.monotonic() - max(self._alive_at, start) > stuck_after:
                    self._keep(self._held + self._take())
                    break
            _hold_one_attempt(False)
        return self.spill.summary()

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        try:
            self._backlog = self.spill.summary() is not None
        except OSError as exc:
            self._say(f"cannot read the spill file {self.spill.path} ({exc}); its records stay there")
        while True:
            try:
                if self._cycle():
                    break
            except Exception as exc:  # noqa: BLE001 - a bug or a disk error must not stop delivery
                self._say(f"the outbox thread hit {type(exc).__name__}: {exc}; it goes on")
                if self._closing.is_set() and time.monotonic() >= self._close_deadline:
                    break
                self._pause()
        self.lost += sum(metric_values(record) for record in self._held)

    def _cycle(self) -> bool:
        """Take what was put, deliver in order (the spill file's pending records first); True when closed."""
        idle = not self._backlog and not self._held and not self._closing.is_set()
        self._held = self._held + self._take(block=idle)
        delivered = (not self._backlog or self._send_spilled()) and self._send_held()
        if delivered:
            self._delay = FIRST_RETRY_S
            return self._closing.is_set() and not self._held and self._queue.empty()
        self._keep(self._held + self._take())
        if self._closing.is_set() and time.monotonic() >= self._close_deadline:
            return True
        self._pause()
        self._delay = min(2 * self._delay, MAX_RETRY_S)
        return False

    def _take(self, block: bool = False) -> list[dict]:
        records: list[dict] = []
        try:
            item = self._queue.get() if block else self._queue.get_nowait()
            while True:
                if item is not _WAKE:
                    records.append(item)
                if len(records) >= MAX_TAKE:
                    return records
                item = self._queue.get_nowait()
        except queue.Empty:
            return records

    def _send_spilled(self) -> bool:
        for group in groups(self.spill.pending()):
            if not self._attempt(group, spilled=True):
                return False
        self._backlog = False
        return True

    def _send_held(self) -> bool:
        while self._held:
            group = next(groups(self._held))
            if not self._attempt(group, spilled=False):
                return False
            self._held = self._held[len(group):]
        return True

    def _attempt(self, group: list[dict], spilled: bool) -> bool:
        """One request; True when the group is settled: delivered, or refused by MLflow (dropped, one line)."""
        ids = [record["id"] for record in group]
        try:
            if self._client is None:
                from mlflow import MlflowClient

                self._client = MlflowClient(self.uri)
            deliver(self._client, group)
        except Exception as exc:  # noqa: BLE001 - whatever the client raises, training goes on
            self._alive_at = time.monotonic()
            if not permanent(exc):
                if not self._down and self.announce:
                    self._say(f"MLflow at {without_credentials(self.uri)} did not answer ({reason(exc)}); "
                              f"training goes on, its records are kept in {self.spill.path} until it answers")
                self._down = True
                return False
            kinds = sorted({record["kind"] for record in group})
            self._say(f"MLflow refused {len(group)} records ({', '.join(kinds)}) of run {self.run_id}: "
                      f"{reason(exc)}; dropped")
            if spilled:
                self.spill.mark(ids, error=reason(exc))
            return True
        self._alive_at = time.monotonic()
        if spilled:
            self.spill.mark(ids)
        if self._down and self.announce:
            self._say(f"MLflow at {without_credentials(self.uri)} answers again; delivering the kept records")
        self._down = False
        return True

    def _keep(self, records: list[dict]) -> None:
        """Put held records into the spill file (after its pending ones); in memory if the file cannot be written."""
        if not records:
            self._held = []
            return
        try:
            self.spill.append(records)
        except OSError as exc:
            self._say(f"cannot write the spill file {self.spill.path} ({exc}); keeping the newest {MAX_HELD} "
                      f"records in memory")
            self.lost += sum(metric_values(record) for record in records[:-MAX_HELD])
            self._held = records[-MAX_HELD:]
            return
        self._held = []
        self._backlog = True

    def _pause(self) -> None:
        if not self._closing.is_set():
            self._closing.wait(self._delay)  # close() cuts it short
        else:
            time.sleep(max(0.0, min(CLOSING_RETRY_S, self._close_deadline - time.monotonic())))

    @staticmethod
    def _say(message: str) -> None:
        print(f"tracking: {message}", file=sys.stderr, flush=True)
