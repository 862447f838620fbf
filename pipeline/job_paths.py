"""Local paths inside a ``ray job submit`` job.

A job's driver runs in Ray's copy of the submitted ``--working-dir`` (a temporary directory on the head,
holding only what git does not ignore: no ``runs/``, no data). A relative path there names a place in that
copy: inputs are missing and outputs vanish with it. We cannot know the directory the job was submitted
from, so a relative local path in a job is refused before any work, naming the option, and the user gives
an absolute path (shared by the nodes) or an ``s3://`` URL instead.
"""

from __future__ import annotations

import os

from pipeline import storage

# Set by Ray in the environment of a submitted job's driver (and inherited by its children).
JOB_ENV_VAR = "RAY_JOB_CONFIG_JSON_ENV_VAR"


class JobPathError(ValueError):
    """A relative local path given to a ``ray job submit`` job."""


def in_ray_job() -> bool:
    return JOB_ENV_VAR in os.environ


def check_job_path(value: str | None, option: str) -> None:
    """Raise :class:`JobPathError` when ``value`` is a relative local path and this process is a Ray job."""
    if not value or not in_ray_job() or storage.is_s3(value) or os.path.isabs(value):
        return
    relative = value[2:] if value.startswith("./") else value
    example = f"{option} $PWD/{relative}" if option.startswith("-") else f"{option}=$PWD/{relative}"
    raise JobPathError(
        f"{option}: {value!r} is a relative path, which inside a `ray job submit` job points into the job's "
        f"temporary copy of the working directory (git-ignored files such as runs/ are not in it); give an "
        f"absolute path that the cluster's nodes see (e.g. {example}) or an s3:// URL")
