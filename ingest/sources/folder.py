"""``folder``: a new dataset described entirely by command-line options, no code to write.

>>> dpt ingest folder --root s3://raw/mydata --out s3://corpus --name mydata \\
...     --image-glob '*/rgb/*.jpg' --target-glob '*/depth/*.png' --target metric_depth --target-divisor 1000

Registration (which target belongs to which image): every wildcard of a glob (``*``, ``**``, ``?``)
captures part of the path, and an image and a target (and a mask) belong together when their captures
are equal. ``*/rgb/*.jpg`` and ``*/depth/*.png`` pair ``kitchen/rgb/0001.jpg`` with
``kitchen/depth/0001.png`` (captures ``kitchen``, ``0001``). The sample id is the captures joined by
``/``; the split group (the scene: frames of one group never straddle train and val) is every capture
but the last, so put the scene directory in a wildcard to split by scene. With a single wildcard every
frame is its own group.

Conversion: ``target = stored value / divisor`` in the units of ``--target``; pixels equal to
``--invalid-value`` (stored, before dividing) or zero in the mask are invalid. Then the one conversion of
:mod:`ingest.conversion` applies:

==================  =========================================  ===========================
``--target``        meaning of ``target``                      disparity
==================  =========================================  ===========================
``metric_depth``    depth in metres (0 = no measurement)       ``1 / target``
``relative_depth``  depth of unknown scale (0 = none)          ``1 / target``
``disparity``       stereo disparity in pixels                 ``target``
``inverse_depth``   inverse depth up to scale (larger=nearer)  ``target``
==================  =========================================  ===========================

``--target semantic_labels`` reads label maps for segmentation instead (8/16-bit grey or palette PNG, whose
indices are the ids, or NPY): the stored class ids are kept as they are (no divisor), pixels equal to
``--invalid-value`` or zero in the mask become 255 = ignore, and the samples carry ``seg.png``
(:func:`ingest.conversion.to_labels`; ids must be 0..254).
"""

from __future__ import annotations

import argparse
import re
from typing import Any

import numpy as np

from ingest.bad_input import BadInput
from ingest.conversion import TargetKind
from ingest.sources import register
from ingest.formats.exr import read_exr
from ingest.formats.h5 import read_h5
from ingest.formats.npy import read_npy_2d
from ingest.formats.pfm import read_pfm
from ingest.formats.png import read_png_gray, read_png_labels
from ingest.sources.base import RGB, SampleRef, SourceAdapter

TARGET_KINDS = {
    "metric_depth": TargetKind.METRIC_DEPTH,
    "relative_depth": TargetKind.RELATIVE_DEPTH,
    "disparity": TargetKind.STEREO_DISPARITY,
    "inverse_depth": TargetKind.INVERSE_DEPTH,
    "semantic_labels": TargetKind.SEMANTIC_LABELS,
}
NAME_PATTERN = re.compile(r"^[a-z0-9_]{1,64}$")
# --target-encoding -> reader of ingest.formats (8/16-bit grey PNG, NumPy, PFM, OpenEXR, HDF5)
READERS = {"png": read_png_gray, "npy": read_npy_2d, "pfm": read_pfm, "exr": read_exr, "h5": read_h5}
ENCODINGS = tuple(READERS)
EXTENSIONS = {".png": "png", ".npy": "npy", ".pfm": "pfm", ".exr": "exr", ".h5": "h5", ".hdf5": "h5"}


