"""ADE20K scene parsing validation (MIT Scene Parsing Challenge 2016), DPT's Table 4 benchmark, as released::

    ade20k/[ADEChallengeData2016/]images/validation/ADE_val_%08d.jpg        2,000 images
    ade20k/[ADEChallengeData2016/]annotations/validation/ADE_val_%08d.png   8-bit label maps, same size

Labels: annotation 0 ("other objects") is not scored (the challenge's development kit ignores it) and becomes
255; class ``k`` in 1..150 becomes id ``k - 1``: the rule of the ingest adapter ``ade20k`` (the corpus's
``seg.png``), restated here because evaluation reads the release itself, never ingest's code. A value above 150
or an annotation of another size than its image is a :class:`BenchmarkError` naming the file.
"""

from __future__ import annotations

from evaluation.benchmarks.base import BenchmarkReader, BenchmarkSample, read_class_ids, read_rgb
from pipeline import storage
from pipeline.shards import ADE20K_CLASSES

RELEASE = "ADEChallengeData2016"


class ADE20KReader(BenchmarkReader):
    name = "ade20k"

    def __init__(self, root: str):
        super().__init__(root)
        self._base: str | None = None  # the folder holding images/ and annotations/, found once

    def base(self) -> str:
        """The root, or its ``ADEChallengeData2016`` folder when the release was unpacked one level down."""
        if self._base is None:
            nested = self.path(RELEASE)
            self._base = nested if storage.list_files(storage.join(nested, "images", "validation")) else self.root
        return self._base

    def list_samples(self) -> list[str]:
        prefix = storage.join(self.base(), "images", "validation") + "/"
        ids = sorted(f[len(prefix):].rsplit(".", 1)[0] for f in storage.list_files(prefix)
                     if f.lower().endswith(".jpg") and "/" not in f[len(prefix):])
        if not ids:
            raise FileNotFoundError(f"{self.name}: no images under {prefix} (expected the {RELEASE} release, "
                                    "images/validation/*.jpg with annotations/validation/*.png)")
        return ids

    def load(self, sample_id: str) -> BenchmarkSample:
        rgb = read_rgb(storage.join(self.base(), "images", "validation", f"{sample_id}.jpg"))
        url = storage.join(self.base(), "annotations", "validation", f"{sample_id}.png")
        labels = read_class_ids(url, rgb, ADE20K_CLASSES, f"ADE20K labels are 0..{ADE20K_CLASSES}",
                                "annotation missing")
        return BenchmarkSample(sample_id, rgb, url, labels=labels)
