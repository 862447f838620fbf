"""A read stream of one S3 object that survives transient faults by resuming at its byte offset.

A GET's body is one long HTTP response. botocore retries a *request* (a 5xx, a throttle, a reset before the
response head), never a body half-read: a connection reset, a read timeout or an early end in the middle of
a shard used to reach the data loader as ``ResponseStreamingError`` / ``ReadTimeoutError`` and cost a worker
restart. :class:`ResumableBody` counts the bytes it delivered and, when the body fails, asks for the rest
with a ranged GET (``Range: bytes=N-``) pinned to the first response's ETag (``If-Match``, and its version
where the bucket keeps versions): a changed object is an error naming it, never two versions spliced
together. The ranged GET goes through the client's own retries (5xx, throttling, connection errors, with
backoff). The body failing ``attempts`` times in a row without delivering a byte ends the read with one
:class:`~pipeline.storage.StorageError` line naming the URL.

Steady state: one Python call per 256 KiB read from the connection (``storage.open_read`` puts a 1 MiB
``io.BufferedReader`` in front, so a tar reader's 10 KiB reads are served from memory), and a whole-object
read is one read of the body, as without this class; no per-byte work.
"""

from __future__ import annotations

import contextlib
import io
import random
import time

from pipeline.storage import StorageError, describe_error, s3_call, split_s3

BUFFER = 1 << 20  # bytes of the BufferedReader in front: what a small read is served from
CHUNK = 1 << 18  # bytes asked of the HTTP response per read (a fault may lose this much progress, no more)


def _stream_errors() -> tuple[type[BaseException], ...]:
    """What a failing body raises: botocore's wrappers, urllib3's own (through ``with`` on a raw body), sockets."""
    import urllib3.exceptions
    from botocore.exceptions import HTTPClientError, IncompleteReadError

    return HTTPClientError, IncompleteReadError, urllib3.exceptions.HTTPError, OSError


def backoff(failures: int) -> float:
    """Seconds to wait before resume number ``failures`` (1, 2, ...): exponential from 0.1 s, capped at 5 s,
    with jitter so that the loader workers hit by one outage do not come back in lockstep."""
    return min(0.1 * 2 ** (failures - 1), 5.0) * random.uniform(0.5, 1.0)


class ResumableBody(io.RawIOBase):
    """The bytes of ``url`` from one GET, continued by ranged GETs after a fault; ``attempts``: body failures in
    a row (without a byte delivered in between) that end the read. Use through ``storage.open_read``."""

    def __init__(self, client, url: str, attempts: int):
        super().__init__()
        self._client, self.url, self._attempts = client, url, max(1, attempts)
        self._bucket, self._key = split_s3(url)
        self._errors = _stream_errors()
        self._position = 0
        response = self._get()
        self._body = response["Body"]
        self._size = int(response["ContentLength"])
        # The first response's identity: every continuation must be of this very object.
        self._pin = {"IfMatch": response["ETag"]} if response.get("ETag") else {}
        if response.get("VersionId") and response["VersionId"] != "null":
            self._pin["VersionId"] = response["VersionId"]

    def _get(self, **extra):
        return s3_call(self.url, "read", self._client.get_object, Bucket=self._bucket, Key=self._key, **extra)

    def readable(self) -> bool:
        return True

    def _read(self, size: int | None) -> bytes:
        """Up to ``size`` bytes (None: all the rest, in one piece unless a fault splits it); b"" at the end."""
        failures = 0
        while True:
            try:
                data = self._body.read(size)
                if not data and size != 0 and self._position < self._size:
                    raise EOFError(f"the response ended at byte {self._position}")
            except (*self._errors, EOFError) as exc:
                failures += 1
                self._resume(exc, failures)
                size = size or CHUNK  # after a fault, in chunks: each delivered chunk is progress kept
                continue
            except Exception as exc:  # a checksum mismatch, say: the bytes delivered are wrong; nothing to resume
                from botocore.exceptions import BotoCoreError

                if isinstance(exc, BotoCoreError):
                    raise StorageError(f"cannot read {self.url}: {describe_error(exc)}") from exc
                raise
            self._position += len(data)
            return data

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        data = self._read(min(len(view), CHUNK))
        view[:len(data)] = data
        return len(data)

    def readall(self) -> bytes:
        # One read of the rest, as a plain body would; the last, empty read is where botocore checks the
        # object's checksum (when it has one).
        parts = []
        while data := self._read(None):
            parts.append(data)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _resume(self, exc: BaseException, failures: int) -> None:
        """Replace the failed body by one that starts at the current position, or raise naming the URL."""
        with contextlib.suppress(*self._errors):
            self._body.close()
        if self._position >= self._size:  # every byte arrived; only the end of the response was lost
            self._body = io.BytesIO(b"")
            return
        if failures >= self._attempts:
            raise StorageError(
                f"cannot read {self.url}: the connection failed {failures} times in a row at byte "
                f"{self._position} of {self._size} ({describe_error(exc)})") from exc
        time.sleep(backoff(failures))
        try:
            response = self._get(Range=f"bytes={self._position}-", **self._pin)
        except StorageError as error:
            if getattr(error.__cause__, "response", {}).get("Error", {}).get("Code") == "PreconditionFailed":
                raise StorageError(f"cannot read {self.url}: the object changed while it was being read "
                                   f"(at byte {self._position} of {self._size})") from error
            raise
        expected = f"bytes {self._position}-{self._size - 1}/{self._size}"
        if response.get("ContentRange") != expected:
            response["Body"].close()
            raise StorageError(f"cannot read {self.url}: asked for bytes {self._position}- and got "
                               f"{response.get('ContentRange')!r} (expected {expected!r})")
        self._body = response["Body"]

    def close(self) -> None:
        if not self.closed:
            with contextlib.suppress(*self._errors):
                self._body.close()
        super().close()


def open_resumable(client, url: str, attempts: int) -> io.BufferedReader:
    """A buffered, forward-only binary stream of ``url`` that resumes after transient faults."""
    return io.BufferedReader(ResumableBody(client, url, attempts), buffer_size=BUFFER)
