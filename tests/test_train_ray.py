"""Training on the REAL Ray head with DDP (gloo), MLflow server and moto S3: checkpoints, resume, faults."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from pipeline import storage
from pipeline.config import load_config
from tests.helpers.training_corpus import write_source
from tests.helpers.cli import dpt
from tests.services import BIN
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


def _overrides(corpus: str, storage_path: str, name: str, *extra: str) -> list[str]:
    return [
        f"data.shards.prefix={corpus}", "data.shards.sources=[alpha, beta]", "data.loader.workers=0",
        "data.loader.batch_size=2", "data.geometric.size=32", "model.name=dpt_tiny",
        "model.overrides={timm_kwargs: {depth: 4, img_size: 32}}", "scaling.workers=2",
        f"storage.path={storage_path}", f"storage.name={name}", "schedule.log_every=1",
        "schedule.val_max_samples=4", *extra,
    ]


def _config(corpus: str, storage_path: str, name: str, *extra: str) -> TrainConfig:
    return load_config(TrainConfig, QUICKSTART, _overrides(corpus, storage_path, name, *extra))


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
    assert run.data.metrics["ray/workers"] == 2 and run.data.metrics["ray/nodes"] == 1
    for key in ("perf/images_per_s", "perf/data_wait_fraction", "lr/backbone", "lr/decoder",
                "pareto_weight/alpha", "val/beta/ssitrim"):
        assert key in run.data.metrics, key
    # Curriculum: the first two steps drew only beta, the rest both sources.
    shares = MlflowClient(mlflow_tracking).get_metric_history(result.mlflow_run_id, "mix/beta")
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


def _run_id(uri: str, experiment: str = "dpt-quickstart") -> str:
    """The newest run of the experiment (the quickstart config's: the one the fault test just started)."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(experiment)
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0].info.run_id


def _train_in_background(config: TrainConfig, uri: str, after_step: int) -> tuple[threading.Thread, dict, list[int]]:
    """Start ``fit(config)`` in a thread; once MLflow has the loss of ``after_step``, return (the thread, its
    outcome: ``{"result": FitResult}`` when done, the pids of the run's two training workers)."""
    import ray

    ray.init()
    outcome: dict = {}
    thread = threading.Thread(target=lambda: outcome.update(result=fit(config)), daemon=True)
    thread.start()
    deadline = time.monotonic() + 240
    while len(_train_worker_pids()) != 2:  # this run's two training workers (earlier runs' workers have exited)
        assert time.monotonic() < deadline and thread.is_alive(), "training workers did not start"
        time.sleep(1)
    while max(_history(uri, _run_id(uri), "loss/loss") or [0]) < after_step:
        assert time.monotonic() < deadline and thread.is_alive(), f"no step {after_step} before the deadline"
        time.sleep(0.2)
    # Read the workers again now: the list taken at start-up can still hold an earlier run's exiting workers.
    pids = _train_worker_pids()
    assert len(pids) == 2, pids
    return thread, outcome, pids


def _wait_for(uri: str, run_id: str, restarts: int, step: int, thread: threading.Thread) -> list[int]:
    """Once the run has ``restarts`` restarts and MLflow has the loss of ``step``: its two training workers' pids."""
    from mlflow import MlflowClient

    deadline = time.monotonic() + 300
    while (MlflowClient(uri).get_run(run_id).data.tags.get("dpt.restarts") != str(restarts)
           or max(_history(uri, run_id, "loss/loss") or [0]) < step):
        assert time.monotonic() < deadline and thread.is_alive(), f"no step {step} after restart {restarts}"
        time.sleep(0.2)
    pids = _train_worker_pids()
    assert len(pids) == 2, pids
    return pids


@pytest.mark.slow
def test_a_worker_sigterm_checkpoints_the_current_step_and_a_sigkill_resumes_from_the_last_checkpoint(
        ray_cluster, mlflow_tracking, corpus, tmp_path):
    """One run, two faults: SIGTERM to the workers, sent by `dpt preempt` as a node's shutdown hook does (a
    spot reclaim, a Kubernetes drain), leaves a checkpoint at the current step and the workers restart from it;
    later a SIGKILL (no warning) restarts them from the last periodic checkpoint. Both resumes are exact: the
    losses are those of an uninterrupted run."""
    from mlflow import MlflowClient

    steps, every = 56, 16  # ~0.3 s a step: the SIGTERM's stop lands seconds after step 3, before step 16
    common = (f"schedule.steps={steps}", f"schedule.checkpoint_every={every}")
    config = _config(corpus, str(tmp_path / "ckpt"), "faults", *common, "run.max_failures=2")
    thread, outcome, pids = _train_in_background(config, mlflow_tracking, after_step=3)
    run_id = _run_id(mlflow_tracking)
    hook = dpt("preempt", "--wait", "120", env={**os.environ, **ray_cluster.env}, timeout=180)
    assert hook.returncode == 0, hook.stdout + hook.stderr
    assert hook.stdout.strip() == "dpt preempt: SIGTERM to 2 training workers; all have checkpointed and exited"
    assert not set(pids) & set(_train_worker_pids())
    # Ray registers a reported checkpoint asynchronously: killing 3 steps after the one of step 32 leaves it
    # time to register it (or at least the one of step 16), and still lands between two checkpoints.
    pids = _wait_for(mlflow_tracking, run_id, restarts=1, step=2 * every + 3, thread=thread)
    os.kill(pids[0], signal.SIGKILL)
    thread.join(timeout=400)
    assert not thread.is_alive() and "result" in outcome
    result = outcome["result"]
    assert result.metrics["step"] == steps and result.stopped is None  # a worker's SIGTERM does not end the run
    run = MlflowClient(mlflow_tracking).get_run(result.mlflow_run_id)
    tags = run.data.tags
    assert run.info.status == "FINISHED" and tags["dpt.restarts"] == "2"
    # The stop step: the ranks finish the step in progress when the signal arrives, agree at the step
    # boundary, and checkpoint there; the signal came after step 3 was logged, so that step or a later one.
    stopped_at = int(tags["dpt.restart_1_from_step"])
    assert 3 <= stopped_at < 2 * every and tags["dpt.restart_1_reason"] == "sigterm"
    assert tags["dpt.restart_2_from_step"] in (str(every), str(2 * every)) and tags["dpt.restart_2_reason"] == "periodic"
    assert tags["dpt.restart_1_data"] == tags["dpt.restart_2_data"] == "exact"
    assert _history(mlflow_tracking, result.mlflow_run_id, "loss/loss") == list(range(1, steps + 1))
    # The same batches and weights from the stop step on as without faults: both resumes were exact.
    straight = fit(_config(corpus, str(tmp_path / "ckpt"), "faults-straight", *common))
    resumed, reference = (_losses(mlflow_tracking, r.mlflow_run_id) for r in (result, straight))
    after = range(stopped_at + 1, steps + 1)
    assert [resumed[s] for s in after] == pytest.approx([reference[s] for s in after], rel=1e-5, abs=0)