def glob_to_regex(pattern: str) -> re.Pattern:
    """A glob over relative paths as a regex whose groups are the wildcards' matches.

    ``**/`` matches any number of directories, ``*`` anything within one path component (a final ``*``
    captures the name without its extension), ``?`` one character; everything else is literal.
    """
    if not pattern or pattern.startswith("/") or ".." in pattern.split("/"):
        raise ValueError(f"glob {pattern!r} must be a non-empty path relative to the root, without '..'")
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append(r"((?:[^/]+/)*?)")
            i += 3
        elif pattern.startswith("**", i):
            out.append(r"(.*)")
            i += 2
        elif pattern[i] == "*" and i == len(pattern) - 1:
            out.append(r"([^/]*?)(?:\.[^/.]*)?")  # a final '*' captures the stem: 'd/*' pairs 0.npy and 0.exr
            i += 1
        elif pattern[i] == "*":
            out.append(r"([^/]*)")
            i += 1
        elif pattern[i] == "?":
            out.append(r"([^/])")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    regex = re.compile("^" + "".join(out) + "$")
    if regex.groups == 0:
        raise ValueError(f"glob {pattern!r} has no wildcard: it cannot tell samples apart")
    return regex


def _captures(regex: re.Pattern, path: str) -> tuple[str, ...] | None:
    match = regex.match(path)
    return None if match is None else tuple(g.rstrip("/") for g in match.groups())


