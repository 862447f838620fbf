"""Metric depth evaluation (DPT Tables 2 and 3): a metric model's depth in metres for a batch of a benchmark's
images, scored by :mod:`evaluation.metric_protocol`, as named per-image sums that add up across images and actors.

Inference is the one path of ``dpt predict`` (:func:`training.model.inference.predict_images`: the variant's
preprocessing, the model, bicubic back to the image's size), whose output for a metric model is depth in metres.
With the protocol's ``input_crop="kb"`` (KITTI) the network sees the KITTI benchmark crop of each frame (the
official ``run_monodepth.py --kitti_crop``) and the prediction is pasted back at its place in the frame, 0 elsewhere
(:func:`evaluation.crops.paste`), where the Garg crop never scores.

Per image, one row per metric of :data:`pipeline.depth_metrics.DEPTH_METRICS` (``metric`` is its MLflow name):
the image's own value, or NaN with the ``reason`` when the image cannot be scored (the reader found no ground
truth for it, or none of its pixels is valid under the protocol). Such an image counts in ``skipped``.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence

import numpy as np
import torch

from evaluation.benchmarks import BenchmarkSample
from evaluation.crops import kb_crop_box, paste
from evaluation.metric_protocol import MetricDepthProtocol, clip_prediction, evaluate_metric_depth, metric_valid_mask
from evaluation.pictures import Picture, shrink
from evaluation.protocol import ImageScore, MetricSums
from pipeline.depth_metrics import DEPTH_METRICS, depth_metrics_from_sums
from training.model import Preprocess
from training.model.inference import predict_images


def predict_metric_depth(model: torch.nn.Module, images: Sequence[np.ndarray], pre: Preprocess,
                         protocol: MetricDepthProtocol, batch_size: int = 4) -> list[np.ndarray]:
    """Depth in metres, float32 ``[H, W]`` at each uint8 ``[H, W, 3]`` image's own size (see the module docstring;
    with ``input_crop="kb"`` 0 outside the crop). A frame smaller than the KITTI crop raises ``ValueError``."""
    if protocol.input_crop is None:
        return predict_images(model, images, pre, batch_size=batch_size)
    boxes = [kb_crop_box(*image.shape[:2]) for image in images]
    crops = [image[top:bottom, left:right] for image, (top, bottom, left, right) in zip(images, boxes)]
    preds = predict_images(model, crops, pre, batch_size=batch_size)
    return [paste(pred, box, image.shape[:2]) for pred, box, image in zip(preds, boxes, images)]


def _rows(protocol: MetricDepthProtocol, sample_id: str, values: dict[str, float], valid_pixels: int, scale: float,
          reason: str) -> list[dict]:
    """The image's rows, one per metric (the per-image table's schema: ``evaluation.tracking.ROW_SCHEMA``)."""
    return [{"benchmark": protocol.name, "id": sample_id, "metric": protocol.metric_key(name),
             "value": values.get(name, math.nan), "weight": 1.0 if values else 0.0, "valid_pixels": valid_pixels,
             "scale": scale, "shift": math.nan, "reason": reason} for name in DEPTH_METRICS]


def _picture(sample, pred: np.ndarray, mask: np.ndarray, scale: float, value: float,
             protocol: MetricDepthProtocol) -> Picture:
    """Downsized input, ground truth where it is scored and the clipped prediction, all in metres (NaN: grey)."""
    gt = np.where(mask, sample.depth, np.nan).astype(np.float32)
    shown = clip_prediction(pred * scale, protocol).astype(np.float32)
    if protocol.input_crop is not None:  # where the network saw nothing
        top, bottom, left, right = kb_crop_box(*pred.shape)
        shown = paste(shown[top:bottom, left:right], (top, bottom, left, right), pred.shape, fill=np.nan)
    # nearest keeps invalid (NaN) ground truth from bleeding into valid neighbours
    return Picture(sample.id, shrink(sample.rgb, "area")[0], shrink(gt, "nearest")[0], shrink(shown, "area")[0],
                   value=value, metres=True)


def score_metric_depth(model: torch.nn.Module, pre: Preprocess, protocol: MetricDepthProtocol,
                       samples: Sequence[BenchmarkSample], device: str = "cpu", batch_size: int = 4,
                       picture_ids: Collection[str] = ()) -> list[ImageScore]:
    """Predict (on the model's device) and score decoded ``samples`` of a metric depth benchmark: one
    :class:`~evaluation.protocol.ImageScore` per sample, a picture for those in ``picture_ids``. Its
    ``sums.depth`` holds each metric's per-image sums, ``sums.value`` (over images) their mean AbsRel."""
    scorable = [s for s in samples if not s.reason]
    preds = dict(zip((s.id for s in scorable),
                     predict_metric_depth(model, [s.rgb for s in scorable], pre, protocol, batch_size)))
    scores = []
    for sample in samples:
        sums = MetricSums(depth=dict.fromkeys(DEPTH_METRICS, 0.0))
        if sample.reason:  # listed by the split, but the reader has no ground truth for it
            sums.skipped += 1
            scores.append(ImageScore(sample.id, sums, _rows(protocol, sample.id, {}, 0, math.nan, sample.reason)))
            continue
        image_sums, scale = evaluate_metric_depth(preds[sample.id], sample.depth, sample.valid, protocol)
        mask = metric_valid_mask(sample.depth, sample.valid, protocol)
        if not image_sums["images"]:
            sums.skipped += 1
            reason = (f"no valid ground-truth pixel ({protocol.min_depth:g} < depth < {protocol.max_depth:g} m "
                      f"inside the {protocol.crop.name} crop)")
            scores.append(ImageScore(sample.id, sums, _rows(protocol, sample.id, {}, 0, scale, reason)))
            continue
        values = depth_metrics_from_sums(image_sums)
        sums.add(values[protocol.metric], 1.0)
        for name in DEPTH_METRICS:
            sums.depth[name] += float(image_sums[name])
        picture = (_picture(sample, preds[sample.id], mask, scale, values[protocol.metric], protocol)
                   if sample.id in picture_ids else None)
        scores.append(ImageScore(sample.id, sums, _rows(protocol, sample.id, values, int(mask.sum()), scale, ""),
                                 picture))
    return scores
