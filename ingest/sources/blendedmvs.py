"""BlendedMVS (Yao et al., CVPR 2020): rendered images of textured 3D reconstructions with depth maps.

Native layout (the released low-res set; any folder prefix; ``<scene>`` is a 24-hex id)::

    <scene>/blended_images/<frame>.jpg            RGB (``<frame>_masked.jpg`` variants are not inputs)
    <scene>/rendered_depth_maps/<frame>.pfm       float32 depth, PFM
    <scene>/cams/<frame>_cam.txt                  optional: MVSNet camera file (extrinsic, intrinsic)
    training_list.txt, validation_list.txt        optional: the official split, one scene id a line

Units: depth in the reconstruction's own scale, which is arbitrary per scene (kind ``relative_depth``);
0 = background without geometry (invalid). Conversion gives ``1 / depth``.

Group: the scene. Metadata: ``fx, fy, cx, cy`` from the camera file when it is there.
"""

from __future__ import annotations

import numpy as np

from ingest.bad_input import BadInput
from ingest.conversion import TargetKind
from ingest.formats.pfm import read_pfm
from ingest.listing import PREFIX, Role, pair_files, sample_id
from ingest.sources import register
from ingest.sources.base import RGB, SampleRef, SourceAdapter

_SCENE = PREFIX + r"(?P<scene>[^/]+)/"
SPLIT_LISTS = {"training_list.txt": "train", "validation_list.txt": "val"}


@register
class BlendedMVS(SourceAdapter):
    """BlendedMVS: ``blended_images/*.jpg`` + ``rendered_depth_maps/*.pfm`` depth of unknown scale, 0 invalid.

    Native layout, units, invalid values and the conversion rule: see the module docstring.
    """

    name = "blendedmvs"
    kind = TargetKind.RELATIVE_DEPTH

    ROLES = {
        "image": Role(_SCENE + r"blended_images/(?P<frame>\d+)\.jpg", "{prefix}{scene}/blended_images/{frame}.jpg"),
        "target": Role(_SCENE + r"rendered_depth_maps/(?P<frame>\d+)\.pfm",
                       "{prefix}{scene}/rendered_depth_maps/{frame}.pfm"),
        "cam": Role(_SCENE + r"cams/(?P<frame>\d+)_cam\.txt", "{prefix}{scene}/cams/{frame}_cam.txt"),
    }

    def _official_splits(self) -> dict[str, str]:
        splits = {}
        for path in self.files():
            split = SPLIT_LISTS.get(path.rsplit("/", 1)[-1])
            if split:
                for line in self.read_bytes(path).decode("utf-8", "replace").splitlines():
                    if line.strip():
                        splits[line.strip()] = split
        return splits

    def list_samples(self) -> list[SampleRef]:
        splits = self._official_splits()

        def make_ref(groups, files):
            scene = groups["scene"]
            sid = sample_id(groups["prefix"], scene, groups["frame"])
            return SampleRef(sid, files, group=sample_id(groups["prefix"], scene), split=splits.get(scene))

        return pair_files(self.files(), self.ROLES, make_ref, optional=("cam",))

    def read_rgb(self, ref: SampleRef) -> RGB:
        return self.rgb_from_file(ref.files["image"])

    def read_target(self, ref: SampleRef) -> tuple[np.ndarray, np.ndarray]:
        depth = self.decode(ref.files["target"], read_pfm)
        if depth.ndim != 2:
            raise BadInput(f"{ref.files['target']}: unknown PFM layout: colour PFM, expected a 1-channel depth")
        return depth, ~(depth <= 0)  # NaN/Inf stay "valid" so that conversion rejects them by name

    def metadata(self, ref: SampleRef) -> dict:
        meta = {"units": "reconstruction depth of unknown scale", "invalid_value": 0}
        if "cam" in ref.files:
            meta.update(parse_cam_intrinsics(self.read_bytes(ref.files["cam"]), ref.files["cam"]))
        return meta


def parse_cam_intrinsics(data: bytes, relative: str) -> dict:
    """``fx, fy, cx, cy`` from an MVSNet camera file (``extrinsic`` 4x4, ``intrinsic`` 3x3, depth range)."""
    tokens = data.decode("ascii", "replace").split()
    try:
        start = tokens.index("intrinsic") + 1
        k = np.array([float(t) for t in tokens[start:start + 9]]).reshape(3, 3)
    except ValueError:
        raise BadInput(f"{relative}: camera file has no 3x3 'intrinsic' block") from None
    return {"fx": float(k[0, 0]), "fy": float(k[1, 1]), "cx": float(k[0, 2]), "cy": float(k[1, 2])}
