"""Session fixtures that run REAL services on 127.0.0.1: a Ray head with token authentication, an MLflow
tracking server on SQLite, and moto's standalone S3 server. No mocks: tests speak the real protocols.

Each server is started lazily by the first test that asks for it and stopped by its own pid at the end
of the session (see tests/services.py).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

from tests.services import (BIN, Server, free_port, generate_ray_token, http_ok, ray_env, reload_ray_auth_settings,
                            start_mlflow_server)

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"

# Ray reads this once, when it is first imported: set before any test imports it, so that every ray.init of
# this session (a local instance, or a client of the head fixture) keeps 127.0.0.1 as 127.0.0.1 instead of
# swapping in the machine's routable address (where the head, bound to loopback, does not answer).
# The product does the same for itself (pipeline.ray_cluster); this is for the tests' own ray.init calls.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"


@pytest.fixture(scope="session")
def shared_fixtures() -> Path:
    """../shared/fixtures (real files in native dataset formats); tests skip when it is absent."""
    if not FIXTURES.is_dir():
        pytest.skip(f"real-format fixtures not found at {FIXTURES} (only present in the project's workspace)")
    return FIXTURES


# --------------------------------------------------------------------------- Ray


@dataclasses.dataclass(frozen=True)
class RayHead:
    address: str  # GCS address for ray.init / RAY_ADDRESS
    dashboard_url: str  # for `ray job submit --address`
    token_path: Path
    env: dict[str, str]  # what a client needs: auth mode, token path, loopback node IP

    def auth_header(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token_path.read_text().strip()}"}

    def connect_client(self, patch: pytest.MonkeyPatch) -> None:
        """Make this process (and the subprocesses it starts) a client of this head: ``ray.init()`` connects."""
        for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"):
            patch.setenv(key, self.env[key])
        patch.setenv("RAY_ADDRESS", self.address)
        reload_ray_auth_settings()

    def submit_job(self, entrypoint: list[str], *options: str, timeout: float = 400) -> subprocess.CompletedProcess:
        """``ray job submit --address <dashboard> [options] -- entrypoint``, authenticated by the token.
        On failure, stderr ends with the head's job agent log (what explains a job that never started)."""
        cmd = [str(BIN / "ray"), "job", "submit", "--address", self.dashboard_url, *options, "--", *entrypoint]
        result = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            logs = sorted(self.token_path.parent.glob("r/session_latest/logs/dashboard_agent*.log"))
            result.stderr += "\njob agent log:\n" + "".join(p.read_text(errors="replace")[-2000:] for p in logs)
        return result


@pytest.fixture(scope="session")
def ray_head():
    # Ray's socket paths must stay under ~107 characters: use a short directory.
    tmp = Path(tempfile.mkdtemp(prefix="dptray-", dir="/tmp"))
    token = generate_ray_token(tmp)
    env = ray_env(token)
    # Where this head's training workers register for `dpt preempt` (not the machine's: other sessions train).
    env["DPT_WORKER_PID_DIR"] = str(tmp / "workers")
    port, dash = free_port(), free_port()
    cmd = [
        str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1", "--num-cpus=2",
        f"--port={port}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
        f"--temp-dir={tmp / 'r'}", "--disable-usage-stats",
        # Ray's other servers default to fixed ports (dashboard agent 52365, client 10001, ...): a second
        # head on the machine (another test session) would lose its job agent, so every port is our own.
        f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}",
        f"--ray-client-server-port={free_port()}",
    ]
    server = Server("ray head", cmd, env, tmp / "head.log")
    head = RayHead(f"127.0.0.1:{port}", f"http://127.0.0.1:{dash}", token, env)
    try:
        server.wait_ready(lambda: http_ok(f"{head.dashboard_url}/api/version", head.auth_header()), timeout=180)
        yield head
    finally:
        server.stop(grace=30)
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def ray_cluster(ray_head, monkeypatch):
    """This process as a client of the session's Ray head (``ray.init()`` connects to it)."""
    ray_head.connect_client(monkeypatch)
    yield ray_head
    import ray

    if ray.is_initialized():
        ray.shutdown()


# --------------------------------------------------------------------------- MLflow


@pytest.fixture(scope="session")
def mlflow_server():
    """URL of a real `mlflow server` (SQLite backend, proxied local artifact store)."""
    tmp = Path(tempfile.mkdtemp(prefix="dptmlflow-"))
    server, url = start_mlflow_server(tmp)
    try:
        yield url
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def mlflow_tracking(mlflow_server, monkeypatch):
    """This process logs to the session's MLflow server (``MLFLOW_TRACKING_URI``)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    return mlflow_server


# --------------------------------------------------------------------------- S3 (moto server)

S3_TEST_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "dpt-test-access-key",
    "AWS_SECRET_ACCESS_KEY": "dpt-test-secret-key-never-printed",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="session")
def s3_server():
    """Endpoint URL of moto's standalone S3 server, spoken to over HTTP by boto3."""
    tmp = Path(tempfile.mkdtemp(prefix="dpts3-"))
    port = free_port()
    cmd = [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    server = Server("moto_server", cmd, dict(os.environ), tmp / "moto.log")
    url = f"http://127.0.0.1:{port}"
    try:
        server.wait_ready(lambda: http_ok(f"{url}/moto-api/"), timeout=60)
        yield url
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def s3_env(s3_server, monkeypatch) -> dict[str, str]:
    """Point the standard AWS environment at the moto server; returns the variables set."""
    env = {**S3_TEST_CREDENTIALS, "AWS_ENDPOINT_URL": s3_server}
    for key in ("AWS_PROFILE", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def s3_bucket(s3_env) -> str:
    """A fresh bucket on the moto server, as ``s3://name``."""
    import boto3

    name = f"dpt-test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL"]).create_bucket(Bucket=name)
    return f"s3://{name}"


@pytest.fixture(params=["local", "s3"])
def storage_root(request, tmp_path) -> str:
    """A writable root, once as a local directory and once as an s3:// bucket on the moto server."""
    if request.param == "local":
        return str(tmp_path / "store")
    return request.getfixturevalue("s3_bucket")
