"""S3 through transient faults: one client configuration, reads that resume at their offset, uploads that retry.

Faults are real: tests/helpers/fault_proxy.py sits on 127.0.0.1 between boto3 and the moto server and cuts, resets,
stalls or answers 503 on a schedule. Every test compares what came through the faults with what is stored.
"""

from __future__ import annotations

import os
import pickle
import types

import numpy as np
import pytest

from pipeline import storage
from pipeline.arrow_s3 import RetryingS3FileSystem
from pipeline.shards import iter_shard_members, shard_dir
from tests.helpers.fault_proxy import Fault, FaultProxy
from tests.helpers.cli import dpt
from tests.helpers.training_corpus import write_source

RETRY_ENV = ("AWS_RETRY_MODE", "AWS_MAX_ATTEMPTS", "DPT_S3_CONNECT_TIMEOUT", "DPT_S3_READ_TIMEOUT")


@pytest.fixture
def aws_config(tmp_path, monkeypatch):
    """An empty AWS config file and none of the retry variables: what the defaults apply to. Returns the file."""
    config = tmp_path / "aws-config"
    config.write_text("")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    for name in RETRY_ENV:
        monkeypatch.delenv(name, raising=False)
    return config


@pytest.fixture
def proxy(s3_server, s3_env):
    with FaultProxy(s3_server) as fault_proxy:
        yield fault_proxy


def _through(proxy: FaultProxy, monkeypatch, faults: list[Fault], **env: str) -> None:
    """This process's S3 calls go through ``proxy`` with ``faults`` scheduled (and ``env`` set)."""
    proxy.schedule(faults)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def _blob(url: str, size: int, seed: int = 0) -> bytes:
    data = np.random.default_rng(seed).bytes(size)
    storage.write_bytes(url, data)
    return data


# --------------------------------------------------------------------------- the client configuration


def test_every_client_retries_in_standard_mode_with_bounded_attempts_and_timeouts(aws_config):
    retries = storage.s3_retries()
    assert retries == storage.S3Retries(mode="standard", max_attempts=5, connect_timeout=10.0, read_timeout=60.0)
    config = storage.s3_client().meta.config
    assert config.retries == {"mode": "standard", "total_max_attempts": 5}
    assert (config.connect_timeout, config.read_timeout) == (10.0, 60.0)


def test_the_users_aws_config_wins_for_retries(aws_config, monkeypatch):
    aws_config.write_text("[default]\nretry_mode = adaptive\nmax_attempts = 8\n")
    assert (storage.s3_retries().mode, storage.s3_retries().max_attempts) == ("adaptive", 8)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "3")  # the environment beats the profile, as everywhere in AWS
    monkeypatch.setenv("AWS_RETRY_MODE", "standard")
    monkeypatch.setenv("DPT_S3_READ_TIMEOUT", "2.5")
    assert storage.s3_retries() == storage.S3Retries("standard", 3, 10.0, 2.5)
    assert storage.s3_client().meta.config.retries == {"mode": "standard", "total_max_attempts": 3}


@pytest.mark.parametrize("value", ["soon", "0", "-1"])
def test_a_bad_timeout_is_one_error_naming_the_variable(aws_config, monkeypatch, value):
    monkeypatch.setenv("DPT_S3_READ_TIMEOUT", value)
    with pytest.raises(ValueError, match=f"DPT_S3_READ_TIMEOUT={value!r}: expected a number of seconds > 0"):
        storage.s3_client()


@pytest.mark.parametrize(("value", "message"), [("many", "AWS_MAX_ATTEMPTS .*not a whole number"),
                                                ("0", "S3 configuration: .*max_attempts.*greater than or equal to 1")])
def test_bad_attempts_are_one_error_naming_them(aws_config, monkeypatch, value, message):
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", value)
    with pytest.raises((ValueError, storage.StorageError), match=message):
        storage.s3_client()


def test_a_missing_profile_is_a_storage_error(aws_config, monkeypatch):
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile-dpt")
    with pytest.raises(storage.StorageError, match="no-such-profile-dpt"):
        storage.s3_client()