@register
class FolderAdapter(SourceAdapter):
    """Images, targets and optional masks found by globs under ``root`` and paired by their wildcards."""

    name = "folder"
    kind = TargetKind.METRIC_DEPTH  # replaced per instance by ``target``

    def __init__(self, root, options=None, *, image_glob: str, target_glob: str, target: str,
                 mask_glob: str | None = None, encoding: str = "auto", divisor: float = 1.0,
                 invalid_value: float | None = None, name: str = "folder", h5_dataset: str = "depth"):
        super().__init__(root, options)
        if target not in TARGET_KINDS:
            raise ValueError(f"--target must be one of {', '.join(TARGET_KINDS)}, not {target!r}")
        if encoding != "auto" and encoding not in ENCODINGS:
            raise ValueError(f"--target-encoding must be auto or one of {', '.join(ENCODINGS)}, not {encoding!r}")
        if not divisor > 0:
            raise ValueError(f"--target-divisor must be positive, not {divisor}")
        if target == "semantic_labels" and divisor != 1:
            raise ValueError("--target semantic_labels stores class ids as they are: --target-divisor must be 1")
        if not NAME_PATTERN.match(name):
            raise ValueError(f"--name {name!r} must match [a-z0-9_]+ (it prefixes every sample key)")
        self.name, self.kind, self.target = name, TARGET_KINDS[target], target
        self.image_glob, self.target_glob, self.mask_glob = image_glob, target_glob, mask_glob
        self.encoding, self.divisor, self.invalid_value = encoding, float(divisor), invalid_value
        self.h5_dataset = h5_dataset
        self._regex = {role: glob_to_regex(g) for role, g in
                       (("rgb", image_glob), ("target", target_glob), ("mask", mask_glob)) if g}
        counts = {role: r.groups for role, r in self._regex.items()}
        if len(set(counts.values())) != 1:
            raise ValueError(f"the globs must have the same number of wildcards to pair files, have {counts}")

    # ----------------------------------------------------------------- command line

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("folder source (SOURCE = folder)")
        group.add_argument("--image-glob", help="images relative to --root, e.g. '*/rgb/*.jpg'")
        group.add_argument("--target-glob", help="targets relative to --root, e.g. '*/depth/*.png'")
        group.add_argument("--mask-glob", help="optional validity masks (non-zero = valid)")
        group.add_argument("--target", choices=sorted(TARGET_KINDS), help="what the target measures")
        group.add_argument("--target-encoding", default="auto", choices=["auto", *ENCODINGS],
                           help="target file format (default: from the extension)")
        group.add_argument("--target-divisor", type=float, default=1.0,
                           help="stored value / divisor = target units, e.g. 1000 for millimetre PNGs (default 1)")
        group.add_argument("--invalid-value", type=float, help="stored value meaning 'no measurement'")
        group.add_argument("--h5-dataset", default="depth", help="dataset inside .h5 targets (default depth)")
        group.add_argument("--name", default="folder", help="source name for keys and the output folder")

    @classmethod
    def from_args(cls, root: str, args: argparse.Namespace, options=None) -> FolderAdapter:
        missing = [f"--{n.replace('_', '-')}" for n in ("image_glob", "target_glob", "target") if not getattr(args, n)]
        if missing:
            raise ValueError(f"source folder needs {', '.join(missing)}")
        return cls(root, options, image_glob=args.image_glob, target_glob=args.target_glob, target=args.target,
                   mask_glob=args.mask_glob, encoding=args.target_encoding, divisor=args.target_divisor,
                   invalid_value=args.invalid_value, name=args.name, h5_dataset=args.h5_dataset)

    # ----------------------------------------------------------------- the four methods

    def list_samples(self) -> list[SampleRef]:
        """One input per registration key; two files of one role under one key (``0001.jpg`` and
        ``0001.png`` for ``*``) give one input each with the same id, and the job rejects them all."""
        found: dict[tuple[str, ...], dict[str, list[str]]] = {}
        for path in self.files():
            for role, regex in self._regex.items():
                key = _captures(regex, path)
                if key is not None:
                    found.setdefault(key, {}).setdefault(role, []).append(path)
        refs = []
        for key, roles in found.items():
            if "rgb" not in roles and "target" not in roles:
                continue  # a mask alone is not an input
            group = "/".join(key[:-1]) if len(key) > 1 else "/".join(key)
            first = {role: paths[0] for role, paths in roles.items()}
            variants = [first] + [{**first, role: p} for role, paths in roles.items() for p in paths[1:]]
            refs.extend(SampleRef(id="/".join(key), files=files, group=group) for files in variants)
        return sorted(refs, key=lambda r: (r.id, sorted(r.files.items())))

    def read_rgb(self, ref: SampleRef) -> RGB:
        if "rgb" not in ref.files:
            raise BadInput(f"{ref.files['target']}: no image matching {self.image_glob!r} for this target")
        return self.rgb_from_file(ref.files["rgb"])

    def read_target(self, ref: SampleRef) -> tuple[np.ndarray, np.ndarray]:
        if "target" not in ref.files:
            raise BadInput(f"{ref.files['rgb']}: no target matching {self.target_glob!r} for this image")
        path = ref.files["target"]
        stored = self._read_map(path)
        valid = np.ones(stored.shape, bool)
        if self.invalid_value is not None:
            valid &= stored != np.float32(self.invalid_value)
        if self.mask_glob:
            if "mask" not in ref.files:
                raise BadInput(f"{path}: no mask matching {self.mask_glob!r} for this target")
            mask = self.decode(ref.files["mask"], read_png_gray, what="mask")
            if mask.shape != stored.shape:
                raise BadInput(f"{ref.files['mask']}: mask is {list(mask.shape)} but target is {list(stored.shape)}")
            valid &= mask > 0
        return stored / np.float32(self.divisor), valid

    def _read_map(self, path: str) -> np.ndarray:
        encoding = self.encoding
        if encoding == "auto":
            encoding = next((e for ext, e in EXTENSIONS.items() if path.lower().endswith(ext)), None)
            if encoding is None:
                raise BadInput(f"{path}: cannot tell the target encoding from the extension;"
                               f" pass --target-encoding ({', '.join(ENCODINGS)})")
        kwargs = {"dataset": self.h5_dataset} if encoding == "h5" else {}
        # Label maps: a palette PNG's indices are the class ids (read_png_gray would refuse the palette).
        reader = read_png_labels if self.kind.is_labels and encoding == "png" else READERS[encoding]
        stored = np.asarray(self.decode(path, reader, **kwargs), np.float32)
        if stored.ndim != 2:
            raise BadInput(f"{path}: target has shape {list(stored.shape)}; expected one channel [H, W]")
        return stored

    def metadata(self, ref: SampleRef) -> dict[str, Any]:
        return {"files": dict(sorted(ref.files.items())), "target": self.target, "target_divisor": self.divisor}
