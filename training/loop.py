"""The training loop's pieces: optimiser, schedule, one step, validation sums across ranks, checkpoint state.
No Ray here (the task, ``training.tasks``, computes the loss and each rank's validation sums).

The paper trains with Adam at two learning rates: 1e-5 for the (pretrained) backbone and 1e-4 for the
randomly initialised decoder and head. Parameters whose name starts with ``backbone_prefix`` form the
first group (``module.`` of a DDP wrapper is ignored).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import time
from collections.abc import Mapping
from typing import Literal

import torch
from safetensors.torch import load_file, save_file

from pipeline.checkpoint_layout import META_FILE, MODEL_FILE, STATE_FILE


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


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DDP / FSDP wrapper."""
    return getattr(model, "module", model)


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


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def train_step(model, task, optimizer, scheduler, batch: dict, config: OptimConfig, bf16: bool = False) -> dict:
    """One optimisation step on one batch; returns the terms to log (floats)."""
    model.train()
    device = batch["image"].device
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16 and device.type == "cuda"):
        prediction = task.predict(model, batch["image"])
    loss, logs = task(model, batch, prediction)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if config.grad_clip:
        logs["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip))
    optimizer.step()
    scheduler.step()
    for group in optimizer.param_groups:
        logs[f"lr/{group['name']}"] = group["lr"]
    return logs


def sum_across_ranks(sums: Mapping[str, torch.Tensor], world: int, device: torch.device) -> dict[str, torch.Tensor]:
    """A task's named validation sums added up over the ``world`` ranks of the process group (one all-reduce),
    matched by name: each rank sends them in sorted name order, whatever order its dict has."""
    names = sorted(sums)
    if world <= 1:
        return {name: sums[name] for name in names}
    import torch.distributed as dist

    stacked = torch.stack([sums[name].to(torch.float64) for name in names]).to(device)
    dist.all_reduce(stacked)
    return dict(zip(names, stacked.cpu().unbind()))


class StepTimer:
    """Splits wall time into waiting for data and computing, for images/s and the data-wait fraction."""

    def __init__(self):
        self.wait = self.compute = 0.0
        self.images = 0
        self._mark = time.perf_counter()

    def data_ready(self) -> None:
        now = time.perf_counter()
        self.wait += now - self._mark
        self._mark = now

    def step_done(self, images: int) -> None:
        now = time.perf_counter()
        self.compute += now - self._mark
        self._mark = now
        self.images += images

    def summary(self) -> dict:
        total = self.wait + self.compute
        out = {"perf/images_per_s": self.images / total if total else 0.0,
               "perf/data_wait_fraction": self.wait / total if total else 0.0}
        self.wait = self.compute = 0.0
        self.images = 0
        return out


def save_state(directory: str, model, optimizer, scheduler, meta: dict) -> None:
    """Write a checkpoint directory: model weights, optimiser/schedule/RNG state, and ``meta.json``."""
    os.makedirs(directory, exist_ok=True)
    inner = unwrap(model)
    if hasattr(getattr(inner, "config", None), "to_dict"):
        # A DPT: its own checkpoint format carries the variant and config, so `load_model` rebuilds it alone.
        from training.model import save_checkpoint

        save_checkpoint(inner, os.path.join(directory, MODEL_FILE), name=str(meta.get("model", "")))
    else:
        state = {k: v.detach().cpu().contiguous() for k, v in inner.state_dict().items()}
        save_file(state, os.path.join(directory, MODEL_FILE))
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "torch_rng": torch.get_rng_state(), "python_rng": list(random.getstate()[1])},
               os.path.join(directory, STATE_FILE))
    with open(os.path.join(directory, META_FILE), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=1, sort_keys=True)


def load_state(directory: str, model, optimizer=None, scheduler=None) -> dict:
    """Restore what :func:`save_state` wrote; returns the meta dict (``step`` is the data position)."""
    weights = load_file(os.path.join(directory, MODEL_FILE))
    unwrap(model).load_state_dict(weights, strict=True)
    if optimizer is not None:
        state = torch.load(os.path.join(directory, STATE_FILE), map_location="cpu", weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        random.setstate((3, tuple(state["python_rng"]), None))
    with open(os.path.join(directory, META_FILE), encoding="utf-8") as f:
        return json.load(f)
