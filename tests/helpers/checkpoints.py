"""Checkpoints as the user gets them.

``train_checkpoint`` writes a checkpoint directory with the code `dpt train` uses (``training.train_state.save_train_state``:
model.safetensors, train_state.pt, meta.json) at the path Ray Train gives it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def train_checkpoint(root: str, model=None) -> str:
    """A `dpt train` checkpoint directory of ``model`` (default: a dpt_tiny) under ``root`` (local or s3://)."""
    import torch

    from pipeline import storage
    from training.train_state import save_train_state
    from training.model import build_model

    model = model if model is not None else build_model("dpt_tiny")
    optimizer = torch.optim.Adam(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    directory = storage.join(root, "dpt", "TorchTrainer_0", "checkpoint_000002")
    with tempfile.TemporaryDirectory() as local:
        save_train_state(local, model, optimizer, scheduler, {"step": 2, "model": "dpt_tiny"})
        for name in sorted(os.listdir(local)):
            storage.write_bytes(storage.join(directory, name), Path(local, name).read_bytes())
    return directory
