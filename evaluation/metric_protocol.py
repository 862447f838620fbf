"""The metric depth protocols of DPT's Tables 2 and 3 (fine-tuned models) as data, and the per-image procedure.

No alignment: a metric model's depth in metres is scored as it comes (the paper's protocol, reproduced by
isl-org/DPT's EVALUATION.md with BTS's ``eval_with_pngs.py``). Per image:

1. valid ground truth: the reader's validity, finite, ``min_depth < gt < max_depth`` (strict on both sides, as
   BTS), inside the scoring crop (:mod:`evaluation.crops`: Eigen for NYUv2, Garg for KITTI);
2. the prediction, at the ground truth's size, is clipped to ``[min_depth, max_depth]`` (``inf`` -> max);
3. :func:`pipeline.depth_metrics.depth_metric_sums` of the image; a benchmark's numbers are the sums over its images
   divided by the number of scored images (the per-image mean of the paper's numbers; exact across workers).

``align="median"`` is an option for relative models (Zhou et al. 2017 / Monodepth2's median scaling): before the
clip, each image's prediction (depth up to scale: a relative model's ``1 / disparity``) is multiplied by
``median(gt) / median(pred)`` over its valid pixels. It is not the paper's protocol: numbers with it do not
compare with Tables 2 and 3 (their metric key says ``median``).

KITTI's network input is the KITTI benchmark crop of the frame (``input_crop="kb"``: the official
``run_monodepth.py --kitti_crop``); the prediction goes back to its place in the frame, 0 elsewhere, which the
Garg crop never scores (:func:`evaluation.crops.kb_crop_box`, :func:`evaluation.crops.paste`).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np
import torch

from evaluation.crops import EIGEN_NYU_CROP, GARG_CROP, Crop
from pipeline.depth_metrics import DEPTH_METRICS, depth_metric_sums, depth_metrics_from_sums

if TYPE_CHECKING:
    from evaluation.protocol import MetricSums

Align = Literal["none", "median"]
ALIGNMENTS = ("none", "median")

# How the paper's tables (and the console, and dpt compare) head each of DEPTH_METRICS.
METRIC_LABELS = {"d1": "d1", "d2": "d2", "d3": "d3", "abs_rel": "AbsRel", "sq_rel": "SqRel", "rmse": "RMSE",
                 "rmse_log": "RMSE-log", "log10": "log10", "silog": "SILog"}
HIGHER_IS_BETTER = frozenset({"d1", "d2", "d3"})  # accuracies; the rest are errors


@dataclasses.dataclass(frozen=True)
class MetricDepthProtocol:
    """How one metric depth benchmark is scored (depths in metres). See the module doc for the procedure."""

    name: str  # command-line name, metric-key prefix
    title: str  # as the paper's table names it
    table: str  # the paper's table
    split: str  # which images, in words
    expected_images: int  # size of the official split (a smaller local copy only warns)
    min_depth: float  # ground truth valid where min_depth < d < max_depth; prediction clipped to [min, max]
    max_depth: float
    crop: Crop
    columns: tuple[str, ...]  # the paper's table columns, of DEPTH_METRICS (all of them are logged)
    input_crop: Literal["kb"] | None = None  # the network sees this crop of the frame (KITTI benchmark crop)
    align: Align = "none"
    group: ClassVar[str] = "metric_depth"  # the MLflow metric names' prefix
    metric: ClassVar[str] = "abs_rel"  # the benchmark's one number where one is needed (value, picture titles)

    def __post_init__(self):
        if self.align not in ALIGNMENTS:
            raise ValueError(f"{self.name}: align must be one of {ALIGNMENTS}, got {self.align!r}")
        if not set(self.columns) <= set(DEPTH_METRICS):
            raise ValueError(f"{self.name}: columns {self.columns} must be among {DEPTH_METRICS}")
        if not 0 <= self.min_depth < self.max_depth:
            raise ValueError(f"{self.name}: need 0 <= min_depth < max_depth, got {self.min_depth}, {self.max_depth}")

    def with_alignment(self, align: Align) -> MetricDepthProtocol:
        """This protocol with another alignment (``median`` for relative models)."""
        return dataclasses.replace(self, align=align)

    def metric_key(self, metric: str) -> str:
        """The MLflow metric name of one of :data:`pipeline.depth_metrics.DEPTH_METRICS`, e.g.
        ``metric_depth/nyu_metric_abs_rel``; median-scaled numbers get ``_median`` after the benchmark."""
        suffix = "" if self.align == "none" else f"_{self.align}"
        return f"{self.group}/{self.name}{suffix}_{metric}"

    @property
    def result_key(self) -> str:
        """The MLflow metric whose presence says a run has this benchmark's numbers (its AbsRel)."""
        return self.metric_key(self.metric)

    @property
    def metric_label(self) -> str:
        return METRIC_LABELS[self.metric]

    def values(self, sums: MetricSums) -> dict[str, float]:
        """Each of :data:`DEPTH_METRICS` of a benchmark from its summed per-image values (``sums.depth``) and the
        number of images scored; empty when none was."""
        if not sums.images or sums.depth is None:
            return {}
        return depth_metrics_from_sums({**sums.depth, "images": sums.images})

    def extra_metrics(self, sums: MetricSums) -> list[tuple[str, str, float]]:
        """``(MLflow name, label, value)`` of every metric beside AbsRel (logged under :meth:`metric_key`)."""
        return [(self.metric_key(name), METRIC_LABELS[name], value)
                for name, value in self.values(sums).items() if name != self.metric]

    def artifacts(self, sums: MetricSums) -> dict[str, bytes]:
        """Files logged beside the numbers: none (the per-image rows hold each image's metrics)."""
        return {}


