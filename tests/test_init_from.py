"""task.init_from, every task's starting checkpoint (training.tasks.init_from): segmentation swaps the head, so that
an ADE20K model (150 classes) or a relative-depth model starts a Pascal Context run (59 classes) with its backbone and
decoder, the head re-initialised; the depth tasks load the whole file; what does not fit is named."""

from __future__ import annotations

import json

import pytest
import torch

from pipeline.config import load_config
from training.config import TrainConfig
from training.model import build_model, save_checkpoint
from training.model.checkpoint import FUSION_NORM, HEAD_PREFIXES
from training.tasks import create_task
from training.tasks.init_from import INIT_HEAD_TAG, INIT_RUN_TAG, INIT_SHA256_TAG, INIT_TAG

TINY = "configs/pascal_context_tiny.yaml"
CPU = torch.device("cpu")


def _start(path: str, model_name: str = "dpt_tiny_pascal_context", config: str = TINY, seed: int = 1):
    """(the run's model before start, after start, the tags) for a new run of ``config`` from ``path``."""
    run = load_config(TrainConfig, config, ["data.shards.prefix=/x", f"task.init_from={path}"])
    task = create_task(run.task, run.data.shards.sources)
    task.check_inputs()
    torch.manual_seed(seed)
    model = build_model(model_name)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    return before, model, task.start(model, run.data, 0, 1, CPU)


def _saved(tmp_path, name: str, seed: int = 0, **overrides) -> tuple[str, dict]:
    torch.manual_seed(seed)
    model = build_model(name, **overrides)
    with torch.no_grad():  # batch norm statistics that differ from a fresh model's
        for key, value in model.state_dict().items():
            if "running_" in key:
                value.add_(0.5)
    directory = tmp_path / name
    directory.mkdir()
    path = directory / "model.safetensors"
    save_checkpoint(model, str(path), name=name)
    (directory / "meta.json").write_text(json.dumps({"step": 3, "mlflow_run_id": "run42"}))
    return str(path), model.state_dict()


def test_an_ade20k_checkpoint_starts_pascal_context_with_a_new_head(tmp_path):
    path, ade = _saved(tmp_path, "dpt_tiny_ade20k")
    before, model, tags = _start(path)
    after = model.state_dict()
    assert after["head.classify.weight"].shape[0] == 59 and ade["head.classify.weight"].shape[0] == 150
    trunk = [k for k in after if not k.startswith(HEAD_PREFIXES)]
    assert any(k.startswith("backbone.") for k in trunk) and any(k.startswith("fusion.") for k in trunk)
    for key in trunk:  # the backbone and the decoder (reassemble, fusion with its batch norms) are the file's
        torch.testing.assert_close(after[key], ade[key], rtol=0, atol=0, msg=key)
    for key in (k for k in after if k.startswith(("head.", "aux_head."))):  # the head: fresh, as built
        torch.testing.assert_close(after[key], before[key], rtol=0, atol=0, msg=key)
    assert not torch.equal(after["head.conv.weight"], ade["head.conv.weight"])  # not the ADE20K head's
    assert tags[INIT_HEAD_TAG] == "re-initialised" and tags[INIT_RUN_TAG] == "run42"
    assert tags[INIT_SHA256_TAG] and tags[INIT_TAG] == path


def test_a_relative_depth_checkpoint_gives_its_backbone_and_decoder(tmp_path):
    path, depth = _saved(tmp_path, "dpt_tiny")
    before, model, tags = _start(path)
    after = model.state_dict()
    for key, value in after.items():
        if key.startswith(HEAD_PREFIXES) or FUSION_NORM.fullmatch(key):
            # Fresh: the head, and the fusion's batch norms a depth decoder does not have.
            torch.testing.assert_close(value, before[key], rtol=0, atol=0, msg=key)
        else:  # the backbone, reassemble and the fusion's convolutions
            torch.testing.assert_close(value, depth[key], rtol=0, atol=0, msg=key)
    assert "fusion.0.residual_unit.conv1.bias" in depth and "fusion.0.residual_unit.bn1.weight" in after
    assert tags[INIT_HEAD_TAG] == "re-initialised"


def test_the_same_label_set_loads_the_head_too_and_a_foreign_trunk_is_named(tmp_path):
    path, pascal = _saved(tmp_path, "dpt_tiny_pascal_context")
    _, model, tags = _start(path)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, pascal[key], rtol=0, atol=0, msg=key)
    assert tags[INIT_HEAD_TAG] == "loaded"
    other, _ = _saved(tmp_path, "dpt_tiny_ade20k", features=16)  # another decoder width: not a starting point
    with pytest.raises(ValueError, match=r"^task.init_from: .*its backbone and decoder do not fit DPT: .*"
                                         r"fusion.0.out_conv.weight: file \(16, 16, 1, 1\) vs model \(32, 32"):
        _start(other)


def test_the_depth_tasks_load_the_whole_file(tmp_path):
    path, depth = _saved(tmp_path, "dpt_tiny")
    _, model, tags = _start(path, "dpt_tiny", "configs/quickstart.yaml")
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, depth[key], rtol=0, atol=0, msg=key)
    assert INIT_HEAD_TAG not in tags and tags[INIT_RUN_TAG] == "run42"
    segmentation, _ = _saved(tmp_path, "dpt_tiny_ade20k")  # no head swap for depth: the mismatch is named
    with pytest.raises(ValueError, match=r"^task.init_from: .*state dict does not fit DPT: missing keys"):
        _start(segmentation, "dpt_tiny", "configs/quickstart.yaml")
    run = load_config(TrainConfig, "configs/quickstart.yaml", ["task.init_from=runs/x"])
    assert run.task.init_from.startswith("/") and run.task.init_from.endswith("/runs/x")  # for Ray's workers
    with pytest.raises(ValueError, match=r"^task.init_from: .*nothing"):
        create_task(load_config(TrainConfig, TINY, [f"task.init_from={tmp_path}/nothing"]).task).check_inputs()
