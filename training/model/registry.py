"""Named DPT variants and ``build_model`` (timm-style registry: a name -> a frozen config)."""

from __future__ import annotations

import dataclasses

from torch import nn

from pipeline.label_sets import PASCAL_CONTEXT_CLASSES
from pipeline.shards import ADE20K_CLASSES
from training.model.config import DPTConfig, Preprocess

VARIANTS: dict[str, DPTConfig] = {
    # The paper's three models (Sec. 4): ViT-B/16, ViT-L/16 at 384, and ViT-B/16 on a ResNet-50 stem.
    "dpt_base": DPTConfig("vit_base_patch16_384", block_taps=(3, 6, 9, 12), channels=(96, 192, 384, 768)),
    "dpt_large": DPTConfig("vit_large_patch16_384", block_taps=(6, 12, 18, 24), channels=(256, 512, 1024, 1024)),
    "dpt_hybrid": DPTConfig("vit_base_r50_s16_384", resnet_taps=(1, 2), block_taps=(9, 12),
                            channels=(256, 512, 768, 768)),
    # Small configs for CPU work (quickstart, tests): the same architecture on smaller timm ViTs.
    "dpt_small": DPTConfig("vit_small_patch16_384", block_taps=(3, 6, 9, 12), channels=(48, 96, 192, 384),
                           features=64),
    "dpt_tiny": DPTConfig("vit_tiny_patch16_224", block_taps=(1, 2, 3, 4), channels=(24, 48, 96, 192),
                          features=32, timm_kwargs={"depth": 4, "img_size": 64},
                          preprocess=Preprocess(size=64)),
}


# Semantic segmentation (paper Sec. 4.2, ADE20K's 150 classes): the same encoders and decoder with batch norm in
# the fusion units, the segmentation head and the auxiliary head. Inputs: longer side 520, the ADE20K base size of
# training (resize 520, crop 480) and of evaluation (evaluation.segmentation).
def _segmentation(base: DPTConfig, num_classes: int = ADE20K_CLASSES, size: int = 520) -> DPTConfig:
    return dataclasses.replace(base, head="segmentation", head_kwargs={"num_classes": num_classes},
                               fusion_batch_norm=True, aux_head=True,
                               preprocess=dataclasses.replace(base.preprocess, size=size))


VARIANTS.update({
    "dpt_hybrid_ade20k": _segmentation(VARIANTS["dpt_hybrid"]),
    "dpt_large_ade20k": _segmentation(VARIANTS["dpt_large"]),
    "dpt_base_ade20k": _segmentation(VARIANTS["dpt_base"]),
    # CPU work (tests, quickstart): 150 classes on the tiny encoder; override head_kwargs for fewer.
    "dpt_tiny_ade20k": _segmentation(VARIANTS["dpt_tiny"], size=64),
    # Pascal Context (paper Table 5: DPT-Hybrid fine-tuned, 59 classes; head_kwargs={"num_classes": 60} for the
    # 60-class variant), at the same sizes as ADE20K: the paper keeps every hyper-parameter of its ADE20K training.
    "dpt_hybrid_pascal_context": _segmentation(VARIANTS["dpt_hybrid"], PASCAL_CONTEXT_CLASSES),
    "dpt_tiny_pascal_context": _segmentation(VARIANTS["dpt_tiny"], PASCAL_CONTEXT_CLASSES, size=64),
})


# Metric depth (paper Sec. 4.1, Tables 2 and 3): DPT-Hybrid fine-tuned on NYUv2 and on KITTI, with the official
# output transform depth = 1 / max(scale * f + shift, 1e-8) and its constants (isl-org/DPT run_monodepth.py,
# DPTDepthModel(invert=True)). Inputs: the official network sizes, 640 x 480 and 1216 x 352 (width x height), with
# its Resize(keep_aspect_ratio=True, ensure_multiple_of=32, resize_method="minimal"): on NYUv2's 640 x 480 frames
# and on KITTI's benchmark crop (1216 x 352; raw frames of ~1242 x 375 give 1216 x 352 as well) that is the longer
# side at 640 / 1216, which is what Preprocess.size says.
NYU_METRIC_OUTPUT = (0.000305, 0.1378)
KITTI_METRIC_OUTPUT = (0.00006016, 0.00579)


def _metric(base: DPTConfig, scale_shift: tuple[float, float], size: int) -> DPTConfig:
    return dataclasses.replace(base, metric_output=scale_shift,
                               preprocess=dataclasses.replace(base.preprocess, size=size))


VARIANTS.update({
    "dpt_hybrid_nyu": _metric(VARIANTS["dpt_hybrid"], NYU_METRIC_OUTPUT, size=640),
    "dpt_hybrid_kitti": _metric(VARIANTS["dpt_hybrid"], KITTI_METRIC_OUTPUT, size=1216),
})


def list_models() -> list[str]:
    return sorted(VARIANTS)


def get_config(name: str, **overrides) -> DPTConfig:
    """The variant's config with ``overrides`` (DPTConfig field names) applied; bad names raise ValueError."""
    if name not in VARIANTS:
        raise ValueError(f"unknown DPT model {name!r}; known: {list_models()}")
    fields = {f.name for f in dataclasses.fields(DPTConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown override(s) {unknown} for {name}; valid: {sorted(fields)}")
    return dataclasses.replace(VARIANTS[name], **overrides)


def build_model(name: str, pretrained: bool | str = False, **overrides) -> nn.Module:
    """Build a DPT variant.

    Args:
        name: ``dpt_base``, ``dpt_large``, ``dpt_hybrid`` (the paper's) or ``dpt_small``, ``dpt_tiny`` (CPU work);
            segmentation (150 ADE20K classes): ``dpt_hybrid_ade20k``, ``dpt_large_ade20k``, ``dpt_base_ade20k``,
            ``dpt_tiny_ade20k``; Pascal Context's 59 classes: ``dpt_hybrid_pascal_context``,
            ``dpt_tiny_pascal_context``; metric depth in metres (fine-tuned DPT-Hybrid): ``dpt_hybrid_nyu``,
            ``dpt_hybrid_kitti`` (any depth variant with ``metric_output=(scale, shift)``, e.g. a tiny one for CPU).
        pretrained: False builds from random initialisation with no download; True loads timm's ImageNet
            weights for the backbone (needs the network); a path loads a local timm backbone checkpoint.
        overrides: DPTConfig fields, e.g. ``readout="add"``, ``features=128``, ``fused_attention=False``.

    Returns a :class:`training.model.dpt.DPT`; ``model.config`` and ``model.preprocess`` describe it.
    """
    from training.model.dpt import DPT

    return DPT(get_config(name, **overrides), pretrained=pretrained)
