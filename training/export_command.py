"""``dpt export --checkpoint PATH --format onnx --out FILE``: a checkpoint as an ONNX graph, checked.

The graph takes ``image [B, 3, H, W]`` (normalised as the variant's preprocessing says; H, W multiples of 16)
and returns ``disparity [B, 1, H, W]``; batch and sides are dynamic. After export the graph is run with
onnxruntime on a random input and compared with PyTorch: a relative error (max |diff| / max |torch|) above
``--tolerance`` (default 1e-3) is an error and the file is not kept. The rest of the one inference path
(:mod:`training.model.inference`) is stored in the ONNX metadata so that a consumer reproduces ``dpt predict``'s
maps: the variant's preprocessing (``dpt.preprocess``: mean, std and sizes) and how a map is resized back to its
image (``dpt.resize_back``).

``--checkpoint`` is a checkpoint directory as ``dpt train`` prints it, a model file, or a model in MLflow
(``models:/NAME/VERSION``, ``models:/NAME@ALIAS``, ``runs:/RUN_ID/PATH``: ``training.model.checkpoint_ref``). The
options, the checkpoint (its first bytes) and ``--out`` are checked before the model loads (:func:`check_inputs`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import warnings

import numpy as np


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True,
                        help="checkpoint: a directory as `dpt train` prints it, a model file (local or s3://), or "
                             "models:/NAME/VERSION, models:/NAME@ALIAS, runs:/RUN_ID/PATH")
    parser.add_argument("--model", default=None, help="variant name for foreign checkpoints (official, transformers)")
    parser.add_argument("--format", choices=("onnx",), default="onnx", help="export format (onnx)")
    parser.add_argument("--out", required=True, help="output .onnx file (local or s3://)")
    parser.add_argument("--height", type=int, default=None, help="example input height (default: variant size)")
    parser.add_argument("--width", type=int, default=None, help="example input width (default: variant size + 32)")
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--tolerance", type=float, default=1e-3, help="max relative error vs PyTorch")


def export_onnx(model, path: str, height: int, width: int, opset: int = 17) -> None:
    """Write ``model`` (eval mode, CPU) to a local ``path`` with dynamic batch, height and width.

    Uses the TorchScript-based exporter (``dynamo=False``; the dynamo exporter needs onnxscript). The example
    size should differ from the backbone's native grid so that the position-embedding resampling is traced.
    """
    import torch

    example = torch.randn(1, 3, height, width)
    dynamic = {"image": {0: "batch", 2: "height", 3: "width"}, "disparity": {0: "batch", 2: "height", 3: "width"}}
    with warnings.catch_warnings():
        # Shape checks become constants in the trace (the graph is then verified numerically at other sizes),
        # and the TorchScript exporter announces its deprecation: neither is news to the user.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (example,), path, input_names=["image"], output_names=["disparity"],
                          dynamic_axes=dynamic, opset_version=opset, dynamo=False)
    import onnx

    from training.model.inference import RESIZE_BACK

    graph = onnx.load(path)
    entry = graph.metadata_props.add()
    entry.key, entry.value = "dpt.preprocess", json.dumps(dataclasses.asdict(model.preprocess))
    entry = graph.metadata_props.add()
    entry.key, entry.value = "dpt.resize_back", json.dumps(dataclasses.asdict(RESIZE_BACK))
    entry = graph.metadata_props.add()
    entry.key, entry.value = "dpt.config", json.dumps(model.config.to_dict())
    onnx.save(graph, path)


def check_onnx(model, path: str, sizes: list[tuple[int, int]], batch: int = 2) -> float:
    """Largest relative error between onnxruntime and PyTorch over random inputs of ``sizes``."""
    import onnxruntime
    import torch

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    worst = 0.0
    generator = torch.Generator().manual_seed(0)
    for height, width in sizes:
        x = torch.randn(batch, 3, height, width, generator=generator)
        with torch.no_grad():
            expected = model(x).numpy()
        (got,) = session.run(["disparity"], {"image": x.numpy()})
        if got.shape != expected.shape:
            raise RuntimeError(f"{path}: ONNX output {got.shape} != PyTorch {expected.shape} at {height}x{width}")
        worst = max(worst, float(np.abs(got - expected).max() / max(np.abs(expected).max(), 1e-12)))
    return worst


def check_inputs(args: argparse.Namespace) -> None:
    """Fail now, before the model loads and writing nothing, on a bad option, checkpoint or ``--out``."""
    from training.model.checkpoint import check_checkpoint
    from training.predict_command import check_output

    for option, value in (("--height", args.height), ("--width", args.width)):
        if value is not None and (value < 32 or value % 32):
            raise ValueError(f"{option} must be a positive multiple of 32, got {value}")
    if not args.tolerance > 0:
        raise ValueError(f"--tolerance must be above 0, got {args.tolerance}")
    check_checkpoint(args.checkpoint, args.model)
    check_output(args.out, "--out", is_file=True)


def run(args: argparse.Namespace) -> int:
    from pipeline import storage
    from training.model import build_model, load_checkpoint, load_model
    from training.model.checkpoint_ref import resolve_checkpoint

    args.checkpoint = resolve_checkpoint(args.checkpoint)  # models:/..., runs:/... -> a local checkpoint directory
    check_inputs(args)
    model = load_model(args.checkpoint) if args.model is None else load_checkpoint(build_model(args.model),
                                                                                   args.checkpoint)
    model = model.eval().cpu()
    size = model.preprocess.size
    height = args.height or size
    width = args.width or size + 32
    if height % 32 or width % 32:  # the variant's own size, when --height/--width are not given
        raise ValueError(f"--height/--width must be multiples of 32, got {height}x{width}")
    with tempfile.TemporaryDirectory(prefix="dpt-export-") as tmp:
        local = os.path.join(tmp, "model.onnx")
        export_onnx(model, local, height, width, args.opset)
        error = check_onnx(model, local, [(height, width), (height + 32, max(32, width - 32))])
        if error > args.tolerance:
            raise RuntimeError(f"ONNX output differs from PyTorch: relative error {error:.2e} > {args.tolerance}")
        with open(local, "rb") as f:
            storage.write_bytes(args.out, f.read())
    print(f"wrote {args.out} (onnxruntime vs PyTorch relative error {error:.2e})")
    return 0
