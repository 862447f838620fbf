"""One unit of evaluation work: predict and score a few images of one benchmark (no Ray in here).

A chunk returns additive :class:`~evaluation.protocol.MetricSums`, one row per image (one per image and metric for
metric depth; including images that could not be scored, with the reason) and small pictures for the first images
of a benchmark.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import torch

from evaluation.benchmarks import BenchmarkReader, make_reader
from evaluation.pictures import Picture, shrink
from evaluation.metric_depth import score_metric_depth
from evaluation.metric_protocol import MetricDepthProtocol
from evaluation.protocol import (BenchmarkProtocol, MetricSums, SegmentationProtocol, evaluate_dense, evaluate_pairs,
                                 get_protocol, valid_mask)
from evaluation.segmentation import score_segmentation
from training.model import Preprocess
from training.model.inference import predict_images


@dataclasses.dataclass
class ChunkResult:
    benchmark: str
    sums: MetricSums
    rows: list[dict]
    pictures: list[Picture]
    error: str | None = None
    attempted: int = 0  # images in the chunk, scored or not (for progress)


def _picture(sample, pred: np.ndarray, result, protocol) -> Picture:
    rgb, factor = shrink(sample.rgb, "area")
    if sample.pairs is not None:
        small_pred, _ = shrink(pred, "area")
        pairs = sample.pairs.copy()
        pairs[:, :4] = np.floor(pairs[:, :4] * factor)
        return Picture(sample.id, rgb, None, small_pred, pairs, result.value)
    mask = valid_mask(sample.depth, sample.valid, protocol)
    gt = np.full(sample.depth.shape, np.nan, np.float32)
    gt[mask] = 1.0 / sample.depth[mask]
    aligned = result.aligned_disparity if result.aligned_disparity is not None else pred
    # nearest keeps invalid (NaN) ground truth from bleeding into valid neighbours
    return Picture(sample.id, rgb, shrink(gt, "nearest")[0], shrink(aligned, "area")[0], None, result.value)


def _row(benchmark: str, metric: str, sample_id: str, result) -> dict:
    return {"benchmark": benchmark, "id": sample_id, "metric": metric, "value": result.value,
            "weight": result.weight, "valid_pixels": result.valid_pixels, "scale": result.scale,
            "shift": result.shift, "reason": result.reason}


def score_depth(model: torch.nn.Module, pre: Preprocess, protocol: BenchmarkProtocol, reader: BenchmarkReader,
                ids: Sequence[str], device: str = "cpu", batch_size: int = 4, picture_ids: Sequence[str] = ()
                ) -> tuple[MetricSums, list[dict], list[Picture]]:
    """Predict and score ``ids`` of a depth benchmark (Table 1): ``(sums of the per-image values, rows, pictures
    of the images in picture_ids)``. Images are read, predicted and scored one batch at a time."""
    sums, rows, pictures = MetricSums(), [], []
    for start in range(0, len(ids), batch_size):
        samples = [reader.load(i) for i in ids[start:start + batch_size]]
        preds = predict_images(model, [s.rgb for s in samples], pre, batch_size=batch_size)  # on the model's device
        for sample, pred in zip(samples, preds):
            if sample.pairs is not None:
                result = evaluate_pairs(pred, sample.pairs)
            else:
                result = evaluate_dense(pred, sample.depth, sample.valid, protocol)
            if math.isnan(result.value):
                sums.skipped += 1
            else:
                sums.add(result.value, result.weight)
            rows.append(_row(protocol.name, protocol.metric_key, sample.id, result))
            if sample.id in picture_ids:
                pictures.append(_picture(sample, pred, result, protocol))
    return sums, rows, pictures


# How each kind of protocol is scored: per-image values (zero-shot depth), named per-image sums (metric depth), or
# a summed confusion matrix (segmentation).
SCORE = {BenchmarkProtocol: score_depth, MetricDepthProtocol: score_metric_depth,
         SegmentationProtocol: score_segmentation}


def run_chunk(model: torch.nn.Module, pre: Preprocess, benchmark: str, data_root: str, ids: Sequence[str],
              picture_ids: Sequence[str] = (), device: str = "cpu", batch_size: int = 4,
              reader: BenchmarkReader | None = None) -> ChunkResult:
    """Evaluate ``ids`` of ``benchmark`` with its protocol's scoring (:data:`SCORE`); any exception propagates
    (the caller records it).

    ``reader`` lets a worker reuse one reader across chunks (DIW's 74k-line CSV is parsed once, NYU's
    HDF5 file opened once).

    Images are read, predicted and scored one batch at a time, so memory holds ``batch_size`` images
    (an ETH3D image with its ground truth and float64 intermediates is about 1 GB)."""
    protocol = get_protocol(benchmark)
    reader = reader or make_reader(benchmark, data_root)
    sums, rows, pictures = SCORE[type(protocol)](model, pre, protocol, reader, ids, device, batch_size, picture_ids)
    return ChunkResult(benchmark, sums, rows, pictures, attempted=len(ids))
