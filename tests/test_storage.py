"""pipeline.storage against a local directory and a real S3 endpoint (moto_server over HTTP)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from pipeline import storage


def test_round_trip(storage_root):
    a = storage.join(storage_root, "corpus", "nyu", "a.bin")
    b = storage.join(storage_root, "corpus", "nyu", "sub", "b.bin")
    storage.write_bytes(a, b"alpha")
    with storage.write_atomic(b) as f:
        f.write(b"beta" * 1000)
    assert storage.read_bytes(a) == b"alpha"
    assert storage.size(b) == 4000
    assert storage.exists(a) and not storage.exists(storage.join(storage_root, "corpus", "nope"))
    assert storage.list_files(storage.join(storage_root, "corpus")) == [a, b]
    with storage.open_read(b) as f:
        assert f.read(4) == b"beta"
    storage.copy(a, storage.join(storage_root, "copy.bin"))
    assert storage.read_bytes(storage.join(storage_root, "copy.bin")) == b"alpha"
    storage.delete(a)
    assert not storage.exists(a)
    assert storage.list_files(storage.join(storage_root, "corpus")) == [b]
    storage.delete(a)  # missing_ok by default
    with pytest.raises(FileNotFoundError):
        storage.delete(a, missing_ok=False)


def test_missing_object_names_the_url(storage_root):
    url = storage.join(storage_root, "missing", "x.tar")
    with pytest.raises(FileNotFoundError, match="missing/x.tar"):
        storage.read_bytes(url)
    with pytest.raises(FileNotFoundError, match="missing/x.tar"):
        storage.size(url)


def test_failed_write_leaves_nothing(storage_root):
    url = storage.join(storage_root, "out", "shard-000000.tar")
    storage.write_bytes(url, b"old complete content")
    with pytest.raises(RuntimeError, match="boom"):
        with storage.write_atomic(url) as f:
            f.write(b"new half")
            raise RuntimeError("boom")
    # The previous complete object survives; no temporary is visible.
    assert storage.read_bytes(url) == b"old complete content"
    assert storage.list_files(storage.join(storage_root, "out")) == [url]
    if not storage.is_s3(url):
        assert os.listdir(os.path.dirname(url)) == ["shard-000000.tar"]


def test_killed_writer_leaves_no_partial_object(storage_root, tmp_path):
    """SIGKILL in the middle of a write: nothing appears under the final name."""
    url = storage.join(storage_root, "killed", "shard-000000.tar")
    marker = tmp_path / "half-written"
    script = textwrap.dedent(f"""
        import time, pathlib
        from pipeline import storage
        with storage.write_atomic({url!r}) as f:
            f.write(b"x" * 1_000_000)
            f.flush()
            pathlib.Path({str(marker)!r}).touch()
            time.sleep(60)
            f.write(b"never")
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], env=dict(os.environ))
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None, "writer exited early"
            assert time.monotonic() < deadline, "writer never got half-way"
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not storage.exists(url)
    assert storage.list_files(storage.join(storage_root, "killed")) == []


def test_local_listing_skips_temporaries(tmp_path):
    (tmp_path / "a.tar").write_bytes(b"1")
    (tmp_path / f".b.tar{storage.TEMP_MARKER}abc").write_bytes(b"2")
    assert storage.list_files(str(tmp_path)) == [str(tmp_path / "a.tar")]


def test_s3_errors_name_the_url_and_never_the_secret(s3_env):
    url = "s3://no-such-bucket-dpt/x/y.tar"
    with pytest.raises(storage.StorageError) as info:
        storage.write_bytes(url, b"data")
    message = str(info.value)
    assert url in message and "NoSuchBucket" in message
    assert s3_env["AWS_SECRET_ACCESS_KEY"] not in message
    assert s3_env["AWS_SECRET_ACCESS_KEY"] not in repr(info.value.__cause__)


def test_explicit_endpoint_option_overrides_environment(s3_bucket, s3_env, monkeypatch):
    """S3Options(endpoint_url=...) reaches the server even when the environment names no endpoint."""
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    options = storage.S3Options(endpoint_url=s3_env["AWS_ENDPOINT_URL"], region="us-east-1")
    url = f"{s3_bucket}/opt/x.bin"
    storage.write_bytes(url, b"via options", options)
    assert storage.read_bytes(url, options) == b"via options"


def test_endpoint_and_region_options_first_then_the_s3_variable_then_the_general_one(monkeypatch):
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    assert storage.s3_endpoint_and_region() == storage.S3Options(None, None)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://general:1")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    assert storage.s3_endpoint_and_region() == storage.S3Options("http://general:1", "eu-west-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://s3:2")
    monkeypatch.setenv("AWS_REGION", "eu-north-1")
    assert storage.s3_endpoint_and_region() == storage.S3Options("http://s3:2", "eu-north-1")
    explicit = storage.S3Options("http://given:3", "us-east-2")
    assert storage.s3_endpoint_and_region(explicit) == explicit


@pytest.mark.parametrize("bad", ["s3://", "s3:///key"])
def test_bad_s3_url(bad):
    with pytest.raises(storage.StorageError, match="no bucket"):
        storage.split_s3(bad)


def test_join_and_names():
    assert storage.join("s3://b/", "x", "/y/") == "s3://b/x/y/"
    assert storage.join("/data", "nyu", "train") == "/data/nyu/train"
    assert storage.basename("s3://b/x/manifest.parquet") == "manifest.parquet"
    assert storage.dirname("s3://b/x/manifest.parquet") == "s3://b/x"
