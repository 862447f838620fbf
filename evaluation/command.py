"""``dpt eval``: zero-shot evaluation of a checkpoint on the paper's benchmarks, on Ray, into MLflow.

    dpt eval --checkpoint s3://runs/exp1/checkpoint.safetensors --data-root s3://benchmarks \
             --benchmarks nyu,kitti --experiment dpt-zero-shot

``--data-root`` holds one folder per benchmark in its released layout (``diw/``, ``eth3d/``, ``sintel/``,
``kitti/``, ``nyu/``, ``tum/``; ``ade20k/`` for the segmentation benchmarks ``ade20k`` and ``ade20k_ms``
(multi-scale), which a segmentation checkpoint is evaluated on; see each reader in ``evaluation/benchmarks/``).
Ray: joins ``--ray-address`` or ``RAY_ADDRESS`` when set, else starts a local instance on 127.0.0.1
(:mod:`pipeline.ray_cluster`). MLflow: the
tracking URI comes from ``MLFLOW_TRACKING_URI``. Exit code 0 when every benchmark was scored, 1 when
any failed (the others are still logged).
"""

from __future__ import annotations

import argparse
import math
import sys

from evaluation.protocol import PROTOCOLS, SEGMENTATION_PROTOCOLS, get_protocol

DEFAULT_EXPERIMENT = "dpt-zero-shot"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="checkpoint file (local path or s3:// URL)")
    parser.add_argument("--model", default=None,
                        help="DPT variant to build (dpt_large, dpt_hybrid, ...); default: read from the checkpoint")
    parser.add_argument("--benchmarks", default=",".join(PROTOCOLS),
                        help=f"comma-separated subset of {','.join(PROTOCOLS)} (default: all), or of the "
                             f"segmentation benchmarks {','.join(SEGMENTATION_PROTOCOLS)}")
    parser.add_argument("--data-root", required=True, help="folder or s3:// prefix with one folder per benchmark")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--run-id", default=None, help="log into this existing MLflow run (e.g. the training run)")
    where.add_argument("--experiment", default=None, help=f"start a new run in this experiment (default {DEFAULT_EXPERIMENT})")
    parser.add_argument("--run-name", default=None, help="name of the new MLflow run")
    parser.add_argument("--input-size", type=int, default=None, help="longer input side (default: the variant's, 384)")
    parser.add_argument("--workers", type=int, default=0, help="Ray actors (default: one per GPU, else 2)")
    parser.add_argument("--chunk-images", type=int, default=8, help="images per Ray task (default 8)")
    parser.add_argument("--batch-size", type=int, default=4, help="images per forward pass (default 4)")
    parser.add_argument("--pictures", type=int, default=4, help="images per benchmark in the picture grid (default 4)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N images of each benchmark (smoke runs)")
    parser.add_argument("--force", action="store_true",
                        help="with --run-id: evaluate again benchmarks whose metric the run already has")
    parser.add_argument("--ray-address", default=None, help="Ray cluster address (default: RAY_ADDRESS or local)")


def parse_benchmarks(text: str) -> list[str]:
    names = [b.strip().lower() for b in text.split(",") if b.strip()]
    known = [*PROTOCOLS, *SEGMENTATION_PROTOCOLS]
    unknown = [b for b in names if b not in known]
    if unknown or not names:
        raise ValueError(f"--benchmarks: unknown {unknown or text!r}; choose from {','.join(known)}")
    return list(dict.fromkeys(names))


def _not_yet_in_run(run_id: str, benchmarks: list[str]) -> list[str]:
    """Resuming into an existing run: benchmarks it already has a number for are not evaluated again."""
    import mlflow

    done = mlflow.get_run(run_id).data.metrics
    for name in benchmarks:
        key = get_protocol(name).metric_key
        if key in done:
            print(f"{get_protocol(name).title:<14} already in run {run_id}: {key} = {done[key]:.4f} (--force to redo)")
    return [b for b in benchmarks if get_protocol(b).metric_key not in done]


def _report(outcome, limited: bool) -> None:
    protocol = get_protocol(outcome.name)
    if outcome.error:
        print(f"{protocol.title:<14} FAILED: {outcome.error}", file=sys.stderr)
        return
    skipped = f", {outcome.sums.skipped} without valid ground truth" if outcome.sums.skipped else ""
    print(f"{protocol.title:<14} {protocol.metric_label:<12} {outcome.value:8.4f}   "
          f"({outcome.sums.images} images{skipped})")
    if outcome.sums.confusion is not None:
        from evaluation.segmentation_metrics import pixel_accuracy

        print(f"{'':<14} {'pixel acc. (%)':<12} {pixel_accuracy(outcome.sums.confusion):8.4f}")
    if not limited and outcome.listed != protocol.expected_images:
        # Not an error (a partial local copy is useful), but the number is not the paper's protocol.
        print(f"{'':<14} note: {outcome.listed} images listed; the paper's split has {protocol.expected_images}",
              file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    import mlflow

    from evaluation.job import EvalOptions, evaluate
    from evaluation.model_loading import CheckpointLoader
    from evaluation.tracking import log_outcome, start_run
    from pipeline.ray_cluster import connect

    requested = benchmarks = parse_benchmarks(args.benchmarks)
    options = EvalOptions(chunk_images=args.chunk_images, batch_size=args.batch_size, workers=args.workers,
                          pictures=args.pictures, limit=args.limit)
    loader = CheckpointLoader(args.checkpoint, args.model, args.input_size)
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
            log_outcome(outcome)

        outcomes = evaluate(loader, benchmarks, args.data_root, options, on_done=on_done) if benchmarks else {}
        failed = [o.name for o in outcomes.values() if o.error or math.isnan(o.value)]
        logged = mlflow.get_run(active.info.run_id).data.metrics
        scored = [b for b in requested if get_protocol(b).metric_key in logged]
        mlflow.set_tag("eval.status", "complete" if len(scored) == len(requested) else "partial")
        print(f"MLflow run {active.info.run_id}: {len(scored)} of {len(requested)} benchmarks scored")
    return 1 if failed else 0
