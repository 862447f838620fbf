"""`dpt pipeline run` refuses a bad config before any stage. The chain itself runs end to end, with its restart
that repeats nothing, in the README's test (`make quickstart`, the re-run, and the smoke pipeline as a Ray job
into the MLflow server: tests/test_readme.py)."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from tests.helpers.cli import dpt

ROOT = Path(__file__).resolve().parents[1]


def test_bad_pipeline_config_names_the_key(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("name: x\nworkdir: w\ntrain: {config: c.yaml, overides: []}\n")
    out = dpt("pipeline", "run", "--config", str(path), timeout=120)
    assert out.returncode == 1 and "unknown key train.overides" in out.stderr


def test_a_bad_training_override_fails_before_any_stage(tmp_path):
    path = tmp_path / "p.yaml"
    workdir = tmp_path / "w"
    path.write_text(yaml.safe_dump({
        "name": "x", "workdir": str(workdir), "sample_data": {"per_source": 2, "per_benchmark": 1},
        "train": {"config": "configs/quickstart.yaml", "overrides": ["optim.lr_decoder=abc"]}}))
    out = dpt("pipeline", "run", "--config", str(path), env={**os.environ, "MLFLOW_TRACKING_URI": ""}, cwd=ROOT,
              timeout=120)
    assert out.returncode == 1
    assert "override optim.lr_decoder=abc: expected a number, got 'abc'" in out.stderr
    assert not (workdir / "data").exists()  # no stage ran: no sample data was written
