"""Semantic segmentation metrics of DPT's Table 4 (ADE20K): mIoU and pixel accuracy, from a confusion matrix.

Everything is computed from one integer confusion matrix ``[C, C]`` (rows: ground-truth class, columns:
predicted class) accumulated over all images. Because it holds counts, matrices from any number of images,
batches or Ray workers are combined by plain addition, exactly, in any order; the scores are derived once,
at the end, from the total (never averaged per image or per worker).

=====================  ===========================================================================
score                  definition (over labelled pixels, i.e. ground truth != ``ignore_index``)
=====================  ===========================================================================
pixel accuracy         ``sum_c TP_c / labelled pixels``, percent (0-100)
IoU of class ``c``     ``TP_c / (TP_c + FP_c + FN_c)``, percent; NaN when ``c`` is neither in the
                       ground truth nor predicted (it cannot be scored)
mIoU                   the mean of the classes' IoU over the classes that can be scored
mean accuracy          the mean over classes present in the ground truth of ``TP_c / (TP_c + FN_c)``
=====================  ===========================================================================

On the full ADE20K validation set every one of the 150 classes is present, so mIoU is the plain mean over
150 classes there, as in the challenge's development kit; on a subset, classes that appear nowhere are
left out rather than counted as 0 (MMSegmentation's convention).
"""

from __future__ import annotations

import numpy as np
import torch

from pipeline.shards import IGNORE_LABEL


def _as_int_array(values, what: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    values = np.asarray(values)
    if not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f"{what} must hold integer class ids, not {values.dtype}")
    return values.astype(np.int64, copy=False)


def confusion_matrix(pred, target, num_classes: int, ignore_index: int = IGNORE_LABEL) -> np.ndarray:
    """Count ``(ground truth, prediction)`` pairs over the labelled pixels -> int64 ``[C, C]``.

    Args:
        pred: predicted class ids, integer ``[H, W]`` or ``[B, H, W]`` (numpy or torch), each in ``0..C-1``.
        target: ground-truth class ids, same shape; ``ignore_index`` marks unlabelled pixels, which are
            not counted whatever was predicted there.
        num_classes: ``C``.
    Raises ``ValueError`` for differing shapes or an id outside ``0..C-1`` (other than ``ignore_index``
    in the target): a label the model cannot predict is a bug upstream, never silently dropped.
    """
    pred, target = _as_int_array(pred, "pred"), _as_int_array(target, "target")
    if pred.shape != target.shape:
        raise ValueError(f"shapes differ: pred {list(pred.shape)}, target {list(target.shape)}")
    labelled = target != ignore_index
    p, t = pred[labelled], target[labelled]
    for name, ids in (("pred", p), ("target", t)):
        if ids.size and (ids.min() < 0 or ids.max() >= num_classes):
            raise ValueError(f"{name} holds class ids outside 0..{num_classes - 1} "
                             f"(found {ids.min()}..{ids.max()}; ignore index {ignore_index})")
    counts = np.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def pixel_accuracy(confusion: np.ndarray) -> float:
    """Correctly classified labelled pixels, percent of all labelled pixels; NaN with none labelled."""
    confusion = np.asarray(confusion, np.int64)
    total = int(confusion.sum())
    return 100.0 * int(np.trace(confusion)) / total if total else float("nan")


def class_iou(confusion: np.ndarray) -> np.ndarray:
    """Per-class IoU, percent, float64 ``[C]``; NaN for a class neither labelled nor predicted."""
    confusion = np.asarray(confusion, np.int64)
    tp = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - tp
    iou = np.full(len(tp), np.nan)
    np.divide(100.0 * tp, union, out=iou, where=union > 0)
    return iou


def mean_iou(confusion: np.ndarray) -> float:
    """Mean of :func:`class_iou` over the classes that can be scored, percent; NaN when none can."""
    iou = class_iou(confusion)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


def mean_class_accuracy(confusion: np.ndarray) -> float:
    """Mean over classes present in the ground truth of their recall ``TP / (TP + FN)``, percent."""
    confusion = np.asarray(confusion, np.int64)
    support = confusion.sum(1)
    present = support > 0
    if not present.any():
        return float("nan")
    return float(np.mean(100.0 * np.diag(confusion)[present] / support[present]))


def segmentation_scores(confusion: np.ndarray) -> dict[str, float]:
    """``{"miou", "pixel_accuracy", "mean_accuracy"}`` (percent) and ``labelled_pixels`` of a summed matrix."""
    return {"miou": mean_iou(confusion), "pixel_accuracy": pixel_accuracy(confusion),
            "mean_accuracy": mean_class_accuracy(confusion), "labelled_pixels": float(np.sum(confusion))}
