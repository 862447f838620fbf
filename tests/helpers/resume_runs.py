"""One rank of training as train.py's loop runs it, without Ray, on a two-source corpus with a curriculum: for
the tests of exact resume (tests/test_train_resume.py, tests/test_train_bad_shards.py)."""

from __future__ import annotations

import hashlib

import torch

from pipeline.config import from_dict
from tests.helpers.training_corpus import TinyDepthNet
from training.config import TrainConfig
from training.curriculum import data_phases, start_position
from training.optim import build_optimizer, build_scheduler
from training.step import train_step
from training.tasks import create_task
from training.train_state import load_train_state, save_train_state

STEPS = 12


def resume_config(prefix: str, workers: int = 2, **data) -> TrainConfig:
    return from_dict(TrainConfig, {
        "data": {"shards": {"prefix": prefix, "sources": ["alpha", "beta"]}, "weights": {"alpha": 2.0, "beta": 1.0},
                 "loader": {"batch_size": 2, "workers": workers, "prefetch": 3}, "geometric": {"size": 16},
                 "photometric": {"brightness": 0.3, "contrast": 0.3}, "stream": {"shuffle": 3, "seed": 5}, **data},
        "curriculum": [{"steps": 3, "sources": ["beta"]}],  # beta alone first, then both
        "optim": {"lr_backbone": 1e-3, "lr_decoder": 1e-3},
        "schedule": {"steps": STEPS},
    })


def batch_digest(batch: dict) -> str:
    tensors = (batch["image"], batch["disparity"], batch["mask"])
    return hashlib.sha256(b"".join(t.contiguous().numpy().tobytes() for t in tensors)).hexdigest()[:16]


def run_steps(config: TrainConfig, directory: str, rank: int = 0, world: int = 1, until: int = STEPS,
         resume: bool = False) -> tuple[dict[int, tuple], str]:
    """What train.py's loop does on one rank, without Ray: ``{step: (keys, digest, loss)}`` and how data resumed.

    Stops after step ``until`` with a checkpoint in ``directory``; ``resume``: start from that checkpoint."""
    torch.manual_seed(3 if resume else 0)  # a resumed model must get everything from the checkpoint
    model = TinyDepthNet()
    optimizer = build_optimizer(model, config.optim)
    scheduler = build_scheduler(optimizer, config.optim, config.schedule.steps)
    step, saved = 0, None
    if resume:
        meta = load_train_state(directory, model, optimizer, scheduler)
        step, saved = meta["step"], meta.get("data_position")
    position, how = start_position(config, world, step, saved)
    task, records = create_task(config.task, config.data.shards.sources), {}
    for phase in data_phases(config, rank, world, step, position):
        while step < min(phase.end, until):
            batch = phase.next_batch()
            loss = train_step(model, task, optimizer, scheduler, batch, config.optim)["loss/loss"]
            step += 1
            records[step] = (tuple(batch["key"]), batch_digest(batch), loss)
        if step == until:
            save_train_state(directory, model, optimizer, scheduler,
                             {"step": step, "data_position": phase.position.to_dict()})
            break
    return records, how
