"""Training on the REAL Ray head with DDP (gloo), MLflow server and moto S3: checkpoints, resume, faults."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from pipeline import storage
from pipeline.config import load_config
from tests.training_corpus import write_source
from training.config import TrainConfig
from training.model import load_model
from training.train import fit

pytestmark = pytest.mark.services
ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "configs" / "quickstart.yaml"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    prefix = str(tmp_path_factory.mktemp("train-corpus"))
    write_source(prefix, "alpha", 12, per_shard=3)
    write_source(prefix, "beta", 8, per_shard=4)
    write_source(prefix, "beta", 4, per_shard=2, split="val", offset=100)
    return prefix


def _config(corpus: str, storage_path: str, name: str, *extra: str) -> TrainConfig:
    overrides = [
        f"data.shards.prefix={corpus}", "data.shards.sources=[alpha, beta]", "data.loader.workers=0",
        "data.loader.batch_size=2", "data.geometric.size=32", "model.name=dpt_tiny",
        "model.overrides={timm_kwargs: {depth: 4, img_size: 32}}", "scaling.workers=2",
        f"storage.path={storage_path}", f"storage.name={name}", "schedule.log_every=1",
        "schedule.val_max_samples=4", *extra,
    ]
    return load_config(TrainConfig, QUICKSTART, overrides)


def _history(uri: str, run_id: str, key: str) -> list[int]:
    from mlflow import MlflowClient

    return sorted({m.step for m in MlflowClient(uri).get_metric_history(run_id, key)})


def test_two_ddp_workers_train_log_and_checkpoint(ray_cluster, mlflow_tracking, corpus, tmp_path):
    from mlflow import MlflowClient

    config = _config(corpus, str(tmp_path / "ckpt"), "ddp", "schedule.steps=4", "schedule.checkpoint_every=2",
                     "schedule.keep_checkpoints=1", "task.mixing=pareto", "optim.lr_backbone=0.0001",
                     "curriculum=[{steps: 2, sources: [beta]}]")
    result = fit(config)
    assert result.metrics["step"] == 4
    with result.checkpoint.as_directory() as directory:
        assert sorted(os.listdir(directory)) == ["meta.json", "model.safetensors", "train_state.pt"]
        model = load_model(os.path.join(directory, "model.safetensors"))  # the model stage's loader reads it
        assert model.config.timm_kwargs["img_size"] == 32
    kept = [p for p in os.listdir(tmp_path / "ckpt" / "ddp") if (tmp_path / "ckpt" / "ddp" / p).is_dir()]
    assert len(kept) == 1  # keep the last K = 1
    run = MlflowClient(mlflow_tracking).get_run(result.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["optim.lr_backbone"] == "0.0001" and run.data.params["scaling.workers"] == "2"
    assert len(run.data.tags["alpha/train.manifest_sha256"]) == 64
    assert _history(mlflow_tracking, result.mlflow_run_id, "loss/loss") == [1, 2, 3, 4]
    assert run.data.metrics["cluster/workers"] == 2 and run.data.metrics["cluster/nodes"] == 1
    for key in ("perf/images_per_s", "perf/data_wait_fraction", "lr/backbone", "lr/decoder",
                "pareto_weight/alpha", "val/beta/ssitrim"):
        assert key in run.data.metrics, key
    # Curriculum: the first two steps drew only beta, the rest both sources.
    shares = MlflowClient(mlflow_tracking).get_metric_history(result.mlflow_run_id, "data/share/beta")
    assert {m.step: m.value for m in shares}[2] == 1.0


def _losses(uri: str, run_id: str) -> dict[int, float]:
    from mlflow import MlflowClient

    return {m.step: m.value for m in MlflowClient(uri).get_metric_history(run_id, "loss/loss")}


@pytest.mark.slow
def test_checkpoints_to_s3_and_resumes_the_run_at_the_exact_data_position(ray_cluster, mlflow_tracking, s3_bucket,
                                                                         corpus, tmp_path):
    from mlflow import MlflowClient

    forward = "run.forward_env=[AWS_ENDPOINT_URL, AWS_DEFAULT_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY]"
    # Two ranks with two loader workers each; 3 steps leave each rank's next batch due from its second worker.
    common = ("schedule.checkpoint_every=3", "data.loader.workers=2")
    first = fit(_config(corpus, f"{s3_bucket}/runs", "s3run", "schedule.steps=3", forward, *common))
    assert first.metrics["step"] == 3
    files = storage.list_files(f"{s3_bucket}/runs/s3run")
    assert any(f.endswith("/model.safetensors") for f in files)
    # The same storage path and name: Ray hands the last checkpoint back and training continues from it.
    second = fit(_config(corpus, f"{s3_bucket}/runs", "s3run", "schedule.steps=6", forward, *common))
    assert second.metrics["step"] == 6
    run = MlflowClient(mlflow_tracking).get_run(second.mlflow_run_id)
    assert run.data.tags["dpt.restarts"] == "1" and run.data.tags["dpt.restart_1_from_step"] == "3"
    assert run.data.tags["dpt.restart_1_data"] == "exact"
    assert _history(mlflow_tracking, second.mlflow_run_id, "loss/loss") == [4, 5, 6]
    # The same 6 steps without interruption (CPU, deterministic): after the resume the losses are the same,
    # which they are only on the same batches (same samples, source draws and augmentation) and weights.
    straight = fit(_config(corpus, str(tmp_path / "ckpt"), "straight", "schedule.steps=6", *common))
    resumed = _losses(mlflow_tracking, second.mlflow_run_id)
    reference = _losses(mlflow_tracking, straight.mlflow_run_id)
    assert [resumed[s] for s in (4, 5, 6)] == pytest.approx([reference[s] for s in (4, 5, 6)], rel=1e-5, abs=0)
    assert _losses(mlflow_tracking, first.mlflow_run_id) == pytest.approx({s: reference[s] for s in (1, 2, 3)},
                                                                          rel=1e-5, abs=0)


def _train_worker_pids() -> list[int]:
    from ray.util.state import list_actors

    actors = list_actors(filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")])
    return [a.pid for a in actors]


def _run_id(uri: str) -> str:
    """The newest run of the quickstart config's experiment (the one the fault test just started)."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("dpt-quickstart")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0].info.run_id


