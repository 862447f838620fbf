"""The DPT model family: ``build_model(name, **overrides)`` and ``load_checkpoint(model, path)``.

Layout (one concept per file): ``backbone`` (timm ViT and its taps), ``reassemble`` (Read, Concatenate,
Resample), ``fusion`` (residual conv units, fusion blocks), ``heads``, ``dpt`` (the module), ``config`` and
``registry`` (variants), ``checkpoint`` and ``key_maps`` (weights in and out), ``inference`` (image in,
disparity out: the one path of ``dpt predict``, ``dpt eval`` and export).
"""

from training.model.checkpoint import load_checkpoint, load_model, save_checkpoint
from training.model.config import DPTConfig, Preprocess
from training.model.registry import VARIANTS, build_model, get_config, list_models

__all__ = [
    "DPTConfig", "Preprocess", "VARIANTS", "build_model", "get_config", "list_models",
    "load_checkpoint", "load_model", "save_checkpoint",
]
