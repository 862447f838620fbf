"""MPI Sintel (Butler et al. 2012) as released: RGB frames from MPI-Sintel-complete, depth from
MPI-Sintel-depth-training, extracted into one folder::

    sintel/training/final/<scene>/frame_0001.png     RGB, 436 x 1024
    sintel/training/depth/<scene>/frame_0001.dpt     depth

Split: every training frame that has depth (23 scenes, 1,064 frames), as in MiDaS/DPT.
Pass: the paper is silent; we use the ``final`` pass (motion blur, fog, shading: the harder and more
realistic render); ``clean`` can be chosen with ``SintelReader(root, render_pass="clean")``.
Units: the ``.dpt`` values are depth in the scene's units, treated as metres (MiDaS does the same when it
keeps only ground truth below 72). Invalid values: the files have none; non-finite or non-positive values
are marked invalid anyway. Cap: 72 (protocol), and only ground truth below 72 counts. Crop: none.

``.dpt`` format (the Sintel SDK's ``depth_read``): float32 tag 202021.25, int32 width, int32 height,
then width * height float32 values, row-major, little-endian.
"""

from __future__ import annotations

import numpy as np

from evaluation.benchmarks.base import BenchmarkError, BenchmarkReader, BenchmarkSample, check_size, read_rgb
from pipeline import storage

DPT_TAG = 202021.25


def read_dpt(data: bytes, url: str = "<bytes>") -> np.ndarray:
    """Decode a Sintel ``.dpt`` file to float32 ``[H, W]`` depth."""
    if len(data) < 12:
        raise BenchmarkError(f"{url}: too short for a Sintel .dpt header ({len(data)} bytes)")
    tag = np.frombuffer(data, "<f4", 1)[0]
    if tag != np.float32(DPT_TAG):
        raise BenchmarkError(f"{url}: not a Sintel .dpt file (tag {tag!r}, expected {DPT_TAG})")
    width, height = (int(v) for v in np.frombuffer(data, "<i4", 2, offset=4))
    if not (0 < width < 100_000 and 0 < height < 100_000):
        raise BenchmarkError(f"{url}: implausible size {width}x{height}")
    expected = 12 + 4 * width * height
    if len(data) != expected:
        raise BenchmarkError(f"{url}: {len(data)} bytes, expected {expected} for {width}x{height}")
    return np.frombuffer(data, "<f4", width * height, offset=12).reshape(height, width).astype(np.float32)


class SintelReader(BenchmarkReader):
    name = "sintel"

    def __init__(self, root: str, render_pass: str = "final"):
        super().__init__(root)
        self.render_pass = render_pass

    def list_samples(self) -> list[str]:
        files = self.require_root()
        depth_prefix = self.path("training", "depth") + "/"
        ids = [f[len(depth_prefix):-len(".dpt")] for f in files if f.startswith(depth_prefix) and f.endswith(".dpt")]
        if not ids:
            raise FileNotFoundError(f"sintel: no training/depth/<scene>/*.dpt under {self.root}")
        return sorted(ids)

    def load(self, sample_id: str) -> BenchmarkSample:
        depth_url = self.path("training", "depth", sample_id + ".dpt")
        rgb = read_rgb(self.path("training", self.render_pass, sample_id + ".png"))
        depth = read_dpt(storage.read_bytes(depth_url), depth_url)
        check_size(rgb, depth, depth_url)
        valid = np.isfinite(depth) & (depth > 0)
        return BenchmarkSample(sample_id, rgb, depth_url, depth=depth, valid=valid)
