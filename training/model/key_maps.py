"""Explicit key tables from foreign DPT state dicts to this model's names.

Official DPT / MiDaS v3 (isl-org/DPT ``dpt/models.py``, ``dpt/vit.py``, ``dpt/blocks.py``; isl-org/MiDaS
``midas/vit.py``, ``midas/blocks.py``, ``midas/dpt_depth.py``): the timm ViT sits at ``pretrained.model``, the
Reassemble layers are ``pretrained.act_postprocess{1..4}`` (a Sequential: 0 readout, 1 transpose, 2 unflatten,
3 the 1x1 projection, 4 the resampling), the 3x3 convolutions to 256 are ``scratch.layer{1..4}_rn``, the fusion
blocks ``scratch.refinenet{1..4}`` (``resConfUnit1`` on the skip input, ``resConfUnit2``, ``out_conv``) and the
head ``scratch.output_conv`` (Sequential indices 0, 2, 4 hold the convolutions; in a segmentation model 0 is
the 3x3 conv, 1 its batch norm, 4 the classifier, and ``auxlayer`` is the auxiliary head, same indices).
The fine-tuned metric files (``dpt_hybrid_nyu-2ce69ec7.pt``, ``dpt_hybrid_kitti-cb926ef4.pt``) have exactly the
``dpt_hybrid`` layout: their output transform's scale and shift are constants in the official code, not weights.

transformers ``DPTForDepthEstimation`` (``transformers/models/dpt/modeling_dpt.py``): ViT under ``dpt.``
with separate query/key/value projections (fused here into timm's ``qkv``), the reassemble stage under
``neck.reassemble_stage``, ``neck.convs`` and ``neck.fusion_stage.layers.{0..3}`` ordered deepest first, and the
head in ``head.head``. Hybrid transformers checkpoints carry the ResNet as a BiT backbone
(``dpt.embeddings.backbone.bit``: ``embedder.convolution/norm`` is timm's ``stem.conv/norm``,
``encoder.stages.S.layers.L`` timm's ``stages.S.blocks.L``, as in transformers' ViT-hybrid conversion script).

A rule is ``(regex, template)``: named groups are substituted into the template; group ``n`` is a one-based
stage number and becomes zero-based, group ``j`` is a deepest-first fusion index and becomes ``3 - j``; groups
``h`` and ``sh`` are Sequential indices of the depth and segmentation heads, named by ``_HEAD`` and
``_SEG_HEAD``. A template ``None`` drops the key on purpose (weights the official modules carry but DPT never uses).
"""

from __future__ import annotations

import re

import torch

Rule = tuple[str, str | None]

_HEAD = {"0": "reduce", "2": "refine", "4": "predict"}
# Segmentation head Sequential (conv, bn, relu, dropout, conv[, upsample]) -> SegmentationHead's names.
_SEG_HEAD = {"0": "conv", "1": "bn", "4": "classify"}
_HF_HEAD = _HEAD

OFFICIAL_RULES: list[Rule] = [
    # Unused by DPT: the ImageNet classifier, the final ViT norm, and the deepest fusion block's skip unit.
    (r"pretrained\.model\.(?:head|norm|fc_norm|pre_logits)\..+", None),
    (r"scratch\.refinenet4\.resConfUnit1\..+", None),
    (r"pretrained\.model\.(?P<rest>cls_token|pos_embed|patch_embed\..+|blocks\..+)", "backbone.vit.{rest}"),
    (r"pretrained\.act_postprocess(?P<n>[1-4])\.0\.project\.0\.(?P<p>weight|bias)", "reassemble.{n}.readout.proj.{p}"),
    (r"pretrained\.act_postprocess(?P<n>[1-4])\.3\.(?P<p>weight|bias)", "reassemble.{n}.project.{p}"),
    (r"pretrained\.act_postprocess(?P<n>[1-4])\.4\.(?P<p>weight|bias)", "reassemble.{n}.resample.{p}"),
    (r"scratch\.layer(?P<n>[1-4])_rn\.weight", "reassemble.{n}.to_features.weight"),
    (r"scratch\.refinenet(?P<n>[1-4])\.resConfUnit1\.(?P<rest>.+)", "fusion.{n}.skip_unit.{rest}"),
    (r"scratch\.refinenet(?P<n>[1-4])\.resConfUnit2\.(?P<rest>.+)", "fusion.{n}.residual_unit.{rest}"),
    (r"scratch\.refinenet(?P<n>[1-4])\.out_conv\.(?P<p>weight|bias)", "fusion.{n}.out_conv.{p}"),
    (r"scratch\.output_conv\.(?P<h>[024])\.(?P<p>weight|bias)", "head.{h}.{p}"),
]

