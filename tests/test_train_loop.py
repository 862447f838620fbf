"""The task and loop layers without Ray: two learning rates, schedule, a learning step, exact resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.demo import render_scene
from tests.helpers.training_corpus import TinyDepthNet
from training.optim import OptimConfig, build_optimizer, build_scheduler, lr_factor
from training.step import train_step
from training.tasks.relative_depth import LossConfig, RelativeDepthConfig, RelativeDepthTask
from training.train_state import load_train_state, save_train_state


def _batch(n=4, size=24, sources=("a", "b")):
    images, disps, masks = [], [], []
    for i in range(n):
        rgb, depth = render_scene(i, size, size)
        images.append(torch.from_numpy(rgb).permute(2, 0, 1).float() / 127.5 - 1)
        disps.append(torch.from_numpy(1 / depth)[None])
        masks.append(torch.from_numpy(depth < 80)[None])
    return {"image": torch.stack(images), "disparity": torch.stack(disps), "mask": torch.stack(masks),
            "source": [sources[i % len(sources)] for i in range(n)], "key": [str(i) for i in range(n)]}


def test_two_learning_rates_and_schedule():
    model = TinyDepthNet()
    config = OptimConfig(lr_backbone=1e-5, lr_decoder=1e-4, warmup_steps=4, decay="cosine", min_lr_ratio=0.1)
    optimizer = build_optimizer(model, config)
    assert [g["lr"] for g in optimizer.param_groups] == [1e-5, 1e-4]
    assert sum(p.numel() for p in optimizer.param_groups[0]["params"]) == sum(
        p.numel() for p in model.backbone.parameters())
    assert [lr_factor(s, 14, config) for s in (0, 3)] == [0.25, 1.0]
    assert lr_factor(9, 14, config) == pytest.approx(0.1 + 0.9 * 0.5)  # halfway through the decay
    assert lr_factor(14, 14, config) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="encoder"):
        build_optimizer(model, OptimConfig(backbone_prefix="encoder"))


@pytest.mark.parametrize("mixing", ["mean", "pareto"])
def test_steps_lower_the_loss(mixing):
    torch.manual_seed(0)
    model = TinyDepthNet()
    config = OptimConfig(lr_backbone=1e-2, lr_decoder=1e-2)
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config, 60)
    task = RelativeDepthTask(RelativeDepthConfig(loss=LossConfig("ssitrim"), mixing=mixing), ["a", "b"])
    batch = _batch()
    logs = [train_step(model, task, optimizer, scheduler, batch, config) for _ in range(60)]
    assert logs[-1]["loss/loss"] < 0.5 * logs[0]["loss/loss"]
    if mixing == "pareto":
        assert sum(logs[-1][f"pareto_weight/{s}"] for s in "ab") == pytest.approx(1.0)


def test_checkpoint_state_resumes_exactly(tmp_path):
    config = OptimConfig(lr_backbone=1e-3, lr_decoder=1e-3, warmup_steps=3)
    task = RelativeDepthTask(RelativeDepthConfig(), ["a", "b"])
    batch = _batch()

    def fresh():
        torch.manual_seed(1)
        model = TinyDepthNet()
        optimizer = build_optimizer(model, config)
        return model, optimizer, build_scheduler(optimizer, config, 10)

    model, optimizer, scheduler = fresh()
    for _ in range(2):
        train_step(model, task, optimizer, scheduler, batch, config)
    save_train_state(str(tmp_path), model, optimizer, scheduler, {"step": 2})
    straight = [train_step(model, task, optimizer, scheduler, batch, config)["loss/loss"] for _ in range(2)]

    model, optimizer, scheduler = fresh()
    assert load_train_state(str(tmp_path), model, optimizer, scheduler) == {"step": 2}
    resumed = [train_step(model, task, optimizer, scheduler, batch, config)["loss/loss"] for _ in range(2)]
    assert resumed == straight


def test_validation_sums_are_pixel_weighted():
    model = TinyDepthNet()
    batch = _batch(n=3)
    task = RelativeDepthTask()
    sums = task.validation_sums(model, [batch], torch.device("cpu"))
    halves = task.validation_sums(model, [{k: v[:1] for k, v in batch.items()},
                                          {k: v[1:] for k, v in batch.items()}], torch.device("cpu"))
    assert sums["pixels"] == batch["mask"].sum()
    assert sorted(sums) == sorted(halves) and all(np.allclose(sums[k].numpy(), halves[k].numpy()) for k in sums)
