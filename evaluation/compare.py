"""Runs side by side with DPT's Table 1: the table, relative change against a baseline, CSV and chart.

Every Table 1 number is an error (lower is better), so the relative change ``(value - baseline) /
baseline`` is negative when a run beats the baseline.
"""

from __future__ import annotations

import dataclasses
import io
import math
from collections.abc import Sequence

from evaluation.protocol import PROTOCOLS

# Column order of DPT's Table 1.
BENCHMARKS = ("diw", "eth3d", "sintel", "kitti", "nyu", "tum")

# DPT (Ranftl et al. 2021) Table 1, zero-shot, in the column order above.
PAPER_ROWS: dict[str, tuple[float, ...]] = {
    "MiDaS (MIX 5)": (12.46, 0.129, 0.327, 23.90, 9.55, 14.29),
    "DPT-Hybrid": (11.06, 0.093, 0.274, 11.56, 8.69, 10.89),
    "DPT-Large": (10.82, 0.089, 0.270, 8.46, 8.32, 9.97),
}

# DPT Tables 2 (NYUv2) and 3 (KITTI, Eigen split): DPT-Hybrid fine-tuned, by metric depth benchmark
# (evaluation.metric_protocol) and metric (evaluation.metrics.DEPTH_METRICS; d1-d3 higher is better, the rest
# lower), as the paper prints them. isl-org/DPT's EVALUATION.md reruns the released models with BTS's script and
# gets NYUv2 d3 0.998, AbsRel 0.109 and KITTI RMSE 2.575 instead (every other number the same).
METRIC_PAPER_ROWS: dict[str, dict[str, dict[str, float]]] = {
    "nyu_metric": {"DPT-Hybrid": {"d1": 0.904, "d2": 0.988, "d3": 0.994, "abs_rel": 0.110, "rmse": 0.357,
                                  "log10": 0.045}},
    "kitti_metric": {"DPT-Hybrid": {"d1": 0.959, "d2": 0.995, "d3": 0.999, "abs_rel": 0.062, "rmse": 2.573,
                                    "rmse_log": 0.092}},
}


@dataclasses.dataclass
class Row:
    """One line of the table: a paper reference or a run; values by benchmark (NaN = not evaluated)."""

    name: str
    values: dict[str, float]
    run_id: str = ""  # empty for the paper's rows

    @property
    def kind(self) -> str:
        return "run" if self.run_id else "paper"


def paper_rows() -> list[Row]:
    return [Row(name, dict(zip(BENCHMARKS, values))) for name, values in PAPER_ROWS.items()]


def run_rows(runs) -> list[Row]:
    """Rows from the DataFrame of ``mlflow.search_runs`` (columns ``metrics.<key>``, ``run_id``, ...)."""
    rows = []
    for _, run in runs.iterrows():
        values = {}
        for name in BENCHMARKS:
            column = f"metrics.{PROTOCOLS[name].metric_key}"
            value = run.get(column, math.nan)
            values[name] = float(value) if value is not None else math.nan
        if all(math.isnan(v) for v in values.values()):
            continue  # a run without zero-shot results (e.g. a training run not yet evaluated)
        label = run.get("tags.mlflow.runName") or run["run_id"][:8]
        rows.append(Row(str(label), values, str(run["run_id"])))
    return rows


def find_baseline(rows: Sequence[Row], baseline: str) -> Row:
    """A row by paper name, run name or run id (prefix)."""
    for row in rows:
        if baseline in (row.name, row.run_id) or (row.run_id and row.run_id.startswith(baseline)):
            return row
    raise ValueError(f"--baseline {baseline!r} is neither a paper row ({', '.join(PAPER_ROWS)}) nor one of "
                     f"the runs shown")


def relative_change(rows: Sequence[Row], baseline: Row) -> list[dict[str, float]]:
    """Per row, ``{benchmark: (value - baseline) / baseline * 100}`` (percent; NaN where missing)."""
    out = []
    for row in rows:
        change = {}
        for name in BENCHMARKS:
            base, value = baseline.values.get(name, math.nan), row.values.get(name, math.nan)
            change[name] = (value - base) / base * 100.0 if base and not math.isnan(base) else math.nan
        out.append(change)
    return out


def _headers() -> list[str]:
    return [f"{PROTOCOLS[b].title} {PROTOCOLS[b].metric_label}" for b in BENCHMARKS]


def _format(value: float, benchmark: str) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:.3f}" if PROTOCOLS[benchmark].metric == "abs_rel" else f"{value:.2f}"


