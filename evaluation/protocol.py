"""Each benchmark's zero-shot protocol as data, and the one per-image procedure that applies it.

The procedure (DPT section 4.1, following MiDaS): the model's disparity, resized to the ground truth's
size, is aligned to the ground-truth disparity (1 / depth) by per-image least squares over valid pixels;
the aligned disparity is capped at the benchmark's maximum depth, inverted to depth, and the metric is
computed over valid pixels. DIW has no dense ground truth: its ordinal pairs are compared directly (the
order of disparities is invariant to any positive scale, so no alignment is needed).

Per-image values are reduced as sums: a benchmark's number is ``sum(value * weight) / sum(weight)`` where
the weight is 1 per image (AbsRel, delta) or the number of point pairs (WHDR), so results from any number
of workers add up exactly (:class:`MetricSums`).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np

from evaluation import metrics, segmentation_metrics
from evaluation.crops import EIGEN_NYU_CROP
from evaluation.metric_protocol import METRIC_PROTOCOLS, MetricDepthProtocol
from pipeline.shards import ADE20K_CLASSES
from pipeline.label_sets import PASCAL_CONTEXT_CLASSES, PASCAL_CONTEXT_PALETTE

if TYPE_CHECKING:
    from evaluation.pictures import Picture

Metric = Literal["abs_rel", "delta_error", "whdr"]


@dataclasses.dataclass(frozen=True)
class BenchmarkProtocol:
    """How one benchmark is evaluated. Depths in metres. ``crop`` is the kept box ``(top, bottom, left,
    right)`` as fractions of the ground truth's height and width (end-exclusive), or None; pixels outside
    it count as invalid. Fractions keep the box meaningful at any size (NYU's Eigen crop, rows 45-470 and
    columns 41-600 of 480 x 640, is ``(45/480, 471/480, 41/640, 601/640)``)."""

    name: str  # short name used on the command line and in metric names
    title: str  # as in the paper's table
    metric: Metric
    split: str  # which images, in words
    expected_images: int  # size of the official split (a smaller local copy only warns)
    max_depth: float | None = None  # cap applied to the prediction (metres)
    min_valid_depth: float = 0.0  # ground truth valid only where depth > this
    max_valid_depth: float | None = None  # ... and where depth < this
    crop: tuple[float, float, float, float] | None = None
    align: Literal["disparity", "none"] = "disparity"
    threshold: float = 1.25  # for delta_error
    group: ClassVar[str] = "zero_shot"  # the MLflow metric names' prefix

    @property
    def metric_key(self) -> str:
        """The MLflow metric name; the same for every run, so runs line up in the MLflow UI."""
        suffix = {"abs_rel": "absrel", "delta_error": f"delta_gt_{self.threshold:g}", "whdr": "whdr"}
        return f"{self.group}/{self.name}_{suffix[self.metric]}"

    @property
    def result_key(self) -> str:
        """The MLflow metric whose presence says a run has this benchmark's number."""
        return self.metric_key

    def extra_metrics(self, sums: MetricSums) -> list[tuple[str, str, float]]:
        """``(MLflow name, label, value)`` of the numbers beside the benchmark's own: none here."""
        return []

    def artifacts(self, sums: MetricSums) -> dict[str, bytes]:
        """Files logged beside the numbers, ``{artifact path: bytes}``: none here."""
        return {}

    @property
    def metric_label(self) -> str:
        """How the paper's table heads the column."""
        return {"abs_rel": "AbsRel", "delta_error": f"δ>{self.threshold:g} (%)", "whdr": "WHDR (%)"}[self.metric]


PROTOCOLS: dict[str, BenchmarkProtocol] = {
    p.name: p
    for p in (
        BenchmarkProtocol("diw", "DIW", "whdr", "official test set, one annotated pair per image",
                          74441, align="none"),
        BenchmarkProtocol("eth3d", "ETH3D", "abs_rel", "high-res multi-view training DSLR images",
                          454, max_depth=72.0),
        BenchmarkProtocol("sintel", "Sintel", "abs_rel", "all training frames, final pass",
                          1064, max_depth=72.0, max_valid_depth=72.0),
        BenchmarkProtocol("kitti", "KITTI", "delta_error",
                          "Eigen test split with improved (annotated) ground truth from the depth val set",
                          161, max_depth=80.0),
        BenchmarkProtocol("nyu", "NYU Depth v2", "delta_error", "official labeled test split, raw depth",
                          654, max_depth=10.0, max_valid_depth=10.0,
                          crop=EIGEN_NYU_CROP.fractions),
        BenchmarkProtocol("tum", "TUM RGB-D", "delta_error", "dynamic sequences with people",
                          1815, max_depth=10.0),
    )
}


