"""One training step and what goes with steps: moving a batch to the device, the task's validation sums added up
across ranks, the step timer. No Ray here (the task, ``training.tasks``, computes the loss and each rank's
validation sums; the optimiser and its schedule are ``training.optim``, the checkpoint state
``training.train_state``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from training.optim import OptimConfig


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DDP / FSDP wrapper."""
    return getattr(model, "module", model)


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
