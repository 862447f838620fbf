"""DPT model family: shapes, taps, readout, position embeddings, parameter counts (training/model/)."""

from __future__ import annotations

import gc

import pytest
import torch
import torch.nn.functional as F

from training.model import build_model, get_config, list_models
from training.model.backbone import resize_pos_embed
from training.model.reassemble import Readout


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_model("dpt_tiny").eval()


def test_registry_names_and_unknown_override():
    assert {"dpt_base", "dpt_large", "dpt_hybrid", "dpt_tiny"} <= set(list_models())
    with pytest.raises(ValueError, match="dpt_nope"):
        build_model("dpt_nope")
    with pytest.raises(ValueError, match="redout"):
        build_model("dpt_tiny", redout="add")
    with pytest.raises(ValueError, match="readout"):
        build_model("dpt_tiny", readout="mean")


@pytest.mark.parametrize("size", [(64, 96), (48, 80), (96, 48), (32, 32)])
def test_output_shape_and_non_negative_at_multiples_of_16(tiny, size):
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        y = tiny(x)
    assert y.shape == (2, 1, *size)
    assert torch.isfinite(y).all() and (y >= 0).all()
    assert y.std() > 0  # not a constant map


def test_input_not_multiple_of_16_is_rejected(tiny):
    with pytest.raises(ValueError, match="multiple of the backbone stride 16"):
        tiny(torch.randn(1, 3, 50, 64))


def test_reassembled_maps_are_at_quarter_to_thirty_second(tiny):
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        stages, grid = tiny.backbone(x)
        maps = tiny.forward_features(x)
    assert grid == (4, 6)
    assert [s.shape for s in stages] == [torch.Size([1, 1 + 24, 192])] * 4
    assert [tuple(m.shape) for m in maps] == [(1, 32, 16, 24), (1, 32, 8, 12), (1, 32, 4, 6), (1, 32, 2, 3)]


def test_taps_are_the_configured_blocks(tiny):
    """The tapped tokens equal the outputs of blocks 1..4 computed by hand through timm's own modules."""
    x = torch.randn(1, 3, 64, 64)
    vit = tiny.backbone.vit
    with torch.no_grad():
        stages, _ = tiny.backbone(x)
        tokens = vit.patch_embed.proj(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([vit.cls_token, tokens], dim=1) + vit.pos_embed  # native 4x4 grid: no resampling
        for index, block in enumerate(vit.blocks):
            tokens = block(tokens)
            torch.testing.assert_close(stages[index], tokens)


def test_paper_configs_taps_and_channels():
    base, large, hybrid = get_config("dpt_base"), get_config("dpt_large"), get_config("dpt_hybrid")
    assert base.block_taps == (3, 6, 9, 12) and base.channels == (96, 192, 384, 768)
    assert large.block_taps == (6, 12, 18, 24) and large.channels == (256, 512, 1024, 1024)
    assert hybrid.resnet_taps == (1, 2) and hybrid.block_taps == (9, 12)
    assert hybrid.channels[2:] == (768, 768)
    for config in (base, large, hybrid):
        assert config.readout == "project" and config.features == 256
        assert config.preprocess.mean == (0.5, 0.5, 0.5) and config.preprocess.multiple_of == 32


def test_position_embedding_resampling_is_bilinear_like_the_official_code():
    pos = torch.randn(1, 1 + 4 * 4, 8)
    out = resize_pos_embed(pos, (4, 4), (3, 5))
    assert out.shape == (1, 1 + 15, 8)
    torch.testing.assert_close(out[:, :1], pos[:, :1])  # the class token's embedding is kept
    grid = pos[:, 1:].reshape(1, 4, 4, 8).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(3, 5), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out[:, 1:], expected.permute(0, 2, 3, 1).reshape(1, 15, 8))
    assert resize_pos_embed(pos, (4, 4), (4, 4)) is pos
    # timm's own resampling (anti-aliased bicubic) gives different values: why the backbone does its own.
    from timm.layers import resample_abs_pos_embed

    timm_out = resample_abs_pos_embed(pos, new_size=(3, 5), old_size=(4, 4), num_prefix_tokens=1)
    assert not torch.allclose(timm_out, out, atol=1e-3)


