"""Crash and resume: ``dpt ingest`` SIGKILLed mid-run against the Ray head, re-run, compared with a run
that was never interrupted; and ``ray job submit -- dpt ingest ...``."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from pipeline.shards import MANIFEST_NAME
from tests.helpers.cli import dpt
from tests.helpers.ingest_trees import FOLDER_ARGS, kept, mtimes, state, write_folder_dataset
from tests.services import BIN

pytestmark = [pytest.mark.services, pytest.mark.slow]


def ingest_args(raw: Path, out: Path) -> list[str]:
    return ["ingest", "folder", "--root", str(raw), "--out", str(out), *FOLDER_ARGS, "--val-fraction", "0.25",
            "--samples-per-shard", "2", "--workers", "1", "--no-progress"]


def test_sigkill_mid_run_then_resume_equals_an_uninterrupted_run(tmp_path, ray_cluster):
    raw = tmp_path / "raw"
    # 24 inputs: train 15, val 9 -> 13 shards of <= 2
    write_folder_dataset(str(raw), scenes=8, frames=3, height=48, width=64)
    reference, out = tmp_path / "reference", tmp_path / "out"
    assert dpt(*ingest_args(raw, reference)).returncode == 0

    proc = subprocess.Popen([str(BIN / "dpt"), *ingest_args(raw, out)], env=dict(os.environ),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while len(list(out.rglob("_progress/*.json"))) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    finished = len(list(out.rglob("_progress/*.json")))
    assert 3 <= finished < 13 and not list(out.rglob(MANIFEST_NAME))  # incomplete: no manifest
    before = mtimes(out)

    resumed = dpt(*ingest_args(raw, out))
    assert resumed.returncode == 0, resumed.stderr
    assert finished <= kept(resumed.stdout) < 13
    assert "24 inputs = 24 written + 0 rejected" in resumed.stdout
    after = mtimes(out)
    assert all(after[name] == t for name, t in before.items())  # finished shards were not rewritten
    assert state(out) == state(reference)  # shards, manifest and rejects byte-identical
    assert not [p for p in out.rglob(".*") if ".tmp-" in p.name]  # no temporary files left behind

    # A damaged shard no longer verifies: only it is written again.
    shard = out / "folder" / "train" / "shard-000001.tar"
    data = bytearray(shard.read_bytes())
    data[700] ^= 0xFF
    shard.write_bytes(bytes(data))
    again = dpt(*ingest_args(raw, out))
    assert again.returncode == 0 and kept(again.stdout) == 12
    assert state(out) == state(reference)


def test_ray_job_submit_runs_the_ingest_on_the_cluster(tmp_path, ray_cluster):
    raw, out = tmp_path / "raw", tmp_path / "out"
    write_folder_dataset(str(raw), scenes=2, frames=2)
    result = ray_cluster.submit_job([str(BIN / "dpt"), *ingest_args(raw, out)], timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-4000:]
    assert "ingested folder: 4 inputs = 4 written + 0 rejected" in result.stdout
    assert (out / "folder" / "train" / MANIFEST_NAME).exists()
