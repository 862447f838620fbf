"""`dpt train`: help, and clear one-line errors for a bad config before anything starts."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.helpers import cli

ROOT = Path(__file__).resolve().parents[1]


def dpt(*args: str) -> subprocess.CompletedProcess:
    """This checkout's `dpt ARGS` in its root, where the configs/ paths below resolve."""
    return cli.dpt(*args, env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=ROOT, timeout=120)


def test_help_names_config_and_overrides():
    out = dpt("train", "--help")
    assert out.returncode == 0 and "--config" in out.stdout and "key.sub=value" in out.stdout


def test_unknown_key_and_missing_config_are_clear_errors(tmp_path):
    out = dpt("train", "--config", "configs/quickstart.yaml", "optim.lr=1e-3")
    assert out.returncode == 1 and "unknown key optim.lr" in out.stderr and "Traceback" not in out.stderr
    out = dpt("train", "--config", str(tmp_path / "nope.yaml"))
    assert out.returncode == 1 and "nope.yaml" in out.stderr
    out = dpt("train", "--config", "configs/quickstart.yaml", "curriculum=[{steps: 5, sources: [nyu]}]")
    assert out.returncode == 1 and "curriculum[0].sources" in out.stderr


def test_relative_local_paths_become_absolute(tmp_path, monkeypatch):
    """`prefix: runs/x/shards` in a config must reach the Ray workers, which run in other directories."""
    from pipeline.config import load_config
    from training.config import TrainConfig
    from training.train import absolute_local_paths

    monkeypatch.chdir(tmp_path)
    config = load_config(TrainConfig, None,
                         ["data.shards.prefix=runs/q/shards", "data.shards.sources=[demo]",
                          "storage.path=s3://bucket/ckpt", "run.resume_from=old/checkpoint_1"])
    resolved = absolute_local_paths(config)
    assert resolved.data.shards.prefix == str(tmp_path / "runs/q/shards")
    assert resolved.run.resume_from == str(tmp_path / "old/checkpoint_1")
    assert resolved.storage.path == "s3://bucket/ckpt"
    assert config.data.shards.prefix == "runs/q/shards"  # the caller's config is left as it was
