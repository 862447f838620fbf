"""TartanAir (Wang et al., IROS 2020): photo-realistic simulated flights with rendered metric depth.

Native layout (as downloaded and unpacked; any folder prefix allowed)::

    <env>/<Easy|Hard>/<P###>/image_left/<frame>_left.png              RGB, 640x480
    <env>/<Easy|Hard>/<P###>/depth_left/<frame>_left_depth.npy        float32 [H, W], metres

Units: metres along the optical axis (kind ``metric_depth``); the shard's disparity is exactly ``1 / depth``
in 1/metre (the metric contract of :mod:`pipeline.shards`). The sky is rendered very far away (thousands
of metres): it stays VALID and becomes a disparity near zero, which is what the model should learn there.
Only depth ``<= 0`` is invalid; NaN/Inf make conversion reject the sample with its reason.

Camera (TartanAir documentation): fx = fy = 320, cx = 320, cy = 240 for 640x480, stereo baseline 0.25 m.
Group: the environment, because all trajectories of one environment fly through the same place.
"""

from __future__ import annotations

import numpy as np

from ingest.conversion import TargetKind
from ingest.formats.npy import read_npy_2d
from ingest.listing import PREFIX, Role, pair_files, sample_id
from ingest.sources import register
from ingest.sources.base import RGB, SampleRef, SourceAdapter

_TRAJECTORY = PREFIX + r"(?P<env>[^/]+)/(?P<level>Easy|Hard)/(?P<traj>P\d+)/"


@register
class TartanAir(SourceAdapter):
    """TartanAir: ``image_left/*_left.png`` + ``depth_left/*_left_depth.npy`` metres; the far sky stays valid.

    Native layout, units, invalid values and the conversion rule: see the module docstring.
    """

    name = "tartanair"
    kind = TargetKind.METRIC_DEPTH

    ROLES = {
        "image": Role(_TRAJECTORY + r"image_left/(?P<frame>\d+)_left\.png",
                      "{prefix}{env}/{level}/{traj}/image_left/{frame}_left.png"),
        "target": Role(_TRAJECTORY + r"depth_left/(?P<frame>\d+)_left_depth\.npy",
                       "{prefix}{env}/{level}/{traj}/depth_left/{frame}_left_depth.npy"),
    }

    def list_samples(self) -> list[SampleRef]:
        def make_ref(groups, files):
            sid = sample_id(groups["prefix"], groups["env"], groups["level"], groups["traj"], groups["frame"])
            return SampleRef(sid, files, group=sample_id(groups["prefix"], groups["env"]))

        return pair_files(self.files(), self.ROLES, make_ref)

    def read_rgb(self, ref: SampleRef) -> RGB:
        return self.rgb_from_file(ref.files["image"])

    def read_target(self, ref: SampleRef) -> tuple[np.ndarray, np.ndarray]:
        depth = self.decode(ref.files["target"], read_npy_2d)
        # NaN/Inf stay inside `valid` so that conversion rejects the sample naming them.
        return depth, ~(depth <= 0)

    def metadata(self, ref: SampleRef) -> dict:
        return {"units": "metres", "fx": 320.0, "fy": 320.0, "cx": 320.0, "cy": 240.0, "baseline_m": 0.25}
