"""Picture grids for MLflow: per image, the input, the ground truth and the prediction side by side.

Dense benchmarks show ground-truth disparity and the aligned predicted disparity in one colour map with
one shared range per row (so that colours compare), invalid ground truth in grey. DIW shows the annotated
pair on the input (green = the point annotated closer, red = farther) and the predicted disparity.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from evaluation.chunk import Picture

COLOR_MAP = "magma"  # perceptually uniform; bright = near (large disparity)


def picture_grid(pictures: Sequence[Picture], title: str, metric: str):
    """A matplotlib Figure with one row per picture and columns input / ground truth / prediction."""
    import matplotlib

    matplotlib.use("Agg")  # no display on cluster nodes
    import matplotlib.pyplot as plt

    rows = max(1, len(pictures))
    fig, axes = plt.subplots(rows, 3, figsize=(9, 2.6 * rows), squeeze=False)
    for ax, heading in zip(axes[0], ("input", "ground truth (disparity)", "prediction (aligned disparity)")):
        ax.set_title(heading, fontsize=9)
    cmap = plt.get_cmap(COLOR_MAP).with_extremes(bad="0.6")
    for row, picture in zip(axes, pictures):
        row[0].imshow(picture.rgb)
        row[0].set_ylabel(f"{picture.id[-24:]}\n{metric} {picture.value:.3g}", fontsize=7)
        if picture.gt is None:  # DIW: the pair on the image
            row[1].imshow(picture.rgb)
            for y1, x1, y2, x2, rel in picture.pairs:
                near, far = ((y1, x1), (y2, x2)) if rel > 0 else ((y2, x2), (y1, x1))
                row[1].plot([near[1], far[1]], [near[0], far[0]], color="yellow", linewidth=1)
                row[1].scatter([near[1]], [near[0]], color="lime", s=18)
                row[1].scatter([far[1]], [far[0]], color="red", s=18)
            lo, hi = np.nanpercentile(picture.pred, [2, 98])
        else:
            valid = picture.gt[np.isfinite(picture.gt)]
            lo, hi = (np.percentile(valid, [2, 98]) if valid.size else np.nanpercentile(picture.pred, [2, 98]))
            row[1].imshow(np.ma.masked_invalid(picture.gt), cmap=cmap, vmin=lo, vmax=hi)
        row[2].imshow(picture.pred, cmap=cmap, vmin=lo, vmax=hi)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig
