"""Start real servers on 127.0.0.1 for tests, and stop them by their own pid.

Each server runs in a new session (``start_new_session``), so it leads its own process group: stopping
sends SIGTERM to that pid, waits, then ends whatever is left of *its* group. Nothing is found by name
(no pkill, no ``ray stop``), so a developer's own Ray or MLflow on the same machine is never touched.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

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
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
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
