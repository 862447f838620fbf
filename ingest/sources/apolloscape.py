"""ApolloScape stereo (Huang et al. 2018; http://apolloscape.auto/stereo.html): driving scenes with
disparity ground truth from a 3D scanner and labelled car models.

Native layout (the dataset-api's stereo README: ``{split}/{data_type}/{image_name}``; any prefix)::

    <part>/camera_5/<name>.jpg      left image (``<name>`` like ``171206_034559609_Camera_5``)
    <part>/disparity/<name>.png     uint16 disparity
    <part>/fg_mask/<name>.png       optional: cars (uint16, 0 or 65535)
    <part>/bg_mask/<name>.png       optional: background with ground truth (uint16, 0 or 65535)

``<part>`` is a download part such as ``stereo_train_001`` (the official split is ``train``/``val``/
``test`` when the part name says so).

Units: the raw values are pixels: the dataset's own ``stereo/eval_stereo.py`` compares them with its
3-pixel threshold without any scale (real files hold 2..163). Invalid: 65535 (no ground truth), and,
where the masks exist, pixels outside ``fg_mask`` | ``bg_mask`` (the evaluation's validity rule; in the
released files both rules mark the same pixels). Kind ``stereo_disparity``: kept as is.

Group: the part plus the capture minute taken from the name (``171206_0345``), so that consecutive
frames of one drive never straddle the train/val split.
"""

from __future__ import annotations

import numpy as np

from ingest.bad_input import BadInput
from ingest.conversion import TargetKind
from ingest.formats.png import read_png16, read_png_gray
from ingest.listing import PREFIX, Role, pair_files, sample_id
from ingest.sources import register
from ingest.sources.base import RGB, SampleRef, SourceAdapter

NO_GROUND_TRUTH = 65535
_PART = PREFIX + r"(?P<part>[^/]+)/"


@register
class ApolloScape(SourceAdapter):
    """ApolloScape stereo: ``camera_5/*.jpg`` + ``disparity/*.png`` uint16 pixels, 65535 = no ground truth.

    Native layout, units, invalid values and the conversion rule: see the module docstring.
    """

    name = "apolloscape"
    kind = TargetKind.STEREO_DISPARITY

    ROLES = {
        "image": Role(_PART + r"camera_5/(?P<name>[^/]+)\.(?P<ext>jpg|png)", "{prefix}{part}/camera_5/{name}.jpg"),
        "target": Role(_PART + r"disparity/(?P<name>[^/]+)\.png", "{prefix}{part}/disparity/{name}.png"),
        "fg_mask": Role(_PART + r"fg_mask/(?P<name>[^/]+)\.png", "{prefix}{part}/fg_mask/{name}.png"),
        "bg_mask": Role(_PART + r"bg_mask/(?P<name>[^/]+)\.png", "{prefix}{part}/bg_mask/{name}.png"),
    }

    def list_samples(self) -> list[SampleRef]:
        def make_ref(groups, files):
            part, name = groups["part"], groups["name"]
            split = next((s for s in ("train", "val", "test") if s in part.lower()), None)
            minute = name[:11] if len(name) >= 11 and name[6] == "_" else name
            sid = sample_id(groups["prefix"], part, name)
            return SampleRef(sid, files, group=sample_id(groups["prefix"], part, minute), split=split)

        return pair_files(self.files(), self.ROLES, make_ref, optional=("fg_mask", "bg_mask"))

    def read_rgb(self, ref: SampleRef) -> RGB:
        return self.rgb_from_file(ref.files["image"])

    def read_target(self, ref: SampleRef) -> tuple[np.ndarray, np.ndarray]:
        raw = self.decode(ref.files["target"], read_png16)
        valid = raw != NO_GROUND_TRUTH
        masks = [ref.files[m] for m in ("fg_mask", "bg_mask") if m in ref.files]
        if masks:
            covered = np.zeros(raw.shape, bool)
            for path in masks:
                mask = self.decode(path, read_png_gray, what="mask")
                if mask.shape != raw.shape:
                    raise BadInput(f"{path}: mask is {list(mask.shape)} but disparity is {list(raw.shape)}")
                covered |= mask > 0
            valid &= covered
        return raw.astype(np.float32), valid

    def metadata(self, ref: SampleRef) -> dict:
        return {"units": "pixels", "invalid_value": NO_GROUND_TRUTH, "camera": "Camera_5 (left)"}
