"""MLflow as a user meets it, against the real `mlflow server` fixture: dataset inputs (training, validation,
evaluation), system metrics, the model-training experiment kind, and `dpt compare` by query with --promote.

No Ray Train run: the tracking layer that a training run calls (training.tracking, training.system_metrics) is
exercised directly, which is what these behaviours depend on, in seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import io
import time
import uuid
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.shards import MANIFEST_NAME, shard_dir
from pipeline.tracking import EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND
from pipeline.tracking_datasets import DIGEST_CHARS
from tests.helpers.training_corpus import write_source
from training.config import TrainConfig

pytestmark = pytest.mark.services
ROOT = Path(__file__).resolve().parents[1]
KITTI = "zero_shot/kitti_delta_gt_1.25"  # a Table 1 metric (evaluation.protocol)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    prefix = str(tmp_path_factory.mktemp("lineage-corpus"))
    write_source(prefix, "alpha", 4, per_shard=2)
    write_source(prefix, "beta", 3, per_shard=3)
    write_source(prefix, "beta", 2, per_shard=2, split="val", offset=100)
    return prefix


def _config(corpus: str, name: str, experiment: str, *extra: str) -> TrainConfig:
    return load_config(TrainConfig, ROOT / "configs" / "quickstart.yaml", [
        f"data.shards.prefix={corpus}", "data.shards.sources=[alpha, beta]", f"storage.name={name}",
        f"tracking.experiment={experiment}", *extra])


def _sha256(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _inputs(client, run_id: str) -> dict[tuple[str, str], object]:
    """{(dataset name, context): dataset} of a run."""
    out = {}
    for item in client.get_run(run_id).inputs.dataset_inputs:
        context = {t.key: t.value for t in item.tags}["mlflow.data.context"]
        out[(item.dataset.name, context)] = item.dataset
    return out


def test_training_runs_log_their_manifests_as_datasets_in_a_model_training_experiment(mlflow_tracking, corpus,
                                                                                         tmp_path):
    import json

    from mlflow import MlflowClient

    from training import tracking

    client = MlflowClient(mlflow_tracking)
    experiment = f"lineage-{uuid.uuid4().hex[:8]}"
    runs = []
    for name in ("first", "second"):  # two runs on the same data
        config = _config(corpus, name, experiment, f"storage.path={tmp_path}", "tracking.system_metrics=false")
        runs.append(tracking.create_run(config, mlflow_tracking))
        tracking.finish_run(config, mlflow_tracking, runs[-1], "FINISHED")
    assert client.get_experiment_by_name(experiment).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND

    first, second = (_inputs(client, run) for run in runs)
    assert set(first) == {("alpha/train", "training"), ("beta/train", "training"), ("beta/val", "validation")}
    for (name, _), dataset in first.items():
        source, split = name.split("/")
        manifest = str(Path(shard_dir(corpus, source, split)) / MANIFEST_NAME)
        assert dataset.digest == _sha256(manifest)[:DIGEST_CHARS] == second[name, _].digest
        assert json.loads(dataset.source)["uri"] == manifest and dataset.source_type == "local"
        profile = json.loads(dataset.profile)
        assert profile["sha256"] == _sha256(manifest) and profile["split"] == split
    assert json.loads(first["alpha/train", "training"].profile)["samples"] == 4
    assert json.loads(first["alpha/train", "training"].profile)["shards"] == 2
    tags = client.get_run(runs[0]).data.tags  # the lineage tags stay, short enough to read in the UI
    assert tags["alpha/train.manifest_sha256"] == _sha256(str(Path(corpus) / "alpha/train" / MANIFEST_NAME))
    assert tags["corpus.prefix"] == corpus and tags["code.version"] and len(tags["code.sha256"]) == 64

    # An experiment made before the tag existed is given it; a kind chosen in the UI is kept.
    from pipeline.tracking import experiment_id

    older = client.create_experiment(f"older-{uuid.uuid4().hex[:8]}")
    chosen = client.create_experiment(f"chosen-{uuid.uuid4().hex[:8]}", tags={EXPERIMENT_KIND_TAG: "finetuning"})
    for made in (older, chosen):
        experiment_id(client, client.get_experiment(made).name, mlflow_tracking)
    assert client.get_experiment(older).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND
    assert client.get_experiment(chosen).tags[EXPERIMENT_KIND_TAG] == "finetuning"


def test_an_evaluated_benchmark_is_a_dataset_input(mlflow_tracking, tmp_path):
    import json

    import mlflow

    from evaluation.job import BenchmarkOutcome
    from evaluation.protocol import MetricSums
    from evaluation.tracking import log_benchmark_input

    ids = ["frame-2", "frame-1", "frame-3"]
    outcome = BenchmarkOutcome("tum", MetricSums(), listed=3, rows=[{"id": i} for i in ids], pictures=[], seconds=0)
    mlflow.set_tracking_uri(mlflow_tracking)
    with mlflow.start_run() as run:
        log_benchmark_input(outcome, str(tmp_path / "benchmarks"))
    [(key, dataset)] = _inputs(mlflow.MlflowClient(), run.info.run_id).items()
    assert key == ("tum", "evaluation")
    assert dataset.digest == hashlib.sha256(b"frame-1\nframe-2\nframe-3").hexdigest()[:DIGEST_CHARS]
    assert json.loads(dataset.source)["uri"] == str(tmp_path / "benchmarks" / "tum")
    assert json.loads(dataset.profile)["images"] == 3


def _wait_for_metric(client, run_id: str, key: str, deadline_s: float = 120.0) -> bool:
    """Whether ``key`` appears in the run before the deadline (a generous one: the machine may be loaded)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if key in client.get_run(run_id).data.metrics:
            return True
        time.sleep(0.2)
    return False


