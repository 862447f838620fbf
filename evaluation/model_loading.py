"""Turning a checkpoint into ``(model, Preprocess)`` on each evaluation worker.

The one place where evaluation loads a model: it imports ``training.model``'s public builder and checkpoint
loaders only (DESIGN.md). The preprocessing is the variant's own (``model.preprocess``), which
:mod:`training.model.inference` applies for ``dpt predict`` too. The loader is a small frozen dataclass so that
Ray can ship it to the workers, each of which loads the weights itself (from a local path or ``s3://``).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class CheckpointLoader:
    """Build and load a DPT for evaluation. ``checkpoint`` is a model file or a checkpoint directory of
    ``dpt train`` (local or s3://).

    ``model=None`` reads this project's checkpoints, which carry their model config; a variant name
    (``dpt_large``, ``dpt_hybrid``, ...) builds it and loads any supported checkpoint into it (official
    DPT/MiDaS v3 ``.pt`` files, transformers weights). ``input_size`` overrides the variant's longer side
    (384 for the paper's models, as the protocol asks)."""

    checkpoint: str
    model: str | None = None
    input_size: int | None = None

    def check(self) -> str:
        """Fail now, on the driver, unless the checkpoint is there and of a kind this loader reads (its first
        bytes only: cheap on s3://) and the variant name is known. Returns the model file."""
        from training.model.checkpoint import check_checkpoint

        return check_checkpoint(self.checkpoint, self.model)

    def __call__(self):
        from training.model import build_model, load_checkpoint, load_model

        try:
            if self.model is None:
                net = load_model(self.checkpoint)
            else:
                net = load_checkpoint(build_model(self.model, pretrained=False), self.checkpoint)
        except FileNotFoundError:
            raise
        except Exception as exc:
            raise ValueError(f"checkpoint {self.checkpoint} does not load: {exc}") from exc
        pre = net.preprocess
        return net, dataclasses.replace(pre, size=self.input_size) if self.input_size else pre
