"""KITTI (Geiger et al. 2012) with the improved ground truth of the depth benchmark (Uhrig et al. 2017),
as released, plus the Eigen test split's file list::

    kitti/raw/<date>/<drive>/image_02/data/<frame>.png                              raw RGB (left colour)
    kitti/data_depth_annotated/val/<drive>/proj_depth/groundtruth/image_02/<frame>.png  depth GT
    kitti/eigen_test_files.txt                                                      Eigen et al. test list

Split: the 697 Eigen test images intersected with the depth benchmark's official validation set, which
has annotated ground truth for 161 of them (MiDaS/DPT's KITTI set). The list file accepts the two common
forms of the Eigen test list: ``<date>/<drive> <frame> l|r`` (Monodepth2) or image paths
``<date>/<drive>/image_02/data/<frame>.png`` (Monodepth); ``r`` / ``image_03`` use the right camera.
Units: uint16 PNG, metres = value / 256; 0 = no ground truth. Cap: 80 m (protocol).
Crop: the papers are silent; we apply none, because the annotated ground truth is already 0 (invalid)
wherever the lidar saw nothing (sky, image top), which is what the usual Garg crop removes.
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
_PATH_FORM = re.compile(r"^(?P<date>[^/]+)/(?P<drive>[^/]+)/image_0(?P<cam>[23])/data/(?P<frame>\d+)\.\w+$")


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
