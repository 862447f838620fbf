"""How every ``dpt`` command reaches Ray: the one place that calls ``ray.init``.

- An address given (``--ray-address``, or ``RAY_ADDRESS``; inside ``ray job submit`` Ray sets it for the
  driver): join that cluster. Its GCS is probed first, for at most ``CONNECT_TIMEOUT_S``; a cluster that
  is not there fails in one line naming the address and where it came from, never a silent wait.
- No address: start a Ray instance of our own, every server bound to 127.0.0.1. Never Ray's bare
  ``ray.init()``, which joins whatever ``ray start`` last recorded in ``<temp dir>/ray/ray_current_cluster``
  (a cluster long gone, or another user's) and binds a new instance to every interface.

Token authentication stays on (Ray's default for a new instance; it creates ``~/.ray/auth_token`` if no
token exists). What Ray prints that does not concern a ``dpt`` user is kept off the console unless
``DPT_VERBOSE=1`` (see :mod:`pipeline.ray_console`).

>>> connect()                                   # a local instance, or the cluster in RAY_ADDRESS
>>> connect(args.ray_address, env_vars={...})   # the job's runtime_env env_vars, log_to_driver
"""

from __future__ import annotations

import dataclasses
import os
import socket
import sys
import tempfile
import threading
import time

from pipeline import ray_console
from pipeline.job_paths import in_ray_job

CONNECT_TIMEOUT_S = 15.0
CONNECT_TRIES = 5  # Ray's own attempts at the GCS once the probe found it answering (Ray's default: 20)
START_PATIENCE_S = 60.0  # a local instance starts in ~10 s on two cores; say so when it takes much longer
# The first bytes of an HTTP/2 connection (RFC 9113 §3.4): the client preface and an empty SETTINGS frame.
# Ray's GCS is a gRPC server, so it answers with its own SETTINGS frame (type 0x4); a dashboard answers
# HTTP/1 ("HTTP/1.0 400 Bad Request"). Ray itself would retry such a port for minutes.
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
# GCS address of the local instance this process started: RAY_ADDRESS names it from then on (for the
# processes this one starts), and a later connect() after ray.shutdown() starts a new one instead of it.
_started_here: str | None = None


class RayUnreachable(ConnectionError):
    """The Ray cluster that was asked for cannot be joined; the message is one line for the user."""


@dataclasses.dataclass(frozen=True)
class Target:
    """Where ``connect`` goes: ``address`` None means a local instance of our own."""

    address: str | None
    origin: str  # where the address came from, as the user would name it: "RAY_ADDRESS", "--ray-address"

    def advice(self, start: bool = True) -> str:
        """What the user can do about it, in their words."""
        if self.origin.startswith("RAY_ADDRESS, set by"):
            return "the job's own cluster should answer: see `ray job logs` and the head's logs"
        if self.origin == "--ray-address":
            name, drop = "--ray-address", "leave it out (with RAY_ADDRESS unset)"
        else:
            name, drop = "RAY_ADDRESS", "unset it"
        return f"{'start it, ' if start else ''}fix {name}, or {drop} to run on a local instance"


def resolve(address: str | None = None) -> Target:
    """Which cluster: ``address`` (the command's option), else ``RAY_ADDRESS``, else a local instance.

    Raises :class:`RayUnreachable` for an address that cannot be a cluster's GCS (a dashboard URL)."""
    if address:
        target = Target(address, "--ray-address")
    elif os.environ.get("RAY_ADDRESS") and os.environ["RAY_ADDRESS"] != _started_here:
        origin = "RAY_ADDRESS, set by `ray job submit`" if in_ray_job() else "RAY_ADDRESS"
        target = Target(os.environ["RAY_ADDRESS"], origin)
    else:  # nothing asked for, or the address of our own local instance that has since been shut down
        return Target(None, "local")
    if target.address.lower() == "local":
        return Target(None, "local")
    if target.address.lower() == "auto":
        return _recorded_cluster(target)
    if target.address.lower().startswith(("http://", "https://")):
        option = target.origin == "--ray-address"
        name, drop = ("--ray-address", "leave it out") if option else ("RAY_ADDRESS", "unset it")
        raise RayUnreachable(
            f"{name}={target.address} is a dashboard (job submission) address, not a Ray cluster's GCS "
            f"address: submit with `ray job submit -- dpt ...` (it also reads RAY_API_SERVER_ADDRESS), set "
            f"{name} to the cluster's HOST:6379, or {drop} to run on a local instance")
    return target