_HF_LAYER = r"dpt\.encoder\.layer\.(?P<i>\d+)\."
HF_RULES: list[Rule] = [
    (r"dpt\.layernorm\..+", None),
    (r"dpt\.pooler\..+", None),
    (r"neck\.fusion_stage\.layers\.0\.residual_layer1\..+", None),
    (r"dpt\.embeddings\.cls_token", "backbone.vit.cls_token"),
    (r"dpt\.embeddings\.position_embeddings", "backbone.vit.pos_embed"),
    (r"dpt\.embeddings\.patch_embeddings\.projection\.(?P<p>weight|bias)", "backbone.vit.patch_embed.proj.{p}"),
    (r"dpt\.embeddings\.projection\.(?P<p>weight|bias)", "backbone.vit.patch_embed.proj.{p}"),  # hybrid
    (r"dpt\.embeddings\.backbone\.bit\.embedder\.(?P<m>convolution|norm)\.(?P<p>weight|bias)",
     "backbone.vit.patch_embed.backbone.stem.{m}.{p}"),
    (r"dpt\.embeddings\.backbone\.bit\.encoder\.stages\.(?P<s>\d+)\.layers\.(?P<l>\d+)\.(?P<rest>.+)",
     "backbone.vit.patch_embed.backbone.stages.{s}.blocks.{l}.{rest}"),
    (_HF_LAYER + r"attention\.attention\.(?P<qkv>query|key|value)\.(?P<p>weight|bias)",
     "backbone.vit.blocks.{i}.attn.qkv.{p}"),
    (_HF_LAYER + r"attention\.output\.dense\.(?P<p>weight|bias)", "backbone.vit.blocks.{i}.attn.proj.{p}"),
    (_HF_LAYER + r"intermediate\.dense\.(?P<p>weight|bias)", "backbone.vit.blocks.{i}.mlp.fc1.{p}"),
    (_HF_LAYER + r"output\.dense\.(?P<p>weight|bias)", "backbone.vit.blocks.{i}.mlp.fc2.{p}"),
    (_HF_LAYER + r"layernorm_before\.(?P<p>weight|bias)", "backbone.vit.blocks.{i}.norm1.{p}"),
    (_HF_LAYER + r"layernorm_after\.(?P<p>weight|bias)", "backbone.vit.blocks.{i}.norm2.{p}"),
    (r"neck\.reassemble_stage\.readout_projects\.(?P<i>[0-3])\.0\.(?P<p>weight|bias)",
     "reassemble.{i}.readout.proj.{p}"),
    (r"neck\.reassemble_stage\.layers\.(?P<i>[0-3])\.projection\.(?P<p>weight|bias)", "reassemble.{i}.project.{p}"),
    (r"neck\.reassemble_stage\.layers\.(?P<i>[0-3])\.resize\.(?P<p>weight|bias)", "reassemble.{i}.resample.{p}"),
    (r"neck\.convs\.(?P<i>[0-3])\.weight", "reassemble.{i}.to_features.weight"),
    (r"neck\.fusion_stage\.layers\.(?P<j>[0-3])\.residual_layer1\.(?P<m>convolution|batch_norm)(?P<k>[12])\.(?P<p>.+)",
     "fusion.{j}.skip_unit.{m}{k}.{p}"),
    (r"neck\.fusion_stage\.layers\.(?P<j>[0-3])\.residual_layer2\.(?P<m>convolution|batch_norm)(?P<k>[12])\.(?P<p>.+)",
     "fusion.{j}.residual_unit.{m}{k}.{p}"),
    (r"neck\.fusion_stage\.layers\.(?P<j>[0-3])\.projection\.(?P<p>weight|bias)", "fusion.{j}.out_conv.{p}"),
    (r"head\.head\.(?P<h>[024])\.(?P<p>weight|bias)", "head.{h}.{p}"),
]

