"""One way to read, list, write atomically and delete under a local path or an ``s3://`` URL.

Every stage reaches storage through these functions, so a corpus, a checkpoint directory or an evaluation
output can live on a laptop's disk or in any S3-compatible store without the caller caring which.

S3 goes through boto3 with its standard configuration chain: credentials and region from the ``AWS_*``
environment variables, ``~/.aws/config`` or an instance role, and the endpoint from ``AWS_ENDPOINT_URL`` /
``AWS_ENDPOINT_URL_S3`` (MinIO, Ceph, moto). An explicit :class:`S3Options` overrides endpoint and region.
Nothing here ever prints or logs a credential: error messages name URLs, never keys.

Transient faults: every S3 request goes through one client configuration (:class:`S3Retries`): botocore's
``standard`` retry mode with 5 attempts, unless the AWS configuration chooses (``AWS_RETRY_MODE`` /
``AWS_MAX_ATTEMPTS``, or ``retry_mode`` / ``max_attempts`` in the profile: those win), a 10 s connect and a
60 s read timeout (``DPT_S3_CONNECT_TIMEOUT`` / ``DPT_S3_READ_TIMEOUT``, seconds; the AWS configuration has
no read timeout). A streamed read resumes at its byte offset after a fault (:mod:`pipeline.s3_stream`);
Ray Train's pyarrow filesystem gets the same endpoint, attempts and timeouts (:func:`arrow_filesystem`).

Atomic writes: a local file is written under a hidden temporary name in the same directory and renamed
over the final name only after it was flushed and fsynced (a large file is fsynced in the background as
it is written, so that the last fsync waits only for the tail: :mod:`pipeline.sync_behind`); an S3
object is spooled locally and uploaded only when the writer closes without an exception (each request
of the upload, a part of a multipart one included, is retried by botocore; an upload that still fails is
aborted by boto3's transfer manager and raises), so a crash or a fault at any point leaves either the
complete old object, the complete new one, or nothing under the final name. A full disk raises
``OSError`` ENOSPC naming the file being written (the operating system names none).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from pipeline.sync_behind import SyncBehindFile

_AWS_ENV = (
    "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_DEFAULT_REGION", "AWS_REGION",
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE", "AWS_RETRY_MODE", "AWS_MAX_ATTEMPTS", "DPT_S3_CONNECT_TIMEOUT",
    "DPT_S3_READ_TIMEOUT",
)
# Hidden temporary names share this marker so that listings never return a half-written file.
TEMP_MARKER = ".tmp-"


class StorageError(RuntimeError):
    """A storage operation failed; the message names the URL (never a credential)."""


@dataclasses.dataclass(frozen=True)
class S3Options:
    """Overrides for the S3 client; ``None`` means "from the standard AWS configuration chain"."""

    endpoint_url: str | None = None
    region: str | None = None


def s3_endpoint_and_region(options: S3Options | None = None) -> S3Options:
    """The endpoint and region S3 is reached at: ``options``' where set, else the environment's
    (``AWS_ENDPOINT_URL_S3``, then ``AWS_ENDPOINT_URL``; ``AWS_REGION``, then ``AWS_DEFAULT_REGION``); None where
    neither says. The one place they are read from the environment, for what does not read it like boto3 does:
    pyarrow (:func:`arrow_filesystem`) and Ray workers whose environment may differ from the driver's
    (``dpt ingest`` passes them on). The boto3 client itself keeps its own chain (profiles included)."""
    options = options or S3Options()
    endpoint = options.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    region = options.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    return S3Options(endpoint, region)


def is_s3(url: str) -> bool:
    return str(url).startswith("s3://")


def split_s3(url: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> ``("bucket", "a/b")``."""
    if not is_s3(url):
        raise StorageError(f"not an s3:// URL: {url}")
    rest = url[len("s3://"):]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise StorageError(f"s3 URL has no bucket: {url}")
    return bucket, key