@dataclasses.dataclass(frozen=True)
class SegmentationProtocol:
    """A semantic segmentation benchmark (DPT Tables 4 and 5): mIoU and pixel accuracy from one confusion matrix
    summed over every image (:mod:`evaluation.segmentation_metrics`). Inference (see
    :mod:`evaluation.segmentation`): longer side ``size * scale`` for each of ``scales`` (``size``: the model's
    preprocessing, 520 for the ADE20K variants, or ``--input-size``), mirrored too with ``flip``, class
    probabilities averaged at the image's own size."""

    name: str
    title: str
    split: str
    expected_images: int
    num_classes: int
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    # uint8 [num_classes, 3]: the colour of each class in the picture grids (None: evaluation.pictures.label_palette)
    palette: np.ndarray | None = dataclasses.field(default=None, compare=False, repr=False)
    metric: str = "miou"
    group: ClassVar[str] = "segmentation"

    @property
    def metric_key(self) -> str:
        return f"{self.group}/{self.name}_miou"

    @property
    def result_key(self) -> str:
        return self.metric_key

    @property
    def pixel_accuracy_key(self) -> str:
        return f"{self.group}/{self.name}_pixel_accuracy"

    @property
    def metric_label(self) -> str:
        return "mIoU (%)"

    def extra_metrics(self, sums: MetricSums) -> list[tuple[str, str, float]]:
        """The pixel accuracy (%) of the summed confusion matrix: ``[(MLflow name, label, value)]``."""
        if sums.confusion is None:
            return []
        return [(self.pixel_accuracy_key, "pixel acc. (%)", segmentation_metrics.pixel_accuracy(sums.confusion))]

    def artifacts(self, sums: MetricSums) -> dict[str, bytes]:
        """The summed confusion matrix and each class's IoU (``evaluation.segmentation.confusion_artifacts``)."""
        from evaluation.segmentation import confusion_artifacts  # it imports this module

        return {} if sums.confusion is None else confusion_artifacts(self.name, sums.confusion)


# Multi-scale: the usual ADE20K setting (PyTorch-Encoding, MMSegmentation's aug test) of six scales and flips.
MULTI_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
SEGMENTATION_PROTOCOLS: dict[str, SegmentationProtocol] = {
    p.name: p
    for p in (
        SegmentationProtocol("ade20k", "ADE20K", "validation (ADEChallengeData2016), single scale", 2000,
                             ADE20K_CLASSES),
        SegmentationProtocol("ade20k_ms", "ADE20K (multi-scale)", "validation, scales 0.5-1.75 with flips",
                             2000, ADE20K_CLASSES, scales=MULTI_SCALES, flip=True),
        # Table 5: the 59-class protocol, background not scored; multi-scale as for ADE20K (PyTorch-Encoding's
        # evaluation of PASCAL-Context uses the same six scales and flips).
        SegmentationProtocol("pascal_context", "Pascal Context", "val (VOC2010, 59 classes), single scale", 5105,
                             PASCAL_CONTEXT_CLASSES, palette=PASCAL_CONTEXT_PALETTE),
        SegmentationProtocol("pascal_context_ms", "Pascal Context (multi-scale)", "val, scales 0.5-1.75 with flips",
                             5105, PASCAL_CONTEXT_CLASSES, scales=MULTI_SCALES, flip=True,
                             palette=PASCAL_CONTEXT_PALETTE),
    )
}


Protocol = BenchmarkProtocol | SegmentationProtocol | MetricDepthProtocol


def get_protocol(name: str) -> Protocol:
    """The protocol of a zero-shot depth (Table 1), metric depth (Tables 2, 3; :mod:`evaluation.metric_protocol`)
    or segmentation (Table 4) benchmark by name."""
    found = PROTOCOLS.get(name) or METRIC_PROTOCOLS.get(name) or SEGMENTATION_PROTOCOLS.get(name)
    if found is None:
        known = ", ".join([*PROTOCOLS, *METRIC_PROTOCOLS, *SEGMENTATION_PROTOCOLS])
        raise ValueError(f"unknown benchmark {name!r}; known: {known}")
    return found


