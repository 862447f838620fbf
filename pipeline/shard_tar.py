"""The tar stream of one shard: WebDataset's member layout, hashed while it is written (and while it is read).

The bytes are exactly those of ``webdataset.TarWriter(f, user="dpt", group="dpt", mtime=0, encoder=False)``
(``tests/test_shards.py`` writes the same samples both ways and compares): per sample, one member per suffix
in sorted order, named ``<key>.<suffix>``, mode 0444, fixed mtime, POSIX (pax) headers, the archive padded
to a 10240-byte record. What differs is how the bytes reach the file:

- ``tarfile`` runs in its seekable mode (``"w"``) with a copy buffer larger than any member, so a 1.2 MB
  disparity member is one ``write``; ``webdataset.TarWriter`` opens the stream mode (``"w|"``), which cuts
  everything into 10 KB records: ~130 writes, hash updates and buffer concatenations per 640x480 sample.
- members are handed to ``tarfile`` as memoryviews, never copied; the sha256 and the byte count are
  updated from the very buffers that are written, so a shard is hashed once, as it is written, and never
  read back.
- no ``import webdataset`` (which imports torch, ~8 s) in every ingest worker.
"""

from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Mapping
from typing import IO

# Larger than any member: tarfile.copyfileobj then moves a member in one read and one write.
_COPY_BUFFER = 1 << 40


class _HashingFile:
    """Forwards writes to ``f``, counting and hashing them; ``tell`` is the byte count (tarfile asks)."""

    def __init__(self, f: IO[bytes]):
        self.f, self.sha256, self.bytes = f, hashlib.sha256(), 0
        self.discarded = False  # set on abort: nothing more goes to the file

    def write(self, data) -> int:
        if self.discarded:
            return len(data)
        self.sha256.update(data)
        self.bytes += len(data)
        return self.f.write(data)

    def tell(self) -> int:
        return self.bytes

    def flush(self) -> None:
        self.f.flush()


class _View:
    """A read-only file over ``data`` whose reads are memoryview slices (no copy)."""

    def __init__(self, data: bytes | bytearray | memoryview):
        self.view, self.pos = memoryview(data).cast("B"), 0

    def read(self, n: int = -1) -> memoryview:
        end = len(self.view) if n is None or n < 0 else self.pos + n
        chunk = self.view[self.pos:end]
        self.pos += len(chunk)
        return chunk


class HashingTarWriter:
    """Append samples (``key`` + ``{suffix: bytes}``) to a tar on ``f``; ``sha256``/``bytes`` describe the
    whole archive once :meth:`close` has written its end blocks. ``f`` is not closed."""

    def __init__(self, f: IO[bytes], mtime: int, user: str, group: str, mode: int = 0o444):
        self._out = _HashingFile(f)
        self._tar = tarfile.TarFile(fileobj=self._out, mode="w", format=tarfile.PAX_FORMAT,
                                    copybufsize=_COPY_BUFFER)
        self.mtime, self.user, self.group, self.mode = mtime, user, group, mode

    def write(self, key: str, members: Mapping[str, bytes]) -> int:
        """Write one sample's members in sorted suffix order; returns their total size in bytes."""
        total = 0
        for suffix in sorted(members):
            data = _View(members[suffix])
            info = tarfile.TarInfo(f"{key}.{suffix}")
            info.size, info.mtime, info.mode = len(data.view), self.mtime, self.mode
            info.uname, info.gname = self.user, self.group
            self._tar.addfile(info, data)
            total += info.size
        return total

    def close(self) -> None:
        self._tar.close()

    def discard(self) -> None:
        """Stop writing to ``f`` (the shard is being aborted)."""
        self._out.discarded = True

    @property
    def sha256(self) -> str:
        return self._out.sha256.hexdigest()

    @property
    def bytes(self) -> int:
        return self._out.bytes


class HashingReader:
    """Forwards reads of ``f``, counting and hashing the bytes that pass: a shard checked as it is read, with
    no second read (``pipeline.shards.iter_shard_members``)."""

    def __init__(self, f: IO[bytes]):
        self.f, self.sha256, self.bytes = f, hashlib.sha256(), 0

    def read(self, size: int = -1) -> bytes:
        data = self.f.read(size)
        self.sha256.update(data)
        self.bytes += len(data)
        return data

    def finish(self) -> tuple[int, str]:
        """Read what the tar reader left (its end-of-archive padding); (bytes, sha256 hex) of the whole object."""
        while self.read(1 << 20):
            pass
        return self.bytes, self.sha256.hexdigest()
