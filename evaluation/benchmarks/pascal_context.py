"""PASCAL-Context validation (59 classes), DPT's Table 5 benchmark, in the VOC2010 layout::

    pascal_context/[VOCdevkit/][VOC2010/]ImageSets/SegmentationContext/val.txt   5,105 ids, one a line
    pascal_context/[VOCdevkit/][VOC2010/]JPEGImages/<id>.jpg                      RGB image
    pascal_context/[VOCdevkit/][VOC2010/]SegmentationClassContext/<id>.png        8-bit label map, same size

Labels: 0 is background (not scored in the 59-class protocol) and becomes 255; class ``k`` in 1..59 becomes id
``k - 1``: the rule of the ingest adapter ``pascal_context`` (the corpus's ``seg.png``), restated here because
evaluation reads the release itself, never ingest's code. The images are exactly those of ``val.txt``, in its
order; a listed image or label map that is missing, a value above 59 or a label map of another size than its
image is a :class:`BenchmarkError` naming the file.
"""

from __future__ import annotations

from evaluation.benchmarks.base import BenchmarkError, BenchmarkReader, BenchmarkSample, read_class_ids, read_rgb
from pipeline import storage
from pipeline.label_sets import PASCAL_CONTEXT_CLASSES

LIST = ("ImageSets", "SegmentationContext", "val.txt")
NESTINGS = (("VOCdevkit", "VOC2010"), ("VOC2010",), ())  # where VOC2010's folders may be under the root


class PascalContextReader(BenchmarkReader):
    name = "pascal_context"

    def __init__(self, root: str):
        super().__init__(root)
        self._base: str | None = None  # the VOC2010 folder (holding ImageSets/, JPEGImages/, ...), found once

    def base(self) -> str:
        """The folder holding ``ImageSets/SegmentationContext/val.txt``: ``VOCdevkit/VOC2010``, ``VOC2010`` or the
        root itself."""
        if self._base is None:
            for nesting in NESTINGS:
                folder = self.path(*nesting) if nesting else self.root
                if storage.exists(storage.join(folder, *LIST)):
                    self._base = folder
                    break
            else:
                raise FileNotFoundError(f"{self.name}: no {'/'.join(LIST)} under {self.root} (expected VOC2010 with "
                                        "the Context labels: [VOCdevkit/VOC2010/]ImageSets/SegmentationContext/val.txt,"
                                        " JPEGImages/, SegmentationClassContext/)")
        return self._base

    def list_samples(self) -> list[str]:
        url = storage.join(self.base(), *LIST)
        ids = [line.strip() for line in storage.read_bytes(url).decode("utf-8", "replace").splitlines()]
        ids = list(dict.fromkeys(i for i in ids if i))
        if not ids:
            raise BenchmarkError(f"{url}: lists no image")
        return ids

    def load(self, sample_id: str) -> BenchmarkSample:
        image = storage.join(self.base(), "JPEGImages", f"{sample_id}.jpg")
        try:
            rgb = read_rgb(image)
        except FileNotFoundError:
            raise BenchmarkError(f"{image}: image missing (listed in {'/'.join(LIST)})") from None
        url = storage.join(self.base(), "SegmentationClassContext", f"{sample_id}.png")
        ids = read_class_ids(url, rgb, PASCAL_CONTEXT_CLASSES,
                             f"PASCAL-Context labels are 0 (background) and 1..{PASCAL_CONTEXT_CLASSES}",
                             "label map missing")
        return BenchmarkSample(sample_id, rgb, url, labels=ids)
