"""``dpt predict`` throughput for DPT-Base at 384 on this machine, against transformers' ``pipeline("depth-estimation")``
with the same weights and the same image set, in one run (issue 19).

    PYTHONPATH=. python benchmarks/inference.py [--images 16] [--rounds 3] [--ray-actors 1 2]

- **Weights:** a random ``DPTForDepthEstimation`` of the DPT-Base config (``benchmarks.model.hf_dpt_base``), saved as
  ``model.safetensors``; ``dpt predict --model dpt_base`` loads that very file (training.model.load_checkpoint maps
  transformers' names), so both run the same network.
- **Images:** ``--images`` generated scenes, 512 x 512 JPEG, which both resize to 384 x 384, so both do the same
  FLOPs. Square, because transformers' ViT DPT only runs on square inputs: its reassemble stage takes the patch
  grid as the square root of the token count (``DPTReassembleStage``); ours keeps any aspect ratio.
- **What is timed:** images/s at the margin: ``dpt predict`` runs once on one image and once on all of them, as a
  user runs it (a child process: checkpoint load, decode, preprocess, model, resize back, PNG + colour PNG
  written), and the rate is ``(N - 1) / (t_N - t_1)``, which leaves out process start and model load. The
  transformers pipeline is built once, then timed on the same image paths (it decodes them itself), its depth PNG
  saved per image as a user would. Rounds alternate which goes first; medians are reported.
- **Where the time goes:** the stages of the one inference path timed one by one in this process on the same
  images: decode (``read_rgb``), preprocess (``prepare``), model (the task's ``infer``: forward and resize back),
  write (the task's ``encode`` and the files).
- ``--ray-actors``: ``dpt predict --engine ray --actors K`` on a local Ray instance for each K (the Ray Data path),
  with how busy its model actors were over the run on all images (the line ``dpt predict`` closes with:
  ``training.predict_ray.ActorClock``, the share of each actor's time inside the model, the rest waiting for input
  or for the writers).

Threads: torch uses every core in each setup (the default); nothing else should run.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SIZE = 384
IMAGE_SHAPE = (512, 512)  # H, W of the generated images: 384 x 384 after the resize


def write_images(folder: Path, count: int) -> list[Path]:
    """``count`` generated 512 x 512 scenes as JPEG (pipeline.demo's renderer)."""
    from PIL import Image

    from pipeline.demo import render_scene

    folder.mkdir(parents=True)
    paths = []
    for index in range(count):
        rgb, _ = render_scene(seed=index, height=IMAGE_SHAPE[0], width=IMAGE_SHAPE[1])
        path = folder / f"image-{index:04d}.jpg"
        Image.fromarray(rgb).save(path, quality=92)
        paths.append(path)
    return paths


def write_weights(path: Path):
    """A random DPT-Base in transformers' layout, saved as safetensors; returns the transformers model."""
    from safetensors.torch import save_file

    from benchmarks.model import hf_dpt_base

    torch.manual_seed(0)
    _, model = hf_dpt_base(SIZE)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return model.eval()


def dpt_predict_seconds(inputs: list[Path], weights: Path, out: Path, extra: list[str]) -> tuple[float, str]:
    """Wall seconds and standard output of one ``dpt predict`` child process over ``inputs`` (a user's command)."""
    command = [str(Path(sys.executable).with_name("dpt")), "predict", *map(str, inputs), "--checkpoint", str(weights),
               "--model", "dpt_base", "--out", str(out), "--device", "cpu", *extra]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=3600, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"dpt predict failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return seconds, done.stdout


def ours_rate(images: list[Path], weights: Path, tmp: Path, extra: list[str]) -> tuple[float, float | None]:
    """Images/s of ``dpt predict`` at the margin, (N - 1) / (t_N - t_1), and the busy share of the model actors
    over the run on all N (None in process). Each run writes into a new folder: the Ray engine resumes, and
    would skip images an earlier measurement wrote."""
    out = Path(tempfile.mkdtemp(prefix="out-", dir=tmp))
    one, _ = dpt_predict_seconds(images[:1], weights, out / "one", extra)
    folder = images[0].parent
    all_, stdout = dpt_predict_seconds([folder], weights, out / "all", extra)
    busy = re.search(r"model actors: busy ([0-9.]+)%", stdout)
    return (len(images) - 1) / (all_ - one), busy and float(busy.group(1))


def transformers_pipeline(model):
    from transformers import DPTImageProcessor, pipeline

    processor = DPTImageProcessor(size={"height": SIZE, "width": SIZE},
                                  keep_aspect_ratio=False, ensure_multiple_of=32, image_mean=[0.5] * 3,
                                  image_std=[0.5] * 3)
    return pipeline("depth-estimation", model=model, image_processor=processor, device="cpu")


def transformers_rate(pipe, images: list[Path], out: Path) -> tuple[float, None]:
    """Images/s of the transformers pipeline over the image paths, each result's depth PNG saved."""
    out.mkdir(exist_ok=True)
    pipe(str(images[0]))  # warm-up: the first call builds what the pipeline caches
    start = time.perf_counter()
    for path in images:
        pipe(str(path))["depth"].save(out / f"{path.stem}.png")
    return len(images) / (time.perf_counter() - start), None


def stage_shares(images: list[Path], weights: Path) -> dict[str, float]:
    """Seconds per image in decode, preprocess, model (forward + resize back) and write (encode + files), the one
    inference path's functions called one by one in this process."""
    from pipeline import storage
    from training.model import build_model, load_checkpoint
    from training.model.inference import prepare
    from training.predict_command import read_rgb
    from training.tasks import task_for_model

    model = load_checkpoint(build_model("dpt_base"), str(weights)).eval()
    task = task_for_model(model.config)
    spent = dict.fromkeys(("decode", "preprocess", "model", "write"), 0.0)
    with tempfile.TemporaryDirectory(prefix="dpt-bench-write-") as out:
        for index, path in enumerate(images):
            t0 = time.perf_counter()
            rgb = read_rgb(str(path))
            t1 = time.perf_counter()
            x = prepare(rgb, model.preprocess)
            t2 = time.perf_counter()
            (output,) = task.infer(model, x[None], [rgb.shape[:2]])
            t3 = time.perf_counter()
            for suffix, data in task.encode(output, "inferno", False).items():
                storage.write_bytes(os.path.join(out, f"{path.stem}{suffix}"), data)
            t4 = time.perf_counter()
            if index:  # the first image warms up
                for name, seconds in zip(spent, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                    spent[name] += seconds
    return {name: seconds / (len(images) - 1) for name, seconds in spent.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ray-actors", type=int, nargs="*", default=[],
                        help="also time `dpt predict --engine ray --actors K` for each K")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    print(f"machine: {platform.node()}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="dpt-bench-inference-") as name:
        tmp = Path(name)
        images = write_images(tmp / "images", args.images)
        weights = tmp / "model.safetensors"
        pipe = transformers_pipeline(write_weights(weights))
        setups = {"dpt predict (in process)": lambda: ours_rate(images, weights, tmp, ["--engine", "local"]),
                  "transformers pipeline": lambda: transformers_rate(pipe, images, tmp / "out-hf")}
        for actors in args.ray_actors:
            setups[f"dpt predict (Ray Data, {actors} actor{'s' if actors > 1 else ''})"] = (
                lambda k=actors: ours_rate(images, weights, tmp, ["--engine", "ray", "--actors", str(k)]))
        rates: dict[str, list[float]] = {name: [] for name in setups}
        busy: dict[str, list[float]] = {name: [] for name in setups}
        for round_ in range(args.rounds):
            order = list(setups) if round_ % 2 == 0 else list(reversed(setups))
            for name in order:
                rate, share = setups[name]()
                rates[name].append(rate)
                busy[name] += [] if share is None else [share]
                actors = "" if share is None else f", model actors busy {share:.1f}%"
                print(f"round {round_ + 1} {name:<36} {rate:6.3f} images/s{actors}", flush=True)
        shares = stage_shares(images, weights)
    print(f"load average at end {os.getloadavg()[0]:.1f}")
    base = statistics.median(rates["transformers pipeline"])
    for name, values in rates.items():
        median = statistics.median(values)
        actors = f", model actors busy {statistics.median(busy[name]):.1f}%" if busy[name] else ""
        print(f"{name:<36} median {median:6.3f} images/s ({median / base:.2f}x transformers){actors}")
    total = sum(shares.values())
    print("time per image in process: " + ", ".join(f"{name} {1000 * s:.0f} ms ({100 * s / total:.0f}%)"
                                                   for name, s in shares.items()))


if __name__ == "__main__":
    main()
