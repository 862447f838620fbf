"""HR-WSI (Xian et al., CVPR 2020, "Structure-Guided Ranking Loss"): high-resolution web stereo images
with disparity computed by optical flow, and masks of the pixels where it is reliable.

Native layout (the released ``HR-WSI`` folder with its ``train`` and ``val`` parts; any prefix)::

    [<prefix>/]<train|val>/imgs/<name>.jpg           RGB image
    [<prefix>/]<train|val>/gts/<name>.png            disparity map, grayscale PNG (8- or 16-bit)
    [<prefix>/]<train|val>/valid_masks/<name>.png    nonzero = the disparity is valid there

Units: disparity of a web stereo pair whose baseline and focal length are unknown, so only up to scale
(kind ``inverse_depth``: larger = nearer); the raw PNG values are the target, conversion keeps them.
Invalid: where ``valid_masks`` is 0 (a missing mask file is a reject, not "all valid").

Split: the ``train``/``val`` folder is the official split. Group: each image (web photos are unrelated).
"""

from __future__ import annotations

import numpy as np

from ingest.bad_input import BadInput
from ingest.conversion import TargetKind
from ingest.formats.png import read_png_gray
from ingest.listing import PREFIX, Role, pair_files, sample_id
from ingest.sources import register
from ingest.sources.base import RGB, SampleRef, SourceAdapter


@register
class HRWSI(SourceAdapter):
    """HR-WSI: ``imgs/*.jpg`` + ``gts/*.png`` disparity up to scale + ``valid_masks/*.png``.

    Native layout, units, invalid values and the conversion rule: see the module docstring.
    """

    name = "hrwsi"
    kind = TargetKind.INVERSE_DEPTH

    ROLES = {
        "image": Role(PREFIX + r"imgs/(?P<name>[^/]+)\.(?P<ext>jpg|JPG|jpeg|png)", "{prefix}imgs/{name}.jpg"),
        "target": Role(PREFIX + r"gts/(?P<name>[^/]+)\.png", "{prefix}gts/{name}.png"),
        "mask": Role(PREFIX + r"valid_masks/(?P<name>[^/]+)\.png", "{prefix}valid_masks/{name}.png"),
    }

    def list_samples(self) -> list[SampleRef]:
        def make_ref(groups, files):
            parent = groups["prefix"].strip("/").rsplit("/", 1)[-1]
            split = parent if parent in ("train", "val", "test") else None
            sid = sample_id(groups["prefix"], groups["name"])
            return SampleRef(sid, files, group=sid, split=split)

        # Any one of the three files makes a sample, so a stray file is reported rather than ignored.
        return pair_files(self.files(), self.ROLES, make_ref)

    def read_rgb(self, ref: SampleRef) -> RGB:
        return self.rgb_from_file(ref.files["image"])

    def read_target(self, ref: SampleRef) -> tuple[np.ndarray, np.ndarray]:
        disparity = self.decode(ref.files["target"], read_png_gray)
        mask = self.decode(ref.files["mask"], read_png_gray, what="valid mask")
        if mask.shape != disparity.shape:
            raise BadInput(f"{ref.files['mask']}: mask is {list(mask.shape)} but disparity is "
                           f"{list(disparity.shape)}")
        return disparity.astype(np.float32), mask > 0

    def metadata(self, ref: SampleRef) -> dict:
        return {"units": "disparity up to scale (raw PNG values)"}
