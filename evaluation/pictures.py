"""Picture grids for MLflow: per image, the input, the ground truth and the prediction side by side.

Dense depth benchmarks show ground-truth disparity and the aligned predicted disparity in one colour map with
one shared range per row (so that colours compare; the row's colour bar gives it), invalid ground truth in grey.
Metric depth benchmarks (``Picture.metres``) show depth in metres the same way, the colour map reversed so that
near is bright here too, with one colour bar in metres per row.
Under each input: the image's whole id and its own metric; under the grid, a legend for what is not a
measurement (grey, DIW's points). DIW shows the annotated pair on the input (green = the point annotated
closer, red = farther) and the predicted disparity.
Segmentation shows ground-truth and predicted classes in one fixed palette (the label set's own, as Pascal
Context's, or one drawn per class count; unlabelled pixels grey), and a
third panel with the prediction's errors: wrong pixels in the predicted class's colour, right ones dimmed.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

PICTURE_SIDE = 256  # longer side of the arrays a chunk sends back for picture grids
COLOR_MAP = "magma"  # perceptually uniform; bright = near (large disparity)
UNLABELLED = (0.6, 0.6, 0.6)


@dataclasses.dataclass
class Picture:
    """Downsized arrays for one row of a picture grid: rgb uint8 [h, w, 3]; gt and pred float32 [h, w].

    Depth (``classes == 0``): disparity, gt NaN where invalid, pred aligned to gt where the protocol aligns;
    ``pairs`` in the downsized coordinates for DIW; with ``metres``: depth in metres instead of disparity (metric
    depth benchmarks; pred NaN where the network saw nothing). Segmentation (``classes > 0``): class ids, gt NaN
    where unlabelled. ``value`` is the image's own metric."""

    id: str
    rgb: np.ndarray
    gt: np.ndarray | None
    pred: np.ndarray
    pairs: np.ndarray | None = None
    value: float = float("nan")
    palette: np.ndarray | None = None  # segmentation: uint8 [classes, 3] of the label set, else label_palette's
    classes: int = 0
    metres: bool = False


def shrink(array: np.ndarray, mode: str) -> tuple[np.ndarray, float]:
    """``array`` [H, W] or [H, W, C] with its longer side at most PICTURE_SIDE -> (array, factor). ``mode``:
    "area" for images and disparity, "nearest" where values must not mix (invalid pixels, class ids)."""
    h, w = array.shape[:2]
    factor = min(1.0, PICTURE_SIDE / max(h, w))
    if factor == 1.0:
        return array, 1.0
    size = (max(1, round(h * factor)), max(1, round(w * factor)))
    t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    t = t.permute(2, 0, 1)[None] if t.ndim == 3 else t[None, None]
    small = F.interpolate(t, size=size, mode=mode)[0]
    small = small.permute(1, 2, 0).numpy() if array.ndim == 3 else small[0].numpy()
    return small.astype(array.dtype), factor


def label_palette(classes: int) -> np.ndarray:
    """A fixed float RGB colour per class id, ``[classes, 3]`` in 0..1: the same class has the same colour in
    every grid and run (drawn once from a seeded generator, bright enough to read on the dimmed input)."""
    return np.random.default_rng(0).uniform(0.15, 1.0, size=(classes, 3))


def colour_labels(labels: np.ndarray, classes: int, palette: np.ndarray | None = None) -> np.ndarray:
    """Class ids float [h, w] (NaN = unlabelled) -> RGB float [h, w, 3], in ``palette`` (uint8 ``[classes, 3]``:
    a label set's own colours, ``pipeline.label_sets``) or :func:`label_palette`."""
    colours = label_palette(classes) if palette is None else np.asarray(palette, np.float64) / 255
    out = np.empty(labels.shape + (3,))
    out[:] = UNLABELLED
    known = np.isfinite(labels)
    out[known] = colours[labels[known].astype(np.int64)]
    return out


def _errors(picture: Picture) -> np.ndarray:
    """The input dimmed, with each wrongly classified labelled pixel in its predicted class's colour."""
    out = picture.rgb.astype(np.float64) / 255 * 0.35
    wrong = np.isfinite(picture.gt) & (picture.gt != picture.pred)
    out[wrong] = colour_labels(picture.pred[wrong], picture.classes, picture.palette)
    return out


def wrap_id(sample_id: str, width: int = 36) -> str:
    """The whole ``sample_id`` on lines of at most ``width`` characters, broken after a '/' where possible
    (a benchmark's ids are paths: ``rgbd_dataset_freiburg3_walking_xyz/1341846313.500000``)."""
    parts = [p for p in re.split(r"(?<=/)", sample_id) if p]
    pieces = [p[i:i + width] for p in parts for i in range(0, len(p), width)]
    lines = [""]
    for piece in pieces:
        if lines[-1] and len(lines[-1]) + len(piece) > width:
            lines.append("")
        lines[-1] += piece
    return "\n".join(lines)


