"""IRS (Wang et al., 2019, "IRS: A Large Naturalistic Indoor Robotics Stereo Dataset"; blackjack2015/IRS):
rendered indoor stereo pairs with exact disparity.

Native layout (as released; any folder prefix)::

    <category>/<scene>/l_<n>.png     left image (``<category>``: Home, Office, Restaurant, Store)
    <category>/<scene>/r_<n>.png     right image (not read)
    <category>/<scene>/d_<n>.exr     left disparity, OpenEXR float (one channel, or equal R, G, B)
    lists/IRSDataset_TRAIN.list      optional: the official split, lines "<left> <right> <disp>"
    lists/IRSDataset_TEST.list

Units: pixels (kind ``stereo_disparity``: kept as is). Invalid: non-finite values (NaN/Inf); rendered
disparity has no other invalid code. The authors note that some files listed were used for debugging
and have the wrong size: those become "image/target size mismatch" rejects.

Group: ``<category>/<scene>`` without its lighting variant: IRS renders one room several times
(``ArchVizInterior03Data``, ``..._Night``, ``..._Dark``, ``..._T1``, ``..._BL2``), and those views of the
same geometry must not straddle the train/val split, so the group is the scene name up to its first
``_``. Split: from the list files when present (matched on the last three path components, since list
entries start with the dataset folder's name, ``IRSDataset/Home/...``).

Camera (the authors' loader, ``dataloader/SIRSLoader.py``): fx = fy = 480 px for 960x540 images.
"""

from __future__ import annotations

import numpy as np

from ingest.conversion import TargetKind
from ingest.formats.exr import read_exr
from ingest.listing import PREFIX, Role, pair_files, sample_id
from ingest.sources import register
from ingest.sources.base import RGB, SampleRef, SourceAdapter

_DIR = PREFIX + r"(?P<category>[^/]+)/(?P<scene>[^/]+)/"
SPLIT_LISTS = {"IRSDataset_TRAIN.list": "train", "IRSDataset_TEST.list": "test"}


def _tail(path: str) -> str:
    return "/".join(path.strip().split("/")[-3:])


@register
class IRS(SourceAdapter):
    """IRS: ``l_*.png`` + ``d_*.exr`` disparity in pixels, non-finite invalid.

    Native layout, units, invalid values and the conversion rule: see the module docstring.
    """

    name = "irs"
    kind = TargetKind.STEREO_DISPARITY

    ROLES = {
        "image": Role(_DIR + r"l_(?P<n>\d+)\.png", "{prefix}{category}/{scene}/l_{n}.png"),
        "target": Role(_DIR + r"d_(?P<n>\d+)\.exr", "{prefix}{category}/{scene}/d_{n}.exr"),
    }

    def _official_splits(self) -> dict[str, str]:
        splits = {}
        for path in self.files():
            split = SPLIT_LISTS.get(path.rsplit("/", 1)[-1])
            if split:
                for line in self.read_bytes(path).decode("utf-8", "replace").splitlines():
                    if line.split():
                        splits[_tail(line.split()[0])] = split
        return splits

    def list_samples(self) -> list[SampleRef]:
        splits = self._official_splits()

        def make_ref(groups, files):
            category, scene = groups["category"], groups["scene"]
            sid = sample_id(groups["prefix"], category, scene, groups["n"])
            room = scene.split("_", 1)[0] or scene  # lighting variants of one room share a group
            split = splits.get(_tail(files["image"]))
            return SampleRef(sid, files, group=sample_id(groups["prefix"], category, room), split=split)

        return pair_files(self.files(), self.ROLES, make_ref)

    def read_rgb(self, ref: SampleRef) -> RGB:
        return self.rgb_from_file(ref.files["image"])

    def read_target(self, ref: SampleRef) -> tuple[np.ndarray, np.ndarray]:
        disparity = self.decode(ref.files["target"], read_exr)
        return disparity, np.isfinite(disparity)

    def metadata(self, ref: SampleRef) -> dict:
        return {"units": "pixels", "fx": 480.0, "fy": 480.0}