def test_checkpoint_filesystem_keeps_endpoint_attempts_and_timeouts_in_the_workers(aws_config, monkeypatch):
    """Ray Train pickles its pyarrow filesystem to every worker; the attempts must survive that."""
    from training.config import StorageConfig
    from training.train import _filesystem

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "7")
    monkeypatch.setenv("DPT_S3_CONNECT_TIMEOUT", "4")
    config = types.SimpleNamespace(storage=StorageConfig(path="s3://bucket/runs", region="eu-west-1"))
    filesystem = pickle.loads(pickle.dumps(_filesystem(config, "s3://bucket/runs")))
    kwargs, attempts = filesystem.__reduce__()[1]
    assert isinstance(filesystem, RetryingS3FileSystem) and attempts == filesystem.max_attempts == 7
    assert (kwargs["endpoint_override"], kwargs["region"]) == ("http://127.0.0.1:9", "eu-west-1")
    assert (kwargs["connect_timeout"], kwargs["request_timeout"]) == (4.0, 60.0)
    assert _filesystem(config, "/local/runs") is None


# --------------------------------------------------------------------------- reads


@pytest.mark.services
def test_the_proxy_breaks_a_plain_boto3_body(s3_bucket, proxy):
    """The faults are real: what the resumable reader survives, a raw StreamingBody does not."""
    import boto3
    from botocore.exceptions import ResponseStreamingError

    _blob(f"{s3_bucket}/raw.bin", 300_000)
    proxy.schedule([Fault("reset", path="raw.bin", after=100_000)])
    body = boto3.client("s3", endpoint_url=proxy.url).get_object(Bucket=s3_bucket[5:], Key="raw.bin")["Body"]
    with pytest.raises(ResponseStreamingError):
        body.read()
    assert proxy.fired("reset") == 1


@pytest.mark.services
def test_a_read_resumes_at_its_offset_through_resets_cuts_timeouts_and_503s(s3_bucket, proxy, monkeypatch):
    url = f"{s3_bucket}/faults/blob.bin"
    data = _blob(url, 3_000_000)
    faults = [
        Fault("reset", path="blob.bin", after=700_000),  # the first GET
        Fault("cut", path="blob.bin", after=300_000, ranged=True),  # then its continuations
        Fault("delay", path="blob.bin", after=1000, seconds=4, ranged=True),  # past the 1 s read timeout
        Fault("503", path="blob.bin", ranged=True),  # botocore retries the ranged GET
    ]
    _through(proxy, monkeypatch, faults, DPT_S3_READ_TIMEOUT="1")
    pieces = []
    with storage.open_read(url) as f:
        while piece := f.read(10240):  # a tar reader's record size
            pieces.append(piece)
    assert b"".join(pieces) == data
    assert [action for _, _, action in proxy.requests] == ["reset", "cut", "delay", "503", None]
    proxy.schedule([Fault("reset", path="blob.bin", after=1_500_000), Fault("cut", path="blob.bin", after=10)])
    assert storage.read_bytes(url) == data  # a whole-object read resumes the same way
    assert proxy.fired() == 2


@pytest.mark.services
def test_a_changed_object_is_an_error_never_a_splice(s3_bucket, proxy, monkeypatch):
    url = f"{s3_bucket}/faults/changing.bin"
    data = _blob(url, 1_000_000)
    # A cut (not a reset, which may discard what the client had not read): the resume comes after the change.
    _through(proxy, monkeypatch, [Fault("cut", path="changing.bin", after=600_000)])
    with storage.open_read(url) as f:
        assert f.read(100_000) == data[:100_000]
        _blob(url, 1_000_000, seed=1)  # another writer replaces the object mid-read
        changed = f"cannot read {url}: the object changed while it was being read"
        with pytest.raises(storage.StorageError, match=changed):
            f.read()
    assert proxy.fired() == 1


