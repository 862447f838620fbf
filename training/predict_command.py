"""``dpt predict IMAGE_OR_DIR... --checkpoint PATH_OR_URI --out DIR``: the task's output for images.

The task (``--task``, by default the checkpoint's: ``training.tasks.task_for_model``, its head and whether it has
an output transform to metres) runs the model and encodes its output. For relative depth, each image ``<name>`` gives ``<name>.png`` (16-bit PNG:
disparity scaled per image to 0..65535), ``<name>.color.png`` (a colour map a person can look at: near is bright)
and, with ``--npy``, ``<name>.npy`` (float32 disparity at the input resolution); for segmentation ``<name>.png``
(8-bit class ids) and ``<name>.color.png`` (a colour label map, one fixed colour per class); see each task's
``encode``; for metric depth ``<name>.png`` (16-bit, millimetres), ``<name>.npy`` (float32 metres) and
``<name>.color.png`` (with a colour bar in metres). Directories are searched recursively and their structure is kept under ``--out``.
``--checkpoint`` is a checkpoint directory as ``dpt train`` prints it, a model file, or an MLflow reference
(``models:/NAME/VERSION``, ``models:/NAME@ALIAS``, ``runs:/RUN_ID/PATH``).

Before the model loads, every input is checked (:func:`check_inputs`): each IMAGE_OR_DIR exists (a directory holds
images), the checkpoint is there and of a kind that loads, ``--out`` can be written; a bad one is one line naming
it and exit code 1, nothing written. A file that is not a readable image is reported (file and reason) and
skipped; the last line says how many images were written, and the exit code is 1 when any was skipped (or none
written). Inputs and outputs may be local or s3:// (pipeline.storage); writes are atomic.

Engines (``--engine``): ``local`` runs in this process, as above; ``ray`` runs on Ray Data
(:mod:`training.predict_ray`: reads and decodes on any node, a pool of model actors, writes from any node,
resumable, unreadable images also in ``<out>/rejects.parquet``). ``auto`` (the default) is ``ray`` when
``--ray-address`` or ``RAY_ADDRESS`` names a cluster or when there are more than :data:`AUTO_RAY_IMAGES`
inputs, else ``local``. A file list (``--file-list``: a text file, local or s3://, one image URL or path a line)
adds its images to the IMAGE_OR_DIR arguments. ``--as-shards OUT --source NAME`` writes the predictions of a
relative-depth teacher as a shard corpus instead of maps (:mod:`training.pseudo_labels`).
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
# --engine auto: above this many images a Ray Data job's start (~10 s for a local instance) is paid back; below
# it the in-process loop is as fast as it was before there was an engine to choose.
AUTO_RAY_IMAGES = 1000
ENGINES = ("auto", "local", "ray")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="*", metavar="IMAGE_OR_DIR", help="images or directories (local or s3://)")
    parser.add_argument("--checkpoint", required=True,
                        help="checkpoint: a directory as `dpt train` prints it, or a model file (local or s3://), "
                             "or models:/NAME/VERSION, models:/NAME@ALIAS, runs:/RUN_ID/PATH")
    parser.add_argument("--model", default=None,
                        help="variant name for foreign checkpoints (official DPT/MiDaS .pt, transformers); "
                             "this project's checkpoints carry their config and need no --model")
    parser.add_argument("--out", default=None, help="output directory (local or s3://); not with --as-shards")
    parser.add_argument("--batch-size", type=int, default=1, help="images per forward pass (default 1)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--size", type=int, default=None, help="longer side fed to the model (default: the variant's)")
    parser.add_argument("--npy", action="store_true", help="also write the float32 disparity as .npy")
    parser.add_argument("--colormap", default="inferno", help="matplotlib colormap (default inferno)")
    parser.add_argument("--task", choices=("auto", *TASKS), default="auto",
                        help="what to write: depth maps or class label maps (default: the task of the checkpoint's "
                             "head)")
    scale = parser.add_argument_group("at scale (Ray Data) and pseudo-labels")
    scale.add_argument("--file-list", default=None, metavar="FILE",
                       help="a text file (local or s3://) of image URLs or paths, one a line, as further inputs")
    scale.add_argument("--engine", choices=ENGINES, default="auto",
                       help=f"local: in this process; ray: Ray Data with a pool of model actors; auto (default): ray "
                            f"when --ray-address/RAY_ADDRESS is set or there are over {AUTO_RAY_IMAGES} images")
    scale.add_argument("--ray-address", default=None, help="Ray cluster address (default: RAY_ADDRESS or local)")
    scale.add_argument("--actors", type=int, default=None,
                       help="model actors of the Ray engine (default: one per GPU of the cluster, else 1)")
    scale.add_argument("--as-shards", default=None, metavar="OUT",
                       help="write a shard corpus of pseudo-labels under OUT/<source>/<split>/ instead of maps")
    scale.add_argument("--source", default=None, help="the corpus's source name with --as-shards ([a-z0-9_]+)")
    scale.add_argument("--split", default="train", help="the corpus's split with --as-shards (default train)")
    scale.add_argument("--shard-size", type=int, default=1000,
                       help="images per shard with --as-shards (default 1000; fixed, so shards are deterministic)")


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
    from pipeline import storage

    return decode_rgb(storage.read_bytes(url))[0]


def decode_rgb(data: bytes) -> tuple[np.ndarray, str]:
    """(uint8 ``[H, W, 3]``, ``jpg`` or ``png`` where ``data`` is an 8-bit RGB JPEG or PNG that a shard keeps as
    it is, else ``""``: ingest's rule) of an encoded image; ``ValueError`` as :func:`read_rgb`."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            kept = {"JPEG": "jpg", "PNG": "png"}.get(image.format or "", "") if image.mode == "RGB" else ""
            return np.asarray(image.convert("RGB")), kept
    except UnidentifiedImageError:
        raise ValueError("not an image (cannot identify image file)") from None
    except (OSError, ValueError, SyntaxError) as exc:  # truncated or corrupt data: PIL says what is wrong
        raise ValueError(f"unreadable image ({exc})") from None


def reject_reason(exc: BaseException) -> str:
    """What a skipped image's line says: our own ``ValueError`` as is, anything else (storage, PIL's other
    types for broken files) with its type; a file that is not there (a file list's stale line) as such."""
    if isinstance(exc, FileNotFoundError):
        return "missing (no such file or object)"
    return str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"


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
    return load_for_inference(args.checkpoint, args.model, _device(args.device))


def load_for_inference(checkpoint: str, variant: str | None, device: str):
    """The model of ``checkpoint`` (``variant``: the variant to build for foreign weights), in eval mode on
    ``device``: what the in-process loop and each model actor of the Ray engine run."""
    from training.model import build_model, load_checkpoint, load_model

    model = load_model(checkpoint) if variant is None else load_checkpoint(build_model(variant), checkpoint)
    return model.eval().to(device)


def check_inputs(args: argparse.Namespace) -> list[tuple[str, str]]:
    """Fail now, before the model loads and writing nothing, on any bad option or input; returns the images
    found (``find_images``, then the ``--file-list``'s lines)."""
    import matplotlib

    from training.model.checkpoint import check_checkpoint

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.size is not None and args.size < 32:
        raise ValueError(f"--size must be at least 32, got {args.size}")
    if args.colormap not in matplotlib.colormaps:
        raise ValueError(f"--colormap {args.colormap!r}: not a matplotlib colormap (e.g. inferno, magma, viridis)")
    _check_scale_options(args)
    check_checkpoint(args.checkpoint, args.model)
    if args.as_shards:
        from training.pseudo_labels import check_teacher

        check_teacher(args)
    found, missing = find_images(args.inputs)
    if missing:
        item, reason = missing[0]
        raise FileNotFoundError(f"IMAGE_OR_DIR {item}: {reason}")
    if args.file_list:
        found += read_file_list(args.file_list)
    if choose_engine(args, len(found)) == "local":
        _device(args.device)  # the Ray engine asks its cluster (training.predict_ray)
    else:
        from pipeline.ray_cluster import resolve

        resolve(args.ray_address)  # an address that cannot be a cluster's (a dashboard URL): one line, now
    if args.as_shards:
        check_output(args.as_shards, "--as-shards")
    else:
        check_output(args.out, "--out")
    return found


def _check_scale_options(args: argparse.Namespace) -> None:
    """The options of the Ray engine and of ``--as-shards``, each in one line."""
    from pipeline.shards import KEY_PATTERN, make_key

    if not args.inputs and not args.file_list:
        raise ValueError("no images: give IMAGE_OR_DIR arguments or --file-list FILE")
    if args.as_shards and args.out:
        raise ValueError("--out and --as-shards: give one (--as-shards writes a shard corpus instead of maps)")
    if not args.as_shards and not args.out:
        raise ValueError("--out is required (or --as-shards OUT --source NAME for a shard corpus)")
    if args.as_shards and not args.source:
        raise ValueError("--as-shards needs --source NAME (the corpus's source name, [a-z0-9_]+)")
    if args.source and not args.as_shards:
        raise ValueError("--source is an option of --as-shards")
    if args.source:
        try:
            make_key(args.source, "x")
        except ValueError as exc:
            raise ValueError(f"--source: {exc}") from None
    if args.as_shards and not KEY_PATTERN.match(args.split):
        raise ValueError(f"--split {args.split!r}: must match [a-z0-9_-]+")
    if args.actors is not None and args.actors < 1:
        raise ValueError(f"--actors must be at least 1, got {args.actors}")
    if args.shard_size < 1:
        raise ValueError(f"--shard-size must be at least 1, got {args.shard_size}")
    if args.engine == "local" and args.ray_address:
        raise ValueError("--ray-address is an option of the Ray engine, not of --engine local")
    if args.file_list:
        from pipeline import storage

        if not storage.exists(args.file_list):
            raise FileNotFoundError(f"--file-list {args.file_list}: no such file")


def read_file_list(url: str) -> list[tuple[str, str]]:
    """``[(url, output stem)]`` of a file list's lines (blank lines and ``#`` comments left out), in its order.
    Each named image is read when its turn comes: one that is not there becomes a skipped image (a reject), not
    a failure of the whole command, as a list of millions cannot be checked up front."""
    from pipeline import storage

    try:
        text = storage.read_bytes(url).decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"--file-list {url}: not a text file (UTF-8, one image URL or path a line)") from None
    lines = [line.strip() for line in text.splitlines()]
    images = [line for line in lines if line and not line.startswith("#")]
    if not images:
        raise ValueError(f"--file-list {url}: names no image")
    return [(item, PurePosixPath(storage.basename(item)).stem) for item in images]