def join(base: str, *parts: str) -> str:
    """Join URL or path components with ``/`` (works for ``s3://`` and local paths alike)."""
    out = str(base)
    for part in parts:
        part = str(part)
        if not part:
            continue
        out = out.rstrip("/") + "/" + part.lstrip("/")
    return out


def dirname(url: str) -> str:
    return str(url).rstrip("/").rsplit("/", 1)[0] if "/" in str(url) else "."


def basename(url: str) -> str:
    return str(url).rstrip("/").rsplit("/", 1)[-1]


@dataclasses.dataclass(frozen=True)
class S3Retries:
    """How every S3 request survives transient faults (boto3's client, and pyarrow's for checkpoints).

    mode: botocore's retry mode (``standard``, ``adaptive``; ``legacy`` only if the AWS config says so);
    max_attempts: tries per request, the first included, and also how many body failures in a row end a
    streamed read; connect_timeout / read_timeout: seconds to open a connection / to wait for the next
    bytes of a response."""

    mode: str = "standard"
    max_attempts: int = 5
    connect_timeout: float = 10.0
    read_timeout: float = 60.0


def _seconds(name: str, default: float) -> float:
    text = os.environ.get(name)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"{name}={text!r}: expected a number of seconds > 0")
    return value


def _retries(session) -> S3Retries:
    """The user's AWS configuration (environment, then profile) where it sets retries, our defaults elsewhere."""
    defaults = S3Retries()
    profile = session.get_scoped_config()
    mode = os.environ.get("AWS_RETRY_MODE") or profile.get("retry_mode") or defaults.mode
    try:
        attempts = session.get_config_variable("max_attempts")
    except ValueError as exc:  # botocore's int() of the text
        raise ValueError(f"AWS_MAX_ATTEMPTS (or max_attempts in the AWS config): not a whole number ({exc})") from None
    return S3Retries(mode, defaults.max_attempts if attempts is None else int(attempts),
                     _seconds("DPT_S3_CONNECT_TIMEOUT", defaults.connect_timeout),
                     _seconds("DPT_S3_READ_TIMEOUT", defaults.read_timeout))


@functools.lru_cache(maxsize=8)
def _client(endpoint_url: str | None, region: str | None, _environment: tuple, _pid: int):
    # Clients are thread-safe and expensive to build (~50 ms): one per configuration and process is enough
    # (a DataLoader worker forked from a process with a client must not share its pooled connections).
    import logging

    import boto3
    import botocore.session
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError

    # Ray workers log at INFO, where botocore announces where it found credentials and endpoint on every
    # client: noise in every training run's console. Its warnings and errors still show.
    logging.getLogger("botocore").setLevel(logging.WARNING)
    core = botocore.session.Session()
    try:
        retries = _retries(core)
        config = Config(retries={"mode": retries.mode, "total_max_attempts": retries.max_attempts},
                        connect_timeout=retries.connect_timeout, read_timeout=retries.read_timeout)
        session = boto3.session.Session(botocore_session=core)
        return session.client("s3", endpoint_url=endpoint_url, region_name=region, config=config), retries
    except BotoCoreError as exc:  # a profile that is not there, a bad retry mode: botocore names it
        raise StorageError(f"S3 configuration: {describe_error(exc)}") from exc


def _cached(options: S3Options | None):
    options = options or S3Options()
    # The cache key includes the AWS environment so that a changed endpoint or profile gets a new client.
    environment = tuple(os.environ.get(name) for name in _AWS_ENV)
    return _client(options.endpoint_url, options.region, environment, os.getpid())


def s3_client(options: S3Options | None = None):
    """A boto3 S3 client; endpoint, region and credentials follow the standard AWS chain unless overridden;
    retries and timeouts as :func:`s3_retries` says."""
    return _cached(options)[0]


def s3_retries(options: S3Options | None = None) -> S3Retries:
    """The retry mode, attempts and timeouts that :func:`s3_client` (and :func:`arrow_filesystem`) use."""
    return _cached(options)[1]


