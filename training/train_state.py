"""The training state of a checkpoint directory: model weights, optimiser, schedule and RNG state, ``meta.json``
(the file names are ``pipeline.checkpoint_layout``'s). No Ray here.
"""

from __future__ import annotations

import json
import os
import random

import torch
from safetensors.torch import load_file, save_file

from pipeline.checkpoint_layout import META_FILE, MODEL_FILE, STATE_FILE
from training.step import unwrap


def save_train_state(directory: str, model, optimizer, scheduler, meta: dict) -> None:
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


def load_train_state(directory: str, model, optimizer=None, scheduler=None) -> dict:
    """Restore what :func:`save_train_state` wrote; returns the meta dict (``step`` is the data position)."""
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