def test_readout_modes_by_hand():
    torch.manual_seed(0)
    tokens = torch.randn(2, 1 + 6, 4)
    cls, patches = tokens[:, :1], tokens[:, 1:]
    torch.testing.assert_close(Readout("ignore", 4)(tokens), patches)
    torch.testing.assert_close(Readout("add", 4)(tokens), patches + cls)
    project = Readout("project", 4)
    expected = F.gelu(torch.cat([patches, cls.expand(-1, 6, -1)], -1) @ project.proj.weight.T + project.proj.bias)
    torch.testing.assert_close(project(tokens), expected)
    assert sum(p.numel() for p in Readout("add", 4).parameters()) == 0
    assert sum(p.numel() for p in project.parameters()) == 2 * 4 * 4 + 4


@pytest.mark.parametrize("mode", ["ignore", "add", "project"])
def test_readout_modes_build_and_run(mode):
    model = build_model("dpt_tiny", readout=mode).eval()
    has_proj = any("readout.proj" in name for name, _ in model.named_parameters())
    assert has_proj == (mode == "project")
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 48)).shape == (1, 1, 32, 48)


def test_fused_attention_gives_the_same_output(tiny):
    explicit = build_model("dpt_tiny", fused_attention=False).eval()
    explicit.load_state_dict(tiny.state_dict())
    x = torch.randn(1, 3, 48, 64)
    with torch.no_grad():
        torch.testing.assert_close(explicit(x), tiny(x), rtol=1e-4, atol=1e-5)


def test_segmentation_slot_head_is_a_named_submodule(tiny):
    names = {name for name, _ in tiny.named_children()}
    assert names == {"backbone", "reassemble", "fusion", "head"}
    with pytest.raises(ValueError, match="unknown head"):
        build_model("dpt_tiny", head="segmentation_that_does_not_exist")


def test_backward_reaches_every_parameter(tiny):
    """No dead parameters (DDP without find_unused_parameters relies on this)."""
    model = build_model("dpt_tiny")
    model(torch.randn(1, 3, 32, 32)).mean().backward()
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    assert unused == []


# Paper (Table 1 / Sec. 4) and the official code: 112M, 343M, 123M. The official modules also carry weights DPT
# never uses, which this model does not create: the ImageNet classifier (D*1000 + 1000), the final ViT
# LayerNorm (2D) and the skip residual unit of the deepest fusion block (2 * (256*256*9 + 256)).
PAPER_COUNTS = {"dpt_base": (112e6, 768), "dpt_large": (343e6, 1024), "dpt_hybrid": (123e6, 768)}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PAPER_COUNTS))
def test_parameter_counts_match_the_paper(name):
    paper, dim = PAPER_COUNTS[name]
    model = build_model(name)
    ours = sum(p.numel() for p in model.parameters())
    with torch.no_grad():  # also runs at a small non-square size
        assert model.eval()(torch.randn(1, 3, 32, 48)).shape == (1, 1, 32, 48)
    if name == "dpt_hybrid":
        stages, _ = model.backbone(torch.randn(1, 3, 64, 96))
        assert [tuple(s.shape) for s in stages[:2]] == [(1, 256, 16, 24), (1, 512, 8, 12)]
    del model
    gc.collect()
    unused_official = dim * 1000 + 1000 + 2 * dim + 2 * (256 * 256 * 9 + 256)
    assert abs(ours + unused_official - paper) / paper < 0.005, (name, ours)


def test_grad_checkpointing_gives_the_same_gradients(tiny):
    plain = build_model("dpt_tiny")
    plain.load_state_dict(tiny.state_dict())
    checkpointed = build_model("dpt_tiny")
    checkpointed.load_state_dict(tiny.state_dict())
    checkpointed.set_grad_checkpointing(True)
    assert checkpointed.backbone.vit.grad_checkpointing
    x = torch.randn(1, 3, 32, 48)
    for model in (plain, checkpointed):
        model.train()
        model(x).square().mean().backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), checkpointed.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7, msg=name)


def test_a_model_built_from_random_weights_starts_with_a_live_output():
    """The depth head's last ReLU is > 0 at every pixel at the start, so every seed trains (with the default
    signed init it was 0 everywhere, with no gradient ever, for 4 of these 10 seeds)."""
    for seed in range(10):
        torch.manual_seed(seed)
        model = build_model("dpt_tiny")
        disparity = model(torch.randn(2, 3, 64, 64))
        assert (disparity > 0).all(), seed
        disparity.mean().backward()
        assert model.head.predict.weight.grad.abs().sum() > 0, seed
        assert model.backbone.vit.blocks[0].attn.qkv.weight.grad.abs().sum() > 0, seed  # it reaches the encoder
