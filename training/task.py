"""The depth task (and ``make_task``, which picks it or the segmentation task): model output + batch -> the loss to back-propagate and the terms to log. No Ray here.

``mixing: mean`` back-propagates the SSI loss of the whole batch (each valid pixel weighs the same).
``mixing: pareto`` computes one loss per source in the batch and combines them with the min-norm weights
of Sener & Koltun (``training.pareto``), as MiDaS did.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Literal

import torch

from pipeline.shards import IGNORE_LABEL
from training.losses import ScaleAndShiftInvariantLoss
from training.pareto import pareto_combine


@dataclasses.dataclass
class LossConfig:
    """The paper's loss: ``kind`` ssitrim or ssimse, gradient matching with weight ``alpha`` over ``scales``."""

    kind: Literal["ssitrim", "ssimse"] = "ssitrim"
    alpha: float = 0.5
    scales: int = 4


@dataclasses.dataclass
class TaskConfig:
    """kind: ``depth`` (the SSI loss on disparity shards) or ``segmentation`` (cross-entropy with ``ignore_index``
    plus ``aux_weight`` times the auxiliary head's, on seg.png shards; ``training.segmentation_task``)."""

    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    mixing: Literal["mean", "pareto"] = "mean"
    kind: Literal["depth", "segmentation"] = "depth"
    aux_weight: float = 0.2
    ignore_index: int = IGNORE_LABEL


def make_task(config: TaskConfig, sources: Sequence[str]):
    """The task object of ``config.kind``: ``task.predict(model, image)`` then ``task(model, batch, prediction)``."""
    if config.kind == "segmentation":
        from training.segmentation_task import SegmentationTask

        return SegmentationTask(config.aux_weight, config.ignore_index)
    return DepthTask(config, sources)


class DepthTask:
    """Relative depth on disparity targets. ``sources``: every source name of the run (fixed order)."""

    def __init__(self, config: TaskConfig, sources: Sequence[str]):
        self.config, self.sources = config, list(sources)
        self.loss = ScaleAndShiftInvariantLoss(config.loss.kind, config.loss.alpha, config.loss.scales)

    def predict(self, model: torch.nn.Module, image: torch.Tensor) -> torch.Tensor:
        return model(image)

    def __call__(self, model: torch.nn.Module, batch: dict, prediction: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """(loss to back-propagate, ``{name: float}`` to log). prediction ``[B, 1, H, W]`` disparity."""
        target, mask = batch["disparity"], batch["mask"]
        terms = self.loss.terms(prediction.float(), target, mask)
        logs = {f"loss/{name}": value.item() for name, value in terms.items()}
        if self.config.mixing == "mean":
            return terms["loss"], logs
        per_source, counts = self.source_losses(batch, prediction)
        params = [p for p in model.parameters() if p.requires_grad]
        combined, weights = pareto_combine(per_source, counts, params)
        logs.update({f"pareto_weight/{name}": float(w) for name, w in zip(self.sources, weights)})
        return combined, logs

    def source_losses(self, batch: dict, prediction: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-source losses ``[K]`` (0 without samples) and sample counts ``[K]`` in this batch."""
        names = batch["source"]
        losses, counts = [], []
        for source in self.sources:
            index = [i for i, name in enumerate(names) if name == source]
            counts.append(len(index))
            if not index:
                losses.append(prediction.new_zeros((), dtype=torch.float32))
                continue
            rows = torch.tensor(index, device=prediction.device)
            losses.append(self.loss(prediction[rows].float(), batch["disparity"][rows], batch["mask"][rows]))
        return torch.stack(losses), torch.tensor(counts, device=prediction.device)
