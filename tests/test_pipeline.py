"""`dpt pipeline run` end to end on the real Ray head and MLflow server: generated data in released layouts
-> real adapters -> shards -> a tiny DPT trained on Ray -> zero-shot evaluation -> comparison; then a
re-run that repeats nothing, all under one MLflow parent run."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from pipeline import storage
from pipeline.checkpoint_layout import latest_checkpoint
from pipeline.orchestrate import STATE_NAME
from tests.services import BIN

ROOT = Path(__file__).resolve().parents[1]


def write_config(tmp_path, workdir: str, steps: int) -> str:
    config = {
        "name": "e2e",
        "workdir": workdir,
        "experiment": "dpt-pipeline-test",
        "sample_data": {"per_source": 6, "per_benchmark": 3, "height": 48, "width": 64},
        "ingest": [{"source": s, "root": f"{{workdir}}/data/raw/{s}", "args": ["--samples-per-shard", "4"]}
                   for s in ("tartanair", "hrwsi")],
        "train": {"config": "configs/quickstart.yaml",
                  "overrides": ["data.shards.sources=[tartanair, hrwsi]", f"schedule.steps={steps}",
                                "schedule.checkpoint_every=2", "schedule.log_every=1", "data.geometric.size=32",
                                "data.loader.batch_size=2", "data.loader.workers=0"]},
        "eval": {"data_root": "{workdir}/data/benchmarks", "benchmarks": ["tum", "kitti"],
                 "args": ["--workers", "1", "--input-size", "64"]},
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def dpt_pipeline(config: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "dpt"), "pipeline", "run", "--config", config], env=env,
                          capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_pipeline_end_to_end_and_restart(ray_head, mlflow_server, tmp_path):
    env = {**ray_head.env, "RAY_ADDRESS": ray_head.address, "MLFLOW_TRACKING_URI": mlflow_server,
           "MLFLOW_DISABLE_TELEMETRY": "true"}
    workdir = str(tmp_path / "work")
    config = write_config(tmp_path, workdir, steps=4)

    first = dpt_pipeline(config, env)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    for stage in ("$ dpt ingest tartanair", "$ dpt ingest hrwsi", "$ dpt train", "$ dpt eval", "$ dpt compare"):
        assert stage in first.stdout
    assert "DPT-Large" in first.stdout  # the comparison table with the paper's rows

    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("dpt-pipeline-test")
    runs = client.search_runs([experiment.experiment_id])
    parent = next(r for r in runs if r.data.tags.get("dpt.stage") == "pipeline")
    children = {r.data.tags["dpt.stage"]: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert set(children) == {"ingest:tartanair", "ingest:hrwsi", "train", "eval"}
    assert parent.info.status == "FINISHED"
    # Links on the parent: manifests with their sha256, the checkpoint, the zero-shot metrics.
    assert parent.data.tags["tartanair/train.manifest"].endswith("manifest.parquet")
    assert len(parent.data.tags["hrwsi/train.manifest_sha256"]) == 64
    checkpoint = parent.data.tags["dpt.checkpoint"]
    assert checkpoint == latest_checkpoint(storage.join(workdir, "train", "e2e"))
    assert {"zero_shot/tum_delta_gt_1.25", "zero_shot/kitti_delta_gt_1.25"} <= set(parent.data.metrics)
    assert children["ingest:tartanair"].data.metrics["train/samples"] > 0
    train_history = client.get_metric_history(children["train"].info.run_id, "loss/loss")
    assert [m.step for m in train_history] == [1, 2, 3, 4]

    # A re-run repeats nothing: every stage is found finished.
    again = dpt_pipeline(config, env)
    assert again.returncode == 0, again.stderr[-4000:]
    assert "ingest tartanair: complete in an earlier run of this pipeline, skipped" in again.stdout and "$ dpt train" not in again.stdout
    assert storage.exists(storage.join(workdir, STATE_NAME))
    after = client.search_runs([experiment.experiment_id])
    assert len(after) == len(runs)  # no new runs
    assert [m.step for m in client.get_metric_history(children["train"].info.run_id, "loss/loss")] == [1, 2, 3, 4]


def test_bad_pipeline_config_names_the_key(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("name: x\nworkdir: w\ntrain: {config: c.yaml, overides: []}\n")
    out = subprocess.run([str(BIN / "dpt"), "pipeline", "run", "--config", str(path)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 1 and "unknown key train.overides" in out.stderr


def test_a_bad_training_override_fails_before_any_stage(tmp_path):
    path = tmp_path / "p.yaml"
    workdir = tmp_path / "w"
    path.write_text(yaml.safe_dump({
        "name": "x", "workdir": str(workdir), "sample_data": {"per_source": 2, "per_benchmark": 1},
        "train": {"config": "configs/quickstart.yaml", "overrides": ["optim.lr_decoder=abc"]}}))
    out = subprocess.run([str(BIN / "dpt"), "pipeline", "run", "--config", str(path)], capture_output=True,
                         text=True, timeout=120, cwd=ROOT, env={**os.environ, "MLFLOW_TRACKING_URI": ""})
    assert out.returncode == 1
    assert "override optim.lr_decoder=abc: expected a number, got 'abc'" in out.stderr
    assert not (workdir / "data").exists()  # no stage ran: no sample data was written