@dataclasses.dataclass
class MetricSums:
    """Additive partial result of one benchmark: the only thing workers send back for the number."""

    total: float = 0.0  # sum of value * weight
    weight: float = 0.0  # sum of weights
    images: int = 0  # images that entered the metric
    skipped: int = 0  # images without a single valid pixel (reported per image, not in the metric)
    # Segmentation benchmarks: the int64 [C, C] confusion matrix (counts add up exactly); value is its mIoU.
    confusion: np.ndarray | None = None
    # Metric depth benchmarks: each of pipeline.depth_metrics.DEPTH_METRICS summed over the scored images (value:
    # the mean of the per-image values added with add(), their AbsRel; MetricDepthProtocol.values gives them all).
    depth: dict[str, float] | None = None

    def add(self, value: float, weight: float) -> None:
        self.total += value * weight
        self.weight += weight
        self.images += 1

    def __add__(self, other: MetricSums) -> MetricSums:
        if self.confusion is None or other.confusion is None:
            confusion = self.confusion if other.confusion is None else other.confusion
        else:
            confusion = self.confusion + other.confusion
        if self.depth is None or other.depth is None:
            depth = self.depth if other.depth is None else other.depth
        else:
            depth = {name: self.depth[name] + other.depth[name] for name in self.depth}
        return MetricSums(self.total + other.total, self.weight + other.weight,
                          self.images + other.images, self.skipped + other.skipped, confusion, depth)

    @property
    def value(self) -> float:
        if self.confusion is not None:
            return segmentation_metrics.mean_iou(self.confusion)
        return self.total / self.weight if self.weight else float("nan")


@dataclasses.dataclass
class ImageScore:
    """What scoring one image sends back (any protocol): its :class:`MetricSums` (added up over a benchmark's
    images, in their order, wherever and in whichever batch each was scored), its rows of the per-image table
    (``evaluation.tracking.ROW_SCHEMA``) and its downsized picture when it is one of the first of its benchmark."""

    id: str
    sums: MetricSums
    rows: list[dict]
    picture: Picture | None = None


@dataclasses.dataclass
class ImageResult:
    """One image's outcome. ``value`` is NaN and ``reason`` says why when the image had no valid pixel."""

    value: float
    weight: float
    valid_pixels: int
    scale: float = float("nan")
    shift: float = float("nan")
    reason: str = ""
    aligned_disparity: np.ndarray | None = None  # [H, W], kept for the picture grid


def valid_mask(gt_depth: np.ndarray, valid: np.ndarray, protocol: BenchmarkProtocol) -> np.ndarray:
    """Where the ground truth counts: the reader's validity, finite, inside the depth range and the crop."""
    with np.errstate(invalid="ignore"):
        mask = valid & np.isfinite(gt_depth) & (gt_depth > protocol.min_valid_depth)
        if protocol.max_valid_depth is not None:
            mask &= gt_depth < protocol.max_valid_depth
    if protocol.crop is not None:
        height, width = mask.shape
        top, bottom = (round(f * height) for f in protocol.crop[:2])
        left, right = (round(f * width) for f in protocol.crop[2:])
        box = np.zeros_like(mask)
        box[top:bottom, left:right] = True
        mask &= box
    return mask


def evaluate_dense(pred_disparity: np.ndarray, gt_depth: np.ndarray, valid: np.ndarray,
                   protocol: BenchmarkProtocol) -> ImageResult:
    """Align, cap, invert and score one image. All arrays ``[H, W]`` at the ground truth's size;
    ``pred_disparity`` is the model's (relative) disparity, ``gt_depth`` metres."""
    if pred_disparity.shape != gt_depth.shape:
        raise ValueError(f"prediction {pred_disparity.shape} and ground truth {gt_depth.shape} differ in size")
    mask = valid_mask(gt_depth, valid, protocol)
    count = int(mask.sum())
    if count == 0:
        return ImageResult(float("nan"), 0.0, 0, reason="no valid ground-truth pixel")
    gt_disparity = np.zeros_like(gt_depth, dtype=np.float64)
    gt_disparity[mask] = 1.0 / gt_depth[mask]
    pred = np.asarray(pred_disparity, np.float64)
    if protocol.align == "disparity":
        scale, shift = metrics.align_scale_shift(pred, gt_disparity, mask)
    else:
        scale, shift = 1.0, 0.0
    aligned = metrics.apply_scale_shift(pred, scale, shift)
    depth = metrics.cap_and_invert(aligned, protocol.max_depth)
    gt = np.where(mask, gt_depth, 1.0)  # placeholders outside the mask keep the metrics' checks simple
    if protocol.metric == "abs_rel":
        value = metrics.abs_rel(depth, gt, mask)
    elif protocol.metric == "delta_error":
        value = metrics.delta_error(depth, gt, mask, protocol.threshold)
    else:
        raise ValueError(f"{protocol.name}: metric {protocol.metric} needs point pairs, not a depth map")
    return ImageResult(value, 1.0, count, scale, shift, aligned_disparity=aligned.astype(np.float32))


def evaluate_pairs(pred_disparity: np.ndarray, pairs: np.ndarray) -> ImageResult:
    """WHDR of one image's ordinal pairs; weight = number of pairs."""
    value = metrics.whdr(pred_disparity, pairs)
    return ImageResult(value, float(len(pairs)), int(len(pairs)), aligned_disparity=pred_disparity)
