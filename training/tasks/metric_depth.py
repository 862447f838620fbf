"""Metric depth (paper Sec. 4.1, fine-tuning on NYUv2 and KITTI; Tables 2 and 3): depth in metres, trained with the
scale-invariant log loss of Eigen et al. (2014) from a relative model whose output transform is fitted first
(``training.tasks.metric_init``). No Ray here.

Units. The model is a metric DPT (``model.overrides.metric_output`` set, or ``dpt_hybrid_nyu`` /
``dpt_hybrid_kitti``): ``forward -> [B, 1, H, W]`` depth in metres, ``1 / max(scale * f + shift, 1e-8)``. The
target is the shards' disparity of ``metric_depth`` samples, exactly ``1 / depth`` in 1/metre (the shard
contract), so the target depth is ``1 / disparity`` on the valid pixels: ``mask``, ``disparity > 0`` and the
depth within ``[task.min_depth, task.max_depth]`` metres (as Depth-Anything-V2's metric training masks its
targets: NYUv2 10 m, KITTI 80 m, the benchmarks' caps). The range matters: the transform's output is at most
``1 / shift`` metres (``f >= 0``), so targets far beyond the range of the data set would be errors the model
cannot remove, and they would dominate the loss.

Loss (SILog, Eigen et al. with the square root and ``lambda`` of BTS / Depth-Anything): with
``g_i = log pred_i - log gt_i`` over the ``n`` valid pixels of the batch (natural log, depths in metres),

    L = sqrt( 1/n sum g_i^2  -  lambda * (1/n sum g_i)^2 )        (task.silog_lambda, default 0.85)

``lambda = 1`` is fully scale-invariant, ``0`` is the RMS log error; 0.85 keeps some weight on the global scale.
BTS multiplies it by 10; that is only a learning-rate factor and is not applied here. With
``task.gradient_weight > 0`` (the paper keeps gradient matching for NYUv2 and disables it for KITTI, whose
ground truth is sparse) MiDaS' multi-scale gradient-matching term is added on the log-depth residual ``g``.

Validation: the metric-depth metrics of ``pipeline.depth_metrics`` (d1-d3, abs_rel, sq_rel, rmse, rmse_log, log10,
silog) as named per-image sums (``depth_metric_sums``), averaged over images when the ranks' sums are added up.

``dpt predict`` writes ``<name>.png`` (16-bit PNG of depth in millimetres, 0 = no value, saturating at 65.535 m:
the common 16-bit depth-image unit, as in NYUv2's dump and ROS; KITTI's depth benchmark PNGs use 1/256 m
instead), ``<name>.npy`` (float32 depth in metres, always: metres are this task's output) and
``<name>.color.png`` (the depth in the colour map with a colour bar in metres).
"""

from __future__ import annotations

import dataclasses
import io
import math
from collections.abc import Mapping

import numpy as np
import torch

from pipeline.depth_metrics import DEPTH_METRICS, depth_metric_sums, depth_metrics_from_sums
from pipeline.shards import DISP_MEMBER, MASK_MEMBER
from training.losses import gradient_matching
from training.tasks.base import Task, TaskConfig
from training.tasks.relative_depth import RelativeDepthTask

PNG_UNITS_PER_METRE = 1000  # the 16-bit PNG of dpt predict: millimetres
SILOG_FLOOR = 1e-12  # under the square root: its gradient at 0 is infinite (a perfect batch, float rounding)


@dataclasses.dataclass
class MetricDepthConfig(TaskConfig):
    """``task.kind: metric_depth``: SILog with ``silog_lambda`` (+ ``gradient_weight`` times gradient matching over
    ``gradient_scales`` on the log depth); ``init_from`` (every task's key): the starting checkpoint, a relative
    model, loaded whole (``training.tasks.init_from``); ``init_samples``: training samples per source whose robust
    alignment is averaged into the output transform before the first step (None: the whole training split; 0: keep
    the model's transform as it is); ``min_depth``, ``max_depth`` (metres, None: no bound): the target depths
    trained, fitted and validated on."""

    kind: str = "metric_depth"
    silog_lambda: float = 0.85
    gradient_weight: float = 0.0
    gradient_scales: int = 4
    init_samples: int | None = 1000
    min_depth: float = 1e-3
    max_depth: float | None = None

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.silog_lambda <= 1.0:
            raise ValueError(f"task.silog_lambda must be in [0, 1], got {self.silog_lambda}")
        if self.gradient_weight < 0 or self.gradient_scales < 1:
            raise ValueError(f"task.gradient_weight ({self.gradient_weight}) must be >= 0 and task.gradient_scales "
                             f"({self.gradient_scales}) >= 1")
        if not self.min_depth > 0 or (self.max_depth is not None and not self.max_depth > self.min_depth):
            raise ValueError(f"task.min_depth ({self.min_depth}) must be > 0 and task.max_depth ({self.max_depth}) "
                             "above it (or null)")
        if self.init_samples is not None and self.init_samples < 0:
            raise ValueError(f"task.init_samples must be >= 0 (or null: all), got {self.init_samples}")