def arrow_filesystem(url: str, options: S3Options | None = None):
    """A ``pyarrow.fs.S3FileSystem`` for ``url``'s bucket with the boto3 client's endpoint, attempts and timeouts.

    For Ray Train's checkpoint storage, which writes through pyarrow: pyarrow reads neither ``AWS_MAX_ATTEMPTS``
    nor ``DPT_S3_*`` (nor, in some versions, ``AWS_ENDPOINT_URL``). Credentials follow the AWS chain in pyarrow."""
    import pyarrow.fs

    bucket, _ = split_s3(url)
    retries = s3_retries(options)
    where = s3_endpoint_and_region(options)
    endpoint, region = where.endpoint_url, where.region
    if not region and not endpoint:
        try:  # what pyarrow does for an s3:// URI itself: AWS answers with the bucket's region
            region = pyarrow.fs.resolve_s3_region(bucket)
        except OSError as exc:
            raise StorageError(f"cannot find the region of {url}: {exc} (set AWS_DEFAULT_REGION)") from exc
    from pipeline import arrow_s3

    kwargs = {"region": region or "us-east-1", "connect_timeout": retries.connect_timeout,
              "request_timeout": retries.read_timeout}
    if endpoint:
        kwargs.update(endpoint_override=endpoint, scheme="https" if endpoint.startswith("https") else "http")
    return arrow_s3.build(kwargs, retries.max_attempts)


def describe_error(exc: BaseException) -> str:
    """One line: the error code and message of a botocore error (which carry no credentials), else its type
    and text."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and "Error" in response:
        err = response["Error"]
        text = f"{err.get('Code', '?')}: {err.get('Message', '')}".strip()
    else:
        text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())


def s3_call(url: str, action: str, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` with botocore's errors as ``FileNotFoundError`` / :class:`StorageError` naming
    ``url`` and what was being done (``action``: read, write, ...)."""
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return fn(*args, **kwargs)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchKey", "404", "NotFound"):
            raise FileNotFoundError(f"{url}: no such object") from exc
        raise StorageError(f"cannot {action} {url}: {describe_error(exc)}") from exc
    except (BotoCoreError, Boto3Error) as exc:  # retries exhausted on a connection error, a failed upload
        raise StorageError(f"cannot {action} {url}: {describe_error(exc)}") from exc


def exists(url: str, options: S3Options | None = None) -> bool:
    if not is_s3(url):
        return os.path.exists(url)
    bucket, key = split_s3(url)
    try:
        s3_call(url, "stat", s3_client(options).head_object, Bucket=bucket, Key=key)
        return True
    except FileNotFoundError:
        return False


def size(url: str, options: S3Options | None = None) -> int:
    """Size in bytes; raises FileNotFoundError naming the URL when absent."""
    if not is_s3(url):
        try:
            return os.path.getsize(url)
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"{url}: no such file") from exc
    bucket, key = split_s3(url)
    head = s3_call(url, "stat", s3_client(options).head_object, Bucket=bucket, Key=key)
    return int(head["ContentLength"])


def open_read(url: str, options: S3Options | None = None) -> IO[bytes]:
    """A binary, forward-readable stream of the object. Close it (use ``with``).

    An S3 stream resumes at its byte offset after a connection reset, a read timeout or a 5xx, and raises
    :class:`StorageError` naming the URL once the retries are spent (:mod:`pipeline.s3_stream`)."""
    if not is_s3(url):
        try:
            return open(url, "rb")
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"{url}: no such file") from exc
    from pipeline.s3_stream import open_resumable

    return open_resumable(s3_client(options), url, s3_retries(options).max_attempts)


def read_bytes(url: str, options: S3Options | None = None) -> bytes:
    with open_read(url, options) as f:
        return f.read()


