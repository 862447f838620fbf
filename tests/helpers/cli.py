"""The real `dpt` console script, run in a subprocess as a user runs it.

``dpt`` runs a command and returns what it printed. ``run_dpt`` runs one in a folder of its own, with Ray's
temporary folder pointed at a fresh place, so that a test can tell that a command created nothing: no file in
its working directory and no Ray session.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.services import BIN


def dpt(*args: str, env: dict[str, str] | None = None, cwd: str | Path | None = None,
        timeout: float = 300) -> subprocess.CompletedProcess:
    """``dpt ARGS`` with ``env`` (default: this process's environment) in ``cwd``; stdout and stderr as text."""
    return subprocess.run([str(BIN / "dpt"), *args], capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=cwd)


@dataclasses.dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str
    created: list[str]  # what the command left in its working directory, and "Ray session" if it started one


def ray_temp_dir(env: dict[str, str]) -> str:
    """Where Ray itself puts a local instance's sessions with this environment (asked of Ray, not assumed)."""
    code = "from ray._common.utils import get_default_ray_temp_dir as d; print(d())"
    out = subprocess.run([str(BIN / "python"), "-c", code], env=env, capture_output=True, text=True, timeout=120,
                         check=True)
    return out.stdout.strip()


def run_dpt(cwd: Path, *args: str, env: dict[str, str] | None = None, ray_address: str | None = None,
            timeout: float = 300) -> Outcome:
    """``dpt ARGS`` in ``cwd`` with RAY_ADDRESS unset unless given (so that ``ray.init()`` would start a local
    instance) and RAY_TMPDIR a fresh short folder (Ray's socket paths must stay short), where that instance
    would put its session (see :func:`ray_temp_dir`); the folder is removed afterwards."""
    cwd.mkdir(parents=True, exist_ok=True)
    ray_tmp = Path(tempfile.mkdtemp(prefix="dptrt-", dir="/tmp"))
    env = dict(os.environ if env is None else env, RAY_TMPDIR=str(ray_tmp))
    env.pop("RAY_ADDRESS", None)
    if ray_address:
        env["RAY_ADDRESS"] = ray_address
    try:
        out = dpt(*args, env=env, cwd=cwd, timeout=timeout)
        created = sorted(str(p.relative_to(cwd)) for p in cwd.iterdir())
        if (ray_tmp / "ray").exists():
            created.append(f"Ray session {sorted(p.name for p in (ray_tmp / 'ray').iterdir())}")
        return Outcome(out.returncode, out.stdout, out.stderr, created)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
