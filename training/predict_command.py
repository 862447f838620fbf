"""``dpt predict IMAGE_OR_DIR... --checkpoint PATH_OR_URI --out DIR``: the task's output for images.

The task (``--task``, by default the checkpoint's: ``training.tasks.task_for_model``, its head and whether it has
an output transform to metres) runs the model and encodes its output. For relative depth, each image ``<name>`` gives ``<name>.png`` (16-bit PNG:
disparity scaled per image to 0..65535), ``<name>.color.png`` (a colour map a person can look at: near is bright)
and, with ``--npy``, ``<name>.npy`` (float32 disparity at the input resolution); for segmentation ``<name>.png``
(8-bit class ids) and ``<name>.color.png`` (a colour label map, one fixed colour per class); see each task's
``encode``; for metric depth ``<name>.png`` (16-bit, millimetres), ``<name>.npy`` (float32 metres) and
``<name>.color.png`` (with a colour bar in metres). Directories are searched recursively and their structure is kept under ``--out``.
``--checkpoint`` is a checkpoint directory as ``dpt train`` prints it or a model file.

Before the model loads, every input is checked (:func:`check_inputs`): each IMAGE_OR_DIR exists (a directory holds
images), the checkpoint is there and of a kind that loads, ``--out`` can be written; a bad one is one line naming
it and exit code 1, nothing written. A file that is not a readable image is reported (file and reason) and
skipped; the last line says how many images were written, and the exit code is 1 when any was skipped (or none
written). Inputs and outputs may be local or s3:// (pipeline.storage); writes are atomic.
"""

from __future__ import annotations

import argparse
import io
import sys
from collections import defaultdict
from pathlib import PurePosixPath

import numpy as np

from training.tasks import TASKS

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".tif", ".tiff", ".webp")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="images or directories (local or s3://)")
    parser.add_argument("--checkpoint", required=True,
                        help="checkpoint: a directory as `dpt train` prints it, or a model file (local or s3://)")
    parser.add_argument("--model", default=None,
                        help="variant name for foreign checkpoints (official DPT/MiDaS .pt, transformers); "
                             "this project's checkpoints carry their config and need no --model")
    parser.add_argument("--out", required=True, help="output directory (local or s3://)")
    parser.add_argument("--batch-size", type=int, default=1, help="images per forward pass (default 1)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--size", type=int, default=None, help="longer side fed to the model (default: the variant's)")
    parser.add_argument("--npy", action="store_true", help="also write the float32 disparity as .npy")
    parser.add_argument("--colormap", default="inferno", help="matplotlib colormap (default inferno)")
    parser.add_argument("--task", choices=("auto", *TASKS), default="auto",
                        help="what to write: depth maps or class label maps (default: the task of the checkpoint's "
                             "head)")


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
        if not images and storage.is_s3(item):
            problems.append((item, "no such object, nor images under it"))
        elif not images:
            reason = "a directory without images" if os.path.isdir(item) else "no such file or directory"
            problems.append((item, reason))
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
    """uint8 ``[H, W, 3]``; a file that is not a readable image raises ``ValueError`` saying why (PIL's own
    message would show the in-memory buffer's repr, not the file)."""
    from PIL import Image, UnidentifiedImageError

    from pipeline import storage

    data = storage.read_bytes(url)
    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"))
    except UnidentifiedImageError:
        raise ValueError("not an image (cannot identify image file)") from None
    except (OSError, ValueError, SyntaxError) as exc:  # truncated or corrupt data: PIL says what is wrong
        raise ValueError(f"unreadable image ({exc})") from None


