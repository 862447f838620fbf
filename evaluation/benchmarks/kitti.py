"""KITTI (Geiger et al. 2012) with the improved ground truth of the depth benchmark (Uhrig et al. 2017),
as released, plus the Eigen test split's file lists::

    kitti/raw/<date>/<drive>/image_02/data/<frame>.png                              raw RGB (left colour)
    kitti/data_depth_annotated/<train|val>/<drive>/proj_depth/groundtruth/image_02/<frame>.png  depth GT
    kitti/eigen_test_files.txt                                                      Eigen et al. test list
    kitti/eigen_test_files_with_gt.txt                                              BTS's list (kitti_metric)

Two benchmarks read this folder:

``kitti`` (zero-shot, DPT Table 1; :class:`KITTIReader`): the 697 Eigen test images of ``eigen_test_files.txt``
intersected with the depth benchmark's official validation set (``val/``), which has annotated ground truth for
161 of them (MiDaS/DPT's KITTI set).

``kitti_metric`` (fine-tuned, DPT Table 3; :class:`KITTIEigenReader`): every frame of BTS's
``eigen_test_files_with_gt.txt`` (697 lines ``<date>/<drive>/image_02/data/<frame>.png
<drive>/proj_depth/groundtruth/image_02/<frame>.png <focal>``, the depth ``None`` for the 45 frames the depth
benchmark did not annotate; only the last path components count, so absolute paths of another machine, as in
Depth-Anything-V2's copy, work too). Each frame's ground truth is found in ``data_depth_annotated/train/`` or
``val/`` (the 652 annotated Eigen test frames lie in both); a frame without it (``None``, or in neither folder)
is still listed and reported with its reason instead of a number.

The zero-shot list accepts the two common forms of the Eigen test list: ``<date>/<drive> <frame> l|r``
(Monodepth2) or image paths ``<date>/<drive>/image_02/data/<frame>.png`` (Monodepth); ``r`` / ``image_03`` use
the right camera.
Units: uint16 PNG, metres = value / 256; 0 = no ground truth. Cap: 80 m (protocol).
Crop (zero-shot): the papers are silent; we apply none, because the annotated ground truth is already 0
(invalid) wherever the lidar saw nothing (sky, image top), which is what the usual Garg crop removes. The metric
protocol (:mod:`evaluation.metric_protocol`) applies the Garg crop, as BTS's evaluation does.
"""

from __future__ import annotations

import re

import numpy as np

from evaluation.benchmarks.base import (
    BenchmarkError,
    BenchmarkReader,
    BenchmarkSample,
    check_size,
    read_png_uint16,
    read_rgb,
)
from pipeline import storage

SPLIT_FILE = "eigen_test_files.txt"
EIGEN_GT_FILE = "eigen_test_files_with_gt.txt"  # BTS's list: image, depth or None, focal
ANNOTATED = ("train", "val")  # data_depth_annotated's folders; the Eigen test frames' depth lies in both
_PATH_FORM = re.compile(r"^(?P<date>[^/]+)/(?P<drive>[^/]+)/image_0(?P<cam>[23])/data/(?P<frame>\d+)\.\w+$")
# The last components of a listed image and of its depth map (any folder in front).
_IMAGE_TAIL = re.compile(r"(?:.*/)?(?P<date>[^/]+)/(?P<drive>[^/]+)/(?P<camera>image_0[23])/data/(?P<frame>\d+)\.png")
_DEPTH_TAIL = re.compile(r"(?:.*/)?(?P<drive>[^/]+)/proj_depth/groundtruth/(?P<camera>image_0[23])/(?P<frame>\d+)\.png")


def parse_eigen_line(line: str, where: str) -> tuple[str, str, str, str]:
    """One Eigen test-list line -> ``(date, drive, camera dir, 10-digit frame)``."""
    tokens = line.split()
    match = _PATH_FORM.match(tokens[0]) if tokens else None
    if match:
        return match["date"], match["drive"], f"image_0{match['cam']}", match["frame"].zfill(10)
    if len(tokens) == 3 and tokens[0].count("/") == 1 and tokens[1].isdigit() and tokens[2] in ("l", "r"):
        date, drive = tokens[0].split("/")
        return date, drive, "image_02" if tokens[2] == "l" else "image_03", tokens[1].zfill(10)
    raise BenchmarkError(f"{where}: not an Eigen test-list line: {line!r}")


