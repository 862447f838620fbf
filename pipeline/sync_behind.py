"""A local file that is fsynced in the background while it is still being written.

``storage.write_atomic`` fsyncs a file before renaming it into place, so that a finished name never
points at bytes the disk does not hold yet. Done once at the end, that fsync waits for the whole file:
on the development VM a flush costs ~1.8 ms of wall time per MB, almost all of it disk wait (a 32 MB
shard: ~60 ms, 1-3 ms of CPU), and the ingest task that wrote the shard sits idle meanwhile. Here, each
time ``every`` more bytes have been written, a background thread fsyncs what is there so far while
the caller goes on producing the next bytes; the last fsync, before the rename, waits only for the tail.
The guarantee is the same: that last fsync covers every byte, and the rename still comes after it.

PostgreSQL spreads the same cost over a checkpoint by starting writeback early (``checkpoint_flush_after``,
Linux's ``sync_file_range``). That alone does not help here: after writeback had finished, the fsync of a
32 MB file still took 45-56 ms, the time being spent when the disk's cache is flushed. So this runs
``os.fsync`` itself on a second thread, which releases the GIL while it waits.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO

SYNC_EVERY = 1 << 20  # bytes between background fsyncs


class SyncBehindFile:
    """Wraps a binary file opened for writing; use :meth:`sync` before relying on the data being on disk.

    Only one background fsync runs at a time (if one is still running when the next ``every`` bytes are
    in, it just covers them later). A background fsync that failed raises ``OSError`` on the writing
    thread, at the next :meth:`write` that would start another one or at :meth:`sync`.
    """

    def __init__(self, f: IO[bytes], every: int = SYNC_EVERY):
        self._f, self._every = f, every
        self._unsynced = 0
        self._executor: ThreadPoolExecutor | None = None
        self._pending: Future | None = None
        self.background_syncs = 0

    def write(self, data) -> int:
        written = self._f.write(data)
        self._unsynced += len(data) if written is None else written
        if self._unsynced >= self._every and (self._pending is None or self._pending.done()):
            self._collect()
            self._f.flush()  # Python's buffer -> the kernel, so that this fsync includes it
            self._unsynced = 0
            if self._executor is None:
                self._executor = ThreadPoolExecutor(1, thread_name_prefix="sync-behind")
            self._pending = self._executor.submit(os.fsync, self._f.fileno())
            self.background_syncs += 1
        return written

    def sync(self) -> None:
        """Flush and fsync everything written so far (after the background fsync, if one runs)."""
        self._collect()
        self._f.flush()
        os.fsync(self._f.fileno())
        self._unsynced = 0

    def _collect(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()  # re-raises the background fsync's OSError here

    def close(self) -> None:
        """Wait for a background fsync and stop its thread; the wrapped file stays open (its owner closes
        it). A background failure is not raised here: on success :meth:`sync` has already raised it, on
        an abort the file is being thrown away."""
        if self._pending is not None:
            self._pending.exception()  # waits; the fd must outlive the fsync that uses it
            self._pending = None
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def __enter__(self) -> SyncBehindFile:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()

    def __getattr__(self, name: str):
        return getattr(self._f, name)  # flush, tell, fileno, closed, ... of the wrapped file
