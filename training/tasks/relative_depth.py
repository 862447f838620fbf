"""Relative depth (the paper's main task, Sec. 3-4.1): disparity up to an unknown scale and shift, trained with the
scale- and shift-invariant loss on the ten mixed sources. No Ray here.

``mixing: mean`` back-propagates the SSI loss of the whole batch (each valid pixel weighs the same).
``mixing: pareto`` computes one loss per source in the batch and combines them with the min-norm weights
of Sener & Koltun (``training.pareto``), as MiDaS did.

Validation reports both SSI losses without the gradient term (``ssitrim``, ``ssimse``), pixel-weighted.
``dpt predict`` writes ``<name>.png`` (16-bit PNG: disparity scaled per image to 0..65535), ``<name>.color.png``
(a colour map a person can look at: near is bright) and, with ``--npy``, ``<name>.npy`` (float32 disparity).
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Mapping
from typing import Literal

import numpy as np
import torch

from pipeline.shards import DISP_MEMBER, MASK_MEMBER
from training import augment
from training.losses import ScaleAndShiftInvariantLoss
from training.pareto import pareto_combine
from training.tasks.base import Task, TaskConfig


@dataclasses.dataclass
class LossConfig:
    """The paper's loss: ``kind`` ssitrim or ssimse, gradient matching with weight ``alpha`` over ``scales``."""

    kind: Literal["ssitrim", "ssimse"] = "ssitrim"
    alpha: float = 0.5
    scales: int = 4


@dataclasses.dataclass
class RelativeDepthConfig(TaskConfig):
    """``task.kind: depth``: the SSI ``loss`` on disparity shards, ``mixing`` of the sources' losses (mean, pareto)."""

    kind: str = "depth"
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    mixing: Literal["mean", "pareto"] = "mean"


VALIDATION_LOSSES = {"ssitrim": ScaleAndShiftInvariantLoss("ssitrim", alpha=0.0),
                     "ssimse": ScaleAndShiftInvariantLoss("ssimse", alpha=0.0)}


class RelativeDepthTask(Task):
    """Relative depth on disparity targets; the model's output ``[B, 1, H, W]`` is disparity."""

    name = "depth"
    Config = RelativeDepthConfig
    target = "disparity"
    shard_members = (DISP_MEMBER, MASK_MEMBER)
    batch_members = ("disparity", "mask")
    head = "depth"
    benchmarks = ("diw", "eth3d", "sintel", "kitti", "nyu", "tum")  # Table 1, zero-shot
    sums = ("ssitrim", "ssimse", "pixels")  # the two losses times the valid pixels, and the valid pixels

    def __init__(self, config: RelativeDepthConfig | None = None, sources=()):
        super().__init__(config, sources)
        loss = self.config.loss
        self.loss = ScaleAndShiftInvariantLoss(loss.kind, loss.alpha, loss.scales)

    @staticmethod
    def geometric_config(data) -> augment.GeometricConfig:
        return data.geometric

    @staticmethod
    def geometric(sample, config: augment.GeometricConfig, rng: np.random.Generator | None) -> dict:
        """The paper's geometric augmentation (``training.augment.geometric``: resize, crop, flip): image,
        disparity ``[S, S]`` and mask ``[S, S]`` together."""
        if sample.disparity is None or sample.mask is None:
            raise ValueError(f"{sample.key}: data.target is disparity but the sample has no "
                             f"{' and '.join(RelativeDepthTask.shard_members)} members")
        image, disparity, mask = augment.to_tensors(sample.rgb, sample.disparity, sample.mask)
        image, disparity, mask, frame = augment.geometric(image, disparity, mask, config, rng)
        return {"image": image, "disparity": disparity, "mask": mask, "frame": frame,
                "source": sample.meta["source"], "key": sample.key}

    @staticmethod
    def tensors(fields: dict, config: augment.NormalizeConfig, rng: np.random.Generator | None = None) -> dict:
        """Normalised image, disparity ``[1, S, S]`` and mask ``[1, S, S]``."""
        return {"image": augment.normalize(fields["image"], fields["frame"], config),
                "disparity": fields["disparity"][None], "mask": fields["mask"][None],
                "source": fields["source"], "key": fields["key"]}

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

    def batch_sums(self, model: torch.nn.Module, batch: dict) -> dict[str, float]:
        prediction = model(batch["image"]).float()
        count = batch["mask"].sum().item()
        sums = {name: loss(prediction, batch["disparity"], batch["mask"]).item() * count
                for name, loss in VALIDATION_LOSSES.items()}
        return {**sums, "pixels": count}

    def validation_metrics(self, sums: Mapping[str, torch.Tensor]) -> dict[str, float]:
        if not sums["pixels"] > 0:
            return {}
        return {name: float(sums[name] / sums["pixels"]) for name in VALIDATION_LOSSES}

    @staticmethod
    def infer(model: torch.nn.Module, batch: torch.Tensor, sizes: list[tuple[int, int]]) -> list[np.ndarray]:
        from training.model.inference import predict

        return predict(model, batch, sizes)

    @staticmethod
    def encode(output: np.ndarray, colormap: str, npy: bool) -> dict[str, bytes]:
        """16-bit PNG and colour PNG of one ``[H, W]`` disparity map (min-max scaled per image), and the float32
        array as ``.npy`` with ``npy``."""
        import matplotlib
        from PIL import Image

        low, high = float(output.min()), float(output.max())
        unit = (output - low) / (high - low) if high > low else np.zeros_like(output)
        gray, color = io.BytesIO(), io.BytesIO()
        Image.fromarray(np.round(unit * 65535).astype(np.uint16)).save(gray, format="PNG")
        rgb = (matplotlib.colormaps[colormap](unit)[..., :3] * 255).round().astype(np.uint8)
        Image.fromarray(rgb).save(color, format="PNG")
        files = {".png": gray.getvalue(), ".color.png": color.getvalue()}
        if npy:
            buffer = io.BytesIO()
            np.save(buffer, output.astype(np.float32))
            files[".npy"] = buffer.getvalue()
        return files
