"""KITTI (Geiger et al. 2012): raw drives with the annotated depth of the depth-prediction benchmark (Uhrig et
al. 2017), over the Eigen split as BTS lists it, for fine-tuning to metric depth.

Native layout (KITTI raw and ``data_depth_annotated.zip`` unzipped side by side, as BTS's ``kitti_dataset/``;
any folder prefix)::

    <date>/<date>_drive_<nnnn>_sync/image_02/data/<frame>.png       rectified left colour image (image_03: right)
    <date>/calib_cam_to_cam.txt                                      optional: the date's calibration
    data_depth_annotated/<train|val>/<drive>/proj_depth/groundtruth/image_02/<frame>.png   depth ground truth
    eigen_train_files_with_gt.txt, eigen_test_files_with_gt.txt      BTS's Eigen lists, anywhere under the root

The lists (:mod:`ingest.file_lists`) say which frames are read and their split: lines ``<image> <depth|None>
<focal>``, the depth found under the root by its last components, so ``data_depth_annotated``'s ``train/``
and ``val/`` may be merged (as BTS does) or not.

Units: 16-bit PNG, metres = value / 256 (kind ``metric_depth``); 0 = no lidar measurement (invalid; the
annotated depth is sparse, with nothing above the lidar's field of view). The shard's disparity is exactly
``1 / depth`` in 1/metre (the metric contract of :mod:`pipeline.shards`), so fine-tuning recovers metres as
``1 / disparity``.

Split: the list a frame is named in (``train``, ``test``). A frame without ground truth (its list gives
``None``, or its depth file is absent) is still an input and is rejected with that reason. Group: the drive,
so frames of one drive never straddle splits.

Camera: ``fx, fy, cx, cy`` from ``P_rect_02`` (``P_rect_03`` for image_03) of the date's
``calib_cam_to_cam.txt`` when it is there (the images are rectified; the lists' focal column is that fx).
"""

from __future__ import annotations

import re

import numpy as np

from ingest.bad_input import BadInput
from ingest.conversion import TargetKind
from ingest.file_lists import TailIndex, beside, check_listed, drop_repeats, read_lists
from ingest.formats.png import read_png16
from ingest.sources import register
from ingest.sources.base import RGB, SampleRef, SourceAdapter

DEPTH_SCALE = 256.0  # stored value per metre
LISTS = {"eigen_train_files_with_gt.txt": "train", "eigen_test_files_with_gt.txt": "test"}
CALIBRATION = "calib_cam_to_cam.txt"
# The last five components of a listed image and of its depth map: what identifies the frame.
_IMAGE = re.compile(r"(?:.*/)?(?P<date>\d{4}_\d{2}_\d{2})/(?P<drive>(?P=date)_drive_\d{4}_sync)/"
                    r"(?P<camera>image_0[23])/data/(?P<frame>\d{10})\.png")
_DEPTH = re.compile(r"(?:.*/)?(?P<drive>\d{4}_\d{2}_\d{2}_drive_\d{4}_sync)/proj_depth/groundtruth/"
                    r"(?P<camera>image_0[23])/(?P<frame>\d{10})\.png")
_FRAME_NAME = r"\d{10}\.png"


@register
class KITTI(SourceAdapter):
    """KITTI Eigen split: raw ``image_02/data/*.png`` + annotated ``proj_depth/groundtruth`` uint16 / 256 m.

    Native layout, units, invalid values and the conversion rule: see the module docstring.
    """

    name = "kitti"
    kind = TargetKind.METRIC_DEPTH

    def __init__(self, root, options=None):
        super().__init__(root, options)
        self._calibration: dict[str, dict] = {}
        self._present: set[str] | None = None

    def list_samples(self) -> list[SampleRef]:
        check_listed(self, LISTS, _FRAME_NAME)
        index, refs = TailIndex(self.files(), parts=5), []  # a frame's image and depth end differently
        for path, split, entry in read_lists(self, LISTS):
            image, depth = _IMAGE.fullmatch(entry.image), _DEPTH.fullmatch(entry.depth or "")
            if image is None or (entry.depth is not None and depth is None):
                raise ValueError(f"{entry.where}: expected '<date>/<drive>/image_0X/data/<frame>.png "
                                 f"<drive>/proj_depth/groundtruth/image_0X/<frame>.png|None <focal>', got "
                                 f"{entry.image} {entry.depth}")
            if depth is not None and [depth[k] for k in ("drive", "camera", "frame")] != [
                    image[k] for k in ("drive", "camera", "frame")]:
                raise ValueError(f"{entry.where}: the depth {entry.depth} is not of the image {entry.image}")
            paths = {"image": index.find(entry.image, entry.where) or beside(path, entry.image, 5), "list": path}
            if entry.depth is not None:
                paths["target"] = index.find(entry.depth, entry.where) or beside(path, entry.depth, 5)
            sid = "/".join((image["date"], image["drive"], image["camera"], image["frame"]))
            refs.append(SampleRef(sid, paths, group=image["drive"], split=split))
        return sorted(drop_repeats(refs), key=lambda r: r.id)

    def read_rgb(self, ref: SampleRef) -> RGB:
        return self.rgb_from_file(ref.files["image"])

    def read_target(self, ref: SampleRef) -> tuple[np.ndarray, np.ndarray]:
        if "target" not in ref.files:
            raise BadInput(f"{ref.files['image']}: no annotated depth ({ref.files['list']} gives depth None)")
        raw = self.decode(ref.files["target"], read_png16)
        return raw.astype(np.float32) / np.float32(DEPTH_SCALE), raw > 0

    def metadata(self, ref: SampleRef) -> dict:
        meta = {"units": "metres", "sensor": "Velodyne HDL-64E, accumulated (annotated depth)",
                "depth_encoding": "uint16 PNG, metres = value / 256, 0 = no measurement"}
        # <date>/<drive>/image_0X/data/<frame>.png: the date's folder holds its calibration
        image = ref.files["image"].split("/")
        calibration = "/".join(image[:-4] + [CALIBRATION])
        if self._present is None:
            self._present = set(self.files())
        if calibration in self._present:
            meta.update(self._camera(calibration, image[-3][-1]))
        return meta

    def _camera(self, relative: str, camera: str) -> dict:
        key = f"{relative}:{camera}"
        if key not in self._calibration:
            self._calibration[key] = parse_rectified_camera(self.read_bytes(relative), relative, camera)
        return self._calibration[key]


def parse_rectified_camera(data: bytes, relative: str, camera: str) -> dict:
    """``fx, fy, cx, cy`` (pixels) of camera ``camera`` (``"2"`` or ``"3"``) from ``P_rect_0<camera>`` of a KITTI
    ``calib_cam_to_cam.txt`` (``P_rect_02: fx 0 cx tx 0 fy cy ty 0 0 1 tz``, the 3x4 rectified projection)."""
    name = f"P_rect_0{camera}:"
    for line in data.decode("ascii", "replace").splitlines():
        if line.startswith(name):
            try:
                p = np.array([float(v) for v in line[len(name):].split()]).reshape(3, 4)
            except ValueError:
                break
            return {"fx": float(p[0, 0]), "fy": float(p[1, 1]), "cx": float(p[0, 2]), "cy": float(p[1, 2])}
    raise BadInput(f"{relative}: calibration has no 3x4 {name[:-1]} line")
