"""Weights in and out: official DPT/MiDaS v3 layout, transformers DPTForDepthEstimation, safetensors."""

from __future__ import annotations

import fractions
import io
import json
import re

import pytest
import torch

from training.model import build_model, load_checkpoint, load_model, save_checkpoint
from tests.helpers.checkpoints import train_checkpoint
from training.model.checkpoint import load_state, read_safetensors_metadata


def _official_state(model) -> dict[str, torch.Tensor]:
    """Our weights under the official key names, written out here independently of key_maps.py.

    Names from isl-org/DPT (dpt/models.py: ``pretrained``, ``scratch.layerN_rn``, ``scratch.refinenetN``,
    ``scratch.output_conv``; dpt/blocks.py: ``resConfUnit1/2.conv1/2``, ``out_conv``) and isl-org/MiDaS
    (midas/vit.py: ``pretrained.model`` is the timm ViT, ``pretrained.act_postprocessN`` a Sequential whose
    index 0 is ProjectReadout (``.project.0`` the Linear), 3 the 1x1 conv and 4 the resampling).
    """
    ours = model.state_dict()
    official = {}
    for key, value in ours.items():
        if key.startswith("backbone.vit."):
            official["pretrained.model." + key[len("backbone.vit."):]] = value
    for i in range(4):
        n = i + 1
        official[f"pretrained.act_postprocess{n}.0.project.0.weight"] = ours[f"reassemble.{i}.readout.proj.weight"]
        official[f"pretrained.act_postprocess{n}.0.project.0.bias"] = ours[f"reassemble.{i}.readout.proj.bias"]
        for p in ("weight", "bias"):
            official[f"pretrained.act_postprocess{n}.3.{p}"] = ours[f"reassemble.{i}.project.{p}"]
            if f"reassemble.{i}.resample.{p}" in ours:
                official[f"pretrained.act_postprocess{n}.4.{p}"] = ours[f"reassemble.{i}.resample.{p}"]
            official[f"scratch.refinenet{n}.out_conv.{p}"] = ours[f"fusion.{i}.out_conv.{p}"]
            for c in (1, 2):
                official[f"scratch.refinenet{n}.resConfUnit2.conv{c}.{p}"] = ours[f"fusion.{i}.residual_unit.conv{c}.{p}"]
                skip = ours.get(f"fusion.{i}.skip_unit.conv{c}.{p}")
                # The official deepest block carries an unused resConfUnit1: give it arbitrary weights.
                official[f"scratch.refinenet{n}.resConfUnit1.conv{c}.{p}"] = (
                    skip if skip is not None else torch.randn_like(ours[f"fusion.{i}.residual_unit.conv{c}.{p}"]))
        official[f"scratch.layer{n}_rn.weight"] = ours[f"reassemble.{i}.to_features.weight"]
    for index, name in ((0, "reduce"), (2, "refine"), (4, "predict")):
        for p in ("weight", "bias"):
            official[f"scratch.output_conv.{index}.{p}"] = ours[f"head.{name}.{p}"]
    dim = model.backbone.embed_dim
    official["pretrained.model.norm.weight"] = torch.ones(dim)  # unused by DPT, dropped by name
    official["pretrained.model.norm.bias"] = torch.zeros(dim)
    official["pretrained.model.head.weight"] = torch.randn(1000, dim)  # the ImageNet classifier
    official["pretrained.model.head.bias"] = torch.randn(1000)
    return official


@pytest.fixture(scope="module")
def source():
    torch.manual_seed(1)
    return build_model("dpt_tiny").eval()


def _same_output(a, b, size=(48, 80)):
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


def test_official_layout_loads(source, tmp_path):
    path = tmp_path / "dpt_official.pt"
    torch.save({"model": _official_state(source), "optimizer": {}}, path)  # the official training wrapper
    target = build_model("dpt_tiny").eval()
    load_checkpoint(target, str(path))
    for key, value in source.state_dict().items():
        torch.testing.assert_close(target.state_dict()[key], value, rtol=0, atol=0)
    _same_output(source, target)


def test_official_unknown_and_missing_keys_are_named(source, tmp_path):
    state = _official_state(source)
    state["scratch.refinenet9.out_conv.weight"] = torch.zeros(1)
    del state["scratch.layer2_rn.weight"]
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=r"scratch\.refinenet9\.out_conv\.weight"):
        load_checkpoint(build_model("dpt_tiny"), str(tmp_path / "bad.pt"))
    del state["scratch.refinenet9.out_conv.weight"]
    torch.save(state, tmp_path / "missing.pt")
    with pytest.raises(ValueError, match=r"missing keys \['reassemble\.1\.to_features\.weight'\]"):
        load_checkpoint(build_model("dpt_tiny"), str(tmp_path / "missing.pt"))


