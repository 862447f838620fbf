"""``dpt compare``: evaluated MLflow runs next to DPT's Table 1, with change against a baseline.

    dpt compare --experiment dpt-zero-shot --baseline DPT-Large --out reports/compare
    dpt compare --experiment dpt-zero-shot --filter "metrics.`zero_shot/kitti_delta_gt_1.25` < 20" \
        --order-by "metrics.`zero_shot/kitti_delta_gt_1.25` ASC" --promote champion

Reads the runs MLflow's ``search_runs`` selects for the query (:mod:`evaluation.compare_query`: experiments,
``--filter``, ``--order-by``, or ``--runs`` ids; tracking URI from ``MLFLOW_TRACKING_URI``), prints the table of
the six zero-shot metrics with the paper's rows (MiDaS on MIX 5, DPT-Hybrid, DPT-Large) and each row's
relative change against ``--baseline`` (a paper row, a run name or a run id), and writes the same as
``compare.csv`` and ``compare.png`` under ``--out`` (local folder or s3://). Above it, segmentation runs
(``segmentation/ade20k*`` metrics) are listed next to the paper's ADE20K rows of Table 4, and metric depth runs
(``metric_depth/*``: ``dpt eval --benchmarks nyu_metric,kitti_metric``) next to the paper's Table 2 (NYUv2) and
Table 3 (KITTI) rows, each with its ``compare_<benchmark>.csv`` and ``.png`` (:mod:`evaluation.compare_metric`).
Each table is printed only when at least one run has its metrics. The tables, charts and the selection are
also logged as a comparison run in MLflow, and ``--promote ALIAS`` sets a model alias on the best run's
registered version (:mod:`evaluation.compare_run`).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys

from evaluation.command import DEFAULT_EXPERIMENT


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--experiment", action="append", default=None,
                        help=f"experiment to read runs from (repeatable; default {DEFAULT_EXPERIMENT})")
    parser.add_argument("--runs", default=None, help="comma-separated run ids (instead of whole experiments)")
    parser.add_argument("--filter", default=None,
                        help="MLflow search filter, e.g. \"metrics.`zero_shot/kitti_delta_gt_1.25` < 20 and "
                             "params.model.name = 'dpt_large'\"")
    parser.add_argument("--order-by", action="append", default=None,
                        help="MLflow order, e.g. \"metrics.`zero_shot/kitti_delta_gt_1.25` ASC\" (repeatable; "
                             "default attributes.start_time DESC)")
    parser.add_argument("--promote", default=None, metavar="ALIAS",
                        help="set this registered-model alias (e.g. champion) on the model version of the first "
                             "run in --order-by's order")
    parser.add_argument("--baseline", default="DPT-Large",
                        help="paper row (DPT-Large, DPT-Hybrid, 'MiDaS (MIX 5)'), run name or run id (default DPT-Large)")
    parser.add_argument("--out", default="dpt-compare",
                        help="folder or s3:// prefix for compare.csv and compare.png (Table 1), and "
                             "compare_nyu_metric.csv/.png, compare_kitti_metric.csv/.png (Tables 2 and 3)")
    parser.add_argument("--no-paper", action="store_true", help="leave the paper's rows out of the table")
    parser.add_argument("--max-runs", type=int, default=50, help="most runs to show, in the query's order (default 50)")


def search(args: argparse.Namespace):
    """The runs of the query (the DataFrame of ``mlflow.search_runs``); ValueError naming the option."""
    from evaluation.compare_query import search as search_query

    return search_query(args, DEFAULT_EXPERIMENT)[0]


def _source(args: argparse.Namespace) -> str:
    return f"run(s) {args.runs}" if args.runs else f"experiment(s) {', '.join(args.experiment or [DEFAULT_EXPERIMENT])}"


def run(args: argparse.Namespace) -> int:
    """Search, check ``--promote`` (before anything is written), show the tables, log the comparison run, promote."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from evaluation import compare_run
    from evaluation.compare_query import search as search_query
    from pipeline.tracking import ui_link

    runs, query = search_query(args, DEFAULT_EXPERIMENT)
    client = mlflow.MlflowClient()
    alias = getattr(args, "promote", None)
    target = compare_run.promotion_target(client, runs, query, alias) if alias else None
    text, written = io.StringIO(), []
    with contextlib.redirect_stdout(_Tee(sys.stdout, text)):
        code = report(runs, args, written)
    if code:
        return code
    try:
        promoted = compare_run.promote(client, target[1], alias) if target else []
        run_id, experiment = compare_run.log_comparison(client, runs, query, text.getvalue(), written, promoted)
    except MlflowException as exc:  # the tables are written; MLflow did not take the rest
        raise RuntimeError(f"MLflow did not take the comparison run: {exc.message.splitlines()[0]}") from None
    for line in promoted:
        print(line)
    link = ui_link(mlflow.get_tracking_uri(), experiment, run_id)
    print(f"MLflow comparison run {run_id}: the tables and charts as artifacts" + (f", {link}" if link else ""))
    return 0


class _Tee(io.TextIOBase):
    """Writes to the console and keeps a copy (the printed tables become the comparison run's compare.md)."""

    def __init__(self, *streams):
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


def report(runs, args: argparse.Namespace, written: list[str] | None = None) -> int:
    """For ``runs`` (the DataFrame of ``mlflow.search_runs``): each comparison table that some run has metrics
    for, in order (the ADE20K table, Tables 2 and 3, then Table 1; each depth table with its CSV and chart), a
    blank line between; with none, one line saying so (exit status 1). Each table module answers
    ``has_runs(runs)`` and ``show(runs, args)`` (the URLs it wrote, added to ``written``)."""
    from evaluation import compare, compare_metric, compare_segmentation

    tables = [table for table in (compare_segmentation, compare_metric, compare) if table.has_runs(runs)]
    if not tables:
        print(f"no run with zero-shot, metric depth or segmentation metrics in {_source(args)} "
              "(run `dpt eval` first)")
        return 1
    for index, table in enumerate(tables):
        if index:
            print()
        urls = table.show(runs, args)
        if written is not None:
            written.extend(urls or [])
    return 0
