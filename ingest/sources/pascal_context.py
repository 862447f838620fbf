"""PASCAL-Context (Mottaghi et al., CVPR 2014): VOC2010 images with whole-scene labels, the 59-class segmentation
benchmark that DPT fine-tunes on (Table 5: DPT-Hybrid 60.46 % mIoU).

Native layout (the VOC2010 release with the Context labels as most users have them, e.g. converted by
MMSegmentation's ``pascal_context.py`` from the Detail API's ``trainval_merged.json``; any prefix)::

    [<prefix>/]VOCdevkit/VOC2010/JPEGImages/<id>.jpg                       RGB image
    [<prefix>/]VOCdevkit/VOC2010/SegmentationClassContext/<id>.png         8-bit label map, same size
    [<prefix>/]VOCdevkit/VOC2010/ImageSets/SegmentationContext/train.txt   4,998 ids, one a line
    [<prefix>/]VOCdevkit/VOC2010/ImageSets/SegmentationContext/val.txt     5,105 ids (the benchmark)

(the root may also be ``VOCdevkit/`` or ``VOC2010/`` itself). Labels: each pixel holds 0..59, 0 being background
(everything outside the 59 classes) and ``k`` in 1..59 the ``k``-th class of
``pipeline.label_sets.PASCAL_CONTEXT_NAMES``. The common 59-class protocol (``classes=59``, the default) ignores
background (255) and shifts the classes to ids 0..58; the 60-class variant (``classes=60``, ``dpt ingest
pascal_context --pascal-classes 60``) keeps the values as they are, background being class 0, and writes its
shards as source ``pascal_context_60``, so that the two label sets never share a folder. A value above 59 is no
Context class and rejects the sample, naming the file.

Split: the two lists are the official split (``train``, ``val``); an image they do not list (VOC2010's
``JPEGImages`` holds the detection images too) is not read, and a listed image or label map that is missing is a
reject naming it. Group: each image (the photos are unrelated).
"""

from __future__ import annotations

import argparse
import re

import numpy as np

from ingest.bad_input import BadInput
from ingest.conversion import TargetKind
from ingest.formats.png import read_png_labels
from ingest.listing import PREFIX
from ingest.sources import register
from ingest.sources.base import RGB, SampleRef, SourceAdapter
from pipeline.label_sets import PASCAL_CONTEXT_CLASSES

BACKGROUND = 0  # the label value of everything outside the 59 classes
LISTS = "ImageSets/SegmentationContext"
LIST_FILE = re.compile(PREFIX + re.escape(LISTS) + r"/(?P<split>train|val)\.txt")
VARIANTS = {PASCAL_CONTEXT_CLASSES: "pascal_context", PASCAL_CONTEXT_CLASSES + 1: "pascal_context_60"}


@register
class PascalContext(SourceAdapter):
    """PASCAL-Context on VOC2010: JPEGImages/*.jpg + SegmentationClassContext/*.png, the split lists of
    ImageSets/SegmentationContext; 59 classes (background ignored), or 60 with --pascal-classes 60.

    Native layout, label numbering, the two variants and the split: see the module docstring.
    """

    name = "pascal_context"
    kind = TargetKind.SEMANTIC_LABELS

    def __init__(self, root, options=None, *, classes: int = PASCAL_CONTEXT_CLASSES):
        super().__init__(root, options)
        if classes not in VARIANTS:
            raise ValueError(f"--pascal-classes must be {' or '.join(map(str, VARIANTS))} (background ignored, or "
                             f"background as class 0), not {classes}")
        self.classes, self.name = classes, VARIANTS[classes]
        self._file_set: set[str] | None = None

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("pascal_context source (SOURCE = pascal_context)")
        group.add_argument("--pascal-classes", type=int, choices=sorted(VARIANTS),
                           help=f"{PASCAL_CONTEXT_CLASSES} (default: background ignored, classes 0..58) or "
                                f"{PASCAL_CONTEXT_CLASSES + 1} (background as class 0, written as source "
                                f"{VARIANTS[PASCAL_CONTEXT_CLASSES + 1]})")

    @classmethod
    def from_args(cls, root: str, args: argparse.Namespace, options=None) -> PascalContext:
        classes = getattr(args, "pascal_classes", None)
        return cls(root, options, classes=PASCAL_CONTEXT_CLASSES if classes is None else classes)

    # ----------------------------------------------------------------- the four methods

    def list_samples(self) -> list[SampleRef]:
        """Every id of the split lists, in list order within each list (ids, not files: a listed image that is
        missing is still listed, and rejected when read)."""
        refs = []
        for path in self.files():
            match = LIST_FILE.fullmatch(path)
            if match is None:
                continue
            base = match["prefix"]
            for line in self.read_bytes(path).decode("utf-8", "replace").splitlines():
                image_id = line.strip()
                if not image_id:
                    continue
                files = {"image": f"{base}JPEGImages/{image_id}.jpg",
                         "target": f"{base}SegmentationClassContext/{image_id}.png", "list": path}
                refs.append(SampleRef(f"{base}{image_id}".strip("/"), files, group=image_id,
                                      split=match["split"]))
        if not refs and any(p.endswith(".png") and "/SegmentationClassContext/" in f"/{p}" for p in self.files()):
            raise ValueError(f"{self.name}: {self.root} holds SegmentationClassContext label maps but no "
                             f"{LISTS}/train.txt or val.txt: the lists say which images are read, and in which split")
        return sorted(refs, key=lambda r: r.id)

    def read_rgb(self, ref: SampleRef) -> RGB:
        if ref.files["image"] not in self._present():
            raise BadInput(f"{ref.files['image']}: image missing (listed in {ref.files['list']})")
        return self.rgb_from_file(ref.files["image"])

    def read_target(self, ref: SampleRef) -> tuple[np.ndarray, np.ndarray]:
        """``(class ids int64 [H, W], labelled bool [H, W])``: 59 classes: label k -> k - 1, background
        unlabelled; 60 classes: labels as they are, every pixel labelled."""
        labels = self.decode(ref.files["target"], read_png_labels, what="label map")
        top = PASCAL_CONTEXT_CLASSES
        if labels.max(initial=0) > top:
            bad = labels > top
            raise BadInput(f"{ref.files['target']}: {int(bad.sum())} pixels hold values above {top} "
                           f"(max {int(labels.max())}); PASCAL-Context labels are 0 (background) and 1..{top}")
        if self.classes == PASCAL_CONTEXT_CLASSES:
            return labels.astype(np.int64) - 1, labels != BACKGROUND
        return labels.astype(np.int64), np.ones(labels.shape, bool)

    def metadata(self, ref: SampleRef) -> dict:
        rule = ("PASCAL-Context label k in 1..59 -> k - 1; 0 (background) -> 255"
                if self.classes == PASCAL_CONTEXT_CLASSES else "PASCAL-Context label k in 0..59 kept; 0 is background")
        return {"num_classes": self.classes, "labels": rule}

    def _present(self) -> set[str]:
        """The root's files as a set (listed once), to tell a listed image that is missing."""
        if self._file_set is None:
            self._file_set = set(self.files())
        return self._file_set