@pytest.mark.slow
def test_sigkill_of_a_worker_resumes_from_the_last_checkpoint(ray_cluster, mlflow_tracking, corpus, tmp_path):
    import ray

    steps = 40  # long enough that the run is still going after the kill at step 10 (~0.3 s a step)
    config = _config(corpus, str(tmp_path / "ckpt"), "fault", f"schedule.steps={steps}",
                     "schedule.checkpoint_every=4", "run.max_failures=2")
    ray.init()
    outcome: dict = {}
    thread = threading.Thread(target=lambda: outcome.update(result=fit(config)), daemon=True)
    thread.start()
    deadline = time.monotonic() + 240
    pids: list[int] = []
    while len(pids) != 2:  # this run's two training workers (earlier runs' workers have exited)
        assert time.monotonic() < deadline and thread.is_alive(), "training workers did not start"
        time.sleep(1)
        pids = _train_worker_pids()
    # Ray registers a reported checkpoint asynchronously: returning from the report of step 4 does not
    # mean the controller has it. Killing after step 9 leaves it time to register at least one of the
    # checkpoints of steps 4 and 8, and still lands the kill between two checkpoints.
    while max(_history(mlflow_tracking, _run_id(mlflow_tracking), "loss/loss") or [0]) < 10:
        assert time.monotonic() < deadline and thread.is_alive(), "no checkpoint before the deadline"
        time.sleep(0.2)
    # Read the workers again now: the list taken at start-up can still hold an earlier run's exiting workers.
    pids = _train_worker_pids()
    assert len(pids) == 2, pids
    os.kill(pids[1], signal.SIGKILL)  # a training worker process that this test's run started
    thread.join(timeout=400)
    assert not thread.is_alive() and "result" in outcome
    result = outcome["result"]
    assert result.metrics["step"] == steps
    from mlflow import MlflowClient

    run = MlflowClient(mlflow_tracking).get_run(result.mlflow_run_id)
    assert int(run.data.tags["dpt.restarts"]) >= 1
    assert run.data.tags["dpt.restart_1_data"] == "exact"  # the data stream continued where the checkpoint was
    assert _history(mlflow_tracking, result.mlflow_run_id, "loss/loss") == list(range(1, steps + 1))