def worker_env(names) -> dict[str, str]:
    """The variables a job's Ray workers are given: those of ``names`` (a config's ``forward_env``) that are set
    here, ``RAY_ADDRESS`` (Ray Train's and Ray Data's helper actors look the cluster up by it when several run on
    one machine), and this checkout on ``PYTHONPATH``, so that workers import the code the driver runs."""
    env = {name: os.environ[name] for name in [*names, "RAY_ADDRESS"] if os.environ.get(name)}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    return env


def connect(address: str | None = None, *, env_vars: dict[str, str] | None = None, log_to_driver: bool = True) -> None:
    """Make this process a Ray driver, once: later calls (the next stage of ``dpt pipeline run``) keep it.

    ``env_vars``: the job's ``runtime_env`` variables (what every worker gets); ``log_to_driver``: whether
    workers' output is shown here. Raises :class:`RayUnreachable` (one line) when the cluster is not there."""
    import ray

    if ray.is_initialized():
        return
    target = resolve(address)
    runtime_env = {"env_vars": env_vars} if env_vars else None
    ray_console.quiet_ray_logs()
    if target.address is None:
        context = _start_local(runtime_env, log_to_driver)
        where = f"a local instance on 127.0.0.1 ({_cpus()} CPUs"
        where += f", dashboard http://{context.dashboard_url})" if context.dashboard_url else ")"
    else:
        _join(target, runtime_env, log_to_driver)
        where = f"the cluster at {target.address} (from {target.origin})"
    ray_console.quiet_worker_logs()
    print(f"Ray: {where}", file=sys.stderr, flush=True)


def _start_local(runtime_env: dict | None, log_to_driver: bool):
    """A new instance with every server on 127.0.0.1, and RAY_ADDRESS naming it for its own processes."""
    global _started_here
    import ray

    _keep_loopback()
    # Ray Train's helper actors and Ray Data's checks find "the cluster" through the state API, which reads
    # RAY_ADDRESS or else the recorded (stale, or someone else's) cluster: give the instance's processes
    # its address. Known before start only if we choose the GCS port ourselves.
    port = int(os.environ.get("RAY_GCS_SERVER_PORT") or _free_port())
    address = f"127.0.0.1:{port}"
    saved = os.environ.get("RAY_ADDRESS")
    os.environ.update(RAY_ADDRESS=address, RAY_GCS_SERVER_PORT=str(port))
    try:
        with _patience("still starting a local Ray instance after {:.0f} s", START_PATIENCE_S):
            # The dashboard serves the state API that Ray Train's PlacementGroupCleaner polls. On a port of
            # its own: 8265 stays free for the head a user starts on this machine (infra/local/).
            context = ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=True,
                               dashboard_host="127.0.0.1", dashboard_port=_free_port(), runtime_env=runtime_env,
                               log_to_driver=log_to_driver)
    except BaseException as exc:
        _set_env("RAY_ADDRESS", saved)
        if type(exc) is Exception:  # what ray.init raises for a node that did not come up (a timeout, a crash)
            first = str(exc).splitlines()[0] if str(exc) else "no reason given"
            logs = os.path.join(tempfile.gettempdir(), "ray", "session_latest", "logs")
            raise RayUnreachable(f"a local Ray instance on 127.0.0.1 did not start: {first} (an overloaded "
                                 f"machine starts it slowly; its logs: {logs})") from exc
        raise
    finally:
        os.environ.pop("RAY_GCS_SERVER_PORT", None)
    _started_here = address  # this process, too, is a driver of the instance RAY_ADDRESS names
    return context


def _join(target: Target, runtime_env: dict | None, log_to_driver: bool) -> None:
    import ray

    host = _probe(target)
    if host in ("localhost", "::1") or host.startswith("127."):
        _keep_loopback()  # else Ray would dial the machine's routable address, where a loopback head is not
    saved = os.environ.get("RAY_gcs_server_port_wait_time_s")
    os.environ["RAY_gcs_server_port_wait_time_s"] = str(CONNECT_TRIES)
    try:
        with _patience(f"still connecting to the Ray cluster at {target.address} after {{:.0f}} s"):
            ray.init(address=target.address, runtime_env=runtime_env, log_to_driver=log_to_driver)
    except (ConnectionError, RuntimeError) as exc:  # Ray's AuthenticationError is a RuntimeError
        reason = _reason(exc)
        advice = "" if "token" in reason else f"; {target.advice()}"
        raise RayUnreachable(f"cannot join the Ray cluster at {target.address} (from {target.origin}): "
                             f"{reason}{advice}") from exc
    finally:
        _set_env("RAY_gcs_server_port_wait_time_s", saved)


