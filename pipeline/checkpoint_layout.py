"""The on-disk layout of a training run: what crosses from training to evaluation, predict and export.

    <storage.path>/<storage.name>/            one Ray Train run (local or s3://)
        checkpoint_<timestamp>/               one checkpoint, as ``dpt train`` prints it
            model.safetensors                 the model (``training.model.load_model`` rebuilds it alone)
            train_state.pt                    optimiser, schedule, RNG
            meta.json                         step, data position, config: readable without torch

Training writes it; every later stage finds a model through these names, so they live here, in the spine.
"""

from __future__ import annotations

import json

from pipeline import storage

MODEL_FILE = "model.safetensors"
STATE_FILE = "train_state.pt"
META_FILE = "meta.json"
CHECKPOINT_PREFIX = "checkpoint_"


def latest_checkpoint(run_dir: str) -> str | None:
    """The newest ``checkpoint_*`` directory of a Ray Train run that holds a model file (names sort by time)."""
    found = sorted({storage.dirname(u) for u in storage.list_files(run_dir)
                    if storage.basename(u) == MODEL_FILE
                    and storage.basename(storage.dirname(u)).startswith(CHECKPOINT_PREFIX)})
    return found[-1] if found else None


def checkpoint_step(checkpoint_dir: str) -> int | None:
    """The step a checkpoint directory was written at (its ``meta.json``), or None when it has none."""
    meta_url = storage.join(checkpoint_dir, META_FILE)
    if not storage.exists(meta_url):
        return None
    step = json.loads(storage.read_bytes(meta_url)).get("step")
    return int(step) if step is not None else None