def target_depth(disparity: torch.Tensor, mask: torch.Tensor, min_depth: float = 0.0, max_depth: float | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(depth in metres, valid)`` from the shards' disparity (1/metre) and mask: ``1 / disparity`` where valid
    (``mask``, ``disparity > 0``, depth in ``[min_depth, max_depth]``), 1 elsewhere (keeps logs finite)."""
    valid = mask & (disparity > 0)
    depth = torch.where(valid, 1.0 / torch.where(valid, disparity, 1.0), 1.0)
    valid = valid & (depth >= min_depth) & (depth <= (math.inf if max_depth is None else max_depth))
    return torch.where(valid, depth, 1.0), valid


def silog_terms(pred_depth: torch.Tensor, gt_depth: torch.Tensor, valid: torch.Tensor, silog_lambda: float
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(SILog loss scalar, g)`` over the valid pixels of the batch (formula in the module docstring); ``g`` is the
    log-depth residual ``[B, H, W]``, 0 off ``valid``. No valid pixel: loss 0 (it adds no gradient)."""
    g = torch.where(valid, torch.log(pred_depth.float().clamp(min=1e-30)) - torch.log(gt_depth.float()), 0.0)
    n = valid.sum()
    mean, mean_sq = g.sum() / n.clamp(min=1), (g * g).sum() / n.clamp(min=1)
    loss = torch.sqrt((mean_sq - silog_lambda * mean * mean).clamp(min=SILOG_FLOOR))
    return torch.where(n > 0, loss, torch.zeros_like(loss)), g


class MetricDepthTask(Task):
    """Metric depth on ``metric_depth`` shards; the model (a metric DPT) outputs depth in metres ``[B, 1, H, W]``."""

    name = "metric_depth"
    Config = MetricDepthConfig
    target = "metric_depth"
    shard_members = (DISP_MEMBER, MASK_MEMBER)
    batch_members = ("disparity", "mask")
    head = "depth"
    metric = True
    benchmarks = ("nyu_metric", "kitti_metric")  # DPT Tables 2 and 3 (evaluation.metric_protocol)
    sums = (*DEPTH_METRICS, "images", "skipped")  # per-image metric values summed, images scored / without pixels

    geometric_config = staticmethod(RelativeDepthTask.geometric_config)
    tensors = staticmethod(RelativeDepthTask.tensors)

    @staticmethod
    def geometric(sample, config, rng: np.random.Generator | None) -> dict:
        """The paper's augmentation, as for relative depth (the disparity is resampled with the image; depth values
        do not change under resizing or cropping); only ``metric_depth`` samples are accepted."""
        kind = sample.meta.get("kind")
        if kind != "metric_depth":
            raise ValueError(f"{sample.key}: data.target is metric_depth but the sample's kind is {kind!r} (metric "
                             "fine-tuning needs the shards of a metric source: nyu, kitti, ...)")
        return RelativeDepthTask.geometric(sample, config, rng)

    def start(self, model: torch.nn.Module, data, rank: int, world: int, device: torch.device) -> dict[str, str]:
        """The starting weights (``init_from``) and the fitted output transform (``training.tasks.metric_init``);
        returns the lineage and transform tags."""
        from training.data import validation_batches
        from training.tasks import metric_init

        if getattr(model, "metric_output", None) is None:
            raise ValueError("task.kind metric_depth needs a metric model: set model.overrides.metric_output "
                             "(e.g. [1.0, 0.0]) or model.name dpt_hybrid_nyu / dpt_hybrid_kitti")
        tags = self.load_init(model)
        if self.config.init_samples == 0:
            return tags
        batches = (batch for source in data.shards.sources for batch in validation_batches(
            data, source, data.shards.split, rank, world, self.config.init_samples))
        scale, shift, samples = metric_init.fit_output_transform(model, batches, device, world, self.valid)
        try:
            model.metric_output.set(scale, shift)
        except ValueError as exc:
            raise ValueError(f"{exc} (fitted on {samples} training samples: does the starting model predict "
                             "disparity, larger = nearer? task.init_from)") from None
        return {**tags, **metric_init.transform_tags(scale, shift, samples)}

    def valid(self, disparity: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`target_depth` within this task's depth range."""
        return target_depth(disparity, mask, self.config.min_depth, self.config.max_depth)

    def __call__(self, model: torch.nn.Module, batch: dict, prediction: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """(loss to back-propagate, ``{name: float}`` to log). prediction ``[B, 1, H, W]`` depth in metres."""
        gt, valid = self.valid(batch["disparity"][:, 0], batch["mask"][:, 0])
        silog, g = silog_terms(prediction[:, 0], gt, valid, self.config.silog_lambda)
        logs = {"loss/silog": silog.item()}
        loss = silog
        if self.config.gradient_weight > 0:
            grad = gradient_matching(g, valid, self.config.gradient_scales)
            loss = silog + self.config.gradient_weight * grad
            logs["loss/grad"] = grad.item()
        logs["loss/loss"] = loss.item()
        return loss, logs

    def batch_sums(self, model: torch.nn.Module, batch: dict) -> dict[str, float]:
        prediction = model(batch["image"]).float()[:, 0]
        gt, valid = self.valid(batch["disparity"][:, 0], batch["mask"][:, 0])
        return depth_metric_sums(prediction, gt, valid)

    def validation_metrics(self, sums: Mapping[str, torch.Tensor]) -> dict[str, float]:
        if not sums["images"] > 0:
            return {}
        return depth_metrics_from_sums(sums)

    @staticmethod
    def infer(model: torch.nn.Module, batch: torch.Tensor, sizes: list[tuple[int, int]]) -> list[np.ndarray]:
        """Depth in metres ``[H_i, W_i]`` float32 per image (the one inference path's resize back)."""
        from training.model.inference import predict

        if getattr(model, "metric_output", None) is None:
            raise ValueError("--task metric_depth needs a metric checkpoint (a model with an output transform, "
                             "e.g. dpt_hybrid_nyu / dpt_hybrid_kitti or one fine-tuned with task.kind metric_depth)")
        return predict(model, batch, sizes)

    @staticmethod
    def encode(output: np.ndarray, colormap: str, npy: bool) -> dict[str, bytes]:
        """16-bit PNG in millimetres, the colour picture with its bar in metres, and the float32 metres as
        ``.npy`` (always; ``npy`` does not apply) of one ``[H, W]`` depth map in metres."""
        from PIL import Image

        depth = np.asarray(output, np.float32)
        finite = np.isfinite(depth) & (depth > 0)
        millimetres = np.where(finite, np.round(np.clip(np.where(finite, depth, 0) * PNG_UNITS_PER_METRE, 1, 65535)),
                               0)
        gray, array = io.BytesIO(), io.BytesIO()
        Image.fromarray(millimetres.astype(np.uint16)).save(gray, format="PNG")
        np.save(array, depth)
        return {".png": gray.getvalue(), ".color.png": depth_picture(depth, colormap), ".npy": array.getvalue()}


def png_to_metres(data: bytes) -> np.ndarray:
    """The depth in metres (float32, NaN where the PNG holds 0) of a ``.png`` that ``encode`` wrote."""
    from PIL import Image

    values = np.asarray(Image.open(io.BytesIO(data))).astype(np.float32)
    return np.where(values > 0, values / PNG_UNITS_PER_METRE, np.nan).astype(np.float32)


def depth_picture(depth: np.ndarray, colormap: str) -> bytes:
    """PNG bytes: ``depth [H, W]`` (metres) in ``colormap`` (reversed, so that near is bright as in the relative
    pictures) between its 2nd and 98th percentiles, at least 240 pixels high, with a colour bar labelled in metres
    on its right (matplotlib, like ``evaluation.pictures``, whose bars are within its grids)."""
    import matplotlib

    matplotlib.use("Agg")  # no display on cluster nodes
    from matplotlib.figure import Figure
    from PIL import Image

    valid = depth[np.isfinite(depth) & (depth > 0)]
    low, high = (np.percentile(valid, [2, 98]) if valid.size else (0.0, 1.0))
    high = high if high > low else low + 1e-3
    h, w = depth.shape
    dpi, height = 100, max(h, 240)  # a small image is drawn larger, so that the bar's labels can be read
    fig = Figure(figsize=((height * w / h + 110) / dpi, height / dpi), dpi=dpi, layout="constrained")
    ax = fig.add_subplot()
    cmap = matplotlib.colormaps[colormap].reversed()
    image = ax.imshow(np.ma.masked_invalid(np.where(depth > 0, depth, np.nan)), cmap=cmap, vmin=low, vmax=high)
    ax.set_axis_off()
    bar = fig.colorbar(image, ax=ax, fraction=0.08, pad=0.02)
    bar.set_label("depth (m)", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    rendered, out = io.BytesIO(), io.BytesIO()
    fig.savefig(rendered, format="png", dpi=dpi)
    Image.open(rendered).convert("RGB").save(out, format="PNG")  # RGB like the relative task's picture
    return out.getvalue()
