"""Before metric fine-tuning (paper Sec. 4.1): the starting weights and the output transform fitted to the data.

A relative model predicts disparity ``f`` up to an unknown scale and shift, with magnitudes that have nothing to
do with metres; fine-tuned directly, that global mismatch would dominate the loss. So, as the paper does, before
the first step:

1. the starting checkpoint (``task.init_from``: a relative-depth checkpoint of this project, an official
   ``dpt_hybrid`` file, ...) is loaded into the metric model (weights only; a file without the transform's
   buffers leaves the model's own, ``training.model.checkpoint``), as every task's is (``training.tasks.init_from``);
2. the model's prediction ``f`` of each training sample is aligned to that sample's disparity ``d = 1 / depth``
   (1/metre, the shard contract) with the robust alignment of MiDaS (Ranftl et al., TPAMI 2020, eq. 6-7, the one
   the ``ssitrim`` loss trains with): ``t(x) = median(x)``, ``s(x) = mean |x - t(x)|`` over the valid pixels,
   ``scale_i = s(d) / s(f)``, ``shift_i = t(d) - scale_i * t(f)``;
3. the per-sample scales and shifts are averaged over the training samples (sums and counts added up across the
   ranks, never means of means) and fixed as the output transform ``depth = 1 / max(scale * f + shift, 1e-8)``
   (``MetricOutput.set``), so that the model starts in the right range.

An image without two valid pixels, or whose prediction is constant over them (``s(f) = 0``), has no alignment and
is left out of the average. No Ray here: the trainer calls this through ``MetricDepthTask.start``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from training.losses import EPS, masked_median
from training.step import sum_across_ranks, to_device

SCALE_TAG, SHIFT_TAG, SAMPLES_TAG = ("dpt.metric_output.scale", "dpt.metric_output.shift",
                                     "dpt.metric_output.samples")


def robust_scale_shift(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MiDaS' robust alignment of ``pred`` to ``target`` per image: ``(scale [B], shift [B], ok [B] bool)`` (float64)
    with ``scale * pred + shift ~ target``, from the medians and mean absolute deviations over ``mask``.

    ``pred``, ``target``: disparity ``[B, H, W]`` or ``[B, 1, H, W]``; ``mask`` bool, same shape. ``ok`` is False
    for an image with fewer than two valid pixels or a constant prediction over them (scale and shift 0 there)."""
    valid = mask.reshape(mask.shape[0], -1)
    # Invalid pixels may hold anything (NaN, inf): zeroed, so that nothing leaks into the sums.
    p, d = (torch.where(valid, x.double().reshape(valid.shape), 0.0) for x in (pred, target))
    count = valid.sum(-1)
    t_p, t_d = masked_median(p, valid), masked_median(d, valid)
    s_p = ((p - t_p[:, None]).abs() * valid).sum(-1) / count.clamp(min=1)
    s_d = ((d - t_d[:, None]).abs() * valid).sum(-1) / count.clamp(min=1)
    ok = (count >= 2) & (s_p > EPS * t_p.abs().clamp(min=1.0))
    scale = torch.where(ok, s_d / s_p.clamp(min=1e-300), 0.0)
    shift = torch.where(ok, t_d - scale * t_p, 0.0)
    return scale, shift, ok


@torch.no_grad()
def relative_prediction(model: torch.nn.Module, image: torch.Tensor) -> torch.Tensor:
    """The network's disparity ``f`` before the output transform, ``[B, 1, H, W]``: the model is run with the
    transform at scale 1, shift 0, which returns ``1 / max(f, 1e-8)``, and inverted (``f`` below 1e-8 reads as
    1e-8: the transform's own floor). The transform's values are restored."""
    saved = model.metric_output.values()
    model.metric_output.set(1.0, 0.0)
    try:
        return 1.0 / model(image).float()
    finally:
        model.metric_output.set(*saved)


@torch.no_grad()
def fit_output_transform(model: torch.nn.Module, batches: Iterable[dict], device: torch.device, world: int = 1,
                         valid: Callable | None = None) -> tuple[float, float, int]:
    """``(mean scale, mean shift, samples)`` of the robust alignment of ``model``'s relative prediction to each
    sample's disparity over ``batches`` (this rank's), added up over the ``world`` ranks. ``model``: the bare
    metric DPT (``metric_output`` set); ``valid(disparity, mask) -> (depth, valid)`` picks the pixels aligned on
    (the task's depth range; default: the mask where disparity > 0). Raises ``ValueError`` when no sample could
    be aligned."""
    model.eval()
    sums = {name: torch.zeros((), dtype=torch.float64) for name in ("scale", "shift", "samples")}
    for batch in batches:
        batch = to_device(batch, device)
        f = relative_prediction(model, batch["image"])
        pixels = (batch["mask"] & (batch["disparity"] > 0) if valid is None else
                  valid(batch["disparity"], batch["mask"])[1])
        scale, shift, ok = robust_scale_shift(f, batch["disparity"], pixels)
        sums["scale"] += scale[ok].sum().cpu()
        sums["shift"] += shift[ok].sum().cpu()
        sums["samples"] += ok.sum().cpu().double()
    total = sum_across_ranks(sums, world, device)
    samples = int(total["samples"])
    if samples == 0:
        raise ValueError("metric output transform: no training sample has two valid pixels and a non-constant "
                         "prediction to align (task.init_samples, the training shards' masks)")
    return float(total["scale"]) / samples, float(total["shift"]) / samples, samples


def transform_tags(scale: float, shift: float, samples: int) -> dict[str, str]:
    """The fitted output transform as MLflow tags (``repr``: every digit of the float)."""
    return {SCALE_TAG: repr(scale), SHIFT_TAG: repr(shift), SAMPLES_TAG: str(samples)}
