"""One way to read, list, write atomically and delete under a local path or an ``s3://`` URL.

Every stage reaches storage through these functions, so a corpus, a checkpoint directory or an evaluation
output can live on a laptop's disk or in any S3-compatible store without the caller caring which.

S3 goes through boto3 with its standard configuration chain: credentials and region from the ``AWS_*``
environment variables, ``~/.aws/config`` or an instance role, and the endpoint from ``AWS_ENDPOINT_URL`` /
``AWS_ENDPOINT_URL_S3`` (MinIO, Ceph, moto). An explicit :class:`S3Options` overrides endpoint and region.
Nothing here ever prints or logs a credential: error messages name URLs, never keys.

Atomic writes: a local file is written under a hidden temporary name in the same directory and renamed
over the final name only after it was flushed and fsynced (a large file is fsynced in the background as
it is written, so that the last fsync waits only for the tail: :mod:`pipeline.sync_behind`); an S3
object is spooled locally and uploaded only when the writer closes without an exception (a multipart
upload that fails is aborted by boto3), so a crash at any point leaves either the complete old object,
the complete new one, or nothing under the final name.
"""

from __future__ import annotations

import contextlib
import dataclasses
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
    "AWS_SHARED_CREDENTIALS_FILE",
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


@functools.lru_cache(maxsize=8)
def _client(endpoint_url: str | None, region: str | None, _environment: tuple):
    # Clients are thread-safe and expensive to build (~50 ms): one per configuration is enough.
    import logging

    import boto3

    # Ray workers log at INFO, where botocore announces where it found credentials and endpoint on every
    # client: noise in every training run's console. Its warnings and errors still show.
    logging.getLogger("botocore").setLevel(logging.WARNING)
    session = boto3.session.Session()
    return session.client("s3", endpoint_url=endpoint_url, region_name=region)


def s3_client(options: S3Options | None = None):
    """A boto3 S3 client; endpoint, region and credentials follow the standard AWS chain unless overridden."""
    options = options or S3Options()
    # The cache key includes the AWS environment so that a changed endpoint or profile gets a new client.
    environment = tuple(os.environ.get(name) for name in _AWS_ENV)
    return _client(options.endpoint_url, options.region, environment)


def _describe(exc: Exception) -> str:
    """The error code and message of a botocore error, which carry no credentials."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and "Error" in response:
        err = response["Error"]
        return f"{err.get('Code', '?')}: {err.get('Message', '')}".strip()
    return f"{type(exc).__name__}: {exc}"


def _s3_call(url: str, action: str, fn, *args, **kwargs):
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return fn(*args, **kwargs)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchKey", "404", "NotFound"):
            raise FileNotFoundError(f"{url}: no such object") from exc
        raise StorageError(f"cannot {action} {url}: {_describe(exc)}") from exc
    except BotoCoreError as exc:
        raise StorageError(f"cannot {action} {url}: {_describe(exc)}") from exc


def exists(url: str, options: S3Options | None = None) -> bool:
    if not is_s3(url):
        return os.path.exists(url)
    bucket, key = split_s3(url)
    try:
        _s3_call(url, "stat", s3_client(options).head_object, Bucket=bucket, Key=key)
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
    head = _s3_call(url, "stat", s3_client(options).head_object, Bucket=bucket, Key=key)
    return int(head["ContentLength"])


def open_read(url: str, options: S3Options | None = None) -> IO[bytes]:
    """A binary, forward-readable stream of the object. Close it (use ``with``)."""
    if not is_s3(url):
        try:
            return open(url, "rb")
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"{url}: no such file") from exc
    bucket, key = split_s3(url)
    obj = _s3_call(url, "read", s3_client(options).get_object, Bucket=bucket, Key=key)
    return obj["Body"]


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
        pages = _s3_call(prefix, "list", lambda: list(paginator.paginate(Bucket=bucket, Prefix=key)))
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
    _s3_call(url, "delete", s3_client(options).delete_object, Bucket=bucket, Key=key)


def makedirs(url: str) -> None:
    """Create a local directory (S3 has no directories: a no-op there)."""
    if not is_s3(url):
        os.makedirs(url, exist_ok=True)


@contextlib.contextmanager
def write_atomic(url: str, options: S3Options | None = None) -> Iterator[IO[bytes]]:
    """Yield a binary file; its content appears under ``url`` only if the block exits without error.

    >>> with write_atomic("out/manifest.parquet") as f:
    ...     f.write(data)
    """
    if is_s3(url):
        bucket, key = split_s3(url)
        # Spool to local disk: the object is created by one upload call at the end, never piecemeal.
        with tempfile.TemporaryFile(prefix="dpt-upload-") as spool:
            yield spool
            spool.flush()
            spool.seek(0)
            _s3_call(url, "write", s3_client(options).upload_fileobj, spool, bucket, key)
        return
    directory = os.path.dirname(os.path.abspath(url))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(url)}{TEMP_MARKER}{uuid.uuid4().hex[:12]}")
    try:
        with open(tmp, "wb") as f, SyncBehindFile(f) as synced:
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
