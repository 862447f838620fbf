"""DIML/CVL RGB-D, indoor part (Kinect v2; Cho et al. 2021, https://dimlrgbd.github.io/).

Native layout, as released and as read by public loaders (ZoeDepth's DIML_Indoor, the DIML sample
release ``{train,test}/{HR,LR}/<scene>/...``); any folder prefix is allowed::

    [<prefix>/]<scene>/color/<name>_c.png                     RGB image
    [<prefix>/]<scene>/depth_filled/<name>_depth_filled.png   16-bit depth, millimetres

Units: uint16 millimetres; 0 = no measurement (invalid). The target is metres (``value / 1000``) of kind
``metric_depth``; the shard's disparity is exactly ``1 / depth`` in 1/metre (the metric contract of
:mod:`pipeline.shards`).

Split: a ``train`` or ``test`` folder in the prefix is the official split. Group: the scene folder, so
frames of one room never straddle the train/val split.
"""

from __future__ import annotations

import numpy as np

from ingest.conversion import TargetKind
from ingest.formats.png import read_png16
from ingest.listing import PREFIX, Role, pair_files, sample_id
from ingest.sources import register
from ingest.sources.base import RGB, SampleRef, SourceAdapter

MM_PER_M = 1000.0


@register
class DIML(SourceAdapter):
    """DIML indoor: ``color/*_c.png`` + ``depth_filled/*.png`` uint16 mm -> metres, 0 invalid.

    Native layout, units, invalid values and the conversion rule: see the module docstring.
    """

    name = "diml"
    kind = TargetKind.METRIC_DEPTH

    ROLES = {
        "image": Role(PREFIX + r"(?P<scene>[^/]+)/color/(?P<name>[^/]+)_c\.(?P<ext>png|jpg)",
                      "{prefix}{scene}/color/{name}_c.png"),
        "target": Role(PREFIX + r"(?P<scene>[^/]+)/depth_filled/(?P<name>[^/]+)_depth_filled\.png",
                       "{prefix}{scene}/depth_filled/{name}_depth_filled.png"),
    }

    def list_samples(self) -> list[SampleRef]:
        def make_ref(groups, files):
            folders = groups["prefix"].strip("/").split("/")
            split = next((f for f in reversed(folders) if f in ("train", "test")), None)
            sid = sample_id(groups["prefix"], groups["scene"], groups["name"])
            return SampleRef(sid, files, group=groups["scene"], split=split)

        return pair_files(self.files(), self.ROLES, make_ref)

    def read_rgb(self, ref: SampleRef) -> RGB:
        return self.rgb_from_file(ref.files["image"])

    def read_target(self, ref: SampleRef) -> tuple[np.ndarray, np.ndarray]:
        mm = self.decode(ref.files["target"], read_png16)
        return mm.astype(np.float32) / MM_PER_M, mm > 0

    def metadata(self, ref: SampleRef) -> dict:
        return {"units": "metres", "sensor": "Kinect v2", "depth_encoding": "uint16 mm, 0 = invalid"}
