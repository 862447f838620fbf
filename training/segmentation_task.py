"""The segmentation task (DPT paper Sec. 4.2): cross-entropy with an ignore index on the main head plus
``aux_weight`` (0.2) times the same loss on the auxiliary head. No Ray here.

The model runs through ``forward(x, return_aux=True)`` (so that DDP sees the auxiliary head's parameters in
the graph); the batch holds ``labels`` int64 ``[B, H, W]`` with 255 = ignore.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F

from pipeline.shards import IGNORE_LABEL


class SegmentationTask:
    """``(model, batch, (logits, aux_logits)) -> (loss, logs)``; logits ``[B, C, H, W]`` at the labels' size."""

    def __init__(self, aux_weight: float = 0.2, ignore_index: int = IGNORE_LABEL):
        self.aux_weight, self.ignore_index = aux_weight, ignore_index

    def predict(self, model: torch.nn.Module, image: torch.Tensor):
        return model(image, return_aux=True)

    def __call__(self, model: torch.nn.Module, batch: dict, prediction) -> tuple[torch.Tensor, dict]:
        logits, aux = prediction
        labels = batch["labels"]
        main = F.cross_entropy(logits.float(), labels, ignore_index=self.ignore_index)
        auxiliary = F.cross_entropy(aux.float(), labels, ignore_index=self.ignore_index)
        loss = main + self.aux_weight * auxiliary
        return loss, {"loss/loss": loss.item(), "loss/ce": main.item(), "loss/aux_ce": auxiliary.item()}


@torch.no_grad()
def segmentation_validation_sums(model: torch.nn.Module, batches: Iterable[dict], device: torch.device,
                                 ignore_index: int = IGNORE_LABEL) -> torch.Tensor:
    """``[cross-entropy * M, correct pixels, M]`` summed over batches (M: labelled pixels), for a cross-rank sum."""
    from training.loop import to_device, unwrap

    model.eval()
    sums = torch.zeros(3, dtype=torch.float64)
    for batch in batches:
        batch = to_device(batch, device)
        logits = unwrap(model)(batch["image"]).float()  # the bare module: no DDP collective, no auxiliary head
        labels = batch["labels"]
        labelled = labels != ignore_index
        sums[0] += F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="sum").item()
        sums[1] += (logits.argmax(1)[labelled] == labels[labelled]).sum().item()
        sums[2] += labelled.sum().item()
    return sums
