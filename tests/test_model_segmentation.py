"""DPT for semantic segmentation: heads, batch-normed fusion, auxiliary output, registry names, and the official
and transformers segmentation checkpoint layouts (training/model/)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from training.model import build_model, get_config, list_models, load_checkpoint
from training.model.heads import SegmentationHead

CLASSES = 5


@pytest.fixture(scope="module")
def seg():
    torch.manual_seed(0)
    return build_model("dpt_tiny_ade20k", head_kwargs={"num_classes": CLASSES}).eval()


def test_registry_names_and_paper_setup():
    assert {"dpt_hybrid_ade20k", "dpt_large_ade20k", "dpt_tiny_ade20k"} <= set(list_models())
    for name, depth in (("dpt_hybrid_ade20k", "dpt_hybrid"), ("dpt_large_ade20k", "dpt_large")):
        config, base = get_config(name), get_config(depth)
        assert config.head == "segmentation" and config.head_kwargs == {"num_classes": 150}
        assert config.fusion_batch_norm and config.aux_head
        # Same encoder and decoder as the depth model otherwise.
        assert (config.timm_name, config.block_taps, config.resnet_taps, config.channels, config.features) == \
               (base.timm_name, base.block_taps, base.resnet_taps, base.channels, base.features)
    assert not get_config("dpt_hybrid").aux_head and not get_config("dpt_hybrid").fusion_batch_norm


@pytest.mark.parametrize("size", [(64, 96), (48, 80), (32, 32)])
def test_logits_at_input_resolution(seg, size):
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        logits = seg(x)
        main, aux = seg(x, return_aux=True)
    assert logits.shape == aux.shape == (2, CLASSES, *size)
    torch.testing.assert_close(main, logits, rtol=0, atol=0)
    assert not torch.allclose(main, aux)  # a second head on another fusion output


def test_auxiliary_output_is_only_asked_for_in_training():
    depth = build_model("dpt_tiny")
    assert depth.aux_head is None
    with pytest.raises(ValueError, match="aux_head=True"):
        depth(torch.randn(1, 3, 32, 32), return_aux=True)


def test_head_and_fusion_structure(seg):
    head = seg.head
    assert isinstance(head, SegmentationHead) and isinstance(seg.aux_head, SegmentationHead)
    assert head.conv.kernel_size == (3, 3) and head.conv.bias is None  # followed by batch norm
    assert isinstance(head.bn, nn.BatchNorm2d) and head.dropout.p == 0.1
    assert head.classify.kernel_size == (1, 1) and head.classify.out_channels == CLASSES
    units = [u for block in seg.fusion for u in (block.skip_unit, block.residual_unit) if u is not None]
    assert len(units) == 7 and all(isinstance(u.bn1, nn.BatchNorm2d) and u.conv1.bias is None for u in units)


def test_main_head_upsamples_the_finest_fusion_output_and_aux_reads_the_penultimate(seg):
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        fused = seg.forward_fusion(seg.forward_features(x))
        assert [tuple(f.shape[-2:]) for f in fused] == [(4, 4), (8, 8), (16, 16), (32, 32)]
        main, aux = seg(x, return_aux=True)
        h = seg.head
        by_hand = h.classify(F.relu(h.bn(h.conv(fused[-1]))))
        torch.testing.assert_close(main, F.interpolate(by_hand, size=(64, 64), mode="bilinear", align_corners=True))
        a = seg.aux_head
        aux_by_hand = a.classify(F.relu(a.bn(a.conv(fused[-2]))))  # 16x16: the penultimate, at 1/4
        torch.testing.assert_close(aux, F.interpolate(aux_by_hand, size=(64, 64), mode="bilinear",
                                                      align_corners=True))


def test_training_loss_reaches_every_parameter_and_dropout_is_train_only():
    torch.manual_seed(0)
    model = build_model("dpt_tiny_ade20k", head_kwargs={"num_classes": CLASSES}).train()
    x = torch.randn(2, 3, 32, 32)
    labels = torch.randint(0, CLASSES, (2, 32, 32))
    labels[:, :4] = 255
    main, aux = model(x, return_aux=True)
    loss = F.cross_entropy(main, labels, ignore_index=255) + 0.2 * F.cross_entropy(aux, labels, ignore_index=255)
    loss.backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []  # DDP needs no unused parameters
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)


def test_parameter_count_against_the_depth_model():
    # By hand, F = 32 (dpt_tiny) and C classes: the depth head goes (3x3 F->F/2 + b, 3x3 F/2->32 + b, 1x1 32->1 + b),
    # two segmentation heads come (3x3 F->F without bias, BN 2F, 1x1 F->C + b each), and each of the 14 fusion
    # convolutions trades its bias (F) for a batch norm (2F).
    f, c = 32, CLASSES
    depth = sum(p.numel() for p in build_model("dpt_tiny").parameters())
    seg = sum(p.numel() for p in build_model("dpt_tiny_ade20k", head_kwargs={"num_classes": c}).parameters())
    depth_head = (f * f // 2 * 9 + f // 2) + (f // 2 * 32 * 9 + 32) + (32 + 1)
    seg_head = f * f * 9 + 2 * f + f * c + c
    assert seg == depth - depth_head + 2 * seg_head + 14 * f


# --------------------------------------------------------------------------- official layout (isl-org/DPT)

_SEQ = {"conv": 0, "bn": 1, "classify": 4}


def _official_segmentation_state(model) -> dict[str, torch.Tensor]:
    """Our weights under isl-org/DPT's ``DPTSegmentationModel`` names, written here independently of key_maps.py.

    dpt/models.py: ``scratch.output_conv`` = Sequential(conv, BN, ReLU, Dropout, conv, Interpolate) and
    ``auxlayer`` the same without the Interpolate; fusion units ``resConfUnit1/2`` with ``conv1, bn1, conv2, bn2``;
    ``pretrained.act_postprocessN`` (0 readout ``project.0``, 3 the 1x1 conv, 4 the resampling).
    """
    official = {}
    for key, value in model.state_dict().items():
        part = key.split(".")
        if key.startswith("backbone.vit."):
            name = "pretrained.model." + key[len("backbone.vit."):]
        elif part[0] == "reassemble":
            n = int(part[1]) + 1
            name = {"readout": f"pretrained.act_postprocess{n}.0.project.0.{part[-1]}",
                    "project": f"pretrained.act_postprocess{n}.3.{part[-1]}",
                    "resample": f"pretrained.act_postprocess{n}.4.{part[-1]}",
                    "to_features": f"scratch.layer{n}_rn.weight"}[part[2]]
        elif part[0] == "fusion":
            unit = {"skip_unit": "resConfUnit1", "residual_unit": "resConfUnit2", "out_conv": "out_conv"}[part[2]]
            name = f"scratch.refinenet{int(part[1]) + 1}.{unit}." + ".".join(part[3:])
        elif part[0] in ("head", "aux_head"):
            prefix = "scratch.output_conv" if part[0] == "head" else "auxlayer"
            name = f"{prefix}.{_SEQ[part[1]]}.{part[2]}"
        else:
            raise AssertionError(f"unexpected key {key}")
        official[name] = value
    # Weights the official module carries and DPT never uses: the deepest block's skip unit, the ViT's classifier.
    for k, v in list(official.items()):
        if k.startswith("scratch.refinenet4.resConfUnit2."):
            official[k.replace("resConfUnit2", "resConfUnit1")] = torch.randn_like(v.float()).to(v.dtype)
    dim = model.backbone.embed_dim
    official["pretrained.model.head.weight"] = torch.randn(1000, dim)
    official["pretrained.model.head.bias"] = torch.randn(1000)
    return official


def _randomised(model):
    with torch.no_grad():  # batch-norm statistics away from (0, 1), so a swapped buffer shows
        for name, buffer in model.named_buffers():
            if name.endswith("running_mean"):
                buffer.normal_(0, 0.5)
            elif name.endswith("running_var"):
                buffer.uniform_(0.5, 2.0)
    return model


def test_official_segmentation_layout_loads(seg, tmp_path):
    source = _randomised(build_model("dpt_tiny_ade20k", head_kwargs={"num_classes": CLASSES})).eval()
    path = tmp_path / "dpt_hybrid-ade20k.pt"
    torch.save(_official_segmentation_state(source), path)
    target = load_checkpoint(build_model("dpt_tiny_ade20k", head_kwargs={"num_classes": CLASSES}).eval(), str(path))
    for key, value in source.state_dict().items():
        torch.testing.assert_close(target.state_dict()[key], value, rtol=0, atol=0)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(target(x, return_aux=True), source(x, return_aux=True), rtol=0, atol=0)
    # The same file does not fit a depth model: the mismatch is named, not silently half-loaded.
    with pytest.raises(ValueError, match=r"aux_head\.classify\.weight"):
        load_checkpoint(build_model("dpt_tiny"), str(path))


# --------------------------------------------------------------------------- transformers DPTForSemanticSegmentation


def test_transformers_segmentation_equivalence(tmp_path):
    from safetensors.torch import save_file
    from transformers import DPTConfig, DPTForSemanticSegmentation

    config = DPTConfig(hidden_size=64, num_hidden_layers=4, num_attention_heads=2, intermediate_size=256,
                       image_size=64, patch_size=16, backbone_out_indices=[0, 1, 2, 3],
                       neck_hidden_sizes=[16, 32, 64, 64], fusion_hidden_size=32, layer_norm_eps=1e-6,
                       use_batch_norm_in_fusion_residual=True, use_bias_in_fusion_residual=False,
                       use_auxiliary_head=True, num_labels=CLASSES)
    hf = DPTForSemanticSegmentation(config).eval()
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():  # transformers' init leaves biases and embeddings at 0: randomise everything
        for name, param in hf.named_parameters():
            base = 1.0 if ("layernorm" in name or "batch_norm" in name or ".1." in name) and name.endswith("weight") \
                else 0.0
            param.copy_(base + 0.1 * torch.randn(param.shape, generator=generator))
    _randomised(hf)
    ours = build_model("dpt_tiny_ade20k", channels=(16, 32, 64, 64), features=32, head_kwargs={"num_classes": CLASSES},
                       timm_kwargs={"embed_dim": 64, "depth": 4, "num_heads": 2, "img_size": 64}).eval()
    path = str(tmp_path / "model.safetensors")
    save_file({k: v.contiguous() for k, v in hf.state_dict().items()}, path)
    load_checkpoint(ours, path)
    torch.testing.assert_close(ours.aux_head.classify.weight, hf.auxiliary_head.head[4].weight, rtol=0, atol=0)
    torch.testing.assert_close(ours.head.bn.running_var, hf.head.head[1].running_var, rtol=0, atol=0)
    for size in ((64, 64), (96, 96)):
        x = torch.randn(2, 3, *size)
        with torch.no_grad():
            expected = hf(pixel_values=x).logits
            got = ours(x)
        assert got.shape == expected.shape == (2, CLASSES, *size)
        assert expected.abs().max() > 0.1
        assert ((got - expected).abs().max() / expected.abs().max()).item() < 1e-4
        assert (got.argmax(1) == expected.argmax(1)).float().mean() > 0.999


# --------------------------------------------------------------------------- dpt predict --task segmentation


def test_predict_writes_label_and_colour_maps(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from pipeline.cli import main
    from training.model import save_checkpoint
    from training.tasks.segmentation import palette

    torch.manual_seed(0)
    model = build_model("dpt_tiny_ade20k", head_kwargs={"num_classes": CLASSES})
    checkpoint = tmp_path / "seg.safetensors"
    save_checkpoint(model, str(checkpoint), name="dpt_tiny_ade20k")
    rng = np.random.default_rng(0)
    (tmp_path / "in").mkdir()
    Image.fromarray(rng.integers(0, 255, (37, 53, 3), dtype=np.uint8)).save(tmp_path / "in" / "a.png")
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path / "in"), "--checkpoint", str(checkpoint), "--out", str(out),
                 "--device", "cpu"]) == 0  # --task auto: the checkpoint's head is a segmentation head
    labels = np.asarray(Image.open(out / "a.png"))
    assert labels.dtype == np.uint8 and labels.shape == (37, 53) and labels.max() < CLASSES
    colour = np.asarray(Image.open(out / "a.color.png"))
    np.testing.assert_array_equal(colour, palette()[labels])
    assert len({tuple(c) for c in palette()[:150]}) == 150  # every ADE20K class its own colour
    # A depth checkpoint asked for label maps says why it cannot.
    depth = tmp_path / "depth.safetensors"
    save_checkpoint(build_model("dpt_tiny"), str(depth), name="dpt_tiny")
    assert main(["predict", str(tmp_path / "in"), "--checkpoint", str(depth), "--out", str(out), "--device", "cpu",
                 "--task", "segmentation"]) == 1
    assert "needs a segmentation checkpoint" in capsys.readouterr().err