@pytest.mark.services
def test_shard_samples_through_faults_are_the_stored_bytes(s3_bucket, proxy, monkeypatch):
    prefix = f"{s3_bucket}/corpus"
    write_source(prefix, "alpha", 3, per_shard=3)
    shard = f"{shard_dir(prefix, 'alpha', 'train')}/shard-000000.tar"
    direct = list(iter_shard_members(shard))
    faults = [Fault("reset", path="shard-", after=30_000), Fault("cut", path="shard-", after=40_000),
              Fault("delay", path="shard-", after=5_000, seconds=4), Fault("503", path="shard-")]
    _through(proxy, monkeypatch, faults, DPT_S3_READ_TIMEOUT="1")
    assert list(iter_shard_members(shard)) == direct
    assert proxy.fired() == 4


@pytest.mark.services
def test_shards_verify_decode_on_s3_through_faults(s3_bucket, proxy):
    prefix = f"{s3_bucket}/corpus"
    write_source(prefix, "alpha", 6, per_shard=3)  # two shards of ~170 kB, each read twice with --decode
    directory = shard_dir(prefix, "alpha", "train")
    proxy.schedule([Fault("503", path="manifest.parquet"), Fault("reset", path="manifest.parquet", after=500),
                    Fault("reset", path="shard-", after=50_000, times=2),
                    Fault("cut", path="shard-", after=100_000, times=2)])
    result = dpt("shards", "verify", "--decode", directory, env={**os.environ, "AWS_ENDPOINT_URL": proxy.url})
    assert result.returncode == 0, result.stderr
    assert f"OK: {directory}: 6 samples in shards that verify, 0 bad shards" in result.stdout
    assert proxy.fired() == 6


@pytest.mark.services
def test_a_fault_that_never_heals_fails_with_one_line_naming_the_url(s3_bucket, proxy):
    prefix = f"{s3_bucket}/corpus"
    write_source(prefix, "alpha", 3, per_shard=3)
    directory = shard_dir(prefix, "alpha", "train")
    proxy.schedule([Fault("reset", path="shard-000000.tar", after=0, times=None)])  # not one byte gets through
    env = {**os.environ, "AWS_ENDPOINT_URL": proxy.url, "AWS_MAX_ATTEMPTS": "2"}
    result = dpt("shards", "verify", directory, env=env)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith(f"dpt shards: error: cannot read {directory}/shard-000000.tar: the connection "
                                "failed 2 times in a row at byte 0 of ")
    assert "Traceback" not in result.stderr and proxy.fired() == 2


# --------------------------------------------------------------------------- writes


@pytest.mark.services
def test_uploads_retry_through_faults(s3_bucket, proxy, monkeypatch):
    small, large = f"{s3_bucket}/up/small.bin", f"{s3_bucket}/up/large.bin"
    faults = [Fault("503", method="PUT", path="small.bin", times=2),
              Fault("cut", method="PUT", path="small.bin", after=None),  # stored, but the answer is lost
              Fault("503", method="PUT", path="partNumber=2"),
              Fault("reset", method="PUT", path="partNumber=1", after=None)]
    _through(proxy, monkeypatch, faults)
    data = np.random.default_rng(2).bytes(9 << 20)  # over boto3's 8 MiB threshold: a multipart upload
    storage.write_bytes(small, data[:1000])
    storage.write_bytes(large, data)
    assert proxy.fired() == 5
    assert storage.read_bytes(small) == data[:1000] and storage.read_bytes(large) == data
    assert not storage.s3_client().list_multipart_uploads(Bucket=s3_bucket[5:]).get("Uploads")


@pytest.mark.services
def test_a_failed_multipart_upload_leaves_nothing_under_the_key(s3_bucket, proxy, monkeypatch):
    url = f"{s3_bucket}/up/never.bin"
    _through(proxy, monkeypatch, [Fault("503", method="PUT", path="partNumber=2", times=None)],
             AWS_MAX_ATTEMPTS="2")
    with pytest.raises(storage.StorageError, match=f"cannot write {url}: ServiceUnavailable"):
        storage.write_bytes(url, np.random.default_rng(3).bytes(9 << 20))
    assert proxy.fired() == 2  # both attempts of the part, then the upload was aborted
    assert not storage.exists(url)
    assert not storage.s3_client().list_multipart_uploads(Bucket=s3_bucket[5:]).get("Uploads")
