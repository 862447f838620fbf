"""What a new run starts from: ``task.init_from``, a checkpoint whose weights are loaded before the first step.

Every task has the key (``TaskConfig.init_from``; None: the model as built, e.g. timm's ImageNet backbone). The
path is a model file or a checkpoint directory, local or s3:// (``training.model.checkpoint.resolve_checkpoint``):
this project's checkpoints, official DPT / MiDaS files, transformers weights. How it is loaded is the task's
(``Task.swap_head``):

- whole (relative and metric depth): every weight of the file, strictly (a metric model keeps its own output
  transform where the file has none);
- trunk only (segmentation): the backbone and the decoder, the head and the auxiliary head left fresh unless the
  file's fit the model's exactly (``training.model.checkpoint.load_trunk``): fine-tuning an ADE20K model on Pascal
  Context's 59 classes, or a relative-depth model's backbone and decoder for segmentation.

The run is tagged with its lineage: the path, the sha256 of its model file, the MLflow run that trained it (this
project's checkpoints, from ``meta.json``) and, for a trunk load, whether the head was re-initialised. No Ray here.
"""

from __future__ import annotations

import hashlib
import json

import torch

from pipeline import storage
from pipeline.checkpoint_layout import META_FILE
from pipeline.job_paths import check_job_path

# Lineage tags, short so that the MLflow UI shows each name whole (pipeline.tracking says why).
INIT_TAG = "init.from"  # the starting checkpoint as the config names it
INIT_SHA256_TAG = "init.sha256"  # sha256 of its model file (the lineage of the fine-tuned model)
INIT_RUN_TAG = "init.run_id"  # the MLflow run that trained it (this project's checkpoints)
INIT_HEAD_TAG = "init.head"  # trunk loads: "re-initialised" (another head) or "loaded" (the same)


def check_init_from(path: str | None) -> None:
    """``task.init_from`` is there and of a kind the loader reads (its first bytes only), checked before Ray
    starts: ``ValueError`` in one line naming the key. None: nothing to check."""
    if path is None:
        return
    from training.model.checkpoint import inspect_checkpoint
    from training.model.checkpoint_ref import resolve_checkpoint

    try:
        path = resolve_checkpoint(path)  # models:/..., runs:/...: the local copy (training.train hands it on)
        check_job_path(path, "task.init_from")
        inspect_checkpoint(path)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ValueError(f"task.init_from: {exc}") from None


def load_start(model: torch.nn.Module, path: str, swap_head: bool = False) -> dict[str, str]:
    """Load the starting checkpoint ``path`` into ``model`` (weights only): whole, or its trunk with
    ``swap_head`` (see the module docstring). Returns the lineage tags. A file that does not fit raises
    ``ValueError`` prefixed ``task.init_from``, listing the keys."""
    from training.model import load_checkpoint
    from training.model.checkpoint import HEAD_PREFIXES, load_trunk, resolve_checkpoint

    file = resolve_checkpoint(path)
    data = storage.read_bytes(file)
    tags = {INIT_TAG: path, INIT_SHA256_TAG: hashlib.sha256(data).hexdigest()}
    try:
        if swap_head:
            fresh = load_trunk(model, file)
            tags[INIT_HEAD_TAG] = ("re-initialised" if any(k.startswith(HEAD_PREFIXES) for k in fresh)
                                   else "loaded")
        else:
            load_checkpoint(model, file)
    except ValueError as exc:
        raise ValueError(f"task.init_from: {exc}") from None
    run_id = training_run_id(file)
    if run_id:
        tags[INIT_RUN_TAG] = run_id
    return tags


def training_run_id(file: str) -> str | None:
    """The MLflow run that trained the model file ``file``: what the ``meta.json`` beside it says (this project's
    checkpoint directories), else None."""
    meta = storage.join(storage.dirname(file), META_FILE)
    if not storage.exists(meta):
        return None
    run_id = json.loads(storage.read_bytes(meta)).get("mlflow_run_id")
    return str(run_id) if run_id else None
