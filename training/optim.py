"""The optimiser and its learning-rate schedule (no Ray here).

The paper trains with Adam at two learning rates: 1e-5 for the (pretrained) backbone and 1e-4 for the
randomly initialised decoder and head. Parameters whose name starts with ``backbone_prefix`` form the
first group (``module.`` of a DDP wrapper is ignored).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import torch

from training.step import unwrap


@dataclasses.dataclass
class OptimConfig:
    """Adam with the paper's two learning rates; optional linear warm-up then cosine, linear or polynomial decay.

    Segmentation (paper Sec. 4.2): ``optimizer: sgd`` with ``momentum`` 0.9, both learning rates 0.002 and
    ``decay: poly`` (factor ``(1 - progress) ** power``, power 0.9)."""

    lr_backbone: float = 1e-5
    lr_decoder: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    warmup_steps: int = 0
    decay: Literal["none", "cosine", "linear", "poly"] = "none"
    min_lr_ratio: float = 0.0
    optimizer: Literal["adam", "sgd"] = "adam"
    momentum: float = 0.9
    power: float = 0.9
    grad_clip: float | None = None
    backbone_prefix: str = "backbone"


def build_optimizer(model: torch.nn.Module, config: OptimConfig) -> torch.optim.Optimizer:
    backbone, decoder = [], []
    for name, param in unwrap(model).named_parameters():
        if param.requires_grad:
            (backbone if name.startswith(config.backbone_prefix + ".") else decoder).append(param)
    if not backbone:
        raise ValueError(f"optim.backbone_prefix {config.backbone_prefix!r} matches no parameter of the model "
                         f"(top-level modules: {[n for n, _ in unwrap(model).named_children()]})")
    groups = [{"params": backbone, "lr": config.lr_backbone, "name": "backbone"},
              {"params": decoder, "lr": config.lr_decoder, "name": "decoder"}]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.Adam(groups, betas=config.betas, weight_decay=config.weight_decay)


def lr_factor(step: int, total: int, config: OptimConfig) -> float:
    """Multiplier of the base learning rates at ``step`` (0-based) of ``total``."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.decay == "none":
        return 1.0
    progress = min(1.0, (step - config.warmup_steps) / max(1, total - config.warmup_steps))
    if config.decay == "cosine":
        shape = 0.5 * (1 + math.cos(math.pi * progress))
    elif config.decay == "poly":
        shape = (1.0 - progress) ** config.power
    else:
        shape = 1.0 - progress
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * shape


def build_scheduler(optimizer, config: OptimConfig, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total_steps, config))
