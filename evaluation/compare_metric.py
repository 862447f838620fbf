"""Metric depth runs next to DPT's Table 2 (NYUv2) and Table 3 (KITTI, Eigen split): one table per paper table.

A run evaluated with ``dpt eval --benchmarks nyu_metric,kitti_metric`` has ``metric_depth/<benchmark>_<metric>``
for every metric (:mod:`evaluation.metric_protocol`); each benchmark it has (its AbsRel logged) puts the run on that
benchmark's table, below the paper's rows (:data:`evaluation.compare.METRIC_PAPER_ROWS`). The columns are the
paper's (``MetricDepthProtocol.columns``): d1-d3 are accuracies (higher is better), the others errors (lower).
Each table is also written as ``compare_<benchmark>.csv`` (every logged metric) and ``compare_<benchmark>.png``
(a panel per column) under ``--out``.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

from evaluation.compare import METRIC_PAPER_ROWS, NOT_AVAILABLE, Row
from evaluation.metric_protocol import HIGHER_IS_BETTER, METRIC_LABELS, METRIC_PROTOCOLS, MetricDepthProtocol
from pipeline.depth_metrics import DEPTH_METRICS


def _value(run, key: str) -> float:
    value = run.get(f"metrics.{key}", math.nan)
    return math.nan if value is None else float(value)


def table_rows(runs, protocol: MetricDepthProtocol, paper: bool = True) -> list[Row]:
    """The paper's rows of ``protocol``'s table (unless ``paper`` is False), then one per run of ``runs`` (the
    DataFrame of ``mlflow.search_runs``) that has the benchmark; values by metric name (NaN = not there)."""
    rows = [Row(name, dict(values)) for name, values in METRIC_PAPER_ROWS[protocol.name].items()] if paper else []
    for _, run in runs.iterrows():
        if math.isnan(_value(run, protocol.result_key)):
            continue
        label = run.get("tags.mlflow.runName") or run["run_id"][:8]
        rows.append(Row(str(label), {m: _value(run, protocol.metric_key(m)) for m in DEPTH_METRICS},
                        str(run["run_id"])))
    return rows


def _protocols_with_runs(runs) -> list[MetricDepthProtocol]:
    return [p for p in METRIC_PROTOCOLS.values() if any(row.run_id for row in table_rows(runs, p))]


def has_runs(runs) -> bool:
    """Whether a run of ``runs`` has a metric depth benchmark (``dpt compare`` shows its table then)."""
    return bool(_protocols_with_runs(runs))


def _format(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3f}"


def _heading(metric: str) -> str:
    return METRIC_LABELS[metric] + (" ↑" if metric in HIGHER_IS_BETTER else " ↓")


def format_metric_table(protocol: MetricDepthProtocol, rows: Sequence[Row]) -> str:
    """A plain-text table of ``rows`` in the paper's columns, under the paper table's name."""
    header = ["", *(_heading(m) for m in protocol.columns)]
    lines = [[row.name, *(_format(row.values.get(m, math.nan)) for m in protocol.columns)] for row in rows]
    widths = [max(len(cells[i]) for cells in [header, *lines]) for i in range(len(header))]
    render = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                                     for i, (c, w) in enumerate(zip(cells, widths)))
    rule = "-" * len(render(header))
    title = f"{protocol.title} (DPT {protocol.table}, metric depth; ↑ higher is better, ↓ lower)"
    return "\n".join([title, render(header), rule, *map(render, lines), rule])


def to_csv(protocol: MetricDepthProtocol, rows: Sequence[Row]) -> bytes:
    """One line per row: name, kind (paper or run), run id, then every metric under its MLflow name."""
    import csv

    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["name", "kind", "run_id", *(protocol.metric_key(m) for m in DEPTH_METRICS)])
    for row in rows:
        writer.writerow([row.name, row.kind, row.run_id, *(row.values.get(m, math.nan) for m in DEPTH_METRICS)])
    return buf.getvalue().encode()


def chart_png(protocol: MetricDepthProtocol, rows: Sequence[Row]) -> bytes:
    """PNG bytes: a panel per column of the paper's table, a bar per row with its value ("n/a" where it has none)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, math.ceil(len(protocol.columns) / 2), figsize=(13, 2.2 + 0.7 * len(rows)),
                             squeeze=False)
    colors = ["0.65" if row.kind == "paper" else f"C{i % 10}" for i, row in enumerate(rows)]
    for ax, metric in zip(axes.ravel(), protocol.columns):
        values = [row.values.get(metric, math.nan) for row in rows]
        bars = ax.barh(range(len(rows)), [0 if math.isnan(v) else v for v in values], color=colors)
        ax.bar_label(bars, [NOT_AVAILABLE if math.isnan(v) else _format(v) for v in values], padding=3, fontsize=7,
                     color="0.25")
        finite = [v for v in values if not math.isnan(v)]
        ax.set_xlim(0, 1.2 * max(finite) if finite and max(finite) > 0 else 1)  # room for the labels
        ax.set_yticks(range(len(rows)), [row.name for row in rows], fontsize=8)
        ax.invert_yaxis()
        better = "higher" if metric in HIGHER_IS_BETTER else "lower"
        ax.set_title(f"{METRIC_LABELS[metric]} ({better} is better)", fontsize=9)
    for ax in axes.ravel()[len(protocol.columns):]:
        ax.set_visible(False)
    fig.suptitle(f"{protocol.title}, metric depth (DPT {protocol.table})", fontsize=11)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def show(runs, args) -> list[str]:
    """``dpt compare``'s Tables 2 and 3 of ``runs``, each that some run has: printed (``args.no_paper``), and
    written as ``compare_<benchmark>.csv`` and ``.png`` under ``args.out`` (their URLs returned)."""
    from pipeline import storage

    written = []
    for index, protocol in enumerate(_protocols_with_runs(runs)):
        rows = table_rows(runs, protocol, paper=not args.no_paper)
        if index:
            print()
        print(format_metric_table(protocol, rows))
        csv_url = storage.join(args.out, f"compare_{protocol.name}.csv")
        png_url = storage.join(args.out, f"compare_{protocol.name}.png")
        storage.write_bytes(csv_url, to_csv(protocol, rows))
        storage.write_bytes(png_url, chart_png(protocol, rows))
        print(f"wrote {csv_url} and {png_url}")
        written += [csv_url, png_url]
    return written