def check_output(url: str, option: str, is_file: bool = False) -> None:
    """Fail now, writing nothing, unless ``url`` (a directory, or a file with ``is_file``) can be written: on S3
    the bucket lists with these credentials; locally the nearest existing folder above it is writable."""
    import os

    from pipeline import storage

    if storage.is_s3(url):
        try:
            storage.list_files(url)  # under the output itself: small; no bucket, bad credentials: raises
        except (OSError, RuntimeError) as exc:
            raise ValueError(f"{option} {url}: cannot be written ({exc})") from None
        return
    if os.path.isdir(url) and is_file:
        raise ValueError(f"{option} {url}: is a directory; give the file to write")
    if os.path.exists(url) and not (is_file or os.path.isdir(url)):
        raise ValueError(f"{option} {url}: exists and is not a directory")
    path = os.path.dirname(os.path.abspath(url)) if is_file else os.path.abspath(url)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    if not os.path.isdir(path):
        raise ValueError(f"{option} {url}: {path} is a file, not a directory")
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {url}: {path} is not writable")


def _device(choice: str) -> str:
    import torch

    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    return choice


def _load(args: argparse.Namespace):
    from training.model import build_model, load_checkpoint, load_model

    model = load_model(args.checkpoint) if args.model is None else load_checkpoint(build_model(args.model),
                                                                                   args.checkpoint)
    return model.eval().to(_device(args.device))


def check_inputs(args: argparse.Namespace) -> list[tuple[str, str]]:
    """Fail now, before the model loads and writing nothing, on any bad option or input; returns the images
    found (``find_images``)."""
    import matplotlib

    from training.model.checkpoint import check_checkpoint

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.size is not None and args.size < 32:
        raise ValueError(f"--size must be at least 32, got {args.size}")
    if args.colormap not in matplotlib.colormaps:
        raise ValueError(f"--colormap {args.colormap!r}: not a matplotlib colormap (e.g. inferno, magma, viridis)")
    _device(args.device)
    check_checkpoint(args.checkpoint, args.model)
    found, missing = find_images(args.inputs)
    if missing:
        item, reason = missing[0]
        raise FileNotFoundError(f"IMAGE_OR_DIR {item}: {reason}")
    check_output(args.out, "--out")
    return found


def _write(out: str, stem: str, files: dict[str, bytes]) -> None:
    from pipeline import storage

    for suffix, data in files.items():
        storage.write_bytes(storage.join(out, f"{stem}{suffix}"), data)


def run(args: argparse.Namespace) -> int:
    import dataclasses

    import torch

    from pipeline.progress import progress
    from training.model.checkpoint_ref import resolve_checkpoint
    from training.model.inference import prepare
    from training.tasks import get_task, task_for_model

    args.checkpoint = resolve_checkpoint(args.checkpoint)  # models:/..., runs:/... -> a local checkpoint directory
    found = check_inputs(args)
    model = _load(args)
    task = task_for_model(model.config) if args.task == "auto" else get_task(args.task)
    preprocess = model.preprocess if args.size is None else dataclasses.replace(model.preprocess, size=args.size)
    pending: dict[tuple[int, int], list] = defaultdict(list)  # batches hold images of one prepared size
    problems: list[tuple[str, str]] = []
    written = 0

    def flush(shape: tuple[int, int]) -> None:
        nonlocal written
        items = pending.pop(shape, [])
        if items:
            batch = torch.stack([x for _, x, _ in items])
            for (stem, _, _), output in zip(items, task.infer(model, batch, [s for _, _, s in items])):
                _write(args.out, stem, task.encode(output, args.colormap, args.npy))
                written += 1

    for url, stem in progress(_unique_stems(found), desc="dpt predict", unit="image"):
        try:
            rgb = read_rgb(url)
        except Exception as exc:  # PIL raises many types for broken files; storage its own: report and go on
            problems.append((url, str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"))
            continue
        x = prepare(rgb, preprocess)
        shape = tuple(x.shape[1:])
        pending[shape].append((stem, x, rgb.shape[:2]))
        if len(pending[shape]) >= args.batch_size:
            flush(shape)
    for shape in list(pending):
        flush(shape)
    for item, reason in problems:
        print(f"skipped {item}: {reason}", file=sys.stderr)
    if not written:
        print(f"nothing written: none of the {len(found)} image(s) could be read", file=sys.stderr)
        return 1
    print(f"wrote {written} of {len(found)} images to {args.out}")
    return 1 if problems else 0
