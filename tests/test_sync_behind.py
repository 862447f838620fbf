"""Background fsync while writing: same bytes, failures surface on the writer, no thread outlives the file."""

from __future__ import annotations

import os
import threading
import time

import pytest

from pipeline import storage
from pipeline.sync_behind import SyncBehindFile


def _sync_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("sync-behind")]


def test_large_file_is_synced_in_the_background_and_complete(tmp_path):
    chunk = os.urandom(1 << 20)
    path = tmp_path / "big.bin"
    with open(path, "wb") as f, SyncBehindFile(f, every=2 << 20) as out:
        for _ in range(10):
            assert out.write(chunk) == len(chunk)
        # At least one; thresholds reached while one runs are covered by the next (at most one at a time).
        assert 1 <= out.background_syncs <= 5
        assert out.tell() == 10 << 20  # everything else is the wrapped file's
        out.sync()
    assert path.read_bytes() == chunk * 10
    assert not _sync_threads()


def test_small_file_never_starts_a_thread(tmp_path):
    with open(tmp_path / "small.bin", "wb") as f, SyncBehindFile(f) as out:
        out.write(b"x" * 1000)
        out.sync()
        assert out.background_syncs == 0
    assert not _sync_threads()


def test_a_failed_background_fsync_raises_on_the_writing_thread():
    read_end, write_end = os.pipe()  # fsync on a pipe fails with EINVAL
    with os.fdopen(read_end, "rb"), os.fdopen(write_end, "wb") as f:
        out = SyncBehindFile(f, every=1)
        out.write(b"a")  # starts a background fsync, which fails
        with pytest.raises(OSError):
            out.sync()
        out.write(b"b")  # starts another one
        with pytest.raises(OSError):
            for _ in range(5000):  # once it has failed, the next write that would start one raises
                out.write(b"c")
                time.sleep(0.001)
        out.close()
    assert not _sync_threads()


def test_aborted_atomic_write_of_a_large_file_leaves_nothing(tmp_path):
    url = str(tmp_path / "out" / "shard-000000.tar")
    with pytest.raises(RuntimeError, match="boom"):
        with storage.write_atomic(url) as f:
            for _ in range(12):
                f.write(os.urandom(1 << 20))  # past the threshold: background fsyncs are running
            raise RuntimeError("boom")
    assert os.listdir(tmp_path / "out") == []
    assert not _sync_threads()
    with storage.write_atomic(url) as f:
        for i in range(12):
            f.write(bytes([i]) * (1 << 20))
    assert storage.size(url) == 12 << 20 and storage.read_bytes(url)[-1] == 11
