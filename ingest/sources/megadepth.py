"""MegaDepth v1 (Li & Snavely, CVPR 2018): internet photos with multi-view-stereo depth of unknown scale.

Native layout (``MegaDepth_v1``, as used by the authors' loader and MiDaS); any folder prefix allowed::

    <scene>/dense<k>/imgs/<name>.jpg      RGB image (k = 0, 1, ...: one dense reconstruction each)
    <scene>/dense<k>/depths/<name>.h5     HDF5 with a float32 2-D dataset ``depth``

Units: depth of the SfM reconstruction, whose scale is unknown (kind ``relative_depth``). Conversion gives
``1 / depth``. Invalid values follow the authors' own loader (zhengqili/MegaDepth ``data/image_folder.py``,
``load_MD``), which MiDaS also follows:

* depth ``<= 1e-8`` is no depth;
* when more than 10 pixels have depth, the outliers of MVS are dropped: depth above the 98th percentile
  of the positive values, then depth below the 1st percentile of what remains, become invalid;
* a map with negative values (-1) is one of MegaDepth's *ordinal-only* images, which carry no depth: it
  is rejected with that reason rather than read as depth.

Group: the scene (a landmark), so that photos of one landmark never straddle the train/val split.
MegaDepth has no official split of this data.
"""

from __future__ import annotations

import numpy as np

from ingest.bad_input import BadInput
from ingest.conversion import TargetKind
from ingest.formats.h5 import read_h5
from ingest.listing import PREFIX, Role, pair_files, sample_id
from ingest.sources import register
from ingest.sources.base import RGB, SampleRef, SourceAdapter

MIN_DEPTH = 1e-8


@register
class MegaDepth(SourceAdapter):
    """MegaDepth v1: ``dense*/imgs/*.jpg`` + ``depths/*.h5`` (``depth``); 0 and MVS outliers invalid.

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
        path = ref.files["target"]
        depth = self.decode(path, read_h5, dataset="depth")
        finite = np.isfinite(depth)
        if (depth[finite] < 0).any():
            raise BadInput(f"{path}: ordinal-only MegaDepth target (negative values), it holds no depth")
        return depth, outlier_filtered(depth) | ~finite  # NaN/Inf stay "valid": conversion rejects them by name

    def metadata(self, ref: SampleRef) -> dict:
        return {"units": "SfM depth of unknown scale", "invalid": "<= 1e-8, above p98, below p1 (authors' filter)"}


def outlier_filtered(depth: np.ndarray) -> np.ndarray:
    """Valid pixels of a MegaDepth map: depth > 1e-8 without the top 2 % and then the bottom 1 %."""
    valid = np.isfinite(depth) & (depth > MIN_DEPTH)
    if valid.sum() > 10:
        valid &= depth <= np.percentile(depth[valid], 98)
        valid &= depth >= np.percentile(depth[valid], 1)
    return valid
