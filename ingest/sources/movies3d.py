"""3D Movies (MiDaS, Ranftl et al. 2020): frames of stereo films with disparity from optical flow.

The footage is not public, so there is no released layout; users compute disparity for their own copy
(e.g. with the MiDaS authors' 3DVideos2Stereo tools) and store it in this layout, which WSVD shares
(``ingest/sources/wsvd.py``); the root is the folder that holds the videos::

    <video>/[<clip>/...]left/<frame>.jpg|png       left frame
    <video>/[<clip>/...]disparity/<frame>.pfm      float disparity in pixels, PFM, non-finite = invalid
    <video>/[<clip>/...]disparity/<frame>.png      or: uint16, pixels = value / scale, 65535 = invalid
    <video>/[<clip>/...]disparity/scale.txt        the PNG divisor (one number, e.g. 256); required for PNG
    <video>/[<clip>/...]mask/<frame>.png           optional: 0 = unreliable (left-right check), else valid

Group: ``<video>``, the film (or the video), the first folder below the root, so that frames of one
film never straddle the train/val split. There is no official split.

Units: disparity in pixels of the left frame (kind ``stereo_disparity``; kept as is). Disparity from a
film's stereo pair is known only up to a shift (the convergence of the rig); the producer must shift it
to be non-negative, and a negative valid value rejects the sample with its reason.
"""

from __future__ import annotations

import functools

import numpy as np

from ingest.bad_input import BadInput
from ingest.conversion import TargetKind
from ingest.formats.pfm import read_pfm
from ingest.formats.png import read_png16, read_png_gray
from ingest.listing import Role, pair_files, sample_id
from ingest.sources import register
from ingest.sources.base import RGB, SampleRef, SourceAdapter

PNG_INVALID = 65535
_DIR = r"(?P<video>[^/]+)/(?P<clip>(?:[^/]+/)*?)"


@register
class Movies3D(SourceAdapter):
    """3D Movies: ``left/*`` + ``disparity/*.pfm`` (or 16-bit PNG / scale.txt) pixels, optional ``mask/``.

    Native layout, units, invalid values and the conversion rule: see the module docstring.
    """

    name = "movies3d"
    kind = TargetKind.STEREO_DISPARITY

    ROLES = {
        "image": Role(_DIR + r"left/(?P<frame>[^/]+)\.(?P<ext>jpg|png)", "{video}/{clip}left/{frame}.jpg"),
        "target": Role(_DIR + r"disparity/(?P<frame>[^/]+)\.(?P<ext>pfm|png)",
                       "{video}/{clip}disparity/{frame}.pfm"),
        "mask": Role(_DIR + r"mask/(?P<frame>[^/]+)\.png", "{video}/{clip}mask/{frame}.png"),
    }

    def list_samples(self) -> list[SampleRef]:
        def make_ref(groups, files):
            sid = sample_id(groups["video"], groups["clip"], groups["frame"])
            return SampleRef(sid, files, group=groups["video"])

        return pair_files(self.files(), self.ROLES, make_ref, optional=("mask",))

    def read_rgb(self, ref: SampleRef) -> RGB:
        return self.rgb_from_file(ref.files["image"])

    def read_target(self, ref: SampleRef) -> tuple[np.ndarray, np.ndarray]:
        path = ref.files["target"]
        if path.endswith(".png"):
            raw = self.decode(path, read_png16)
            disparity = raw.astype(np.float32) / self._png_scale(path.rsplit("/", 1)[0])
            valid = raw != PNG_INVALID
        else:
            disparity = self.decode(path, read_pfm)
            if disparity.ndim != 2:
                raise BadInput(f"{path}: unknown PFM layout: colour PFM, expected 1-channel disparity")
            valid = np.isfinite(disparity)
        if "mask" in ref.files:
            mask = self.decode(ref.files["mask"], read_png_gray, what="mask")
            if mask.shape != disparity.shape:
                raise BadInput(f"{ref.files['mask']}: mask is {list(mask.shape)} but disparity is "
                               f"{list(disparity.shape)}")
            valid &= mask > 0
        return disparity, valid

    @functools.lru_cache(maxsize=256)  # noqa: B019 - one adapter per job; a few hundred folders at most
    def _png_scale(self, folder: str) -> float:
        path = f"{folder}/scale.txt"
        text = self.decode(path, lambda data: data.decode("ascii", "replace").strip(), what="PNG disparity scale")
        try:
            scale = float(text)
        except ValueError:
            scale = float("nan")
        if not np.isfinite(scale) or scale <= 0:
            raise BadInput(f"{path}: disparity scale must be one positive number, found {text[:32]!r}")
        return scale

    def metadata(self, ref: SampleRef) -> dict:
        return {"units": "pixels", "disparity_source": "optical flow between the stereo views"}
