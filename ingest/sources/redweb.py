"""ReDWeb V1 (Xian et al., CVPR 2018): 3,600 web stereo images with dense relative-depth maps.

Native layout (the released ``ReDWeb_V1`` folder; any folder prefix above it is allowed)::

    Imgs/<name>.jpg      RGB image
    RDs/<name>.png       8-bit grayscale relative-depth map, same size

Units and invalid values: despite "relative depth", an RD value grows with distance: 0 is the nearest
object and 255 the background/sky. The MiDaS authors, who train on it, treat RD as *negative* disparity
with 255 masked out (isl-org/MiDaS issue #16: ``mask = disp != 255; disp = -disp / 255``). So here:

* valid = ``RD != 255``
* target = ``255 - RD`` (kind ``inverse_depth``: larger = nearer, defined up to scale and shift, which
  is all the scale- and shift-invariant loss needs); conversion keeps it as is.

Group: every image is its own (ReDWeb has no scenes); there is no official split.
"""

from __future__ import annotations

import numpy as np

from ingest.bad_input import BadInput
from ingest.conversion import TargetKind
from ingest.formats.png import read_png_gray
from ingest.listing import PREFIX, Role, pair_files, sample_id
from ingest.sources import register
from ingest.sources.base import RGB, SampleRef, SourceAdapter

INVALID = 255


@register
class ReDWeb(SourceAdapter):
    """ReDWeb V1: ``Imgs/*.jpg`` + ``RDs/*.png``; target ``255 - RD`` (inverse depth), 255 invalid.

    Native layout, units, invalid values and the conversion rule: see the module docstring.
    """

    name = "redweb"
    kind = TargetKind.INVERSE_DEPTH

    ROLES = {
        "image": Role(PREFIX + r"Imgs/(?P<name>[^/]+)\.(?P<ext>jpg|JPG|jpeg)", "{prefix}Imgs/{name}.jpg"),
        "target": Role(PREFIX + r"RDs/(?P<name>[^/]+)\.png", "{prefix}RDs/{name}.png"),
    }

    def list_samples(self) -> list[SampleRef]:
        def make_ref(groups, files):
            sid = sample_id(groups["prefix"], groups["name"])
            return SampleRef(sid, files, group=sid)

        return pair_files(self.files(), self.ROLES, make_ref)

    def read_rgb(self, ref: SampleRef) -> RGB:
        return self.rgb_from_file(ref.files["image"])

    def read_target(self, ref: SampleRef) -> tuple[np.ndarray, np.ndarray]:
        rd = self.decode(ref.files["target"], read_png_gray)
        if rd.dtype != np.uint8:
            raise BadInput(f"{ref.files['target']}: expected an 8-bit RD map, found {rd.dtype}")
        valid = rd != INVALID
        return (INVALID - rd.astype(np.float32)), valid

    def metadata(self, ref: SampleRef) -> dict:
        return {"units": "relative inverse depth (255 - RD)", "invalid_value": INVALID}