def test_native_unknown_and_shape_mismatch_raise(source):
    state = dict(source.state_dict())
    state["head.extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"unexpected keys \['head\.extra\.weight'\]"):
        load_state(build_model("dpt_tiny"), state)
    with pytest.raises(ValueError, match="shape mismatch"):
        load_state(build_model("dpt_tiny", features=16), source.state_dict())


def test_pickled_code_is_refused(tmp_path):
    """weights_only=True: a file that needs arbitrary unpickling is rejected, naming the file."""
    path = tmp_path / "evil.pt"
    torch.save({"model": {"x": torch.zeros(1)}, "hook": fractions.Fraction(1, 3)}, path)
    with pytest.raises(ValueError, match="evil.pt"):
        load_checkpoint(build_model("dpt_tiny"), str(path))


def test_safetensors_round_trip_rebuilds_from_metadata(source, tmp_path):
    path = str(tmp_path / "ckpt.safetensors")
    save_checkpoint(source, path, name="dpt_tiny")
    metadata = read_safetensors_metadata(open(path, "rb").read())
    assert metadata["format"] == "dpt-pipeline" and metadata["name"] == "dpt_tiny"
    assert json.loads(metadata["config"])["block_taps"] == [1, 2, 3, 4]
    rebuilt = load_model(path).eval()
    assert rebuilt.config == source.config
    _same_output(source, rebuilt)
    again = load_checkpoint(build_model("dpt_tiny").eval(), path)
    _same_output(source, again)


def test_load_model_refuses_foreign_files(source, tmp_path):
    path = tmp_path / "official.pt"
    torch.save(_official_state(source), path)
    with pytest.raises(ValueError, match="not a dpt-pipeline checkpoint"):
        load_model(str(path))


# --------------------------------------------------------------------------- transformers equivalence


def _hf_pair(readout="project"):
    from transformers import DPTConfig, DPTForDepthEstimation

    config = DPTConfig(hidden_size=64, num_hidden_layers=4, num_attention_heads=2, intermediate_size=256,
                       image_size=64, patch_size=16, backbone_out_indices=[0, 1, 2, 3],
                       neck_hidden_sizes=[16, 32, 64, 64], fusion_hidden_size=32, readout_type=readout,
                       layer_norm_eps=1e-6)  # timm's ViT eps (transformers' default is 1e-12)
    hf = DPTForDepthEstimation(config).eval()
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():  # transformers' init leaves biases and embeddings at 0: randomise everything
        for name, param in hf.named_parameters():
            base = 1.0 if "layernorm" in name and name.endswith("weight") else 0.0
            param.copy_(base + 0.1 * torch.randn(param.shape, generator=generator))
        hf.head.head[4].bias.fill_(1.0)  # keep many outputs above the final ReLU
    ours = build_model("dpt_tiny", channels=(16, 32, 64, 64), features=32, readout=readout,
                       timm_kwargs={"embed_dim": 64, "depth": 4, "num_heads": 2, "img_size": 64}).eval()
    return hf, ours


@pytest.mark.parametrize("readout", ["project", "add", "ignore"])
def test_transformers_dpt_equivalence(readout, tmp_path):
    from safetensors.torch import save_file

    hf, ours = _hf_pair(readout)
    path = str(tmp_path / "model.safetensors")  # what DPTForDepthEstimation.save_pretrained writes
    save_file({k: v.contiguous() for k, v in hf.state_dict().items()}, path)
    load_checkpoint(ours, path)
    # 96x96 differs from the config's 64: both resample the position embeddings.
    for size in ((64, 64), (96, 96)):
        x = torch.randn(2, 3, *size)
        with torch.no_grad():
            expected = hf(pixel_values=x).predicted_depth
            got = ours(x)[:, 0]
        assert expected.abs().max() > 0.1 and (expected > 0).float().mean() > 0.05  # a non-trivial output
        assert ((got - expected).abs().max() / expected.abs().max()).item() < 1e-4


def test_transformers_missing_query_is_reported(tmp_path):
    hf, ours = _hf_pair()
    state = dict(hf.state_dict())
    del state["dpt.encoder.layer.2.attention.attention.query.weight"]
    with pytest.raises(ValueError, match=r"blocks\.2\.attn\.qkv\.weight \(incomplete"):
        load_state(ours, state)


def test_transformers_dpt_hybrid_equivalence(tmp_path):
    """DPT-Hybrid: transformers' BiT backbone names map onto timm's ResNetV2 (full ResNet-50 stages, small ViT)."""
    from transformers import DPTConfig, DPTForDepthEstimation

    config = DPTConfig(is_hybrid=True, hidden_size=64, num_hidden_layers=4, num_attention_heads=2,
                       intermediate_size=256, image_size=64, patch_size=16, backbone_out_indices=[0, 1, 2, 3],
                       neck_hidden_sizes=[256, 512, 64, 64], fusion_hidden_size=32, layer_norm_eps=1e-6,
                       backbone_featmap_shape=[1, 1024, 4, 4])
    hf = DPTForDepthEstimation(config).eval()
    generator = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for name, param in hf.named_parameters():
            base = 1.0 if "norm" in name and name.endswith("weight") else 0.0
            param.copy_(base + 0.1 * torch.randn(param.shape, generator=generator))
        hf.head.head[4].weight.abs_()  # a positive last layer keeps every output above the final ReLU
        hf.head.head[4].bias.fill_(0.1)
    ours = build_model("dpt_hybrid", block_taps=(3, 4), channels=(256, 512, 64, 64), features=32,
                       timm_kwargs={"embed_dim": 64, "depth": 4, "num_heads": 2, "img_size": 64}).eval()
    load_state(ours, hf.state_dict(), "transformers hybrid")
    x = torch.randn(2, 3, 64, 64, generator=generator)
    with torch.no_grad():
        expected = hf(pixel_values=x).predicted_depth
        got = ours(x)[:, 0]
    assert (expected > 0).all()
    assert ((got - expected).abs().max() / expected.abs().max()).item() < 1e-4


# --------------------------------------------------------------------------- a checkpoint argument -> the model file


def test_a_train_checkpoint_directory_loads_like_its_model_file(source, storage_root):
    from pipeline import storage
    from pipeline.checkpoint_layout import MODEL_FILE
    from training.model.checkpoint import check_checkpoint, inspect_checkpoint, resolve_checkpoint

    directory = train_checkpoint(storage_root, source)
    inside = storage.join(directory, MODEL_FILE)
    assert sorted(storage.basename(u) for u in storage.list_files(directory)) == [
        "meta.json", MODEL_FILE, "train_state.pt"]
    run_dir = storage.dirname(directory.rstrip("/"))  # the training run: its latest checkpoint
    for given in (directory, directory + "/", inside, run_dir):
        assert resolve_checkpoint(given).rstrip("/").endswith(f"checkpoint_000002/{MODEL_FILE}")
        info = inspect_checkpoint(given)
        assert info.kind == "safetensors" and info.own and info.metadata["name"] == "dpt_tiny"
        assert check_checkpoint(given) == info.file
        _same_output(source, load_model(given).eval())
        _same_output(source, load_checkpoint(build_model("dpt_tiny").eval(), given))


def test_a_checkpoint_argument_that_is_not_one_is_named(source, storage_root):
    from pipeline import storage
    from training.model.checkpoint import check_checkpoint, inspect_checkpoint, resolve_checkpoint

    storage.write_bytes(storage.join(storage_root, "other", "notes.txt"), b"hello, not weights")
    empty_dir = storage.join(storage_root, "other")
    with pytest.raises(FileNotFoundError, match=f"^{re.escape(empty_dir)}: .*(holding|without) model.safetensors"):
        resolve_checkpoint(empty_dir)  # local: "a directory without ..."; s3: "no such object, nor ... holding ..."
    with pytest.raises(FileNotFoundError, match="nowhere: no such"):
        resolve_checkpoint(storage.join(storage_root, "nowhere"))
    with pytest.raises(ValueError, match="notes.txt: neither a safetensors file nor a torch file"):
        inspect_checkpoint(storage.join(storage_root, "other", "notes.txt"))
    official = storage.join(storage_root, "official.pt")
    buffer = io.BytesIO()
    torch.save(_official_state(source), buffer)
    storage.write_bytes(official, buffer.getvalue())
    assert inspect_checkpoint(official).kind == "torch" and not inspect_checkpoint(official).own
    # an official file needs the variant named; with it, it passes and loads
    with pytest.raises(ValueError, match="^--checkpoint .*official.pt: not a dpt-pipeline checkpoint .* --model$"):
        check_checkpoint(official)
    assert check_checkpoint(official, "dpt_tiny") == official
    _same_output(source, load_checkpoint(build_model("dpt_tiny").eval(), official))
    with pytest.raises(ValueError, match="^--model: unknown DPT model 'dpt_nope'"):
        check_checkpoint(official, "dpt_nope")
    with pytest.raises(ValueError, match="^--checkpoint .*nowhere: no such"):
        check_checkpoint(storage.join(storage_root, "nowhere"))
