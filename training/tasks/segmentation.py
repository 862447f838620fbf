"""Semantic segmentation (DPT paper Sec. 4.2: ADE20K, Table 4; Pascal Context, Table 5): cross-entropy with an ignore
index on the main head plus ``aux_weight`` (0.2) times the same loss on the auxiliary head. No Ray here.

Fine-tuning (``task.init_from``, ``swap_head``): a checkpoint of another label set (an ADE20K model for Pascal
Context) or of another task (a relative-depth model) gives its backbone and decoder; the head and the auxiliary
head start fresh for the run's classes (``training.model.checkpoint.load_trunk``).

The model runs through ``forward(x, return_aux=True)`` (so that DDP sees the auxiliary head's parameters in
the graph); the batch holds ``labels`` int64 ``[B, H, W]`` with 255 = ignore, from the shards' ``seg.png``,
augmented by ``training.seg_augment`` (random rescale, crop, flip). Validation reports the cross-entropy and
the pixel accuracy (%) of the main head.

``dpt predict`` writes ``<name>.png`` (8-bit class ids) and ``<name>.color.png`` (a colour label map): ``infer``
turns a batch of prepared images into class ids at each image's own size (logits resized bilinearly, then
argmax); ``palette`` paints ids with a fixed palette (``pipeline.label_sets.voc_colormap``: the PASCAL VOC
bit-interleaved colours, distinct for every id up to 255), so the same class has the same colour in every picture
and every run.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.label_sets import voc_colormap as palette  # the colour of each class id
from pipeline.shards import ADE20K_CLASSES, IGNORE_LABEL, SEG_MEMBER
from training import augment
from training.seg_augment import SegmentationAugmentConfig, augment_segmentation
from training.tasks.base import Task, TaskConfig


@dataclasses.dataclass
class SegmentationConfig(TaskConfig):
    """``task.kind: segmentation``: cross-entropy with ``ignore_index`` plus ``aux_weight`` times the auxiliary
    head's, on seg.png shards."""

    kind: str = "segmentation"
    aux_weight: float = 0.2
    ignore_index: int = IGNORE_LABEL


class SegmentationTask(Task):
    """``(model, batch, (logits, aux_logits)) -> (loss, logs)``; logits ``[B, C, H, W]`` at the labels' size."""

    name = "segmentation"
    Config = SegmentationConfig
    target = "segmentation"
    shard_members = (SEG_MEMBER,)
    batch_members = ("labels",)
    head = "segmentation"
    # Table 4 (150 classes) and Table 5 (59); dpt eval runs by default those of the model's classes.
    benchmarks = ("ade20k", "ade20k_ms", "pascal_context", "pascal_context_ms")
    swap_head = True
    sums = ("cross_entropy", "correct", "pixels")  # cross-entropy times the labelled pixels, right ones, labelled

    @classmethod
    def classes(cls, model_config) -> int:
        """The head's ``num_classes`` (``training.model.heads.SegmentationHead``; ADE20K's 150 by default)."""
        return int(model_config.head_kwargs.get("num_classes", ADE20K_CLASSES))

    @staticmethod
    def geometric_config(data) -> SegmentationAugmentConfig:
        return data.segmentation

    @staticmethod
    def geometric(sample, config: SegmentationAugmentConfig, rng: np.random.Generator | None) -> dict:
        """``image [3, S, S]`` and ``labels`` int64 ``[S, S]`` (255 = ignore) rescaled, cropped and flipped together
        (``training.seg_augment``, the ``data.segmentation`` recipe)."""
        if sample.segmentation is None:
            raise ValueError(f"{sample.key}: data.target is segmentation but the sample has no {SEG_MEMBER} member")
        image = torch.from_numpy(np.array(sample.rgb, dtype=np.uint8)).permute(2, 0, 1).float().div_(255.0)
        labels = torch.from_numpy(np.asarray(sample.segmentation, dtype=np.int64))
        image, labels, frame = augment_segmentation(image, labels, config, rng)
        return {"image": image, "labels": labels, "frame": frame, "source": sample.meta["source"], "key": sample.key}

    @staticmethod
    def tensors(fields: dict, config: augment.NormalizeConfig, rng: np.random.Generator | None = None) -> dict:
        """Normalised image and labels ``[S, S]``."""
        return {"image": augment.normalize(fields["image"], fields["frame"], config), "labels": fields["labels"],
                "source": fields["source"], "key": fields["key"]}

    def predict(self, model: torch.nn.Module, image: torch.Tensor):
        return model(image, return_aux=True)

    def __call__(self, model: torch.nn.Module, batch: dict, prediction) -> tuple[torch.Tensor, dict]:
        logits, aux = prediction
        labels, ignore = batch["labels"], self.config.ignore_index
        main = F.cross_entropy(logits.float(), labels, ignore_index=ignore)
        auxiliary = F.cross_entropy(aux.float(), labels, ignore_index=ignore)
        loss = main + self.config.aux_weight * auxiliary
        return loss, {"loss/loss": loss.item(), "loss/ce": main.item(), "loss/aux_ce": auxiliary.item()}

    def batch_sums(self, model: torch.nn.Module, batch: dict) -> dict[str, float]:
        logits = model(batch["image"]).float()  # no auxiliary head
        labels, ignore = batch["labels"], self.config.ignore_index
        labelled = labels != ignore
        return {"cross_entropy": F.cross_entropy(logits, labels, ignore_index=ignore, reduction="sum").item(),
                "correct": (logits.argmax(1)[labelled] == labels[labelled]).sum().item(),
                "pixels": labelled.sum().item()}

    def validation_metrics(self, sums: Mapping[str, torch.Tensor]) -> dict[str, float]:
        if not sums["pixels"] > 0:
            return {}
        return {"cross_entropy": float(sums["cross_entropy"] / sums["pixels"]),
                "pixel_accuracy": float(sums["correct"] / sums["pixels"]) * 100.0}

    @staticmethod
    @torch.no_grad()
    def infer(model: torch.nn.Module, batch: torch.Tensor, sizes: list[tuple[int, int]]) -> list[np.ndarray]:
        """Class ids uint8 ``[H_i, W_i]`` for each prepared image of ``batch [B, 3, h, w]`` at ``sizes[i]``."""
        device = next(model.parameters()).device
        logits = model(batch.to(device))
        if logits.ndim != 4 or logits.shape[1] < 2:
            raise ValueError(f"the model returned {tuple(logits.shape)}, not [B, C, h, w] class logits: "
                             "--task segmentation needs a segmentation checkpoint (e.g. dpt_hybrid_ade20k)")
        if logits.shape[1] > 255:
            raise ValueError(f"{logits.shape[1]} classes do not fit an 8-bit label map")
        out = []
        for i, size in enumerate(sizes):
            full = F.interpolate(logits[i:i + 1].float(), size=size, mode="bilinear", align_corners=False)
            out.append(full[0].argmax(0).to(torch.uint8).cpu().numpy())
        return out

    @staticmethod
    def encode(output: np.ndarray, colormap: str, npy: bool) -> dict[str, bytes]:
        """8-bit class-id PNG and colour PNG of one uint8 ``[H, W]`` label map (``colormap`` and ``npy`` do not
        apply: the palette is fixed and the ids are the PNG)."""
        from PIL import Image

        ids, colour = io.BytesIO(), io.BytesIO()
        Image.fromarray(output).save(ids, format="PNG")
        Image.fromarray(palette()[output]).save(colour, format="PNG")
        return {".png": ids.getvalue(), ".color.png": colour.getvalue()}