def _probe(target: Target) -> str:
    """Fail in one line, within CONNECT_TIMEOUT_S, unless something at the address speaks HTTP/2 (gRPC, as
    Ray's GCS and Ray Client server do). Returns the host."""
    host, port = _host_port(target)
    where = f"the Ray cluster at {target.address} (from {target.origin})"
    deadline = time.monotonic() + CONNECT_TIMEOUT_S
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S) as sock:
            sock.sendall(_H2_PREFACE)
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            reply = sock.recv(9)
    except socket.timeout:
        raise RayUnreachable(f"cannot reach {where} within {CONNECT_TIMEOUT_S:.0f} s (no answer); "
                             f"{target.advice()}") from None
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise RayUnreachable(f"cannot reach {where}: {reason.lower()}; {target.advice()}") from None
    if len(reply) < 4 or reply[3] != 0x4:
        web = reply.startswith((b"HTTP/", b"<"))
        what = "a web server (a Ray dashboard, port 8265?)" if web else "a server that does not speak gRPC"
        raise RayUnreachable(f"{target.address} (from {target.origin}) is {what}, not a Ray cluster's GCS "
                             f"(port 6379 by default); {target.advice(start=False)}")
    return host


def _keep_loopback() -> None:
    """Make Ray keep 127.0.0.1 as 127.0.0.1, in this process and the Ray processes it starts.

    Otherwise Ray maps it to the machine's routable address (and a new instance binds every interface);
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` says "one machine", and as Ray reads it when it is first
    imported, its constant is set too."""
    from ray._private import ray_constants

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False


def _host_port(target: Target) -> tuple[str, int]:
    text = target.address.split("://", 1)[-1]
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise RayUnreachable(f"{target.origin}: {target.address!r} is not HOST:PORT (a Ray cluster's GCS "
                             f"address, e.g. 10.0.0.5:6379); {target.advice(start=False)}")
    return host.strip("[]"), int(port)


def _recorded_cluster(target: Target) -> Target:
    """RAY_ADDRESS=auto: the cluster that `ray start` recorded, named as such in any error."""
    from ray._common.utils import get_ray_address_file

    path = get_ray_address_file(None)
    try:
        with open(path) as f:
            recorded = f.read().strip()
    except OSError:
        recorded = ""
    if not recorded:
        raise RayUnreachable(f"{target.origin}=auto but no Ray cluster is recorded in {path} (`ray start --head` "
                             "records one); start one, or unset it to run on a local instance")
    return Target(recorded, f"{target.origin}=auto, recorded in {path}")


def _reason(exc: BaseException) -> str:
    """Ray's error in a few words: its messages run over many lines, with tracebacks inside."""
    chain, cause = [], exc
    while cause is not None:  # ray.init wraps the GCS client's error in "Failed to connect to Ray cluster"
        chain.append(str(cause))
        cause = cause.__cause__
    if any("InvalidAuthToken" in text or "Unauthenticated" in text for text in chain):
        return ("it refused this process's token: set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH=<the "
                "cluster's token file>")
    text = chain[0].strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    if first.startswith("Failed to connect to Ray cluster at"):
        first = f"its GCS did not answer as a Ray GCS in {CONNECT_TRIES} tries"
    return first


class _patience:
    """Say once, on stderr, that a step takes longer than CONNECT_TIMEOUT_S, instead of waiting silently."""

    def __init__(self, message: str, after: float = CONNECT_TIMEOUT_S):
        self._timer = threading.Timer(after, lambda: print(f"Ray: {message.format(after)}", file=sys.stderr,
                                                           flush=True))
        self._timer.daemon = True

    def __enter__(self) -> None:
        self._timer.start()

    def __exit__(self, *exc) -> None:
        self._timer.cancel()


def _set_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _cpus() -> int:
    import ray

    return int(ray.cluster_resources().get("CPU", 0))
