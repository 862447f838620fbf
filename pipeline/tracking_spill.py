"""The spill file: a run's MLflow records that could not be delivered when they were made, and what has been
delivered since. JSON lines, append-only, beside the run's checkpoints:

    {"writer": "3f9c21ab", "uri": "http://mlflow:5000", "host": "node-1"}      once per process that writes
    {"id": "3f9c21ab:17", "run_id": "...", "kind": "metrics", ...}            a record (pipeline.tracking_ops)
    {"delivered": ["3f9c21ab:17", "3f9c21ab:18"]}                              these reached MLflow
    {"rejected": ["3f9c21ab:19"], "error": "INVALID_PARAMETER_VALUE: ..."}    MLflow refused these

A record is pending until a later line names it delivered or rejected. Whoever delivers (the training's own
outbox when the server is back, or ``dpt tracking replay FILE``) goes through the pending records in file
order and appends a ``delivered`` line after each request, so a second replay finds nothing to do. A crash
between a request and its line leaves that request's records pending: sent again, they write the same values
(see pipeline.tracking_ops), except a ``restart`` record, which would count the restart twice.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

from pipeline import storage
from pipeline.tracking_ops import FEW_ATTEMPTS, deliver, groups, http_attempts, metric_values, permanent, reason

SPILL_PREFIX = "mlflow-spill-"
# A run stored on S3 spills on the local disk of the process that logs (S3 has no append).
S3_SPILL_ROOT = os.path.join("~", ".cache", "dpt", "tracking-spill")


def spill_path(storage_path: str, name: str, run_id: str) -> str:
    """``<storage.path>/<storage.name>/mlflow-spill-<run id>.jsonl``; for ``s3://bucket/key`` the same names
    under ``~/.cache/dpt/tracking-spill/bucket/key/`` on this machine."""
    filename = f"{SPILL_PREFIX}{run_id}.jsonl"
    if storage.is_s3(storage_path):
        bucket, key = storage.split_s3(storage_path)
        return os.path.join(os.path.expanduser(S3_SPILL_ROOT), bucket, *[p for p in key.split("/") if p], name,
                            filename)
    return os.path.join(os.path.abspath(storage_path), name, filename)


def without_credentials(uri: str) -> str:
    """The URI without a ``user:password@`` part (never written to a file)."""
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


@dataclasses.dataclass(frozen=True)
class Pending:
    """What a spill file holds that MLflow has not: ``metric_values`` single metric values, and ``others``
    records that are not metrics (tags, a restart count, the final status)."""

    path: str
    metric_values: int
    others: int


class SpillFile:
    """Appends records and delivery lines to one spill file and reads back what is pending.

    Reading is incremental, so that retrying during a long outage does not reread the whole file each time:
    the ids of settled records are collected once (from where the last read stopped), and ``_head`` is the
    offset before which every record is settled, which holds because records are delivered in file order.
    Appending is safe from several threads; reading (``pending``, ``mark``) belongs to one consumer.
    """

    def __init__(self, path: str, uri: str | None = None, writer: str = ""):
        self.path, self.uri, self.writer = path, uri, writer
        self._lock = threading.Lock()
        self._introduced = False
        self._settled: set[str] = set()
        self._scanned = 0  # settled ids are collected up to this offset
        self._head = 0  # every record before this offset is settled
        self._ends: dict[str, int] = {}  # offset after each record handed out by pending() and not yet marked

    def exists(self) -> bool:
        return os.path.exists(self.path)

    def append(self, records: list[dict]) -> None:
        """Append records (one write, flushed and fsynced); the first append of a writer names it."""
        lines = [] if self._introduced else [{"writer": self.writer, "host": socket.gethostname(),
                                              "uri": without_credentials(self.uri or "")}]
        self._write(lines + records)
        self._introduced = True

    def mark(self, ids: list[str], error: str | None = None) -> None:
        """Record that these records (handed out by ``pending``, in order) were delivered, or, with ``error``,
        refused by MLflow."""
        self._write([{"delivered": ids}] if error is None else [{"rejected": ids, "error": error}])
        self._settled.update(ids)
        ends = [self._ends.pop(i) for i in ids if i in self._ends]
        self._head = max([self._head, *ends])

    def pending(self, track: bool = True) -> Iterator[dict]:
        """Records not yet delivered or rejected, in file order, streamed (``track=False``: only to count them)."""
        if not self.exists():
            return
        self._collect_settled()
        front = True
        for raw, end in self._read_from(self._head):
            line = _parse(raw)
            if line is not None and "kind" in line and line["id"] not in self._settled:
                front = False
                if track:
                    self._ends[line["id"]] = end
                yield line
            elif front and track:
                self._head = end  # settled lines at the front: the next read starts after them

    def _collect_settled(self) -> None:
        for raw, end in self._read_from(self._scanned):
            line = _parse(raw)
            if line is not None:
                self._settled.update(line.get("delivered", ()))
                self._settled.update(line.get("rejected", ()))
            self._scanned = end

    def _read_from(self, offset: int) -> Iterator[tuple[bytes, int]]:
        """(complete line, offset after it) from ``offset`` on; a line without its newline yet is not returned."""
        with open(self.path, "rb") as f:
            f.seek(offset)
            for raw in f:
                if not raw.endswith(b"\n"):
                    return
                offset += len(raw)
                yield raw, offset

    def _write(self, lines: list[dict]) -> None:
        if not lines:
            return
        text = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines)
        with self._lock:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            with open(self.path, "a+b") as f:
                if f.tell() and _last_byte(f) != b"\n":
                    text = "\n" + text  # a writer that died mid-line: ours starts on a line of its own
                f.write(text.encode())
                f.flush()
                os.fsync(f.fileno())

    def recorded_uri(self) -> str | None:
        """The tracking URI the first writer logged to (credentials removed)."""
        if not self.exists():
            return None
        for raw, _ in self._read_from(0):
            line = _parse(raw)
            if line and line.get("uri"):
                return line["uri"]
        return None

    def summary(self) -> Pending | None:
        """What is pending, or None when nothing is."""
        values = others = 0
        for record in self.pending(track=False):
            values += metric_values(record)
            others += record["kind"] != "metrics"
        return Pending(self.path, values, others) if values or others else None


def _parse(raw: bytes) -> dict | None:
    try:
        line = json.loads(raw)
    except ValueError:
        return None  # the unfinished line of a writer that died mid-write
    return line if isinstance(line, dict) else None


def _last_byte(f) -> bytes:
    f.seek(-1, os.SEEK_END)
    last = f.read(1)
    f.seek(0, os.SEEK_END)
    return last


@dataclasses.dataclass(frozen=True)
class Replayed:
    """What a replay delivered (metric values, other records) and how many records MLflow refused."""

    metric_values: int
    others: int
    rejected: int


def replay(path: str, uri: str | None = None) -> Replayed:
    """Deliver a spill file's pending records to MLflow in order, marking each request's records delivered.

    ``uri``: the tracking URI; default the one the file recorded, else ``MLFLOW_TRACKING_URI``. When MLflow does
    not answer this raises RuntimeError in one line; what was delivered until then stays marked, so running it
    again continues from there.
    """
    from mlflow import MlflowClient

    spill = SpillFile(path)
    if not spill.exists():
        raise FileNotFoundError(f"{path}: no such spill file")
    uri = uri or spill.recorded_uri() or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise ValueError(f"{path} names no tracking URI: pass --tracking-uri")
    client = MlflowClient(uri)
    values = others = rejected = 0
    with http_attempts(FEW_ATTEMPTS):
        for group in groups(spill.pending()):
            ids = [record["id"] for record in group]
            try:
                deliver(client, group)
            except Exception as exc:  # noqa: BLE001 - MLflow raises many kinds; each is one line here
                if not permanent(exc):
                    raise RuntimeError(f"MLflow at {without_credentials(uri)} did not answer ({reason(exc)}); "
                                       f"delivered {values} metric values of {path} before that: run the same "
                                       f"command again when it is up") from None
                spill.mark(ids, error=reason(exc))
                rejected += len(group)
                continue
            spill.mark(ids)
            values += sum(metric_values(record) for record in group)
            others += sum(record["kind"] != "metrics" for record in group)
    return Replayed(values, others, rejected)