def test_system_metrics_appear_and_stop_cleanly(mlflow_tracking):
    from mlflow import MlflowClient

    from training.system_metrics import SystemMetrics

    client = MlflowClient(mlflow_tracking)
    experiment = client.create_experiment(f"system-{uuid.uuid4().hex[:8]}")
    run_id = client.create_run(experiment).info.run_id
    driver = SystemMetrics(mlflow_tracking, run_id, interval_s=0.1)
    node = SystemMetrics(mlflow_tracking, run_id, node="node_0", interval_s=0.1)
    off = SystemMetrics(mlflow_tracking, run_id, active=False)
    assert driver.running and node.running and not off.running
    assert _wait_for_metric(client, run_id, "system/cpu_utilization_percentage")
    assert _wait_for_metric(client, run_id, "system/node_0/system_memory_usage_megabytes")
    assert driver.stop() and node.stop() and off.stop()
    assert not driver.running and not node.running

    # An MLflow that does not answer: starting and stopping never raise, and stopping gives up after wait_s.
    unreachable = SystemMetrics("http://127.0.0.1:9", run_id, interval_s=0.1)
    unreachable.stop(wait_s=0.5)


def _compare(*argv: str) -> tuple[int, str]:
    from evaluation import compare_command

    parser = argparse.ArgumentParser()
    compare_command.add_arguments(parser)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = compare_command.run(parser.parse_args(argv))
    return code, out.getvalue()


@pytest.fixture(scope="module")
def evaluated(mlflow_server) -> tuple[str, dict[str, float]]:
    """An experiment of four evaluated runs (KITTI numbers 10, 15, 25, 30) and a training run without any."""
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_server)
    name = f"compare-{uuid.uuid4().hex[:8]}"
    experiment = client.create_experiment(name)
    values = {}
    for index, value in enumerate((25.0, 10.0, 30.0, 15.0)):
        run = client.create_run(experiment, run_name=f"run-{index}", tags={"size": "large" if index % 2 else "base"})
        client.log_metric(run.info.run_id, KITTI, value)
        client.set_terminated(run.info.run_id)
        values[run.info.run_id] = value
    client.create_run(experiment, run_name="training only")
    return name, values


def test_compare_by_query_selects_what_search_runs_selects_and_logs_a_comparison_run(mlflow_tracking, evaluated,
                                                                                     tmp_path):
    from mlflow import MlflowClient

    name, values = evaluated
    client = MlflowClient(mlflow_tracking)
    experiment = client.get_experiment_by_name(name).experiment_id
    query = f"metrics.`{KITTI}` < 20"
    order = f"metrics.`{KITTI}` ASC"
    code, out = _compare("--experiment", name, "--filter", query, "--order-by", order, "--out", str(tmp_path))
    assert code == 0, out
    assert f"/#/experiments/{experiment}/runs/" in out and "?workflowType=machine_learning" in out  # the UI link
    expected = [r.info.run_id for r in client.search_runs([experiment], query, order_by=[order], max_results=50)]
    assert [values[r] for r in expected] == [10.0, 15.0]

    [comparison] = [r for r in client.search_runs([experiment], "tags.`dpt.stage` = 'compare'")
                    if r.data.tags["compare.filter"] == query]
    assert comparison.data.tags["compare.filter"] == query and comparison.data.tags["compare.selected"] == "2"
    folder = client.download_artifacts(comparison.info.run_id, "", str(tmp_path / "artifacts"))
    selection = list(csv.DictReader(open(f"{folder}/selection.csv")))
    assert [row["run_id"] for row in selection] == expected  # exactly what search_runs selects, in its order
    table = [row for row in csv.DictReader(open(f"{folder}/compare.csv")) if row["kind"] == "run"]
    assert [row["run_id"] for row in table] == expected
    assert Path(f"{folder}/compare.png").read_bytes()[:4] == b"\x89PNG"
    markdown = Path(f"{folder}/compare.md").read_text()
    assert "run-1" in markdown and "run-3" in markdown and "run-0" not in markdown and query in markdown

    # A filter MLflow refuses is one line naming the option, before anything is written.
    with pytest.raises(ValueError, match="^--filter: MLflow refused the query"):
        _compare("--experiment", name, "--filter", "metrics.nope <<< 3", "--out", str(tmp_path / "bad"))
    assert not (tmp_path / "bad").exists()


def test_compare_promote_sets_the_alias_on_the_best_runs_model_version(mlflow_tracking, evaluated, tmp_path):
    from mlflow import MlflowClient

    name, values = evaluated
    client = MlflowClient(mlflow_tracking)
    best = min(values, key=values.get)
    model = f"dpt-{uuid.uuid4().hex[:8]}"
    client.create_registered_model(model)
    version = client.create_model_version(model, f"runs:/{best}/model", run_id=best)
    order = f"metrics.`{KITTI}` ASC"

    code, out = _compare("--experiment", name, "--order-by", order, "--promote", "champion", "--out", str(tmp_path))
    assert code == 0, out
    assert f"promoted {model} version {version.version}" in out
    assert client.get_model_version_by_alias(model, "champion").run_id == best

    worst = max(values, key=values.get)  # DESC: the worst run comes first, and it has no registered version
    with pytest.raises(ValueError, match=f"^--promote champion: the best run run-2 \\({worst}\\) has no registered"):
        _compare("--experiment", name, "--order-by", f"metrics.`{KITTI}` DESC", "--promote", "champion",
                 "--out", str(tmp_path / "none"))
    with pytest.raises(ValueError, match="^--promote champion: needs --order-by"):
        _compare("--experiment", name, "--promote", "champion", "--out", str(tmp_path / "none"))
    assert not (tmp_path / "none").exists()