def _show_depth(fig, row, picture: Picture, cmap) -> None:
    """Ground truth (or DIW's pair on the input) and prediction in one colour range, with its colour bar."""
    if picture.gt is None:  # DIW: the pair on the image
        row[1].imshow(picture.rgb)
        for y1, x1, y2, x2, rel in picture.pairs:
            near, far = ((y1, x1), (y2, x2)) if rel > 0 else ((y2, x2), (y1, x1))
            row[1].plot([near[1], far[1]], [near[0], far[0]], color="yellow", linewidth=1)
            row[1].scatter([near[1]], [near[0]], color="lime", s=18)
            row[1].scatter([far[1]], [far[0]], color="red", s=18)
        lo, hi = np.nanpercentile(picture.pred, [2, 98])
        label = "disparity (relative)\nbright = near"
    else:
        valid = picture.gt[np.isfinite(picture.gt)]
        lo, hi = (np.percentile(valid, [2, 98]) if valid.size else np.nanpercentile(picture.pred, [2, 98]))
        if picture.metres:  # depth: far is large, so the map is reversed to keep near bright
            cmap = cmap.reversed()
        row[1].imshow(np.ma.masked_invalid(picture.gt), cmap=cmap, vmin=lo, vmax=hi)
        label = "depth (m)\nbright = near" if picture.metres else "disparity = 1 / depth\n(1/m), bright = near"
    image = row[2].imshow(np.ma.masked_invalid(picture.pred), cmap=cmap, vmin=lo, vmax=hi)
    bar = fig.colorbar(image, ax=list(row[1:3]), fraction=0.04, pad=0.02, aspect=15)
    bar.set_label(label, fontsize=7)
    bar.ax.tick_params(labelsize=6)


def _legend(fig, kind: str, cropped: bool = False) -> None:
    """What the colours that are no measurement mean, under the grid (``kind``: a key of :data:`_HEADINGS`;
    ``cropped``: a prediction is grey where the network saw nothing)."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    if kind == "segmentation":
        handles = [Patch(color=UNLABELLED, label="grey: unlabelled pixel (not scored)"),
                   Patch(facecolor="none", edgecolor="none",
                         label="errors: wrong pixels in the predicted class's colour, right ones dimmed")]
    elif kind == "pairs":
        handles = [Line2D([], [], color="lime", marker="o", linestyle="", label="point annotated closer"),
                   Line2D([], [], color="red", marker="o", linestyle="", label="point annotated farther")]
    else:
        handles = [Patch(color=UNLABELLED, label="grey: no ground truth, or outside the benchmark's depth range "
                                                 "or crop (not scored)")]
        if cropped:  # KITTI's metric protocol: the network sees the benchmark crop of the frame only
            handles.append(Patch(color=UNLABELLED, label="in the prediction: outside the network's input crop"))
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8, frameon=False)


_HEADINGS = {
    "dense": ("input", "ground truth (disparity)", "prediction (aligned disparity)"),
    "metres": ("input", "ground truth (depth, m)", "prediction (depth, m)"),
    "pairs": ("input", "annotated pair (ordinal)", "prediction (disparity)"),
    "segmentation": ("input", "ground truth (classes)", "prediction (classes)", "errors (in the predicted class)"),
}


def picture_grid(pictures: Sequence[Picture], title: str, metric: str):
    """A matplotlib Figure with one row per picture and columns input / ground truth / prediction (depth: with
    a colour bar per row; segmentation: and the errors), the image's id and own metric under its input, and a
    legend under the grid. Constrained layout keeps every label inside the figure."""
    import matplotlib

    matplotlib.use("Agg")  # no display on cluster nodes
    import matplotlib.pyplot as plt

    rows = max(1, len(pictures))
    columns = 4 if pictures and pictures[0].classes else 3
    fig, axes = plt.subplots(rows, columns, figsize=(3 * columns + (0 if columns == 4 else 0.8), 2.9 * rows + 0.6),
                             squeeze=False, layout="constrained")
    diw = bool(pictures) and pictures[0].gt is None and not pictures[0].classes
    metres = bool(pictures) and pictures[0].metres
    kind = "segmentation" if columns == 4 else "pairs" if diw else "metres" if metres else "dense"
    for ax, heading in zip(axes[0], _HEADINGS[kind]):
        ax.set_title(heading, fontsize=9)
    cmap = plt.get_cmap(COLOR_MAP).with_extremes(bad=UNLABELLED)
    for row, picture in zip(axes, pictures):
        row[0].imshow(picture.rgb)
        label = "pixel accuracy" if picture.classes else metric  # the image's own metric, not the benchmark's
        row[0].set_xlabel(f"{wrap_id(picture.id)}\n{label} {picture.value:.3g}", fontsize=7)
        if picture.classes:
            row[1].imshow(colour_labels(picture.gt, picture.classes, picture.palette))
            row[2].imshow(colour_labels(picture.pred, picture.classes, picture.palette))
            row[3].imshow(_errors(picture))
        else:
            _show_depth(fig, row, picture, cmap)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    _legend(fig, kind, cropped=any(np.isnan(p.pred).any() for p in pictures if p.metres))
    fig.suptitle(title, fontsize=11)
    return fig