def list_files(prefix: str, options: S3Options | None = None) -> list[str]:
    """All files under ``prefix`` (recursively), as full URLs, sorted; temporary files are skipped."""
    if is_s3(prefix):
        bucket, key = split_s3(prefix)
        key = key.rstrip("/") + "/" if key else ""
        paginator = s3_client(options).get_paginator("list_objects_v2")
        out = []
        pages = s3_call(prefix, "list", lambda: list(paginator.paginate(Bucket=bucket, Prefix=key)))
        for page in pages:
            for item in page.get("Contents", []):
                if TEMP_MARKER not in basename(item["Key"]):
                    out.append(f"s3://{bucket}/{item['Key']}")
        return sorted(out)
    root = Path(prefix)
    if not root.exists():
        return []
    return sorted(
        str(p) for p in root.rglob("*") if p.is_file() and TEMP_MARKER not in p.name
    )


def delete(url: str, options: S3Options | None = None, missing_ok: bool = True) -> None:
    if not is_s3(url):
        try:
            os.remove(url)
        except FileNotFoundError:
            if not missing_ok:
                raise
        return
    if not missing_ok and not exists(url, options):
        raise FileNotFoundError(f"{url}: no such object")
    bucket, key = split_s3(url)
    s3_call(url, "delete", s3_client(options).delete_object, Bucket=bucket, Key=key)


def makedirs(url: str) -> None:
    """Create a local directory (S3 has no directories: a no-op there)."""
    if not is_s3(url):
        os.makedirs(url, exist_ok=True)


@contextlib.contextmanager
def _naming_the_file(name: str) -> Iterator[None]:
    """Re-raise a full disk (ENOSPC, for which the OS names no file) as an ``OSError`` naming ``name``,
    the file being written, so that the one-line error says where the space ran out."""
    try:
        yield
    except OSError as exc:
        if exc.errno != errno.ENOSPC or exc.filename == name:
            raise
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), name) from exc


@contextlib.contextmanager
def _closed(f: IO[bytes]) -> Iterator[IO[bytes]]:
    """Close ``f`` at the end; after an error, ignore what closing raises: the file is thrown away, and
    flushing its buffered tail onto a full disk would only fail again, hiding the first error."""
    try:
        yield f
    except BaseException:
        with contextlib.suppress(OSError):
            f.close()
        raise
    f.close()


@contextlib.contextmanager
def write_atomic(url: str, options: S3Options | None = None) -> Iterator[IO[bytes]]:
    """Yield a binary file; its content appears under ``url`` only if the block exits without error.

    On any error (a full disk included: it raises ``OSError`` ENOSPC naming ``url``) the temporary file
    is removed, so nothing partial is left behind.

    >>> with write_atomic("out/manifest.parquet") as f:
    ...     f.write(data)
    """
    if is_s3(url):
        bucket, key = split_s3(url)
        # Spool to local disk: the object is created by one upload call at the end, never piecemeal.
        with _naming_the_file(f"{url} (spooled in {tempfile.gettempdir()})"):
            with _closed(tempfile.TemporaryFile(prefix="dpt-upload-")) as spool:
                yield spool
                spool.flush()
                spool.seek(0)
                s3_call(url, "write", s3_client(options).upload_fileobj, spool, bucket, key)
        return
    directory = os.path.dirname(os.path.abspath(url))
    tmp = os.path.join(directory, f".{os.path.basename(url)}{TEMP_MARKER}{uuid.uuid4().hex[:12]}")
    try:
        with _naming_the_file(url):
            os.makedirs(directory, exist_ok=True)
            with _closed(open(tmp, "wb")) as f, SyncBehindFile(f) as synced:
                yield synced
                synced.sync()
            os.replace(tmp, url)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_bytes(url: str, data: bytes, options: S3Options | None = None) -> None:
    with write_atomic(url, options) as f:
        f.write(data)


def copy(src: str, dst: str, options: S3Options | None = None) -> None:
    """Copy one object between any two locations (local or s3://), atomically at the destination."""
    with open_read(src, options) as fin, write_atomic(dst, options) as fout:
        shutil.copyfileobj(fin, fout, length=1 << 20)
