"""A private network namespace whose only interface is loopback, for tests that need several Ray nodes.

Ray refuses a second node on one machine while ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (the setting that keeps
a single-node head on 127.0.0.1), and with multi-node clusters allowed it swaps ``127.0.0.1`` for the
machine's routable address. Inside a namespace of our own with nothing but ``lo`` there is no routable
address: every node, whatever it binds, listens on loopback only, its ports cannot collide with anything
outside, and the namespace and every process in it are ours to stop. Needs CAP_SYS_ADMIN (root).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid


class NetworkNamespace:
    """``ip netns add`` with loopback up; ``prefix`` runs a command inside it; ``close`` ends its processes."""

    def __init__(self) -> None:
        self.name = f"dpt-{uuid.uuid4().hex[:10]}"
        subprocess.run(["ip", "netns", "add", self.name], check=True, capture_output=True, text=True, timeout=30)
        try:
            self.run(["ip", "link", "set", "lo", "up"])
        except BaseException:
            self.close()
            raise

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """Why this machine cannot make one (None when it can): root, iproute2 and a kernel that lets us."""
        if os.geteuid() != 0:
            return "network namespaces need root (CAP_SYS_ADMIN)"
        try:
            cls().close()
        except (OSError, subprocess.SubprocessError) as exc:
            detail = getattr(exc, "stderr", None) or exc
            return f"`ip netns add` does not work here: {str(detail).strip()}"
        return None

    @property
    def prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    def run(self, cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
        kwargs.setdefault("check", True)
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        kwargs.setdefault("timeout", 60)
        return subprocess.run(self.prefix + cmd, **kwargs)

    def pids(self) -> list[int]:
        out = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True, text=True, timeout=30)
        return [int(p) for p in out.stdout.split()]

    def interfaces(self) -> list[str]:
        """Names of the namespace's network interfaces (just ``lo``)."""
        return [line.split(":")[1].strip() for line in self.run(["ip", "-o", "link"]).stdout.splitlines()]

    def listening(self) -> list[str]:
        """``host:port`` of every TCP socket listening inside the namespace."""
        lines = self.run(["ss", "-Hltn"]).stdout.splitlines()
        return [line.split()[3] for line in lines if line.strip()]

    def close(self, grace: float = 20.0) -> None:
        """SIGTERM every process left in the namespace, SIGKILL what outlives ``grace``, delete it."""
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            for pid in self.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + wait
            while self.pids() and time.monotonic() < deadline:
                time.sleep(0.5)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=30)
