"""One unit of evaluation work: predict and score a few decoded images of one benchmark (no Ray in here).

Each image's score is its additive :class:`~evaluation.protocol.MetricSums`, its rows of the per-image table (one
per image, one per image and metric for metric depth; including images that could not be scored, with the reason)
and, for the first images of a benchmark, a small picture. The Ray Data job (:mod:`evaluation.job`) sends these
per-image scores back to the driver and adds them up there in the benchmark's own image order, exactly as
:func:`run_chunk` does here, so any number of actors and any batch size give the same sums.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection, Sequence

import numpy as np
import torch

from evaluation.benchmarks import BenchmarkReader, BenchmarkSample, make_reader
from evaluation.pictures import Picture, shrink
from evaluation.metric_depth import score_metric_depth
from evaluation.metric_protocol import MetricDepthProtocol
from evaluation.protocol import (BenchmarkProtocol, ImageScore, MetricSums, Protocol, SegmentationProtocol,
                                 evaluate_dense, evaluate_pairs, get_protocol, valid_mask)
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

    @classmethod
    def of(cls, benchmark: str, scores: Sequence[ImageScore], attempted: int) -> ChunkResult:
        """The images' scores added up in their order (the order the job's driver adds them in too)."""
        sums = MetricSums()
        for score in scores:
            sums = sums + score.sums
        return cls(benchmark, sums, [row for s in scores for row in s.rows],
                   [s.picture for s in scores if s.picture is not None], attempted=attempted)


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


def score_depth(model: torch.nn.Module, pre: Preprocess, protocol: BenchmarkProtocol,
                samples: Sequence[BenchmarkSample], device: str = "cpu", batch_size: int = 4,
                picture_ids: Collection[str] = ()) -> list[ImageScore]:
    """Predict (on the model's device, ``batch_size`` images per forward pass) and score decoded ``samples`` of a
    depth benchmark (Table 1): one :class:`ImageScore` per sample, a picture for those in ``picture_ids``."""
    preds = predict_images(model, [s.rgb for s in samples], pre, batch_size=batch_size)
    scores = []
    for sample, pred in zip(samples, preds):
        if sample.pairs is not None:
            result = evaluate_pairs(pred, sample.pairs)
        else:
            result = evaluate_dense(pred, sample.depth, sample.valid, protocol)
        sums = MetricSums()
        if math.isnan(result.value):
            sums.skipped += 1
        else:
            sums.add(result.value, result.weight)
        picture = _picture(sample, pred, result, protocol) if sample.id in picture_ids else None
        scores.append(ImageScore(sample.id, sums, [_row(protocol.name, protocol.metric_key, sample.id, result)],
                                 picture))
    return scores


# How each kind of protocol is scored: per-image values (zero-shot depth), named per-image sums (metric depth), or
# a per-image confusion matrix (segmentation).
SCORE = {BenchmarkProtocol: score_depth, MetricDepthProtocol: score_metric_depth,
         SegmentationProtocol: score_segmentation}


def score_images(model: torch.nn.Module, pre: Preprocess, protocol: Protocol, samples: Sequence[BenchmarkSample],
                 device: str = "cpu", batch_size: int = 4, picture_ids: Collection[str] = ()) -> list[ImageScore]:
    """Score decoded ``samples`` of one benchmark with its protocol's scoring (:data:`SCORE`)."""
    return SCORE[type(protocol)](model, pre, protocol, samples, device, batch_size, picture_ids)


def run_chunk(model: torch.nn.Module, pre: Preprocess, benchmark: str, data_root: str, ids: Sequence[str],
              picture_ids: Sequence[str] = (), device: str = "cpu", batch_size: int = 4,
              reader: BenchmarkReader | None = None) -> ChunkResult:
    """Read and evaluate ``ids`` of ``benchmark`` in this process; any exception propagates (the caller records it).

    ``reader`` lets a caller reuse one reader (DIW's 74k-line CSV is parsed once, NYU's HDF5 file opened once).

    Images are read, predicted and scored one batch at a time, so memory holds ``batch_size`` images
    (an ETH3D image with its ground truth and float64 intermediates is about 1 GB)."""
    protocol = get_protocol(benchmark)
    reader = reader or make_reader(benchmark, data_root)
    scores = []
    for start in range(0, len(ids), batch_size):
        samples = [reader.load(i) for i in ids[start:start + batch_size]]
        scores += score_images(model, pre, protocol, samples, device, batch_size, picture_ids)
    return ChunkResult.of(benchmark, scores, attempted=len(ids))
