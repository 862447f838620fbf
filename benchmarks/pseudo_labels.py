"""Does the teacher-student loop help? configs/pipeline_pseudo_label.yaml over several seeds (issue 19).

    PYTHONPATH=. python benchmarks/pseudo_labels.py [--seeds 0 1 2] [--workdir /tmp/pseudo_labels] [--held-out 96]

- **What runs:** for each seed, ``dpt pipeline run --config configs/pipeline_pseudo_label.yaml`` as a user runs
  it (a child process, its own workdir and SQLite store), with ``schedule.seed`` and ``data.stream.seed`` added to
  every training step's overrides: a DPT-Small teacher trained on the labeled images (HR-WSI's generated train split) labels the
  unlabeled ones, then the same DPT-Tiny trains twice for the same steps, on labeled + pseudo-labeled images
  (``student``) and on the labeled images alone (``labeled_only``). The seed sets each run's initialisation, data
  order and augmentation; the images are the same across seeds.
- **Held-out loss:** the SSI loss (``ssitrim``, the training loss) of each final checkpoint on ``--held-out``
  generated scenes that no run saw (seeds of their own), through the training's validation path (centred crops at
  the training's 64 pixels); beside it the untrained DPT-Tiny and a constant prediction, as the scale of "learned".
  Also from MLflow: the zero-shot TUM and KITTI δ>1.25 (%) that ``dpt eval`` logged for each (12 generated
  images each, at 64 pixels: a coarse second opinion).
- **Claim:** ``student`` < ``labeled_only`` on the held-out loss, for every seed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "configs/pipeline_pseudo_label.yaml"
HELD_OUT_SEED = 3_000_000  # beyond every seed the pipeline's sample data uses (pipeline.sample_data)
RUNS = ("teacher", "student", "labeled_only")


def seeded_overrides(seed: int, workdir: Path) -> list[str]:
    """The shipped pipeline with the seed after each training step's own overrides (lists are set whole)."""
    shipped = yaml.safe_load((ROOT / CONFIG).read_text())
    seeds = [f"schedule.seed={seed}", f"data.stream.seed={seed}"]
    students = [{**s, "overrides": [*s["overrides"], *seeds]} for s in shipped["students"]]
    return [f"workdir={workdir}", f"train.overrides={json.dumps([*shipped['train']['overrides'], *seeds])}",
            f"students={json.dumps(students)}"]


def held_out_loss(model: torch.nn.Module, prefix: Path, size: int) -> float:
    """Mean ``ssitrim`` per valid pixel over the held-out scenes, as the training validates."""
    from training import augment
    from training.data import DataConfig, ShardsConfig, validation_batches
    from training.tasks.relative_depth import RelativeDepthTask

    config = DataConfig(shards=ShardsConfig(str(prefix), ["heldout"]), geometric=augment.GeometricConfig(size=size))
    model.eval()
    with torch.no_grad():
        sums = RelativeDepthTask().validation_sums(model, validation_batches(config, "heldout", "val", 0, 1),
                                                   torch.device("cpu"))
    return float(sums["ssitrim"] / sums["pixels"])


def run_seed(seed: int, workdir: Path) -> tuple[dict[str, str], float]:
    """One pipeline run; ``({run: checkpoint}, seconds)``."""
    from pipeline.checkpoint_layout import latest_checkpoint

    env = {**os.environ, "MLFLOW_TRACKING_URI": "", "MLFLOW_DISABLE_TELEMETRY": "true", "RAY_ADDRESS": ""}
    started = time.monotonic()
    with open(workdir.with_suffix(".log"), "w") as log:
        subprocess.run([sys.executable, "-m", "pipeline.cli", "pipeline", "run", "--config", CONFIG,
                        *seeded_overrides(seed, workdir)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                       check=True)
    seconds = time.monotonic() - started
    name = yaml.safe_load((ROOT / CONFIG).read_text())["name"]
    train = workdir / "train"
    return ({"teacher": latest_checkpoint(str(train / name)), "student": latest_checkpoint(str(train / f"{name}-student")),
             "labeled_only": latest_checkpoint(str(train / f"{name}-labeled_only"))}, seconds)


ZERO_SHOT = ("tum", "kitti")


def zero_shot_delta(workdir: Path) -> dict[str, tuple[float, ...]]:
    """``{run: (TUM, KITTI δ>1.25 %)}`` of the teacher's and the students' evaluations, from the parent run."""
    from mlflow import MlflowClient

    state = json.loads((workdir / "pipeline_state.json").read_text())
    metrics = MlflowClient(state["tracking_uri"]).get_run(state["runs"]["pipeline"]).data.metrics
    prefix = {"teacher": "", "student": "student/", "labeled_only": "labeled_only/"}
    return {run: tuple(metrics[f"{prefix[run]}zero_shot/{b}_delta_gt_1.25"] for b in ZERO_SHOT) for run in RUNS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/pseudo_labels"))
    parser.add_argument("--held-out", type=int, default=96, help="held-out scenes (default 96)")
    args = parser.parse_args()
    from tests.helpers.training_corpus import ConstantDisparity, write_source
    from training.model import build_model
    from training.model.checkpoint import load_model

    args.workdir.mkdir(parents=True, exist_ok=True)
    held_out = args.workdir / "heldout"
    if not (held_out / "heldout" / "val" / "manifest.parquet").exists():  # scenes of seeds no run saw
        write_source(str(held_out), "heldout", args.held_out, per_shard=args.held_out, split="val", offset=HELD_OUT_SEED)
    size = 64  # the pipeline's data.geometric.size
    torch.manual_seed(0)
    baselines = {"untrained dpt_tiny": held_out_loss(build_model("dpt_tiny"), held_out, size),
                 "constant": held_out_loss(ConstantDisparity(), held_out, size)}
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")
    print("baselines: " + ", ".join(f"{k} {v:.4f}" for k, v in baselines.items()))
    rows = []
    for seed in args.seeds:
        workdir = args.workdir / f"seed{seed}"
        checkpoints, seconds = run_seed(seed, workdir)
        losses = {run: held_out_loss(load_model(checkpoints[run]), held_out, size) for run in RUNS}
        delta = zero_shot_delta(workdir)
        rows.append((seed, losses, delta, seconds))
        print(f"seed {seed}: held-out ssitrim " + ", ".join(f"{r} {losses[r]:.4f}" for r in RUNS)
              + "; TUM, KITTI δ>1.25 " + ", ".join(f"{r} {delta[r][0]:.1f}, {delta[r][1]:.1f}" for r in RUNS)
              + f" ({seconds:.0f} s)", flush=True)

    print("\n| seed | teacher (DPT-Small) | student: labeled + pseudo | labeled only | student / labeled only |"
          " TUM, KITTI δ>1.25 (%): teacher; student; labeled only |")
    print("|---:|---:|---:|---:|---:|---|")
    for seed, losses, delta, _ in rows:
        print(f"| {seed} | {losses['teacher']:.4f} | {losses['student']:.4f} | {losses['labeled_only']:.4f} | "
              f"{losses['student'] / losses['labeled_only']:.3f} | "
              + "; ".join(f"{delta[r][0]:.1f}, {delta[r][1]:.1f}" for r in RUNS) + " |")
    ratios = [losses["student"] / losses["labeled_only"] for _, losses, _, _ in rows]
    wins = sum(r < 1 for r in ratios)
    print(f"\nstudent better than labeled only in {wins} of {len(rows)} seeds; median ratio "
          f"{statistics.median(ratios):.3f}; each pipeline {statistics.median(r[3] for r in rows):.0f} s (median)")


if __name__ == "__main__":
    main()
