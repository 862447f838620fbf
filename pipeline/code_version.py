"""Which code a run ran: the git commit where there is a checkout, and always a hash of the sources.

A job started with ``ray job submit --working-dir .`` runs on Ray's uploaded copy of the directory, which has
no ``.git``; the source hash is computed the same way on the copy and on the checkout it came from, so a
submitted run still names its code exactly (``dpt version`` prints both for the current checkout, to
match one against the other). ``DPT_CODE_VERSION`` in the job's environment, e.g. the commit passed at
submission, takes precedence over the hash when there is no checkout.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# What decides behaviour: the four stage packages, the configs, the dependency list.
SOURCE_DIRS = ("pipeline", "ingest", "training", "evaluation", "configs")
SOURCE_FILES = ("pyproject.toml",)
SOURCE_SUFFIXES = (".py", ".yaml", ".yml", ".toml")
ENV_VAR = "DPT_CODE_VERSION"


def source_sha256(root: Path = ROOT) -> str:
    """sha256 over the relative path and bytes of every source file, in sorted order (hex)."""
    files = [root / name for name in SOURCE_FILES if (root / name).is_file()]
    for directory in SOURCE_DIRS:
        files += [p for p in (root / directory).rglob("*")
                  if p.is_file() and p.suffix in SOURCE_SUFFIXES and "__pycache__" not in p.parts]
    digest = hashlib.sha256()
    for path in sorted(files, key=lambda p: p.relative_to(root).as_posix()):
        relative = path.relative_to(root).as_posix().encode()
        data = path.read_bytes()
        digest.update(b"%d:%s%d:" % (len(relative), relative, len(data)))
        digest.update(data)
    return digest.hexdigest()


def git_commit(root: Path = ROOT) -> str | None:
    """The checkout's commit, with ``-dirty`` when tracked files are modified; None outside a checkout."""
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--verify", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    if not (root / ".git").exists():  # git found an enclosing repository of something else
        return None
    return commit + ("-dirty" if dirty else "")


def code_version(root: Path = ROOT) -> str:
    """The commit, else ``$DPT_CODE_VERSION``, else ``sources-sha256:<first 16 hex of the source hash>``."""
    return git_commit(root) or os.environ.get(ENV_VAR) or f"sources-sha256:{source_sha256(root)[:16]}"
