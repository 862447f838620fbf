"""``dpt eval``: zero-shot evaluation of a checkpoint on the paper's benchmarks, on Ray Data, into MLflow.

    dpt eval --checkpoint s3://runs/exp1/checkpoint.safetensors --data-root s3://benchmarks \
             --benchmarks nyu,kitti --experiment dpt-zero-shot

``--data-root`` holds one folder per benchmark in its released layout (``diw/``, ``eth3d/``, ``sintel/``,
``kitti/``, ``nyu/``, ``tum/``; ``ade20k/`` for the segmentation benchmarks ``ade20k`` and ``ade20k_ms``
(multi-scale), which a segmentation checkpoint is evaluated on; see each reader in ``evaluation/benchmarks/``).
A metric depth checkpoint (fine-tuned to metres: ``dpt_hybrid_nyu``, ``dpt_hybrid_kitti``) is evaluated on
``nyu_metric`` (DPT Table 2: ``nyu/``, the official 654 test images) and ``kitti_metric`` (Table 3: ``kitti/``, the
Eigen test frames of ``kitti/eigen_test_files_with_gt.txt``), without alignment (:mod:`evaluation.metric_protocol`).
The checkpoint's task (``training.tasks``, from its model's head) says which benchmarks it supports: all of
them by default, and ``--benchmarks`` only among those.
Ray: joins ``--ray-address`` or ``RAY_ADDRESS`` when set, else starts a local instance on 127.0.0.1
(:mod:`pipeline.ray_cluster`). MLflow: the tracking URI comes from ``MLFLOW_TRACKING_URI``, else
``runs/mlflow.db`` (:mod:`pipeline.tracking`). Exit code 0 when every benchmark was scored, 1 when
any failed (the others are still logged).

Every input is checked before Ray starts or an MLflow run exists (:func:`check_inputs`): a bad one is one
line naming the option, exit code 1, and nothing is started or written.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING

from evaluation.benchmarks.kitti import EIGEN_GT_FILE
from evaluation.metric_protocol import METRIC_LABELS, METRIC_PROTOCOLS, MetricDepthProtocol
from evaluation.protocol import PROTOCOLS, SEGMENTATION_PROTOCOLS, get_protocol
from pipeline import storage
from pipeline.job_paths import check_job_path
from pipeline.tracking import tracking_uri

if TYPE_CHECKING:
    from evaluation.model_loading import CheckpointLoader

DEFAULT_EXPERIMENT = "dpt-zero-shot"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True,
                        help="checkpoint: a directory as `dpt train` prints it, or a model file (local or s3://), "
                             "or models:/NAME/VERSION, models:/NAME@ALIAS, runs:/RUN_ID/PATH")
    parser.add_argument("--model", default=None,
                        help="DPT variant to build (dpt_large, dpt_hybrid, ...); default: read from the checkpoint")
    parser.add_argument("--benchmarks", default=None,
                        help="comma-separated benchmarks of the checkpoint's task (default: all of them): "
                             f"depth {','.join(PROTOCOLS)}; metric depth {','.join(METRIC_PROTOCOLS)}; "
                             f"segmentation {','.join(SEGMENTATION_PROTOCOLS)}")
    parser.add_argument("--data-root", required=True,
                        help="folder or s3:// prefix with one folder per benchmark in its released layout (diw/, "
                             "eth3d/, sintel/, kitti/, nyu/, tum/, ade20k/); kitti_metric reads kitti/ with BTS's "
                             f"Eigen test list kitti/{EIGEN_GT_FILE} (ground truth from data_depth_annotated/train/ "
                             "or val/), nyu_metric reads nyu/")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--run-id", default=None, help="log into this existing MLflow run (e.g. the training run)")
    where.add_argument("--experiment", default=None, help=f"start a new run in this experiment (default {DEFAULT_EXPERIMENT})")
    parser.add_argument("--run-name", default=None, help="name of the new MLflow run")
    parser.add_argument("--input-size", type=int, default=None, help="longer input side (default: the variant's, 384)")
    parser.add_argument("--workers", type=int, default=0, help="model actors (default: one per GPU, else 2)")
    parser.add_argument("--chunk-images", type=int, default=8,
                        help="images per read task, one Ray Data block (default 8)")
    parser.add_argument("--batch-size", type=int, default=4,
                        help="images per call of a model actor and per forward pass (default 4)")
    parser.add_argument("--pictures", type=int, default=4, help="images per benchmark in the picture grid (default 4)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N images of each benchmark (smoke runs)")
    parser.add_argument("--force", action="store_true",
                        help="with --run-id: evaluate again benchmarks whose metric the run already has")
    parser.add_argument("--ray-address", default=None, help="Ray cluster address (default: RAY_ADDRESS or local)")


def parse_benchmarks(text: str) -> list[str]:
    names = [b.strip().lower() for b in text.split(",") if b.strip()]
    known = [*PROTOCOLS, *METRIC_PROTOCOLS, *SEGMENTATION_PROTOCOLS]
    unknown = [b for b in names if b not in known]
    if unknown or not names:
        raise ValueError(f"--benchmarks: unknown {unknown or text!r}; choose from {','.join(known)}")
    return list(dict.fromkeys(names))


def _has_files(url: str) -> bool:
    """Whether anything is stored under ``url``: a local directory holding a file, or an s3:// prefix holding an
    object (one listing request, however large the folder). Raises ``StorageError`` naming ``url``."""
    if not storage.is_s3(url):
        return os.path.isdir(url) and any(p.is_file() for p in Path(url).rglob("*"))
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = storage.split_s3(url)
    try:
        page = storage.s3_client().list_objects_v2(Bucket=bucket, Prefix=key.rstrip("/") + "/" if key else "",
                                                   MaxKeys=1)
    except (BotoCoreError, ClientError) as exc:  # botocore's messages name the operation, never a credential
        raise storage.StorageError(f"{url}: cannot list it ({exc})") from None
    return page.get("KeyCount", 0) > 0


def _without_password(uri: str) -> str:
    """``uri`` as it may be printed: a password in it (``postgresql://user:pw@host/db``) becomes ``***``."""
    parts = urllib.parse.urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{parts.username}:***@{host}").geturl()


def _check_run_id(run_id: str) -> None:
    """The run exists in the tracking store; looking it up creates nothing (a SQLite or file store that is not
    there is not created: the run cannot be in it)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    uri = tracking_uri()[0]
    shown = _without_password(uri)
    parts = urllib.parse.urlsplit(uri)
    local = None  # the file or folder of a local store
    if parts.scheme == "sqlite":
        local = uri[len("sqlite:///"):]
    elif parts.scheme == "file" or (parts.scheme == "" and uri != "databricks"):
        local = parts.path
    if local is not None and not os.path.exists(local):
        raise ValueError(f"--run-id {run_id}: no such run: the tracking store {shown} does not exist "
                         "(set MLFLOW_TRACKING_URI to the store that holds the run)")
    try:
        mlflow.MlflowClient(uri).get_run(run_id)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise ValueError(f"--run-id {run_id}: no such run in {shown}") from None
        reason = str(exc.message).splitlines()[0]
        raise ValueError(f"--run-id {run_id}: cannot look it up in {shown}: {reason}") from None


def _check_data_root(root: str, benchmarks: list[str]) -> None:
    """The data root is there and holds at least one requested benchmark's folder. A missing benchmark folder
    among others is not an error here: that benchmark fails in the job and the others still finish."""
    from evaluation.benchmarks import ALIASES

    folders = list(dict.fromkeys(ALIASES.get(b, b) for b in benchmarks))
    try:
        if not storage.is_s3(root) and not os.path.isdir(root):
            raise FileNotFoundError(f"{root}: no such directory")
        if any(_has_files(storage.join(root, folder)) for folder in folders):
            return
        what = "it holds none of their folders" if _has_files(root) else "nothing is stored there"
    except (OSError, RuntimeError) as exc:  # not there, no bucket, no access: the message names the URL
        raise ValueError(f"--data-root {exc}") from None
    raise ValueError(f"--data-root {root}: {what} (the benchmarks asked for need "
                     f"{', '.join(f + '/' for f in folders)})")


def task_benchmarks(args: argparse.Namespace, asked: list[str] | None) -> list[str]:
    """The benchmarks to run: those ``asked`` for, or every one of the checkpoint's task (``training.tasks``: the
    task of the model's head, from the checkpoint's header or ``--model``) for a model with its number of classes
    (segmentation: ADE20K's 150, Pascal Context's 59); one the task does not support, or of another number of
    classes, is refused, naming it."""
    from training.model.checkpoint import checkpoint_config
    from training.tasks import task_for_model

    config = checkpoint_config(args.checkpoint, args.model)
    task = task_for_model(config)
    classes = task.classes(config)
    # A protocol without classes (depth) has no num_classes; a task without classes has None: they go together.
    counts = {b: getattr(get_protocol(b), "num_classes", None) for b in task.benchmarks}
    if asked is None:
        fitting = [b for b in task.benchmarks if counts[b] == classes]
        if not fitting:
            raise ValueError(f"the checkpoint's model predicts {classes} classes, and none of the {task.name} "
                             f"benchmarks has as many: {', '.join(f'{b} ({n})' for b, n in counts.items())}")
        return fitting
    others = [b for b in asked if b not in task.benchmarks]
    if others:
        raise ValueError(f"--benchmarks {','.join(others)}: not for the checkpoint's task, {task.name} (a {task.head} "
                         f"head); its benchmarks: {','.join(task.benchmarks)}")
    wrong = [f"{b} ({counts[b]} classes)" for b in asked if counts[b] != classes]
    if wrong:
        raise ValueError(f"--benchmarks {', '.join(wrong)}: the checkpoint's model predicts {classes} classes")
    return asked


def check_inputs(args: argparse.Namespace, loader: CheckpointLoader) -> list[str]:
    """Fail now, before Ray starts or an MLflow run exists, on whatever would fail later: the benchmark names,
    the numbers, the checkpoint (there, and of a kind the loader reads: its first bytes only), the benchmarks
    against the checkpoint's task, the data root and its benchmark folders, and the run of ``--run-id``.
    Returns the benchmarks asked for (default: the task's)."""
    benchmarks = None if args.benchmarks is None else parse_benchmarks(args.benchmarks)
    for option, value, least in (("--chunk-images", args.chunk_images, 1), ("--batch-size", args.batch_size, 1),
                                 ("--workers", args.workers, 0), ("--pictures", args.pictures, 0),
                                 ("--limit", args.limit, 1), ("--input-size", args.input_size, 32)):
        if value is not None and value < least:
            raise ValueError(f"{option} must be at least {least}, got {value}")
    check_job_path(args.checkpoint, "--checkpoint")
    check_job_path(args.data_root, "--data-root")
    loader.check()
    benchmarks = task_benchmarks(args, benchmarks)
    _check_data_root(args.data_root, benchmarks)
    if args.run_id:
        _check_run_id(args.run_id)
    return benchmarks


def _not_yet_in_run(run_id: str, benchmarks: list[str]) -> list[str]:
    """Resuming into an existing run: benchmarks it already has a number for are not evaluated again."""
    import mlflow

    done = mlflow.get_run(run_id).data.metrics
    for name in benchmarks:
        key = get_protocol(name).result_key
        if key in done:
            print(f"{get_protocol(name).title:<14} already in run {run_id}: {key} = {done[key]:.4f} (--force to redo)")
    return [b for b in benchmarks if get_protocol(b).result_key not in done]


def _report_metric_depth(outcome, protocol: MetricDepthProtocol, limited: bool) -> None:
    """The paper's columns of Table 2 or 3 (every metric is in MLflow), values under their names."""
    skipped = f", {outcome.sums.skipped} without valid ground truth" if outcome.sums.skipped else ""
    values = protocol.values(outcome.sums)
    print(f"{protocol.title:<20}" + "".join(f"{METRIC_LABELS[name]:>9}" for name in protocol.columns))
    print(f"{protocol.table:<20}" + "".join(f"{values.get(name, math.nan):9.4f}" for name in protocol.columns)
          + f"   ({outcome.sums.images} images{skipped})")
    if not limited and outcome.sums.images != protocol.expected_images:
        print(f"{'':<20} note: {outcome.sums.images} images scored; the paper's split has {protocol.expected_images}",
              file=sys.stderr)


def _report(outcome, limited: bool) -> None:
    protocol = get_protocol(outcome.name)
    if outcome.error:
        print(f"{protocol.title:<14} FAILED: {outcome.error}", file=sys.stderr)
        return
    if isinstance(protocol, MetricDepthProtocol):
        _report_metric_depth(outcome, protocol, limited)
        return
    skipped = f", {outcome.sums.skipped} without valid ground truth" if outcome.sums.skipped else ""
    print(f"{protocol.title:<14} {protocol.metric_label:<12} {outcome.value:8.4f}   "
          f"({outcome.sums.images} images{skipped})")
    for _, label, value in protocol.extra_metrics(outcome.sums):
        print(f"{'':<14} {label:<12} {value:8.4f}")
    if not limited and outcome.listed != protocol.expected_images:
        # Not an error (a partial local copy is useful), but the number is not the paper's protocol.
        print(f"{'':<14} note: {outcome.listed} images listed; the paper's split has {protocol.expected_images}",
              file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from evaluation.model_loading import CheckpointLoader
    from training.model.checkpoint_ref import resolve_checkpoint

    args.checkpoint = resolve_checkpoint(args.checkpoint)  # models:/..., runs:/... -> a local checkpoint directory
    loader = CheckpointLoader(args.checkpoint, args.model, args.input_size)
    requested = benchmarks = check_inputs(args, loader)  # nothing is started or written before this passes

    import mlflow

    from evaluation.job import EvalOptions, evaluate
    from evaluation.tracking import log_outcome, start_run
    from pipeline.ray_cluster import connect

    mlflow.set_tracking_uri(tracking_uri()[0])  # the store every stage uses: MLFLOW_TRACKING_URI, else runs/

    options = EvalOptions(chunk_images=args.chunk_images, batch_size=args.batch_size, workers=args.workers,
                          pictures=args.pictures, limit=args.limit)
    experiment = None if args.run_id else (args.experiment or DEFAULT_EXPERIMENT)
    if args.run_id and not args.force:
        benchmarks = _not_yet_in_run(args.run_id, benchmarks)
    if benchmarks:
        connect(args.ray_address, log_to_driver=False)
    with start_run(args.run_id, experiment, args.run_name) as active:
        # Tags, not params: a resumed run may be evaluated again with other options.
        mlflow.set_tags({"eval.checkpoint": args.checkpoint, "eval.data_root": args.data_root,
                         "eval.model": args.model or "from checkpoint", "eval.benchmarks": ",".join(requested),
                         "eval.input_size": str(args.input_size or "variant default")})

        def on_done(outcome) -> None:
            _report(outcome, limited=args.limit is not None)
            log_outcome(outcome, args.data_root)

        outcomes = evaluate(loader, benchmarks, args.data_root, options, on_done=on_done) if benchmarks else {}
        failed = [o.name for o in outcomes.values() if o.error or math.isnan(o.value)]
        logged = mlflow.get_run(active.info.run_id).data.metrics
        scored = [b for b in requested if get_protocol(b).result_key in logged]
        mlflow.set_tag("eval.status", "complete" if len(scored) == len(requested) else "partial")
        print(f"MLflow run {active.info.run_id}: {len(scored)} of {len(requested)} benchmarks scored")
    return 1 if failed else 0
