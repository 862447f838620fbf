"""Semantic segmentation evaluation: single- and multi-scale inference and each image's confusion matrix.

Inference (the protocol's ``scales`` and ``flip``, the model's preprocessing ``size``): for each scale ``s`` the
image goes in with its longer side ``round(size * s)`` and both sides multiples of 32
(:func:`training.model.inference.prepare`, the depth protocol's own resizing); the class probabilities (softmax
of the logits, and of the mirrored image's mirrored logits with ``flip``) are resized bilinearly to the image's
own size and summed over scales; the prediction is their argmax. Single-scale is ``scales=(1.0,)`` without flip.

Each image's score holds its confusion matrix (:mod:`evaluation.segmentation_metrics`) inside its
:class:`~evaluation.protocol.MetricSums`, so the driver's sum over images and Ray actors is exact.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from evaluation.benchmarks import BenchmarkSample
from evaluation.pictures import Picture, shrink
from evaluation.protocol import ImageScore, MetricSums, SegmentationProtocol
from evaluation.segmentation_metrics import confusion_matrix, pixel_accuracy
from pipeline.shards import IGNORE_LABEL
from training.model import Preprocess
from training.model.inference import prepare, target_size


def _probabilities(model: torch.nn.Module, x: torch.Tensor, flip: bool, num_classes: int | None) -> torch.Tensor:
    logits = model(x)
    classes_ok = logits.ndim == 4 and logits.shape[1] == (num_classes or logits.shape[1]) and logits.shape[1] > 1
    if not classes_ok or logits.shape[2:] != x.shape[2:]:
        want = f"{num_classes} class" if num_classes else "class"
        raise RuntimeError(f"model returned {tuple(logits.shape)} for input {tuple(x.shape)}; expected [B, C, H, W] "
                           f"{want} logits at the input resolution (a segmentation model)")
    probs = logits.float().softmax(1)
    if flip:
        probs = probs + model(x.flip(-1)).float().softmax(1).flip(-1)
    return probs


@torch.inference_mode()
def predict_labels(model: torch.nn.Module, images: Sequence[np.ndarray], pre: Preprocess,
                   scales: Sequence[float] = (1.0,), flip: bool = False, device: torch.device | str = "cpu",
                   batch_size: int = 4, num_classes: int | None = None) -> list[np.ndarray]:
    """Class ids int64 ``[H, W]`` for each uint8 ``[H, W, 3]`` image (see the module docstring).

    ``pre`` gives the normalisation, ``multiple_of`` and ``size``, the longer side at scale 1. A model whose
    output is not ``[B, num_classes, h, w]`` logits (a depth model, another label set) raises ``RuntimeError``.
    Images that share a network size at a scale are batched together (up to ``batch_size``).
    """
    totals: list[torch.Tensor | None] = [None] * len(images)
    for scale in scales:
        scaled = dataclasses.replace(pre, size=max(pre.multiple_of, round(pre.size * scale)))
        groups: dict[tuple[int, int], list[int]] = {}
        for i, image in enumerate(images):
            groups.setdefault(target_size(image.shape[0], image.shape[1], scaled), []).append(i)
        for members in groups.values():
            for start in range(0, len(members), batch_size):
                batch = members[start:start + batch_size]
                x = torch.stack([prepare(images[i], scaled) for i in batch]).to(device)
                probs = _probabilities(model, x, flip, num_classes)
                for j, i in enumerate(batch):
                    full = F.interpolate(probs[j:j + 1], size=images[i].shape[:2], mode="bilinear",
                                         align_corners=False)[0]
                    totals[i] = full if totals[i] is None else totals[i] + full
    return [total.argmax(0).cpu().numpy() for total in totals]  # type: ignore[union-attr]


def _row(benchmark: str, sample_id: str, confusion: np.ndarray) -> dict:
    labelled = int(confusion.sum())
    return {"benchmark": benchmark, "id": sample_id, "metric": "pixel_accuracy", "value": pixel_accuracy(confusion),
            "weight": float(labelled), "valid_pixels": labelled, "scale": float("nan"), "shift": float("nan"),
            "reason": "" if labelled else "no labelled pixel"}


def _picture(sample, pred: np.ndarray, value: float, protocol: SegmentationProtocol) -> Picture:
    """Downsized input, ground truth (NaN = unlabelled) and prediction; nearest keeps class ids whole."""
    gt = np.where(sample.labels == IGNORE_LABEL, np.nan, sample.labels).astype(np.float32)
    return Picture(sample.id, shrink(sample.rgb, "area")[0], shrink(gt, "nearest")[0],
                   shrink(pred.astype(np.float32), "nearest")[0], value=value, palette=protocol.palette,
                   classes=protocol.num_classes)


def score_segmentation(model: torch.nn.Module, pre: Preprocess, protocol: SegmentationProtocol,
                       samples: Sequence[BenchmarkSample], device: str = "cpu", batch_size: int = 4,
                       picture_ids: Collection[str] = ()) -> list[ImageScore]:
    """Predict and score decoded ``samples`` of a segmentation benchmark: one
    :class:`~evaluation.protocol.ImageScore` per sample, whose sums hold the image's confusion matrix, and a
    picture for those in ``picture_ids``.

    Each image's row holds its own pixel accuracy (for finding the worst images); the benchmark's numbers come
    from the summed matrix only.
    """
    preds = predict_labels(model, [s.rgb for s in samples], pre, protocol.scales, protocol.flip, device,
                           batch_size, protocol.num_classes)
    scores = []
    for sample, pred in zip(samples, preds):
        confusion = confusion_matrix(pred, sample.labels, protocol.num_classes)
        sums = MetricSums(confusion=confusion)
        if confusion.sum():
            sums.images += 1
        else:
            sums.skipped += 1
        row = _row(protocol.name, sample.id, confusion)
        picture = _picture(sample, pred, row["value"], protocol) if sample.id in picture_ids else None
        scores.append(ImageScore(sample.id, sums, [row], picture))
    return scores


def confusion_artifacts(benchmark: str, confusion: np.ndarray) -> dict[str, bytes]:
    """The files MLflow keeps beside a segmentation benchmark's numbers: the summed confusion matrix (``.npy``,
    rows ground truth) and each class's IoU (``.csv``), under ``eval/segmentation/``."""
    import io

    from evaluation.segmentation_metrics import class_iou

    buf = io.BytesIO()
    np.save(buf, np.asarray(confusion, np.int64), allow_pickle=False)
    labelled = np.asarray(confusion).sum(1)
    lines = ["class,iou,labelled_pixels"] + [f"{c},{'' if np.isnan(v) else f'{v:.4f}'},{int(labelled[c])}"
                                             for c, v in enumerate(class_iou(confusion))]
    return {f"eval/segmentation/{benchmark}_confusion.npy": buf.getvalue(),
            f"eval/segmentation/{benchmark}_class_iou.csv": ("\n".join(lines) + "\n").encode()}