def decode_kitti_depth(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint16 KITTI depth PNG values -> (metres float32, valid bool); 0 means no ground truth."""
    return raw.astype(np.float32) / 256.0, raw > 0


class KITTIReader(BenchmarkReader):
    name = "kitti"

    def _ground_truth(self, date: str, drive: str, camera: str, frame: str) -> str:
        return self.path("data_depth_annotated", "val", drive, "proj_depth", "groundtruth", camera, frame + ".png")

    def list_samples(self) -> list[str]:
        files = set(self.require_root())
        split_url = self.path(SPLIT_FILE)
        if split_url not in files:
            raise FileNotFoundError(f"kitti: the Eigen test list {split_url} is missing")
        text = storage.read_bytes(split_url).decode()
        ids = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                date, drive, camera, frame = parse_eigen_line(line, f"{split_url}:{number}")
                if self._ground_truth(date, drive, camera, frame) in files:
                    ids.append(f"{date}/{drive}/{camera}/{frame}")
        if not ids:
            raise FileNotFoundError(
                f"kitti: no image of {split_url} has ground truth under {self.path('data_depth_annotated', 'val')}")
        return sorted(set(ids))

    def load(self, sample_id: str) -> BenchmarkSample:
        date, drive, camera, frame = sample_id.split("/")
        gt_url = self._ground_truth(date, drive, camera, frame)
        rgb = read_rgb(self.path("raw", date, drive, camera, "data", frame + ".png"))
        depth, valid = decode_kitti_depth(read_png_uint16(gt_url))
        check_size(rgb, depth, gt_url)
        return BenchmarkSample(sample_id, rgb, gt_url, depth=depth, valid=valid)


def parse_eigen_gt_line(line: str, where: str) -> tuple[tuple[str, str, str, str], bool]:
    """One line of BTS's ``eigen_test_files_with_gt.txt`` -> ``((date, drive, camera dir, 10-digit frame), whether
    the list gives the frame a depth map)``; a depth path not of the line's image is an error naming the line."""
    tokens = line.split()
    image = _IMAGE_TAIL.fullmatch(tokens[0]) if len(tokens) >= 2 else None
    depth = _DEPTH_TAIL.fullmatch(tokens[1]) if image and tokens[1] != "None" else None
    if image is None or (tokens[1] != "None" and depth is None):
        raise BenchmarkError(f"{where}: not a line of {EIGEN_GT_FILE} ('<date>/<drive>/image_02/data/<frame>.png "
                             f"<drive>/proj_depth/groundtruth/image_02/<frame>.png|None <focal>'): {line!r}")
    frame = (image["date"], image["drive"], image["camera"], image["frame"].zfill(10))
    if depth is not None and (depth["drive"], depth["camera"], depth["frame"].zfill(10)) != frame[1:]:
        raise BenchmarkError(f"{where}: the depth map {tokens[1]} is not of the image {tokens[0]}")
    return frame, depth is not None


class KITTIEigenReader(BenchmarkReader):
    """``kitti_metric``: the Eigen test frames of BTS's list, ground truth from ``train/`` or ``val/`` (module
    docstring). Frames without ground truth load as a sample with only ``reason`` set."""

    name = "kitti_metric"

    def __init__(self, root: str):
        super().__init__(root)
        self._frames: dict[str, str] | None = None  # id -> its ground truth's URL, or "" when it has none
        self._reasons: dict[str, str] = {}  # id -> why it has none

    def _annotated(self, drive: str, camera: str, frame: str, split: str) -> str:
        return self.path("data_depth_annotated", split, drive, "proj_depth", "groundtruth", camera, frame + ".png")

    def _index(self) -> dict[str, str]:
        """Read the list once, and list the annotated depth of its drives (two listings per drive)."""
        if self._frames is not None:
            return self._frames
        list_url = self.path(EIGEN_GT_FILE)
        if not storage.exists(list_url):
            raise FileNotFoundError(f"kitti_metric: the Eigen test list {list_url} is missing (BTS's "
                                    f"{EIGEN_GT_FILE}, one line per frame: image, depth map or None, focal)")
        entries: dict[tuple[str, str, str, str], bool] = {}
        for number, line in enumerate(storage.read_bytes(list_url).decode().splitlines(), 1):
            if line.strip():
                frame, listed = parse_eigen_gt_line(line, f"{list_url}:{number}")
                entries.setdefault(frame, listed)
        present = {url for drive in sorted({f[1] for f, listed in entries.items() if listed}) for split in ANNOTATED
                   for url in storage.list_files(self.path("data_depth_annotated", split, drive))}
        self._frames = {}
        for (date, drive, camera, frame), listed in entries.items():
            sample_id = "/".join((date, drive, camera, frame))
            found = [url for url in (self._annotated(drive, camera, frame, split) for split in ANNOTATED)
                     if url in present]
            self._frames[sample_id] = found[0] if found and listed else ""  # the list is the protocol
            if not listed:
                self._reasons[sample_id] = f"no ground truth: {EIGEN_GT_FILE} gives its depth as None"
            elif not found:
                self._reasons[sample_id] = (f"no ground truth: data_depth_annotated/train/ nor val/ holds "
                                            f"{drive}/proj_depth/groundtruth/{camera}/{frame}.png")
        if not any(self._frames.values()):
            raise FileNotFoundError(f"kitti_metric: no frame of {list_url} has ground truth under "
                                    f"{self.path('data_depth_annotated')}/train or val")
        return self._frames

    def list_samples(self) -> list[str]:
        return sorted(self._index())

    def load(self, sample_id: str) -> BenchmarkSample:
        frames = self._index()
        if sample_id not in frames:
            raise BenchmarkError(f"kitti_metric: {sample_id} is not a frame of {self.path(EIGEN_GT_FILE)}")
        if not frames[sample_id]:
            return BenchmarkSample(sample_id, None, self.path(EIGEN_GT_FILE), reason=self._reasons[sample_id])
        date, drive, camera, frame = sample_id.split("/")
        gt_url = frames[sample_id]
        rgb = read_rgb(self.path("raw", date, drive, camera, "data", frame + ".png"))
        depth, valid = decode_kitti_depth(read_png_uint16(gt_url))
        check_size(rgb, depth, gt_url)
        return BenchmarkSample(sample_id, rgb, gt_url, depth=depth, valid=valid)
