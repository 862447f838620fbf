"""Start real servers on 127.0.0.1 for tests, and stop them by their own pid.

Each server runs in a new session (``start_new_session``), so it leads its own process group: stopping
sends SIGTERM to that pid, waits, then ends whatever is left of *its* group. Nothing is found by name
(no pkill, no ``ray stop``), so a developer's own Ray or MLflow on the same machine is never touched.

``start_ray_head``, ``start_mlflow_server`` and ``start_moto_server`` each start one server in a directory
and return it ready, with its address; ``serving`` runs one for a ``with`` block (the session fixtures of
tests/conftest.py), in a temporary directory that it removes afterwards.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    import pytest

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_ok(url: str, headers: dict[str, str] | None = None) -> bool:
    try:
        req = urllib.request.Request(url, headers=headers or {})
        with urllib.request.urlopen(req, timeout=2) as resp:
            return 200 <= resp.status < 300
    except OSError:
        return False


def http_status(url: str, headers: dict[str, str] | None = None) -> int:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


class Server:
    """A server process started by a test session; its output goes to ``log``."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log: Path, cwd: Path | None = None):
        self.name, self.cmd, self.log = name, cmd, log
        self._log_file = open(log, "wb")
        self.proc = subprocess.Popen(
            cmd, env=env, cwd=cwd, stdout=self._log_file, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, ready: Callable[[], bool], timeout: float = 120.0) -> None:
        """Return once ``ready()``; a server that exits or is not ready in time is stopped, then reported."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()  # what it started may still run in its process group
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; log {self.log}:\n{self.tail()}")
            if ready():
                return
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"{self.name} not ready after {timeout:.0f} s; log {self.log}:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL our own process group at once (a crash: no shutdown handlers run), and reap it."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        self._log_file.close()

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM our pid; after ``grace`` seconds, SIGKILL whatever remains of our own process group."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        self._log_file.close()


Address = TypeVar("Address")


@contextlib.contextmanager
def serving(start: Callable[[Path], tuple[Server, Address]], prefix: str, grace: float = 20.0) -> Iterator[Address]:
    """``start(directory)``'s server, ready, for the ``with`` block: yields its address, then stops the server
    (SIGKILL to its group after ``grace`` seconds) and removes the directory, a fresh one under /tmp (short:
    Ray's socket paths must stay under ~107 characters)."""
    directory = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        server, address = start(directory)
        try:
            yield address
        finally:
            server.stop(grace=grace)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# --------------------------------------------------------------------------- MLflow


def start_mlflow_server(directory: Path, port: int | None = None, log_name: str = "server.log") -> tuple[Server, str]:
    """A real `mlflow server` on 127.0.0.1 with its SQLite store and artifacts in ``directory``, ready; returns
    (server, URL). Started again with the same ``directory`` and ``port``, it serves the same runs."""
    port = port or free_port()
    directory.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [
        str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{directory / 'mlflow.db'}",
        "--artifacts-destination", str(directory / "artifacts"),
    ]
    server = Server("mlflow server", cmd, env, directory / log_name)
    url = f"http://127.0.0.1:{port}"
    server.wait_ready(lambda: http_ok(f"{url}/health"), timeout=120)
    return server, url


class RestartableMlflow:
    """A test's own `mlflow server` (never the session's): killed with SIGKILL and started again on the same
    port and store, as a crashed tracking server comes back."""

    def __init__(self, directory: Path):
        self.directory, self.port, self.starts = directory, free_port(), 0
        self.url = f"http://127.0.0.1:{self.port}"
        self.server: Server | None = None

    def start(self) -> None:
        self.starts += 1
        self.server, _ = start_mlflow_server(self.directory, self.port, log_name=f"server-{self.starts}.log")

    def kill(self) -> None:
        self.server.kill()
        self.server = None

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


# --------------------------------------------------------------------------- S3 (moto server)

S3_TEST_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "dpt-test-access-key",
    "AWS_SECRET_ACCESS_KEY": "dpt-test-secret-key-never-printed",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def start_moto_server(directory: Path) -> tuple[Server, str]:
    """moto's standalone S3 server on 127.0.0.1 (any credentials are accepted), ready; returns (server, endpoint
    URL). Its log goes to ``directory``."""
    port = free_port()
    cmd = [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    server = Server("moto_server", cmd, dict(os.environ), directory / "moto.log")
    url = f"http://127.0.0.1:{port}"
    server.wait_ready(lambda: http_ok(f"{url}/moto-api/"), timeout=60)
    return server, url


# --------------------------------------------------------------------------- Ray


def ray_env(token_path: Path) -> dict[str, str]:
    """The environment of a Ray process that authenticates with the token at ``token_path``."""
    env = dict(os.environ)
    env.update(
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(token_path),
        # Ray maps --node-ip-address=127.0.0.1 to the machine's routable address unless told that this
        # is a single-machine cluster; with this every Ray server binds the loopback interface only.
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        RAY_USAGE_STATS_ENABLED="0",
        PYTHONUNBUFFERED="1",
        # A node told to stop drains first, for up to 30 s by default: the tests' nodes have nothing to hand over.
        RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="3",
    )
    env.pop("RAY_ADDRESS", None)
    return env


def generate_ray_token(home: Path) -> Path:
    """`ray get-auth-token --generate` writes ~/.ray/auth_token; point HOME at our temp dir instead."""
    env = dict(os.environ, HOME=str(home), RAY_AUTH_MODE="token")
    env.pop("RAY_AUTH_TOKEN_PATH", None)
    env.pop("RAY_AUTH_TOKEN", None)
    # The token is printed on stdout: capture it and never show it.
    subprocess.run([str(BIN / "ray"), "get-auth-token", "--generate"], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)
    token = home / ".ray" / "auth_token"
    token.chmod(0o600)
    return token


def reload_ray_auth_settings() -> None:
    """Make this process's Ray read ``RAY_AUTH_MODE`` and the token afresh from the environment.

    Ray reads them once, when it is first imported: a test that imported Ray earlier (to find a file inside
    the package, say) would otherwise connect to the token-protected head without its token. This is what
    Ray's own test utilities do between tests (``ray._private.authentication_test_utils``)."""
    if "ray" not in sys.modules:
        return
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


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


def start_ray_head(directory: Path) -> tuple[Server, RayHead]:
    """``ray start --head`` on 127.0.0.1 with token authentication and two CPUs, its token, temp dir and log in
    ``directory`` (keep its path short: Ray's socket paths live under it), ready; returns (server, head)."""
    token = generate_ray_token(directory)
    env = ray_env(token)
    # Where this head's training workers register for `dpt preempt` (not the machine's: other sessions train).
    env["DPT_WORKER_PID_DIR"] = str(directory / "workers")
    port, dash = free_port(), free_port()
    cmd = [
        str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1", "--num-cpus=2",
        f"--port={port}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
        f"--temp-dir={directory / 'r'}", "--disable-usage-stats",
        # Ray's other servers default to fixed ports (dashboard agent 52365, client 10001, ...): a second
        # head on the machine (another test session) would lose its job agent, so every port is our own.
        f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}",
        f"--ray-client-server-port={free_port()}",
    ]
    server = Server("ray head", cmd, env, directory / "head.log")
    head = RayHead(f"127.0.0.1:{port}", f"http://127.0.0.1:{dash}", token, env)
    server.wait_ready(lambda: http_ok(f"{head.dashboard_url}/api/version", head.auth_header()), timeout=180)
    return server, head