METRIC_PROTOCOLS: dict[str, MetricDepthProtocol] = {
    p.name: p
    for p in (
        MetricDepthProtocol("nyu_metric", "NYUv2", "Table 2",
                            "official labeled test split (splits.mat testNdxs), raw depth (rawDepths, as BTS "
                            "extracts it)", 654, min_depth=1e-3, max_depth=10.0, crop=EIGEN_NYU_CROP,
                            columns=("d1", "d2", "d3", "abs_rel", "rmse", "log10")),
        MetricDepthProtocol("kitti_metric", "KITTI (Eigen split)", "Table 3",
                            "Eigen test split (697 frames), the 652 with annotated ground truth of the depth "
                            "benchmark (BTS eigen_test_files_with_gt.txt)", 652, min_depth=1e-3, max_depth=80.0,
                            crop=GARG_CROP, columns=("d1", "d2", "d3", "abs_rel", "rmse", "rmse_log"),
                            input_crop="kb"),
    )
}


def get_metric_protocol(name: str, align: Align = "none") -> MetricDepthProtocol:
    """A metric depth protocol by name, with ``align`` (``median`` for relative models)."""
    if name not in METRIC_PROTOCOLS:
        raise ValueError(f"unknown metric depth benchmark {name!r}; known: {', '.join(METRIC_PROTOCOLS)}")
    if align not in ALIGNMENTS:
        raise ValueError(f"{name}: align must be one of {ALIGNMENTS}, got {align!r}")
    return METRIC_PROTOCOLS[name].with_alignment(align)


def metric_valid_mask(gt_depth: np.ndarray, valid: np.ndarray, protocol: MetricDepthProtocol) -> np.ndarray:
    """``[H, W]`` bool: the reader's ``valid``, finite, ``min_depth < gt < max_depth``, inside the crop."""
    gt_depth = np.asarray(gt_depth)
    with np.errstate(invalid="ignore"):
        mask = (np.asarray(valid, bool) & np.isfinite(gt_depth) & (gt_depth > protocol.min_depth)
                & (gt_depth < protocol.max_depth))
    return mask & protocol.crop.mask(*gt_depth.shape)


def median_scale(pred_depth: np.ndarray, gt_depth: np.ndarray, mask: np.ndarray) -> float:
    """``median(gt) / median(pred)`` over ``mask``; raises ``ValueError`` when the prediction's median is not
    finite and > 0 (more than half the valid pixels at 0 or infinite depth)."""
    pred_median = float(np.median(pred_depth[mask]))
    if not (np.isfinite(pred_median) and pred_median > 0):
        raise ValueError(f"median scaling: the prediction's median depth over valid pixels is {pred_median}")
    return float(np.median(gt_depth[mask])) / pred_median


def clip_prediction(pred_depth: np.ndarray, protocol: MetricDepthProtocol) -> np.ndarray:
    """Depth clipped to ``[min_depth, max_depth]`` (float64), ``+inf`` to ``max_depth``; NaN stays NaN."""
    return np.clip(np.asarray(pred_depth, np.float64), protocol.min_depth, protocol.max_depth)


def evaluate_metric_depth(pred_depth: np.ndarray, gt_depth: np.ndarray, valid: np.ndarray,
                          protocol: MetricDepthProtocol) -> tuple[dict[str, torch.Tensor], float]:
    """One image: ``(sums, scale)``, the image's :func:`pipeline.depth_metrics.depth_metric_sums` (``images`` 0 and
    ``skipped`` 1 when no pixel is valid) and the median scale applied (1.0 without alignment).

    All arrays ``[H, W]`` at the ground truth's size: ``pred_depth`` in metres (or up to scale with
    ``align="median"``), ``gt_depth`` in metres, ``valid`` the reader's mask.
    """
    pred_depth, gt_depth = np.asarray(pred_depth, np.float64), np.asarray(gt_depth, np.float64)
    if pred_depth.shape != gt_depth.shape or pred_depth.ndim != 2:
        raise ValueError(f"prediction {pred_depth.shape} and ground truth {gt_depth.shape} must be one [H, W] size")
    mask = metric_valid_mask(gt_depth, valid, protocol)
    scale = 1.0
    if protocol.align == "median" and mask.any():
        scale = median_scale(pred_depth, gt_depth, mask)
    pred = clip_prediction(pred_depth * scale, protocol)
    gt = np.where(mask, gt_depth, 1.0)  # placeholders outside the mask keep the metric's checks simple
    return depth_metric_sums(pred, gt, mask), scale
