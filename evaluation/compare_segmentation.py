"""Segmentation runs next to DPT's Table 4 (ADE20K validation) and Table 5 (Pascal Context validation, 59 classes):
one table per paper table, one line per run and protocol, higher is better.

A run evaluated with ``dpt eval --benchmarks ade20k,ade20k_ms`` (or ``pascal_context,pascal_context_ms``) has
``segmentation/<benchmark>_miou`` and ``segmentation/<benchmark>_pixel_accuracy``; each benchmark it has becomes one
line (single-scale, multi-scale) of its table, below the paper's rows. A table is shown when a run has its numbers.
"""

from __future__ import annotations

import dataclasses
import math

from evaluation.protocol import SEGMENTATION_PROTOCOLS


@dataclasses.dataclass(frozen=True)
class PaperTable:
    """One of the paper's segmentation tables: its ``rows`` ``{model: (mIoU %, pixel accuracy %)}`` (NaN where the
    paper gives none), the ``protocols`` whose runs go under them, and the row each run is compared with."""

    title: str
    source: str  # what the paper's rows say in the protocol column
    rows: dict[str, tuple[float, float]]
    protocols: tuple[str, ...]
    reference: str = "DPT-Hybrid"


# DPT (Ranftl et al. 2021) Table 4, ADE20K validation: (mIoU %, pixel accuracy %).
PAPER_ROWS: dict[str, tuple[float, float]] = {"DPT-Hybrid": (49.02, 83.11), "DPT-Large": (47.63, 82.70)}
# Table 5, Pascal Context validation (59 classes): DPT-Hybrid fine-tuned, 60.46 % mIoU. The pixel accuracy is left
# out ("-"): it could not be checked against the paper's table here.
PASCAL_CONTEXT_ROWS: dict[str, tuple[float, float]] = {"DPT-Hybrid": (60.46, math.nan)}
ADE20K_TABLE = PaperTable("ADE20K validation (DPT Table 4; higher is better)", "paper, Table 4", PAPER_ROWS,
                          ("ade20k", "ade20k_ms"))
PASCAL_CONTEXT_TABLE = PaperTable("Pascal Context validation, 59 classes (DPT Table 5; higher is better)",
                                  "paper, Table 5", PASCAL_CONTEXT_ROWS, ("pascal_context", "pascal_context_ms"))
TABLES = (ADE20K_TABLE, PASCAL_CONTEXT_TABLE)


def segmentation_lines(runs, table: PaperTable = ADE20K_TABLE) -> list[tuple[str, str, float, float]]:
    """``(name, protocol, mIoU, pixel accuracy)``: the paper's rows of ``table``, then each run's evaluated
    benchmarks of its protocols.

    ``runs`` is the DataFrame of ``mlflow.search_runs``; runs without those metrics are left out.
    """
    lines = [(name, table.source, miou, acc) for name, (miou, acc) in table.rows.items()]
    for _, run in runs.iterrows():
        label = str(run.get("tags.mlflow.runName") or run["run_id"][:8])
        for name in table.protocols:
            protocol = SEGMENTATION_PROTOCOLS[name]
            miou = run.get(f"metrics.{protocol.metric_key}", math.nan)
            if miou is None or math.isnan(float(miou)):
                continue
            acc = run.get(f"metrics.{protocol.pixel_accuracy_key}", math.nan)
            lines.append((label, protocol.title, float(miou), math.nan if acc is None else float(acc)))
    return lines


def tables_with_runs(runs) -> list[PaperTable]:
    """The tables of :data:`TABLES` for which a run of ``runs`` has numbers."""
    return [table for table in TABLES if len(segmentation_lines(runs, table)) > len(table.rows)]


def has_runs(runs) -> bool:
    """Whether a run of ``runs`` has a segmentation benchmark's metrics (``dpt compare`` shows the tables then)."""
    return bool(tables_with_runs(runs))


def show(runs, args) -> None:
    """``dpt compare``'s segmentation tables of ``runs``, a blank line between (``args`` has nothing for them)."""
    print("\n\n".join(format_segmentation_table(segmentation_lines(runs, table), table)
                      for table in tables_with_runs(runs)))


def format_segmentation_table(lines, table: PaperTable = ADE20K_TABLE) -> str:
    """A plain-text table of :func:`segmentation_lines` with each run's change in mIoU against the paper's
    ``table.reference`` row."""
    reference = table.rows[table.reference][0]
    header = ["", "protocol", "mIoU (%)", "pixel acc. (%)", f"mIoU vs {table.reference}"]
    rows = [[name, protocol, f"{miou:.2f}", "-" if math.isnan(acc) else f"{acc:.2f}",
             "" if protocol.startswith("paper") else f"{miou - reference:+.2f}"]
            for name, protocol, miou, acc in lines]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    render = lambda cells: "  ".join(c.ljust(w) if i < 2 else c.rjust(w)  # noqa: E731
                                     for i, (c, w) in enumerate(zip(cells, widths)))
    rule = "-" * len(render(header))
    return "\n".join([table.title, render(header), rule, *map(render, rows), rule])