# Segmentation checkpoints (isl-org/DPT ``DPTSegmentationModel``: ``scratch.output_conv`` is the segmentation
# head and ``auxlayer`` the auxiliary head; transformers ``DPTForSemanticSegmentation``: ``head.head`` and
# ``auxiliary_head.head``): the depth tables with the head rule (their last) swapped for these.
OFFICIAL_SEGMENTATION_RULES: list[Rule] = OFFICIAL_RULES[:-1] + [
    (r"scratch\.output_conv\.(?P<sh>[014])\.(?P<p>.+)", "head.{sh}.{p}"),
    (r"auxlayer\.(?P<sh>[014])\.(?P<p>.+)", "aux_head.{sh}.{p}"),
]
HF_SEGMENTATION_RULES: list[Rule] = HF_RULES[:-1] + [
    (r"head\.head\.(?P<sh>[014])\.(?P<p>.+)", "head.{sh}.{p}"),
    (r"auxiliary_head\.head\.(?P<sh>[014])\.(?P<p>.+)", "aux_head.{sh}.{p}"),
]


# The table of each foreign format (``checkpoint.detect_format``) and head kind (:func:`head_of`).
RULES: dict[tuple[str, str], list[Rule]] = {
    ("official", "depth"): OFFICIAL_RULES, ("transformers", "depth"): HF_RULES,
    ("official", "segmentation"): OFFICIAL_SEGMENTATION_RULES, ("transformers", "segmentation"): HF_SEGMENTATION_RULES,
}


def head_of(state_keys) -> str:
    """The head kind (``DPTConfig.head``) of a foreign state dict: ``segmentation`` when it has an auxiliary head
    or a batch norm in its head, else ``depth``."""
    segmentation = any(k.startswith(("auxlayer.", "auxiliary_head.", "scratch.output_conv.1.", "head.head.1."))
                       for k in state_keys)
    return "segmentation" if segmentation else "depth"


def _substitute(template: str, groups: dict[str, str]) -> str:
    values = dict(groups)
    if "n" in values:
        values["n"] = str(int(values["n"]) - 1)
    if "j" in values:
        values["j"] = str(3 - int(values["j"]))
    if "h" in values:
        values["h"] = _HEAD[values["h"]]
    if "sh" in values:
        values["sh"] = _SEG_HEAD[values["sh"]]
    if "m" in values:
        values["m"] = {"convolution": "conv", "batch_norm": "bn", "norm": "norm"}[values["m"]]
    return template.format(**values)


def convert(state: dict[str, torch.Tensor], rules: list[Rule]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename ``state`` with ``rules``; returns ``(converted, unknown_keys)``.

    transformers' separate query/key/value tensors are concatenated (q, k, v order, as timm's ``qkv``).
    """
    compiled = [(re.compile(pattern), template) for pattern, template in rules]
    out: dict[str, torch.Tensor] = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    unknown = []
    for key, value in state.items():
        for pattern, template in compiled:
            match = pattern.fullmatch(key)
            if match is None:
                continue
            if template is not None:
                groups = match.groupdict()
                target = _substitute(template, groups)
                if "qkv" in groups:
                    qkv.setdefault(target, {})[groups["qkv"]] = value
                else:
                    out[target] = value
            break
        else:
            unknown.append(key)
    for target, parts in qkv.items():
        if set(parts) != {"query", "key", "value"}:
            unknown.append(f"{target} (incomplete query/key/value: has {sorted(parts)})")
            continue
        out[target] = torch.cat([parts["query"], parts["key"], parts["value"]], dim=0)
    return out, unknown
