"""Segmentation runs next to DPT's Table 4 (ADE20K validation): one line per run and protocol, higher is better.

A run evaluated with ``dpt eval --benchmarks ade20k,ade20k_ms`` has ``segmentation/<benchmark>_miou`` and
``segmentation/<benchmark>_pixel_accuracy``; each benchmark it has becomes one line (single-scale,
multi-scale), below the paper's rows.
"""

from __future__ import annotations

import math

from evaluation.protocol import SEGMENTATION_PROTOCOLS

# DPT (Ranftl et al. 2021) Table 4, ADE20K validation: (mIoU %, pixel accuracy %).
PAPER_ROWS: dict[str, tuple[float, float]] = {"DPT-Hybrid": (49.02, 83.11), "DPT-Large": (47.63, 82.70)}


def segmentation_lines(runs) -> list[tuple[str, str, float, float]]:
    """``(name, protocol, mIoU, pixel accuracy)``: the paper's rows, then each run's evaluated benchmarks.

    ``runs`` is the DataFrame of ``mlflow.search_runs``; runs without segmentation metrics are left out.
    """
    lines = [(name, "paper, Table 4", miou, acc) for name, (miou, acc) in PAPER_ROWS.items()]
    for _, run in runs.iterrows():
        label = str(run.get("tags.mlflow.runName") or run["run_id"][:8])
        for name, protocol in SEGMENTATION_PROTOCOLS.items():
            miou = run.get(f"metrics.{protocol.metric_key}", math.nan)
            if miou is None or math.isnan(float(miou)):
                continue
            acc = run.get(f"metrics.{protocol.pixel_accuracy_key}", math.nan)
            lines.append((label, protocol.title, float(miou), math.nan if acc is None else float(acc)))
    return lines


def has_runs(runs) -> bool:
    """Whether a run of ``runs`` has a segmentation benchmark's metrics (``dpt compare`` shows the table then)."""
    return len(segmentation_lines(runs)) > len(PAPER_ROWS)


def show(runs, args) -> None:
    """``dpt compare``'s ADE20K table of ``runs`` (``args`` has nothing for it)."""
    print(format_segmentation_table(segmentation_lines(runs)))


def format_segmentation_table(lines) -> str:
    """A plain-text table of :func:`segmentation_lines` with each run's change in mIoU against DPT-Hybrid."""
    reference = PAPER_ROWS["DPT-Hybrid"][0]
    header = ["", "protocol", "mIoU (%)", "pixel acc. (%)", "mIoU vs DPT-Hybrid"]
    rows = [[name, protocol, f"{miou:.2f}", "-" if math.isnan(acc) else f"{acc:.2f}",
             "" if protocol.startswith("paper") else f"{miou - reference:+.2f}"]
            for name, protocol, miou, acc in lines]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    render = lambda cells: "  ".join(c.ljust(w) if i < 2 else c.rjust(w)  # noqa: E731
                                     for i, (c, w) in enumerate(zip(cells, widths)))
    rule = "-" * len(render(header))
    return "\n".join(["ADE20K validation (DPT Table 4; higher is better)", render(header), rule,
                      *map(render, rows), rule])