def choose_engine(args: argparse.Namespace, images: int) -> str:
    """``local`` or ``ray`` (see the module docstring for the rule of ``auto``)."""
    import os

    if args.engine != "auto":
        return args.engine
    if args.ray_address or os.environ.get("RAY_ADDRESS") or images > AUTO_RAY_IMAGES:
        return "ray"
    return "local"


def run(args: argparse.Namespace) -> int:
    from training.model.checkpoint_ref import resolve_checkpoint

    args.checkpoint = resolve_checkpoint(args.checkpoint)  # models:/..., runs:/... -> a local checkpoint directory
    found = check_inputs(args)
    items = _unique_stems(found)
    engine = choose_engine(args, len(items))
    if args.as_shards:
        from training.pseudo_labels import run_pseudo_labels

        return run_pseudo_labels(args, items, engine)
    if engine == "ray":
        from training.predict_ray import run_ray

        return run_ray(args, items)
    return _run_local(args, items)


def _run_local(args: argparse.Namespace, items: list[tuple[str, str]]) -> int:
    """The in-process loop: the rows of :mod:`training.predict_rows` (decode, infer, write) on ``--batch-size``
    images at a time, the steps the Ray engine runs as operators."""
    import dataclasses

    from pipeline.progress import progress
    from training import predict_rows
    from training.tasks import get_task, task_for_model

    model = _load(args)
    task = task_for_model(model.config) if args.task == "auto" else get_task(args.task)
    preprocess = model.preprocess if args.size is None else dataclasses.replace(model.preprocess, size=args.size)
    rows = predict_rows.listed(items)
    problems: list[tuple[str, str]] = []
    with progress(total=len(rows), desc="dpt predict", unit="image") as bar:
        for start in range(0, len(rows), args.batch_size):
            decoded = [predict_rows.decode(row, preprocess) for row in rows[start:start + args.batch_size]]
            for row in predict_rows.infer(decoded, model, task):
                row = predict_rows.write_maps(row, args.out, task, args.colormap, args.npy)
                if row["error"]:
                    problems.append((row["url"], row["error"]))
                bar.update()
    return report(problems, len(rows) - len(problems), len(items), args.out)


def report(problems: list[tuple[str, str]], written: int, total: int, out: str, kept: int = 0) -> int:
    """The closing lines of either engine, and the exit code: 1 when any image was skipped or none written.
    ``kept``: images whose outputs an earlier run had finished (the Ray engine's resume)."""
    for item, reason in problems:
        print(f"skipped {item}: {reason}", file=sys.stderr)
    if not written and not kept:
        print(f"nothing written: none of the {total} image(s) could be read", file=sys.stderr)
        return 1
    finished = f" ({kept} finished before, kept)" if kept else ""
    print(f"wrote {written} of {total} images to {out}{finished}")
    return 1 if problems else 0
