"""Logging evaluation results to MLflow, one benchmark at a time as each finishes.

Names (stable across runs, so that the MLflow UI lines them up):

| what | name |
|---|---|
| the Table 1 number of a benchmark | metric ``zero_shot/<benchmark>_<metric>`` (e.g. ``zero_shot/nyu_delta_gt_1.25``) |
| the Tables 2 and 3 numbers (metric depth) | metrics ``metric_depth/<benchmark>_<m>``, m each of ``DEPTH_METRICS`` |
| the Table 4 numbers (segmentation) | metrics ``segmentation/<benchmark>_miou``, ``segmentation/<benchmark>_pixel_accuracy`` |
| segmentation details | artifacts ``eval/segmentation/<benchmark>_confusion.npy``, ``<benchmark>_class_iou.csv`` |
| images scored / skipped | metrics ``<group>/<benchmark>_images``, ``_skipped`` (``zero_shot/``, ``metric_depth/``, ...) |
| a benchmark that failed | tag ``eval.error.<benchmark>`` with the message |
| the images a benchmark scored | dataset input ``<benchmark>`` (context ``evaluation``; source: its folder; digest: the sha256 of its image ids) |
| the evaluated checkpoint, data root | tags ``eval.checkpoint``, ``eval.data_root`` |
| per-image metrics | artifact ``eval/per_image/<benchmark>.parquet`` (metric depth: a row per image and metric) |
| picture grids | artifact ``eval/pictures/<benchmark>.png`` (metric depth: in metres) |
"""

from __future__ import annotations

import io
import math

import mlflow
import pyarrow as pa
import pyarrow.parquet as pq

from evaluation.job import BenchmarkOutcome
from pipeline import storage
from pipeline.tracking import experiment_id, tracking_uri
from pipeline.tracking_datasets import benchmark_dataset, dataset_input
from evaluation.pictures import picture_grid
from evaluation.protocol import get_protocol

ROW_SCHEMA = pa.schema([
    ("benchmark", pa.string()), ("id", pa.string()), ("metric", pa.string()), ("value", pa.float64()),
    ("weight", pa.float64()), ("valid_pixels", pa.int64()), ("scale", pa.float64()), ("shift", pa.float64()),
    ("reason", pa.string()),
])


def start_run(run_id: str | None, experiment: str | None, run_name: str | None = None):
    """Resume ``run_id`` (e.g. the training run) or start a new run in ``experiment``, on the tracking store
    every stage uses (``MLFLOW_TRACKING_URI``, else ``runs/mlflow.db``)."""
    uri = tracking_uri()[0]
    mlflow.set_tracking_uri(uri)
    if run_id:
        return mlflow.start_run(run_id=run_id)
    experiment_ = experiment_id(mlflow.MlflowClient(uri), experiment, uri) if experiment else None
    return mlflow.start_run(experiment_id=experiment_, run_name=run_name)


def per_image_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=ROW_SCHEMA)


def log_benchmark_input(outcome: BenchmarkOutcome, data_root: str) -> None:
    """The images ``outcome`` scored (its per-image rows) as a dataset input of the active run, context
    ``evaluation``: the same images of the same benchmark show the same digest in every run."""
    from evaluation.benchmarks import ALIASES

    ids = [row["id"] for row in outcome.rows]
    if outcome.error or not ids:
        return
    protocol = get_protocol(outcome.name)
    url = storage.join(data_root, ALIASES.get(outcome.name, outcome.name))
    entity = benchmark_dataset(outcome.name, url, ids, {"protocol": protocol.title, "listed": outcome.listed})
    mlflow.MlflowClient().log_inputs(mlflow.active_run().info.run_id, datasets=[dataset_input(entity, "evaluation")])


def log_outcome(outcome: BenchmarkOutcome, data_root: str | None = None) -> None:
    """Log one finished benchmark into the active run; what beside its number its protocol says; with
    ``data_root``, the benchmark as a dataset input (:func:`log_benchmark_input`)."""
    protocol = get_protocol(outcome.name)
    if data_root is not None:
        log_benchmark_input(outcome, data_root)
    if outcome.error:
        mlflow.set_tag(f"eval.error.{outcome.name}", outcome.error[:4000])
    elif not math.isnan(outcome.value):
        values = {
            protocol.result_key: outcome.value,
            f"{protocol.group}/{outcome.name}_images": outcome.sums.images,
            f"{protocol.group}/{outcome.name}_skipped": outcome.sums.skipped,
        }
        values.update({key: value for key, _, value in protocol.extra_metrics(outcome.sums)})
        mlflow.log_metrics(values)
    if not outcome.error:
        for path, data in protocol.artifacts(outcome.sums).items():
            folder, _, filename = path.rpartition("/")
            with _temporary(filename, data) as local:
                mlflow.log_artifact(local, artifact_path=folder)
    if outcome.rows:
        buf = io.BytesIO()
        pq.write_table(per_image_table(outcome.rows), buf)
        with _temporary(f"{outcome.name}.parquet", buf.getvalue()) as path:
            mlflow.log_artifact(path, artifact_path="eval/per_image")
    if outcome.pictures and not outcome.error:
        metric = protocol.metric_label
        fig = picture_grid(outcome.pictures, f"{protocol.title}: {metric} = {outcome.value:.4g}", metric)
        mlflow.log_figure(fig, f"eval/pictures/{outcome.name}.png")
        import matplotlib.pyplot as plt

        plt.close(fig)


class _temporary:
    """A named temporary file holding ``data`` (mlflow.log_artifact logs paths, keeping the name)."""

    def __init__(self, name: str, data: bytes):
        import tempfile

        self._dir = tempfile.TemporaryDirectory(prefix="dpt-eval-")
        self.path = f"{self._dir.name}/{name}"
        with open(self.path, "wb") as f:
            f.write(data)

    def __enter__(self) -> str:
        return self.path

    def __exit__(self, *exc) -> None:
        self._dir.cleanup()
