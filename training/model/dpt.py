"""DPT (Ranftl et al. 2021, arXiv 2103.13413): ViT encoder -> Reassemble -> Fusion -> head.

    x [B,3,H,W] -> backbone -> 4 stages (tokens at 1/16, or ResNet maps for the hybrid)
                -> reassemble[i] -> maps at 1/4, 1/8, 1/16, 1/32, each [B,256,...]
                -> fusion[3] .. fusion[0] (deepest first) -> [B,256,H/2,W/2]
                -> head -> [B,1,H,W] non-negative disparity (depth task)
                        or [B,C,H,W] class logits (segmentation task; an auxiliary head on the
                        penultimate fusion output [B,256,H/4,W/4] adds a second output in training)
                -> metric_output (metric depth variants only) -> [B,1,H,W] depth in metres

A pure ``nn.Module``: no decoding, resizing or device choice; ``model.preprocess`` says how to prepare inputs.
"""

from __future__ import annotations

import torch
from torch import nn

from training.model.backbone import ViTBackbone
from training.model.config import DPTConfig
from training.model.fusion import FeatureFusionBlock
from training.model.heads import HEADS
from training.model.metric_output import MetricOutput
from training.model.reassemble import READOUT_MODES, Reassemble

# Resampling of each stage relative to the 1/16 token grid: 1/4, 1/8, 1/16, 1/32 of the input.
STAGE_FACTORS = (4, 2, 1, 0.5)


class DPT(nn.Module):
    """The Dense Prediction Transformer. ``forward(x [B,3,H,W], H and W multiples of 16) -> [B,1,H,W]``."""

    def __init__(self, config: DPTConfig, pretrained: bool | str = False):
        super().__init__()
        if len(config.channels) != 4 or len(config.resnet_taps) + len(config.block_taps) != 4:
            raise ValueError(f"DPT needs four stages: channels {config.channels}, "
                             f"resnet_taps {config.resnet_taps}, block_taps {config.block_taps}")
        if config.readout not in READOUT_MODES:
            raise ValueError(f"readout must be one of {READOUT_MODES}, got {config.readout!r}")
        if config.head not in HEADS:
            raise ValueError(f"unknown head {config.head!r}; known: {sorted(HEADS)}")
        if config.metric_output is not None and (config.head != "depth" or len(config.metric_output) != 2):
            raise ValueError(f"metric_output {config.metric_output} must be (scale, shift) on the depth head, "
                             f"got head {config.head!r}")
        self.config = config
        self.preprocess = config.preprocess
        timm_kwargs = dict(config.timm_kwargs)
        if isinstance(pretrained, str):  # a local timm checkpoint file for the backbone
            timm_kwargs["pretrained_cfg_overlay"] = {"file": pretrained}
        self.backbone = ViTBackbone(config.timm_name, config.block_taps, config.resnet_taps, bool(pretrained),
                                    timm_kwargs, config.fused_attention)
        in_dims = self.backbone.stage_channels
        maps = len(config.resnet_taps)
        self.reassemble = nn.ModuleList(
            Reassemble(in_dims[i], config.channels[i], STAGE_FACTORS[i], config.features, config.readout,
                       tokens=i >= maps, num_prefix_tokens=self.backbone.num_prefix_tokens)
            for i in range(4))
        self.fusion = nn.ModuleList(
            FeatureFusionBlock(config.features, has_skip=i < 3, batch_norm=config.fusion_batch_norm)
            for i in range(4))
        self.head = HEADS[config.head](config.features, **config.head_kwargs)
        # Segmentation training's auxiliary loss (paper Sec. 4.2); absent (None) for depth.
        self.aux_head = HEADS[config.head](config.features, **config.head_kwargs) if config.aux_head else None
        # Metric variants (fine-tuned on NYUv2 / KITTI): disparity -> depth in metres; absent (None) otherwise.
        self.metric_output = MetricOutput(*config.metric_output) if config.metric_output is not None else None

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute transformer blocks in backward (less activation memory, ~1/3 more compute)."""
        self.backbone.vit.set_grad_checkpointing(enable)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The four reassembled maps ``[B, F, H/4, W/4]`` ... ``[B, F, ceil(H/32), ceil(W/32)]``."""
        stages, grid = self.backbone(x)
        return [reassemble(stage, grid) for reassemble, stage in zip(self.reassemble, stages)]

    def forward_fusion(self, maps: list[torch.Tensor]) -> list[torch.Tensor]:
        """Every fusion block's output, deepest first: ``[B, F, H/16, W/16]``, ``H/8``, ``H/4``, ``H/2``."""
        sizes = [m.shape[-2:] for m in maps]
        outs = [self.fusion[3](maps[3], None, sizes[2])]
        for i in (2, 1):
            outs.append(self.fusion[i](outs[-1], maps[i], sizes[i - 1]))
        finest = (2 * sizes[0][0], 2 * sizes[0][1])
        outs.append(self.fusion[0](outs[-1], maps[0], finest))
        return outs

    def forward_decoder(self, maps: list[torch.Tensor]) -> torch.Tensor:
        """Fuse deepest first: ``[B, F, H/2, W/2]``."""
        return self.forward_fusion(maps)[-1]

    def forward(self, x: torch.Tensor, return_aux: bool = False):
        """``x [B, 3, H, W] -> [B, 1, H, W]`` disparity (depth), depth in metres (a variant with
        ``metric_output``, float32) or ``[B, C, H, W]`` logits (segmentation).

        ``return_aux=True`` (segmentation training; through ``forward`` so that DDP sees it) returns
        ``(logits, aux_logits)``, the auxiliary head's logits on the penultimate fusion output upsampled to
        ``[B, C, H, W]`` as well.
        """
        size = tuple(x.shape[-2:])
        fused = self.forward_fusion(self.forward_features(x))
        out = self.head(fused[-1], size=size)
        if self.metric_output is not None:
            out = self.metric_output(out)
        if not return_aux:
            return out
        if self.aux_head is None:
            raise ValueError(f"return_aux=True needs a model built with aux_head=True (head {self.config.head!r})")
        return out, self.aux_head(fused[-2], size=size)
