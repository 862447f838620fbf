"""MegaDepth v1 (Li & Snavely, CVPR 2018): internet photos with multi-view-stereo depth of unknown scale.

Native layout (``MegaDepth_v1``, as used by the authors' loader and MiDaS); any folder prefix allowed::

    <scene>/dense<k>/imgs/<name>.jpg      RGB image (k = 0, 1, ...: one dense reconstruction each)
    <scene>/dense<k>/depths/<name>.h5     HDF5 with a float32 2-D dataset ``depth``

Units: depth of the SfM reconstruction, whose scale is unknown (kind ``relative_depth``); 0 = no depth
(invalid). Conversion gives ``1 / depth``. Group: the scene (a landmark), so that photos of one landmark
never straddle the train/val split. MegaDepth has no official split of this data.
"""

from __future__ import annotations

import numpy as np

from ingest.conversion import TargetKind
from ingest.formats import load
from ingest.formats.h5 import read_h5
from ingest.listing import PREFIX, Role, pair_files, sample_id
from ingest.sources import register
from ingest.sources.base import RGB, SampleRef, SourceAdapter


@register
class MegaDepth(SourceAdapter):
    """MegaDepth v1: ``dense*/imgs/*.jpg`` + ``depths/*.h5`` (``depth``), unknown scale, 0 invalid.

    Native layout, units, invalid values and the conversion rule: see the module docstring.
    """

    name = "megadepth"
    kind = TargetKind.RELATIVE_DEPTH

    ROLES = {
        "image": Role(PREFIX + r"(?P<scene>[^/]+)/(?P<dense>dense\d+)/imgs/(?P<name>[^/]+)\.(?P<ext>jpg|JPG|png)",
                      "{prefix}{scene}/{dense}/imgs/{name}.jpg"),
        "target": Role(PREFIX + r"(?P<scene>[^/]+)/(?P<dense>dense\d+)/depths/(?P<name>[^/]+)\.h5",
                       "{prefix}{scene}/{dense}/depths/{name}.h5"),
    }

    def list_samples(self) -> list[SampleRef]:
        def make_ref(groups, files):
            sid = sample_id(groups["prefix"], groups["scene"], groups["dense"], groups["name"])
            return SampleRef(sid, files, group=sample_id(groups["prefix"], groups["scene"]))

        return pair_files(self.files(), self.ROLES, make_ref)

    def read_rgb(self, ref: SampleRef) -> RGB:
        return self.rgb_from_file(ref.files["image"])

    def read_target(self, ref: SampleRef) -> tuple[np.ndarray, np.ndarray]:
        depth = load(self, ref.files["target"], read_h5, dataset="depth")
        # NaN/Inf stay inside `valid` so that conversion rejects the sample naming them.
        return depth, ~(depth <= 0)

    def metadata(self, ref: SampleRef) -> dict:
        return {"units": "SfM depth of unknown scale", "invalid_value": 0}