def format_table(rows: Sequence[Row], baseline: Row) -> str:
    """A plain-text table: each cell ``value (change vs baseline)``."""
    changes = relative_change(rows, baseline)
    header = ["", *_headers()]
    lines = []
    for row, row_change in zip(rows, changes):
        cells = [row.name + (" *" if row is baseline else "")]
        for b in BENCHMARKS:
            change = row_change[b]
            suffix = "" if row is baseline or math.isnan(change) else f" ({change:+.1f}%)"
            cells.append(_format(row.values[b], b) + suffix)
        lines.append(cells)
    widths = [max(len(str(c)) for c in column) for column in zip(header, *lines)]
    render = lambda cells: "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    rule = "-" * len(render(header))
    footer = f"* baseline: {baseline.name}; in brackets: change vs baseline (all metrics: lower is better)"
    return "\n".join([render(header), rule, *map(render, lines), rule, footer])


def to_csv(rows: Sequence[Row], baseline: Row) -> bytes:
    import csv

    changes = relative_change(rows, baseline)
    buf = io.StringIO()
    writer = csv.writer(buf)
    keys = [PROTOCOLS[b].metric_key for b in BENCHMARKS]
    writer.writerow(["name", "kind", "run_id", *keys, *(f"{k} change_vs_{baseline.name} %" for k in keys)])
    for row, change in zip(rows, changes):
        writer.writerow([row.name, row.kind, row.run_id, *(row.values[b] for b in BENCHMARKS),
                         *(change[b] for b in BENCHMARKS)])
    return buf.getvalue().encode()


NOT_AVAILABLE = "n/a"  # in the chart, where a row has no value for a benchmark


def chart_figure(rows: Sequence[Row], baseline: Row):
    """A matplotlib Figure: six panels (one per benchmark), a bar per row with its value at the end ("n/a"
    where the row has none), the baseline's value as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(13, 2.2 + 0.35 * len(rows) * 2))
    colors = ["0.65" if row.kind == "paper" else f"C{i % 10}" for i, row in enumerate(rows)]
    for ax, benchmark, title in zip(axes.ravel(), BENCHMARKS, _headers()):
        values = [row.values[benchmark] for row in rows]
        bars = ax.barh(range(len(rows)), [0 if math.isnan(v) else v for v in values], color=colors)
        ax.bar_label(bars, [NOT_AVAILABLE if math.isnan(v) else _format(v, benchmark) for v in values],
                     padding=3, fontsize=7, color="0.25")
        finite = [v for v in (*values, baseline.values[benchmark]) if not math.isnan(v)]
        ax.set_xlim(0, 1.2 * max(finite) if finite and max(finite) > 0 else 1)  # room for the labels
        ax.set_yticks(range(len(rows)), [row.name for row in rows], fontsize=8)
        ax.invert_yaxis()
        base = baseline.values[benchmark]
        if not math.isnan(base):
            ax.axvline(base, color="black", linestyle="--", linewidth=1)
        ax.set_title(title + " (lower is better)", fontsize=9)
    fig.suptitle(f"Zero-shot transfer (DPT Table 1); dashed: {baseline.name}", fontsize=11)
    fig.tight_layout()
    return fig


def chart_png(rows: Sequence[Row], baseline: Row) -> bytes:
    """:func:`chart_figure` as PNG bytes."""
    import matplotlib.pyplot as plt

    fig = chart_figure(rows, baseline)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def rows_with_paper(runs_rows: Sequence[Row], paper: bool = True) -> list[Row]:
    return [*(paper_rows() if paper else []), *runs_rows]


def has_runs(runs) -> bool:
    """Whether a run of ``runs`` has a zero-shot metric (``dpt compare`` shows Table 1 then)."""
    return bool(run_rows(runs))


def show(runs, args) -> list[str]:
    """``dpt compare``'s Table 1 of ``runs``: printed (``args.no_paper``, ``args.baseline``), and written as
    ``compare.csv`` and ``compare.png`` under ``args.out`` (their URLs returned)."""
    from pipeline import storage

    rows = rows_with_paper(run_rows(runs), paper=not args.no_paper)
    baseline = find_baseline(rows, args.baseline)
    print(format_table(rows, baseline))
    csv_url, png_url = storage.join(args.out, "compare.csv"), storage.join(args.out, "compare.png")
    storage.write_bytes(csv_url, to_csv(rows, baseline))
    storage.write_bytes(png_url, chart_png(rows, baseline))
    print(f"wrote {csv_url} and {png_url}")
    return [csv_url, png_url]
