"""``dpt predict IMAGE_OR_DIR... --checkpoint PATH_OR_URI --out DIR``: relative inverse depth for images.

For each image ``<name>`` it writes ``<name>.png`` (16-bit PNG: disparity scaled per image to 0..65535),
``<name>.color.png`` (a colour map a person can look at: near is bright) and, with ``--npy``, ``<name>.npy``
(float32 disparity at the input resolution). Directories are searched recursively and their structure is
kept under ``--out``. Unreadable images are reported (file and reason) and skipped; the exit code is 1 when any
image was skipped. Inputs and outputs may be local or s3:// (pipeline.storage); writes are atomic.

``--task segmentation`` (the default for a segmentation checkpoint) writes ``<name>.png`` (8-bit class ids) and
``<name>.color.png`` (a colour label map, one fixed colour per class; ``training.segmentation_predict``).
"""

from __future__ import annotations

import argparse
import io
import sys
from collections import defaultdict
from pathlib import PurePosixPath

import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".tif", ".tiff", ".webp")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="images or directories (local or s3://)")
    parser.add_argument("--checkpoint", required=True, help="checkpoint file (local or s3://)")
    parser.add_argument("--model", default=None,
                        help="variant name for foreign checkpoints (official DPT/MiDaS .pt, transformers); "
                             "this project's checkpoints carry their config and need no --model")
    parser.add_argument("--out", required=True, help="output directory (local or s3://)")
    parser.add_argument("--batch-size", type=int, default=1, help="images per forward pass (default 1)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--size", type=int, default=None, help="longer side fed to the model (default: the variant's)")
    parser.add_argument("--npy", action="store_true", help="also write the float32 disparity as .npy")
    parser.add_argument("--colormap", default="inferno", help="matplotlib colormap (default inferno)")
    parser.add_argument("--task", choices=("auto", "depth", "segmentation"), default="auto",
                        help="depth maps or class label maps (default: what the checkpoint's head predicts)")


def find_images(inputs: list[str]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """``([(url, output stem)], [(input, reason)])``: files as given, directories searched recursively for
    files with an image suffix (their relative path, without suffix, becomes the output stem)."""
    import os

    from pipeline import storage

    found, problems = [], []
    for item in inputs:
        is_file = storage.exists(item) if storage.is_s3(item) else os.path.isfile(item)
        if is_file:
            found.append((item, PurePosixPath(storage.basename(item)).stem))
            continue
        base = item.rstrip("/")
        images = [u for u in storage.list_files(item) if u.lower().endswith(IMAGE_SUFFIXES)]
        if not images:
            problems.append((item, "no such file, or a directory without images"))
        for url in images:
            found.append((url, str(PurePosixPath(url[len(base) + 1:]).with_suffix(""))))
    return found, problems


def _unique_stems(found: list[tuple[str, str]]) -> list[tuple[str, str]]:
    seen: dict[str, int] = defaultdict(int)
    out = []
    for url, stem in found:
        seen[stem] += 1
        out.append((url, stem if seen[stem] == 1 else f"{stem}-{seen[stem]}"))
    return out


def read_rgb(url: str) -> np.ndarray:
    from PIL import Image

    from pipeline import storage

    with Image.open(io.BytesIO(storage.read_bytes(url))) as image:
        return np.asarray(image.convert("RGB"))


def encode_outputs(disparity: np.ndarray, colormap: str) -> tuple[bytes, bytes]:
    """``(16-bit PNG bytes, colour PNG bytes)`` of one ``[H, W]`` disparity map (min-max scaled per image)."""
    import matplotlib
    from PIL import Image

    low, high = float(disparity.min()), float(disparity.max())
    unit = (disparity - low) / (high - low) if high > low else np.zeros_like(disparity)
    gray, color = io.BytesIO(), io.BytesIO()
    Image.fromarray(np.round(unit * 65535).astype(np.uint16)).save(gray, format="PNG")
    rgb = (matplotlib.colormaps[colormap](unit)[..., :3] * 255).round().astype(np.uint8)
    Image.fromarray(rgb).save(color, format="PNG")
    return gray.getvalue(), color.getvalue()


def _load(args: argparse.Namespace):
    import torch

    from training.model import build_model, load_checkpoint, load_model

    model = load_model(args.checkpoint) if args.model is None else load_checkpoint(build_model(args.model),
                                                                                   args.checkpoint)
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: no CUDA device is available")
    return model.eval().to(device)


def _write(out: str, stem: str, disparity: np.ndarray, args: argparse.Namespace) -> None:
    from pipeline import storage

    if args.task == "segmentation":
        from training.segmentation_predict import encode_segmentation

        ids, colour = encode_segmentation(disparity)  # here: the label map
        storage.write_bytes(storage.join(out, f"{stem}.png"), ids)
        storage.write_bytes(storage.join(out, f"{stem}.color.png"), colour)
        return
    gray, color = encode_outputs(disparity, args.colormap)
    storage.write_bytes(storage.join(out, f"{stem}.png"), gray)
    storage.write_bytes(storage.join(out, f"{stem}.color.png"), color)
    if args.npy:
        buffer = io.BytesIO()
        np.save(buffer, disparity.astype(np.float32))
        storage.write_bytes(storage.join(out, f"{stem}.npy"), buffer.getvalue())


def run(args: argparse.Namespace) -> int:
    import dataclasses

    import torch

    from pipeline.progress import progress
    from training.model.inference import predict, prepare

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    found, problems = find_images(args.inputs)
    model = _load(args)
    if args.task == "auto":
        args.task = "segmentation" if getattr(model.config, "head", "depth") == "segmentation" else "depth"
    infer = predict
    if args.task == "segmentation":
        from training.segmentation_predict import segment as infer  # same interface; class ids, not disparity
    preprocess = model.preprocess if args.size is None else dataclasses.replace(model.preprocess, size=args.size)
    pending: dict[tuple[int, int], list] = defaultdict(list)  # batches hold images of one prepared size

    def flush(shape: tuple[int, int]) -> None:
        items = pending.pop(shape, [])
        if items:
            batch = torch.stack([x for _, x, _ in items])
            for (stem, _, size), disparity in zip(items, infer(model, batch, [s for _, _, s in items])):
                _write(args.out, stem, disparity, args)

    done = 0
    for url, stem in progress(_unique_stems(found), desc="dpt predict", unit="image"):
        try:
            rgb = read_rgb(url)
        except Exception as exc:  # PIL raises many types for broken files: report and go on
            problems.append((url, f"unreadable image: {type(exc).__name__}: {exc}"))
            continue
        x = prepare(rgb, preprocess)
        shape = tuple(x.shape[1:])
        pending[shape].append((stem, x, rgb.shape[:2]))
        done += 1
        if len(pending[shape]) >= args.batch_size:
            flush(shape)
    for shape in list(pending):
        flush(shape)
    for item, reason in problems:
        print(f"skipped {item}: {reason}", file=sys.stderr)
    print(f"wrote predictions for {done} image(s) to {args.out}; skipped {len(problems)}")
    return 1 if problems else 0
