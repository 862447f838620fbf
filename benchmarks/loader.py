"""Samples/s that the training loader delivers per worker at 384, against a plain per-file PyTorch Dataset over
the same images in their original files, and against what one training step consumes.

    PYTHONPATH=. python benchmarks/loader.py [--samples 48] [--batches 12] [--model dpt_base] [--device cpu]

Both loaders do the same work per sample (decode RGB PNG, disparity .npy, mask PNG; the paper's
augmentation at 384; normalisation) with one DataLoader worker, so the difference is the reading path:
sequential tar shards streamed by the shard reader (pipeline.shards, sha256 checked as they stream) versus
three small files opened per sample.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from pipeline.demo import demo_samples
from pipeline.manifest import write_manifest
from pipeline.shards import ShardWriter, shard_dir, shard_url
from training import augment
from training.data import DataConfig, LoaderConfig, ShardsConfig, StreamConfig, make_loader
from training.stages import collate


def write_corpus(root: str, count: int, per_shard: int = 16) -> str:
    """The same scenes twice: as shards under ``root/shards`` and as original files under ``root/files``."""
    samples = demo_samples(count, source="bench")
    files = os.path.join(root, "files")
    os.makedirs(files)
    infos = []
    for index, start in enumerate(range(0, count, per_shard)):
        with ShardWriter(shard_url(os.path.join(root, "shards"), "bench", "train", index)) as writer:
            for s in samples[start:start + per_shard]:
                writer.write(s)
                Image.fromarray(s.rgb).save(os.path.join(files, f"{s.key}.rgb.png"))
                Image.fromarray(s.mask.astype(np.uint8) * 255).save(os.path.join(files, f"{s.key}.mask.png"))
                np.save(os.path.join(files, f"{s.key}.disp.npy"), s.disparity)
        infos.append(writer.info)
    write_manifest(shard_dir(os.path.join(root, "shards"), "bench", "train"), infos)
    return files


class PerFileDataset(Dataset):
    """The peer: a map-style Dataset opening each sample's original files, same augmentation."""

    def __init__(self, directory: str, size: int):
        self.directory, self.size = directory, size
        self.keys = sorted({name.split(".")[0] for name in os.listdir(directory)})

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int) -> dict:
        key = self.keys[index]
        path = os.path.join(self.directory, key)
        rgb = np.asarray(Image.open(f"{path}.rgb.png").convert("RGB"))
        mask = np.asarray(Image.open(f"{path}.mask.png")) == 255
        disparity = np.load(f"{path}.disp.npy")
        rng = np.random.default_rng(index)
        image, disp, valid = augment.to_tensors(rgb, disparity, mask)
        image, disp, valid, frame = augment.geometric(image, disp, valid, augment.GeometricConfig(self.size), rng)
        image = augment.normalize(image, frame, augment.NormalizeConfig())
        return {"image": image, "disparity": disp[None], "mask": valid[None], "source": "bench", "key": key}


def rate(batches, count: int, batch_size: int) -> float:
    """Samples/s over ``count`` batches after one warm-up batch (worker start-up excluded)."""
    iterator = iter(batches)
    next(iterator)
    start = time.perf_counter()
    for _ in range(count):
        next(iterator)
    return count * batch_size / (time.perf_counter() - start)


def step_rate(model_name: str, device: str, size: int, batch_size: int, steps: int = 3) -> float:
    """Samples/s that training steps of ``model_name`` consume (forward, SSI loss, backward, Adam)."""
    from training.optim import OptimConfig, build_optimizer, build_scheduler
    from training.step import train_step
    from training.model import build_model
    from training.tasks.relative_depth import RelativeDepthTask

    model = build_model(model_name).to(device)
    optim = OptimConfig()
    optimizer = build_optimizer(model, optim)
    scheduler = build_scheduler(optimizer, optim, steps + 1)
    task = RelativeDepthTask(sources=["bench"])
    batch = {"image": torch.randn(batch_size, 3, size, size, device=device),
             "disparity": torch.rand(batch_size, 1, size, size, device=device),
             "mask": torch.ones(batch_size, 1, size, size, dtype=torch.bool, device=device),
             "source": ["bench"] * batch_size, "key": [str(i) for i in range(batch_size)]}
    train_step(model, task, optimizer, scheduler, batch, optim, bf16=True)
    start = time.perf_counter()
    for _ in range(steps):
        train_step(model, task, optimizer, scheduler, batch, optim, bf16=True)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return steps * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=48)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--model", default="dpt_base")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dpt-loader-bench-") as root:
        files = write_corpus(root, args.samples)
        config = DataConfig(shards=ShardsConfig(os.path.join(root, "shards"), ["bench"]),
                            geometric=augment.GeometricConfig(args.size), stream=StreamConfig(shuffle=16),
                            loader=LoaderConfig(batch_size=args.batch_size, workers=1, prefetch=4))
        ours = rate(make_loader(config), args.batches, args.batch_size)
        peer_loader = DataLoader(PerFileDataset(files, args.size), batch_size=args.batch_size, shuffle=True,
                                 num_workers=1, collate_fn=collate, prefetch_factor=4, persistent_workers=True)
        peer = rate(_forever(peer_loader), args.batches, args.batch_size)
    consumed = step_rate(args.model, args.device, args.size, args.batch_size)
    print(f"machine: {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"shard loader (tar shards, 1 worker, {args.size}px): {ours:.1f} samples/s")
    print(f"per-file Dataset (1 worker, same work):       {peer:.1f} samples/s")
    print(f"{args.model} training step on {args.device} consumes: {consumed:.2f} samples/s "
          f"-> loader/step = {ours / consumed:.1f}x per loader worker")


def _forever(loader):
    while True:
        yield from loader


if __name__ == "__main__":
    main()
