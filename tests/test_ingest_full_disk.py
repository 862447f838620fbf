"""A full disk: ``dpt ingest`` into a real tmpfs too small for the corpus fails in one line, leaves nothing
partial, and after the disk is enlarged the same command resumes to the bytes of an uninterrupted run.

The tmpfs is mounted by the test (it runs as root here) and sized from the reference run's own files, so
the disk fills up at a shard boundary whatever the encoders produce: tmpfs counts whole 4 KiB pages.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pipeline import storage
from pipeline.shards import MANIFEST_NAME, REJECTS_NAME
from tests.helpers.cli import dpt
from tests.helpers.ingest_trees import FOLDER_ARGS, kept, mtimes, state, write_folder_dataset

SHARDS = 8  # inputs, one per shard
PAGE = 4096
FULL = re.compile(r"^dpt ingest: error: no space left on device writing (\S+); (\d+) shards complete;"
                  r" re-run the same command to resume$")


def ingest_args(raw: Path, out: Path) -> list[str]:
    return ["ingest", "folder", "--root", str(raw), "--out", str(out), *FOLDER_ARGS,
            "--samples-per-shard", "1", "--workers", "1", "--no-progress"]


def pages(path: Path) -> int:
    return -(-path.stat().st_size // PAGE)


def run(cmd: list[str]) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise OSError(f"{' '.join(cmd)}: {result.stderr.strip()}")


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of 4 KiB; ``resize(kib)`` remounts it with another size (its files stay)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command: cannot make a small disk")
    try:
        run(["mount", "-t", "tmpfs", "-o", "size=4k", "tmpfs", str(disk)])
    except OSError as exc:
        pytest.skip(f"mounting a tmpfs is not permitted here (needs root or CAP_SYS_ADMIN): {exc}")

    def resize(kib: int) -> None:
        run(["mount", "-o", f"remount,size={kib}k", str(disk)])

    try:
        yield disk, resize
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True, timeout=60, check=False)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, ray_head):
    """The raw tree, an uninterrupted ingest of it (its ``--out``), and the environment of a client of the
    session's Ray head (every ``dpt ingest`` here runs its tasks there)."""
    base = tmp_path_factory.mktemp("full-disk")
    raw, reference = base / "raw", base / "reference"
    write_folder_dataset(str(raw), scenes=4, frames=2)  # 8 inputs, all train
    env = {**os.environ, **ray_head.env, "RAY_ADDRESS": ray_head.address}
    result = dpt(*ingest_args(raw, reference), env=env, timeout=180)
    assert result.returncode == 0, result.stderr
    return raw, reference, env


def shard_pages(split: Path, count: int) -> int:
    """Pages the first ``count`` shards and their completion records take on a tmpfs."""
    return sum(pages(split / f"shard-{i:06d}.tar") + pages(split / "_progress" / f"shard-{i:06d}.json")
               for i in range(count))


def full_disk_line(stderr: str) -> tuple[Path, int]:
    lines = [line for line in stderr.splitlines() if "no space left" in line.lower()]
    assert len(lines) == 1, stderr
    match = FULL.match(lines[0])
    assert match, lines[0]
    assert "Traceback" not in stderr and "RayTaskError" not in stderr, stderr
    return Path(match.group(1)), int(match.group(2))


def files(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())


def test_atomic_write_on_a_full_disk_names_the_file_and_leaves_nothing(small_disk):
    disk, resize = small_disk
    resize(16)
    url = str(disk / "split" / "shard-000000.tar")
    with pytest.raises(OSError) as raised:
        storage.write_bytes(url, os.urandom(64 * 1024))
    assert (raised.value.errno, raised.value.filename) == (errno.ENOSPC, url)
    assert os.listdir(disk / "split") == []  # the temporary file is gone
    with open(disk / "filler", "wb", buffering=0) as filler, pytest.raises(OSError):
        while True:
            filler.write(b"f" * PAGE)  # until the disk is full
    with pytest.raises(OSError) as raised:  # the error inside the block, not ENOSPC from flushing on close
        with storage.write_atomic(url) as f:
            f.write(b"x" * 1000)  # still in the file's buffer: flushing it would fail
            raise OSError(errno.EIO, "the source went away")
    assert raised.value.errno == errno.EIO
    assert os.listdir(disk / "split") == []


@pytest.mark.services
@pytest.mark.slow
def test_full_disk_mid_ingest_fails_in_one_line_and_resumes_to_identical_shards(corpus, small_disk):
    raw, reference, env = corpus
    disk, resize = small_disk
    # Room for half of the shards (and their records), not one page more.
    resize(shard_pages(reference / "folder" / "train", SHARDS // 2) * PAGE // 1024)
    out = disk / "corpus"
    split = out / "folder" / "train"

    failed = dpt(*ingest_args(raw, out), env=env, timeout=180)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    path, complete = full_disk_line(failed.stderr)
    assert complete == SHARDS // 2
    assert path in (split / f"shard-{complete:06d}.tar", split / "_progress" / f"shard-{complete:06d}.json")
    # Nothing partial: the complete shards and their records, no temporary file, no manifest.
    assert files(out) == sorted([f"folder/train/shard-{i:06d}.tar" for i in range(complete)]
                                + [f"folder/train/_progress/shard-{i:06d}.json" for i in range(complete)])
    before = mtimes(out)

    resize(4096)
    resumed = dpt(*ingest_args(raw, out), env=env, timeout=180)
    assert resumed.returncode == 0, resumed.stderr
    assert kept(resumed.stdout) == complete
    after = mtimes(out)
    assert all(after[name] == t for name, t in before.items())  # the complete shards were kept, not rewritten
    assert state(out) == state(reference)  # shards, manifest and rejects byte-identical


@pytest.mark.services
@pytest.mark.slow
def test_full_disk_when_only_rejects_and_manifest_are_left_fails_in_one_line(corpus, small_disk):
    raw, reference, env = corpus
    disk, resize = small_disk
    out = disk / "corpus"
    split = out / "folder" / "train"
    # Every shard complete, rejects and manifest gone, and the disk just large enough for what is left.
    resize(4096)
    assert dpt(*ingest_args(raw, out), env=env, timeout=180).returncode == 0
    (split / MANIFEST_NAME).unlink()
    (split / REJECTS_NAME).unlink()
    resize(shard_pages(split, SHARDS) * PAGE // 1024)

    failed = dpt(*ingest_args(raw, out), env=env, timeout=180)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert full_disk_line(failed.stderr) == (split / REJECTS_NAME, SHARDS)
    assert not [p for p in split.rglob("*") if p.name in (MANIFEST_NAME, REJECTS_NAME) or ".tmp-" in p.name]

    resize(4096)
    resumed = dpt(*ingest_args(raw, out), env=env, timeout=180)
    assert resumed.returncode == 0 and kept(resumed.stdout) == SHARDS, resumed.stderr
    assert state(out) == state(reference)
