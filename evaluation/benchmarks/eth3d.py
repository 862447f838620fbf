"""ETH3D (Schöps et al. 2017), high-resolution multi-view training data as released
(``multi_view_training_dslr_undistorted.7z`` and ``multi_view_training_dslr_depth.7z`` extracted into
one folder)::

    eth3d/<scene>/images/dslr_images_undistorted/DSC_0259.JPG     RGB, 6048 x 4032
    eth3d/<scene>/ground_truth_depth/dslr_images/DSC_0259.JPG     depth (raw float32, despite the name)

Split: all 454 DSLR images of the 13 training scenes (the test scenes have no public ground truth).
Units: metres. Depth files: little-endian float32, row-major, exactly the image's width x height values
(no header); ``inf`` (and 0) mark pixels without ground truth. Cap: 72 m (protocol). Crop: none.
MiDaS/DPT are silent on resolution: we evaluate at the released full resolution, as the depth maps are.
"""

from __future__ import annotations

import numpy as np

from evaluation.benchmarks.base import BenchmarkError, BenchmarkReader, BenchmarkSample, read_rgb
from pipeline import storage

DEPTH_DIR = "ground_truth_depth/dslr_images"
IMAGE_DIR = "images/dslr_images_undistorted"


def read_eth3d_depth(data: bytes, height: int, width: int, url: str = "<bytes>") -> np.ndarray:
    """Decode an ETH3D raw depth map of the given image size to float32 ``[H, W]`` metres."""
    expected = 4 * height * width
    if len(data) != expected:
        raise BenchmarkError(
            f"{url}: {len(data)} bytes, but its image is {height}x{width} (expected {expected} bytes of float32)"
        )
    return np.frombuffer(data, "<f4").reshape(height, width).astype(np.float32)


class ETH3DReader(BenchmarkReader):
    name = "eth3d"

    def list_samples(self) -> list[str]:
        ids = []
        for url in self.require_root():
            rel = self.relative(url)
            scene, _, rest = rel.partition("/")
            if rest.startswith(DEPTH_DIR + "/"):
                ids.append(f"{scene}/{rest[len(DEPTH_DIR) + 1:]}")
        if not ids:
            raise FileNotFoundError(f"eth3d: no <scene>/{DEPTH_DIR}/* depth maps under {self.root}")
        return sorted(ids)

    def load(self, sample_id: str) -> BenchmarkSample:
        scene, _, image = sample_id.partition("/")
        depth_url = self.path(scene, DEPTH_DIR, image)
        rgb = read_rgb(self.path(scene, IMAGE_DIR, image))
        depth = read_eth3d_depth(storage.read_bytes(depth_url), rgb.shape[0], rgb.shape[1], depth_url)
        valid = np.isfinite(depth) & (depth > 0)
        return BenchmarkSample(sample_id, rgb, depth_url, depth=depth, valid=valid)
