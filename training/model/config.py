"""Typed configuration of a DPT variant and the preprocessing that travels with it."""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class Preprocess:
    """How images must be prepared for a variant (the model itself never resizes or normalises).

    ``x = (rgb / 255 - mean) / std`` on ``[B, 3, H, W]``; sides resized so the longer one is ``size`` and both are
    multiples of ``multiple_of`` (the official DPT inference rounds to 32; the model accepts multiples of 16).
    """

    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    multiple_of: int = 32
    size: int = 384


@dataclasses.dataclass(frozen=True)
class DPTConfig:
    """One DPT variant.

    Attributes:
        timm_name: the timm ViT (``vit_base_patch16_384``; ``vit_base_r50_s16_384`` for the hybrid).
        block_taps: one-based transformer blocks feeding the decoder.
        channels: width of each of the four reassembled stages after the 1x1 projection.
        resnet_taps: one-based ResNet stages feeding the first stages (hybrid only).
        features: decoder width (256 in the paper).
        readout: ``ignore`` | ``add`` | ``project`` (the paper's default).
        head: name in ``training.model.heads.HEADS`` (``depth``, ``segmentation``); ``head_kwargs`` go to its
            constructor (``num_classes`` for segmentation).
        fusion_batch_norm: batch norm in the residual units (the paper uses it for segmentation only).
        aux_head: an auxiliary head (same class and ``head_kwargs`` as ``head``) on the penultimate fusion
            output, run only when ``forward(x, return_aux=True)`` asks for it (segmentation training).
        fused_attention: scaled-dot-product attention kernels (timm's ``fused_attn``) instead of explicit softmax.
        timm_kwargs: extra ``timm.create_model`` arguments (the small CPU variants shrink depth and width).
        metric_output: ``(scale, shift)`` of the metric output transform (``training.model.metric_output``):
            the model returns depth in metres ``1 / max(scale * f + shift, 1e-8)`` instead of disparity ``f``;
            None (relative depth, segmentation) leaves the head's output as is. These are the variant's
            constants; a fine-tuned model's own values are in its state dict (``metric_output.scale/shift``).
    """

    timm_name: str
    block_taps: tuple[int, ...]
    channels: tuple[int, int, int, int]
    resnet_taps: tuple[int, ...] = ()
    features: int = 256
    readout: str = "project"
    head: str = "depth"
    head_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    fusion_batch_norm: bool = False
    aux_head: bool = False
    fused_attention: bool = True
    timm_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    preprocess: Preprocess = Preprocess()
    metric_output: tuple[float, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (for checkpoint metadata)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DPTConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError`` naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown DPT config keys: {unknown}")
        data = dict(data)
        for key in ("block_taps", "channels", "resnet_taps"):
            if key in data:
                data[key] = tuple(data[key])
        if data.get("metric_output") is not None:
            data["metric_output"] = tuple(data["metric_output"])
        if isinstance(data.get("preprocess"), dict):
            pre = data["preprocess"]
            data["preprocess"] = Preprocess(**{k: tuple(v) if isinstance(v, list) else v for k, v in pre.items()})
        return cls(**data)
