"""``dpt compare``: evaluated MLflow runs next to DPT's Table 1, with change against a baseline.

    dpt compare --experiment dpt-zero-shot --baseline DPT-Large --out reports/compare

Reads runs with ``mlflow.search_runs`` (tracking URI from ``MLFLOW_TRACKING_URI``), prints the table of
the six zero-shot metrics with the paper's rows (MiDaS on MIX 5, DPT-Hybrid, DPT-Large) and each row's
relative change against ``--baseline`` (a paper row, a run name or a run id), and writes the same as
``compare.csv`` and ``compare.png`` under ``--out`` (local folder or s3://). Above it, segmentation runs
(``segmentation/ade20k*`` metrics) are listed next to the paper's ADE20K rows of Table 4, and metric depth runs
(``metric_depth/*``: ``dpt eval --benchmarks nyu_metric,kitti_metric``) next to the paper's Table 2 (NYUv2) and
Table 3 (KITTI) rows, each with its ``compare_<benchmark>.csv`` and ``.png`` (:mod:`evaluation.compare_metric`).
Each table is printed only when at least one run has its metrics.
"""

from __future__ import annotations

import argparse

from evaluation.command import DEFAULT_EXPERIMENT


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--experiment", action="append", default=None,
                        help=f"experiment to read runs from (repeatable; default {DEFAULT_EXPERIMENT})")
    parser.add_argument("--runs", default=None, help="comma-separated run ids (instead of whole experiments)")
    parser.add_argument("--baseline", default="DPT-Large",
                        help="paper row (DPT-Large, DPT-Hybrid, 'MiDaS (MIX 5)'), run name or run id (default DPT-Large)")
    parser.add_argument("--out", default="dpt-compare",
                        help="folder or s3:// prefix for compare.csv and compare.png (Table 1), and "
                             "compare_nyu_metric.csv/.png, compare_kitti_metric.csv/.png (Tables 2 and 3)")
    parser.add_argument("--no-paper", action="store_true", help="leave the paper's rows out of the table")
    parser.add_argument("--max-runs", type=int, default=50, help="most recent runs to show (default 50)")


def search(args: argparse.Namespace):
    import mlflow

    from pipeline.tracking import tracking_uri

    mlflow.set_tracking_uri(tracking_uri()[0])  # the store every stage uses: MLFLOW_TRACKING_URI, else runs/

    if args.runs:
        ids = [r.strip() for r in args.runs.split(",") if r.strip()]
        quoted = ", ".join(f"'{r}'" for r in ids)
        runs = mlflow.search_runs(search_all_experiments=True, filter_string=f"attributes.run_id IN ({quoted})")
        missing = sorted(set(ids) - set(runs["run_id"])) if len(runs) else ids
        if missing:
            raise ValueError(f"--runs: no MLflow run with id {', '.join(missing)}")
        return runs
    names = args.experiment or [DEFAULT_EXPERIMENT]
    for name in names:
        if mlflow.get_experiment_by_name(name) is None:
            raise ValueError(f"--experiment: no MLflow experiment named {name!r}")
    return mlflow.search_runs(experiment_names=names, max_results=args.max_runs, order_by=["attributes.start_time DESC"])


def _source(args: argparse.Namespace) -> str:
    return f"run(s) {args.runs}" if args.runs else f"experiment(s) {', '.join(args.experiment or [DEFAULT_EXPERIMENT])}"


def run(args: argparse.Namespace) -> int:
    return report(search(args), args)


def report(runs, args: argparse.Namespace) -> int:
    """For ``runs`` (the DataFrame of ``mlflow.search_runs``): each comparison table that some run has metrics
    for, in order (the ADE20K table, Tables 2 and 3, then Table 1; each depth table with its CSV and chart), a
    blank line between; with none, one line saying so (exit status 1). Each table module answers
    ``has_runs(runs)`` and ``show(runs, args)``."""
    from evaluation import compare, compare_metric, compare_segmentation

    tables = [table for table in (compare_segmentation, compare_metric, compare) if table.has_runs(runs)]
    if not tables:
        print(f"no run with zero-shot, metric depth or segmentation metrics in {_source(args)} "
              "(run `dpt eval` first)")
        return 1
    for index, table in enumerate(tables):
        if index:
            print()
        table.show(runs, args)
    return 0
