"""ADE20K scene parsing (Zhou et al., CVPR 2017; the MIT Scene Parsing Challenge 2016 release): 150
semantic classes, the segmentation benchmark of the DPT paper (Table 4: DPT-Hybrid 49.02 % mIoU).

Native layout (``ADEChallengeData2016`` as unpacked from ``ADEChallengeData2016.zip``; any prefix)::

    [<prefix>/]images/<training|validation>/ADE_<train|val>_%08d.jpg       RGB image
    [<prefix>/]annotations/<training|validation>/ADE_<train|val>_%08d.png  8-bit label map, same size

Labels: each annotation pixel holds 0..150, where 0 is "other objects", not one of the 150 classes and
not scored by the challenge (its development kit: "we ignore pixels labeled with 0's"). Class ``k`` in
1..150 becomes id ``k - 1`` in 0..149 and 0 becomes 255 = ignore, the same as MMSegmentation's
``reduce_zero_label``; the 150 names in that order are in ``objectInfo150.txt`` of the release. A value
above 150 is not an ADE20K class and rejects the sample, naming the file.

Split: the folder is the official split, ``training`` (20 210 images) -> ``train`` and ``validation``
(2 000 images, the benchmark) -> ``val``. ``images/testing`` has no released annotations and is not
read. Group: each image (the photos are unrelated).
"""

from __future__ import annotations

import numpy as np

from ingest.bad_input import BadInput
from ingest.conversion import TargetKind
from ingest.formats.png import read_png_labels
from ingest.listing import PREFIX, Role, pair_files, sample_id
from ingest.sources import register
from ingest.sources.base import RGB, SampleRef, SourceAdapter
from pipeline.shards import ADE20K_CLASSES

OTHER = 0  # the annotation value of "other objects": not a class, ignored in training and evaluation
SPLITS = {"training": "train", "validation": "val"}


@register
class ADE20K(SourceAdapter):
    """ADE20K (ADEChallengeData2016): ``images/<split>/*.jpg`` + ``annotations/<split>/*.png`` label maps.

    Native layout, label numbering, ignore rule and split: see the module docstring.
    """

    name = "ade20k"
    kind = TargetKind.SEMANTIC_LABELS

    ROLES = {
        "image": Role(PREFIX + r"images/(?P<split>training|validation)/(?P<name>[^/]+)\.(?P<ext>jpg|JPG|jpeg|png)",
                      "{prefix}images/{split}/{name}.jpg"),
        "target": Role(PREFIX + r"annotations/(?P<split>training|validation)/(?P<name>[^/]+)\.png",
                       "{prefix}annotations/{split}/{name}.png"),
    }

    def list_samples(self) -> list[SampleRef]:
        def make_ref(groups, files):
            sid = sample_id(groups["prefix"], groups["name"])
            return SampleRef(sid, files, group=sid, split=SPLITS[groups["split"]])

        # An image without its annotation (or the reverse) is still listed, and rejected when read.
        return pair_files(self.files(), self.ROLES, make_ref)

    def read_rgb(self, ref: SampleRef) -> RGB:
        return self.rgb_from_file(ref.files["image"])

    def read_target(self, ref: SampleRef) -> tuple[np.ndarray, np.ndarray]:
        """``(class ids int64 [H, W] in 0..149, labelled bool [H, W])``: annotation value k -> k - 1,
        and 0 ("other objects") is unlabelled."""
        annotation = self.decode(ref.files["target"], read_png_labels, what="annotation")
        if annotation.max(initial=0) > ADE20K_CLASSES:
            bad = annotation > ADE20K_CLASSES
            raise BadInput(f"{ref.files['target']}: {int(bad.sum())} pixels hold values above {ADE20K_CLASSES} "
                           f"(max {int(annotation.max())}); ADE20K labels are 0..{ADE20K_CLASSES}")
        labelled = annotation != OTHER
        return annotation.astype(np.int64) - 1, labelled

    def metadata(self, ref: SampleRef) -> dict:
        return {"num_classes": ADE20K_CLASSES, "labels": "ADE20K annotation k in 1..150 -> k - 1; 0 (other) -> 255"}