@pytest.mark.slow
def test_ray_job_stop_ends_the_run_with_a_checkpoint_at_the_current_step(ray_cluster, mlflow_tracking, corpus,
                                                                        tmp_path):
    from mlflow import MlflowClient

    from training.train import previous_run

    experiment, job = "dpt-job-stop", f"dpt-stop-{os.getpid()}-{time.monotonic_ns()}"
    overrides = _overrides(corpus, str(tmp_path / "ckpt"), "stopped", "schedule.steps=500",
                           "schedule.checkpoint_every=1000", f"tracking.experiment={experiment}")
    # `ray job stop` sends the entrypoint SIGTERM and, RAY_JOB_STOP_WAIT_TIME_S later (3 s by default), SIGKILL:
    # a job that checkpoints at the stop sets it to the time a checkpoint takes (here: a busy 2-core machine).
    env = {"env_vars": {"MLFLOW_TRACKING_URI": mlflow_tracking, "RAY_JOB_STOP_WAIT_TIME_S": "120"}}
    submitted = ray_cluster.submit_job([str(BIN / "dpt"), "train", "--config", str(QUICKSTART), *overrides],
                                       "--no-wait", "--submission-id", job, "--runtime-env-json", json.dumps(env))
    assert submitted.returncode == 0, submitted.stderr[-3000:]
    deadline = time.monotonic() + 240
    while _job_step(mlflow_tracking, experiment) < 2:
        assert time.monotonic() < deadline, "no step 2 logged before the deadline:\n" + _job_logs(ray_cluster, job)
        time.sleep(0.5)
    stop = subprocess.run([str(BIN / "ray"), "job", "stop", "--address", ray_cluster.dashboard_url, job],
                          env=ray_cluster.env, capture_output=True, text=True, timeout=300)
    assert stop.returncode == 0, stop.stdout[-2000:] + stop.stderr[-2000:]
    run = MlflowClient(mlflow_tracking).get_run(_job_run(mlflow_tracking, experiment))
    assert run.info.status == "KILLED"
    logged = _history(mlflow_tracking, run.info.run_id, "loss/loss")
    stopped_at = max(logged)
    assert logged == list(range(1, stopped_at + 1)) and 2 <= stopped_at < 500
    line = f"stopped by SIGTERM (to the driver) at step {stopped_at}, checkpoint "
    assert run.data.tags["dpt.stopped"].startswith(line)  # rank 0 marks the run, and the driver again
    assert f"MLflow run {run.info.run_id} (KILLED)" in _job_logs(ray_cluster, job)  # the driver's last line
    # What the same command continues from: the stop step's checkpoint (there is no periodic one).
    checkpoint, step = previous_run(load_config(TrainConfig, QUICKSTART, overrides))
    assert step == stopped_at
    assert json.loads(Path(checkpoint, "meta.json").read_text())["stopped_by"] == "stopped"
    # (That a run continues exactly from a stop checkpoint is the worker SIGTERM test's; from the run's latest
    # checkpoint when the same command runs again, the S3 test's.)


def _job_run(uri: str, experiment: str) -> str | None:
    from mlflow import MlflowClient

    return _run_id(uri, experiment) if MlflowClient(uri).get_experiment_by_name(experiment) else None


def _job_step(uri: str, experiment: str) -> int:
    """The last step the newest run of ``experiment`` logged (0: none yet)."""
    run_id = _job_run(uri, experiment)
    return max(_history(uri, run_id, "loss/loss") or [0]) if run_id else 0


def _job_logs(head, job: str) -> str:
    logs = subprocess.run([str(BIN / "ray"), "job", "logs", "--address", head.dashboard_url, job], env=head.env,
                          capture_output=True, text=True, timeout=60)
    return logs.stdout + logs.stderr
