"""Metric depth variants (training/model/metric_output.py, registry): DPT-Hybrid fine-tuned on NYUv2 / KITTI.

The official fine-tuned files are built here as state dicts (random weights; the official code is not a
dependency). The full-size DPT-Hybrid takes ~40 s per forward at 480 x 640 on two CPU cores, so the full state
dict's key mapping is checked on the meta device (shapes, no data) and the forward at the official input sizes
on a hybrid with the full ResNet-50 stem and a narrow ViT and decoder.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from training.model import build_model, get_config, load_checkpoint, load_model, save_checkpoint
from training.model.checkpoint import METRIC_OUTPUT_KEYS, load_state, to_native
from training.model.metric_output import MetricOutput

# isl-org/DPT run_monodepth.py: DPTDepthModel(scale=..., shift=..., invert=True) and net_w x net_h.
OFFICIAL = {"dpt_hybrid_nyu": ((0.000305, 0.1378), (480, 640)),
            "dpt_hybrid_kitti": ((0.00006016, 0.00579), (352, 1216))}
# DPT-Hybrid's architecture (full ResNet-50 stages) with a narrow ViT and decoder: seconds per forward on CPU.
NARROW = dict(block_taps=(3, 4), channels=(256, 512, 64, 64), features=32,
              timm_kwargs={"embed_dim": 64, "depth": 4, "num_heads": 2, "img_size": 64})


def official_hybrid_state(model) -> dict[str, torch.Tensor]:
    """``model``'s weights under the names of an official DPT-Hybrid file (``dpt_hybrid-midas-501f0c75.pt``,
    and the fine-tuned ``dpt_hybrid_nyu-2ce69ec7.pt`` / ``dpt_hybrid_kitti-cb926ef4.pt``), written out here
    independently of key_maps.py from isl-org/DPT ``dpt/vit.py`` ``_make_vit_b_rn50_backbone``: the timm ViT
    (with its ResNet-50 in ``patch_embed.backbone``) at ``pretrained.model``; ``act_postprocess1/2`` are
    Identity for the ResNet stages (no weights), ``act_postprocess3`` is readout (0) + 1x1 conv (3),
    ``act_postprocess4`` adds the stride-2 conv (4); ``scratch`` as in the ViT models."""
    ours = model.state_dict()
    vit = "backbone.vit."
    official = {"pretrained.model." + k[len(vit):]: v for k, v in ours.items() if k.startswith(vit)}
    for i in range(4):
        n = i + 1
        official[f"scratch.layer{n}_rn.weight"] = ours[f"reassemble.{i}.to_features.weight"]
        for p in ("weight", "bias"):
            if i >= 2:  # the two transformer stages
                official[f"pretrained.act_postprocess{n}.0.project.0.{p}"] = ours[f"reassemble.{i}.readout.proj.{p}"]
                official[f"pretrained.act_postprocess{n}.3.{p}"] = ours[f"reassemble.{i}.project.{p}"]
            if i == 3:
                official[f"pretrained.act_postprocess{n}.4.{p}"] = ours[f"reassemble.{i}.resample.{p}"]
            official[f"scratch.refinenet{n}.out_conv.{p}"] = ours[f"fusion.{i}.out_conv.{p}"]
            for c in (1, 2):
                residual = ours[f"fusion.{i}.residual_unit.conv{c}.{p}"]
                official[f"scratch.refinenet{n}.resConfUnit2.conv{c}.{p}"] = residual
                # the deepest block's skip unit exists in the official module but is never used
                official[f"scratch.refinenet{n}.resConfUnit1.conv{c}.{p}"] = ours.get(
                    f"fusion.{i}.skip_unit.conv{c}.{p}", torch.randn_like(residual))
    for index, name in ((0, "reduce"), (2, "refine"), (4, "predict")):
        for p in ("weight", "bias"):
            official[f"scratch.output_conv.{index}.{p}"] = ours[f"head.{name}.{p}"]
    # weights the official modules carry and DPT never uses: the final ViT norm and the ImageNet classifier
    dim, device = model.backbone.embed_dim, ours["backbone.vit.cls_token"].device  # device: meta in one test
    official["pretrained.model.norm.weight"] = torch.ones(dim, device=device)
    official["pretrained.model.norm.bias"] = torch.zeros(dim, device=device)
    official["pretrained.model.head.weight"] = torch.randn(1000, dim, device=device)
    official["pretrained.model.head.bias"] = torch.randn(1000, device=device)
    return official


def transform(f: np.ndarray, scale: float, shift: float) -> np.ndarray:
    """The official formula in float64: ``1 / max(scale * f + shift, 1e-8)``."""
    return 1.0 / np.maximum(scale * f.astype(np.float64) + shift, 1e-8)


def test_metric_variants_are_dpt_hybrid_with_the_official_transform_and_input_sizes():
    hybrid = get_config("dpt_hybrid")
    for name, ((scale, shift), (height, width)) in OFFICIAL.items():
        config = get_config(name)
        assert config.metric_output == (scale, shift)
        pre = config.preprocess
        assert pre.size == max(height, width) and pre.multiple_of == 32
        assert pre.mean == (0.5, 0.5, 0.5) and pre.std == (0.5, 0.5, 0.5)
        assert height % pre.multiple_of == 0 and width % pre.multiple_of == 0
        # everything else is DPT-Hybrid's
        assert dataclasses.replace(config, metric_output=None, preprocess=hybrid.preprocess) == hybrid


def test_metric_output_is_the_official_formula():
    f = torch.tensor([[0.0, 1.0, 250.0], [3000.0, 1e5, 7.5]]).reshape(1, 1, 2, 3)
    for scale, shift in (OFFICIAL["dpt_hybrid_nyu"][0], OFFICIAL["dpt_hybrid_kitti"][0], (0.5, -2.0)):
        out = MetricOutput(scale, shift)(f)
        assert out.dtype == torch.float32 and out.shape == f.shape
        np.testing.assert_allclose(out.numpy(), transform(f.numpy(), scale, shift), rtol=1e-6)
    # the floor: scale * f + shift <= 1e-8 (a fitted negative shift) gives 1e8 m, never inf or negative
    assert MetricOutput(0.5, -2.0)(f)[0, 0, 0, 0].item() == pytest.approx(1e8)
    # bfloat16 input (autocast): computed in float32, where KITTI's scale and the floor are representable
    out = MetricOutput(*OFFICIAL["dpt_hybrid_kitti"][0])(f.bfloat16())
    np.testing.assert_allclose(out.numpy(), transform(f.bfloat16().float().numpy(), *OFFICIAL["dpt_hybrid_kitti"][0]),
                               rtol=1e-6)


def test_metric_output_is_set_from_data_in_one_call_and_travels_in_the_state_dict():
    output = MetricOutput(*OFFICIAL["dpt_hybrid_nyu"][0])
    output.set(0.002, 0.05)  # e.g. the averaged scale and shift of an alignment to the training set
    assert output.values() == pytest.approx((0.002, 0.05))
    assert sorted(output.state_dict()) == ["scale", "shift"] and not list(output.parameters())
    torch.testing.assert_close(output(torch.full((1, 1, 1, 1), 10.0)), torch.full((1, 1, 1, 1), 1 / 0.07))
    for bad in ((0.0, 0.1), (-1.0, 0.1), (float("nan"), 0.1), (1.0, float("inf"))):
        with pytest.raises(ValueError, match="metric output: (scale|shift)"):
            output.set(*bad)
    with pytest.raises(ValueError, match="metric_output .* on the depth head"):
        build_model("dpt_tiny_ade20k", metric_output=(1.0, 0.0))


def test_full_dpt_hybrid_official_fine_tuned_layout_maps_key_for_key():
    """Every key and shape of the full-size official fine-tuned file (on the meta device: no data)."""
    with torch.device("meta"):
        for name in OFFICIAL:
            model = build_model(name)
            official = official_hybrid_state(model)
            native = to_native(official, name)
            expected = model.state_dict()
            assert set(native) == set(expected) - set(METRIC_OUTPUT_KEYS)  # the transform is not in the file
            assert all(native[k].shape == v.shape for k, v in native.items() if k in expected)
            load_state(model, official, name)  # strict: no unknown, missing or misshapen key


@pytest.fixture(scope="module")
def narrow_relative():
    torch.manual_seed(7)
    model = build_model("dpt_hybrid", **NARROW).eval()
    with torch.no_grad():  # a positive last layer keeps the outputs above the final ReLU, and varied
        model.head.predict.weight.abs_()
        model.head.predict.bias.fill_(0.1)
    return model


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_official_fine_tuned_file_gives_the_transform_of_the_relative_network(name, narrow_relative, tmp_path):
    (scale, shift), size = OFFICIAL[name]
    path = tmp_path / f"{name}.pt"
    torch.save(official_hybrid_state(narrow_relative), path)
    metric = load_checkpoint(build_model(name, **NARROW).eval(), str(path))
    assert metric.metric_output.values() == pytest.approx((scale, shift))  # the variant's constants
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        f = narrow_relative(x)
        depth = metric(x)
    assert depth.shape == f.shape == (1, 1, *size)
    assert f.std() > 0 and (f > 0).float().mean() > 0.5  # a non-trivial relative output
    np.testing.assert_allclose(depth.numpy(), transform(f.numpy(), scale, shift), rtol=1e-5)


def test_own_checkpoint_keeps_the_fitted_transform(tmp_path):
    torch.manual_seed(3)
    metric = build_model("dpt_tiny", metric_output=OFFICIAL["dpt_hybrid_nyu"][0]).eval()
    metric.metric_output.set(0.002, 0.05)
    path = str(tmp_path / "metric.safetensors")
    save_checkpoint(metric, path, name="dpt_tiny")
    x = torch.randn(1, 3, 64, 96)
    for loaded in (load_model(path), load_checkpoint(build_model("dpt_tiny", metric_output=(1.0, 0.0)), path)):
        assert loaded.metric_output.values() == pytest.approx((0.002, 0.05))  # the file's, not the variant's
        with torch.no_grad():
            torch.testing.assert_close(loaded.eval()(x), metric(x), rtol=0, atol=0)
    # a relative checkpoint (what fine-tuning starts from) into a metric model keeps the model's transform;
    # a metric checkpoint into a relative model has keys the model lacks
    relative = str(tmp_path / "relative.safetensors")
    save_checkpoint(build_model("dpt_tiny"), relative, name="dpt_tiny")
    start = load_checkpoint(build_model("dpt_tiny", metric_output=(0.003, 0.2)), relative)
    assert start.metric_output.values() == pytest.approx((0.003, 0.2))
    with pytest.raises(ValueError, match=r"unexpected keys \['metric_output.scale', 'metric_output.shift'\]"):
        load_checkpoint(build_model("dpt_tiny"), path)
