"""Learning, not just running: a tiny DPT trained briefly on CPU on scenes with exact depth beats the
untrained model and a constant prediction on held-out scenes, by the SSI loss."""

from __future__ import annotations

import time

import pytest
import torch

from tests.helpers.training_corpus import ConstantDisparity, write_source
from training import augment
from training.data import DataConfig, LoaderConfig, ShardsConfig, StreamConfig, make_loader, validation_batches
from training.model import build_model
from training.optim import OptimConfig, build_optimizer, build_scheduler
from training.step import train_step
from training.tasks.relative_depth import LossConfig, RelativeDepthConfig, RelativeDepthTask


def _held_out_ssitrim(model, config: DataConfig) -> float:
    sums = RelativeDepthTask().validation_sums(model, validation_batches(config, "scenes", "val", 0, 1),
                                               torch.device("cpu"))
    return float(sums["ssitrim"] / sums["pixels"])


@pytest.mark.slow
@pytest.mark.timeout(1800)  # ~2 CPU-minutes of training; the shared 2-core VM under load needed up to 17 min
def test_tiny_dpt_learns_depth_on_held_out_scenes(tmp_path):
    prefix = str(tmp_path)
    write_source(prefix, "scenes", 64, per_shard=16)
    write_source(prefix, "scenes", 12, per_shard=12, split="val", offset=1000)
    config = DataConfig(shards=ShardsConfig(prefix, ["scenes"]), geometric=augment.GeometricConfig(size=64),
                        stream=StreamConfig(shuffle=32), loader=LoaderConfig(batch_size=4, workers=1))
    torch.manual_seed(0)
    model = build_model("dpt_tiny")
    untrained = _held_out_ssitrim(model, config)
    constant = _held_out_ssitrim(ConstantDisparity(), config)

    optim = OptimConfig(lr_backbone=3e-4, lr_decoder=1e-3, warmup_steps=10, decay="cosine", min_lr_ratio=0.1)
    steps = 150
    optimizer = build_optimizer(model, optim)
    scheduler = build_scheduler(optimizer, optim, steps)
    task = RelativeDepthTask(RelativeDepthConfig(loss=LossConfig("ssitrim")), ["scenes"])
    loader = make_loader(config)
    start = time.monotonic()
    for _ in range(steps):
        train_step(model, task, optimizer, scheduler, next(loader), optim)
    trained = _held_out_ssitrim(model, config)
    print(f"held-out ssitrim: untrained {untrained:.3f}, constant {constant:.3f}, trained {trained:.3f} "
          f"after {steps} steps in {time.monotonic() - start:.0f} s")
    # Measured on the 2-core development VM: untrained 0.414, constant 0.308, trained 0.094 (150 steps, 69 s).
    assert trained < 0.5 * untrained
    assert trained < 0.5 * constant
