"""The ViT encoder of DPT: a timm Vision Transformer that returns the four tapped stages.

The paper taps blocks 3, 6, 9, 12 of ViT-B/16 and 6, 12, 18, 24 of ViT-L/16 (one-based); the hybrid taps the
outputs of the first two ResNet-50 stages (256 channels at 1/4, 512 at 1/8) and blocks 9 and 12.

Every module here is timm's own (``timm.create_model``); this file only decides *which* outputs to keep and how
position embeddings follow the input size. For the latter we do not use timm's ``dynamic_img_size``: timm
resamples with anti-aliased bicubic interpolation, the official DPT code (isl-org/DPT ``dpt/vit.py``,
``_resize_pos_embed``) and transformers' ``DPTViTEmbeddings`` with plain bilinear interpolation
(``align_corners=False``). Official weights only give the official output at other sizes with the latter, so
the token loop below is written out (it is the loop of timm's ``forward_intermediates``) with our resampling.
The ResNet stages of the hybrid come through timm's ``ResNetV2.forward_intermediates``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


def resize_pos_embed(pos_embed: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int],
                     num_prefix_tokens: int = 1) -> torch.Tensor:
    """Bilinearly resample ``[1, prefix + gh*gw, D]`` position embeddings to a ``new_grid`` token grid.

    The prefix (class token) embedding is kept as is; the grid part is interpolated like the official code
    (bilinear, ``align_corners=False``, no anti-aliasing). Returns ``[1, prefix + nh*nw, D]``.
    """
    if tuple(old_grid) == tuple(new_grid):
        return pos_embed
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    dim = grid.shape[-1]
    grid = grid.reshape(1, old_grid[0], old_grid[1], dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid.float(), size=new_grid, mode="bilinear", align_corners=False).to(pos_embed.dtype)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], dim)
    return torch.cat([prefix, grid], dim=1)


class ViTBackbone(nn.Module):
    """timm ViT (optionally on a ResNet stem) -> four stage outputs.

    ``forward(x [B, 3, H, W])`` with H, W multiples of 16 returns ``(stages, (h, w))`` where ``h, w = H/16, W/16``
    and each stage is either tokens ``[B, 1 + h*w, D]`` (class token first) or, for the hybrid's ResNet stages,
    a feature map ``[B, C, H/s, W/s]``.

    Args:
        timm_name: a timm ViT, e.g. ``vit_base_patch16_384`` or ``vit_base_r50_s16_384``.
        block_taps: one-based transformer blocks whose outputs are returned.
        resnet_taps: one-based ResNet stages (hybrid only) whose outputs come first.
        pretrained: timm pretrained weights (needs the network) or False for random initialisation.
        timm_kwargs: extra ``create_model`` arguments (small CPU configs: ``embed_dim``, ``depth``, ...).
    """

    def __init__(self, timm_name: str, block_taps: tuple[int, ...], resnet_taps: tuple[int, ...] = (),
                 pretrained: bool = False, timm_kwargs: dict | None = None, fused_attention: bool = True):
        super().__init__()
        import timm

        self.vit = timm.create_model(timm_name, pretrained=pretrained, num_classes=0, **(timm_kwargs or {}))
        # DPT reads block outputs before the final LayerNorm (as the official code and transformers do); an
        # unused norm would only be dead parameters (and an error under DDP without find_unused_parameters).
        self.vit.norm = nn.Identity()
        depth = len(self.vit.blocks)
        if not block_taps or min(block_taps) < 1 or max(block_taps) > depth:
            raise ValueError(f"{timm_name}: block taps {block_taps} must be in 1..{depth}")
        self.block_taps = tuple(block_taps)
        self.resnet_taps = tuple(resnet_taps)
        if self.resnet_taps and not hasattr(self.vit.patch_embed, "backbone"):
            raise ValueError(f"{timm_name}: resnet_taps {resnet_taps} need a hybrid (ResNet-stem) ViT")
        for block in self.vit.blocks:
            block.attn.fused_attn = fused_attention  # timm's switch between SDPA and the explicit softmax

    @property
    def embed_dim(self) -> int:
        return self.vit.embed_dim

    @property
    def num_prefix_tokens(self) -> int:
        return self.vit.num_prefix_tokens

    @property
    def stride(self) -> int:
        """Pixels per token (16 for every DPT backbone: the patch size, or the ResNet's stride times 1)."""
        embed = self.vit.patch_embed
        patch = embed.patch_size[0]
        if hasattr(embed, "backbone"):
            return patch * embed.backbone.feature_info[-1]["reduction"]
        return patch

    @property
    def stage_channels(self) -> list[int]:
        """Channels of each returned stage: ResNet stage widths for the hybrid's map stages, else D."""
        channels = []
        if self.resnet_taps:
            info = self.vit.patch_embed.backbone.feature_info
            channels += [info[i]["num_chs"] for i in self.resnet_taps]
        return channels + [self.embed_dim] * len(self.block_taps)

    def _embed(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Patch (or ResNet + 1x1) embedding: ``([resnet stage maps], tokens [B, D, h, w])``."""
        embed = self.vit.patch_embed
        if hasattr(embed, "backbone"):
            if self.resnet_taps:
                features, maps = embed.backbone.forward_intermediates(x, indices=list(self.resnet_taps))
            else:
                features, maps = embed.backbone.forward_features(x), []
            return maps, embed.proj(features)
        return [], embed.proj(x)

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], tuple[int, int]]:
        stride = self.stride
        if x.shape[-2] % stride or x.shape[-1] % stride:
            raise ValueError(f"input size {tuple(x.shape[-2:])} is not a multiple of the backbone stride {stride}")
        stages, tokens = self._embed(x)
        grid = (tokens.shape[-2], tokens.shape[-1])
        tokens = tokens.flatten(2).transpose(1, 2)
        cls = self.vit.cls_token.expand(tokens.shape[0], -1, -1)
        pos = resize_pos_embed(self.vit.pos_embed, self.vit.patch_embed.grid_size, grid, self.num_prefix_tokens)
        tokens = self.vit.pos_drop(torch.cat([cls, tokens], dim=1) + pos)
        tokens = self.vit.norm_pre(tokens)
        last = max(self.block_taps)
        checkpointing = self.vit.grad_checkpointing and self.training and torch.is_grad_enabled()
        for index, block in enumerate(self.vit.blocks[:last], start=1):
            # timm's switch (``set_grad_checkpointing``): recompute block activations in backward to save memory.
            tokens = checkpoint(block, tokens, use_reentrant=False) if checkpointing else block(tokens)
            if index in self.block_taps:
                stages.append(tokens)
        return stages, grid
