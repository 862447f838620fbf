"""NYU Depth v2 (Silberman et al. 2012), the labeled set and its official split, as released::

    nyu/nyu_depth_v2_labeled.mat   MATLAB v7.3 (HDF5): images, rawDepths, ... for 1,449 frames
    nyu/splits.mat                 MATLAB v5: testNdxs (654), trainNdxs (795), 1-based indices

Split: the official 654 test frames (``testNdxs``). Ground truth: ``rawDepths``, the Kinect depth
projected onto the RGB frame without the toolbox's colourisation in-filling (``depths``), as the
issue's protocol asks ("raw depth"); metres, 0 = no measurement; valid where 0 < d < 10 (protocol).
Cap: 10 m. Crop: the papers are silent; we use the Eigen crop (rows 45-470, columns 41-600 of 480 x 640),
the convention of NYU evaluations since Eigen et al. 2014, because the labeled images carry a border
where the RGB was undistorted and the projected depth is unreliable (set in :mod:`evaluation.protocol`).

The two files are read by :mod:`pipeline.nyu_labeled` (the layout: arrays stored transposed, frames numbered
from 1), which the ``nyu`` ingest source shares; on ``s3://`` the 2.8 GB ``.mat`` is downloaded once per node
into the local cache (HDF5 needs random access).
"""

from __future__ import annotations

from evaluation.benchmarks.base import BenchmarkError, BenchmarkReader, BenchmarkSample, check_size
from pipeline.nyu_labeled import LABELED, SPLITS, LabeledSet, NYUFileError, read_splits


class NYUReader(BenchmarkReader):
    name = "nyu"

    def __init__(self, root: str):
        super().__init__(root)
        self._labeled = LabeledSet(self.path(LABELED))  # opened per process on first use (never pickled open)

    def list_samples(self) -> list[str]:
        self.require_root()
        try:
            indices = read_splits(self.path(SPLITS))["test"]
            frames = self._labeled.frames()
        except NYUFileError as exc:
            raise BenchmarkError(str(exc)) from exc
        bad = [i for i in indices if not 1 <= i <= frames]
        if bad:
            raise BenchmarkError(f"{self.path(SPLITS)}: test indices {bad[:5]} outside 1..{frames}")
        return [f"{i:04d}" for i in indices]

    def load(self, sample_id: str) -> BenchmarkSample:
        try:
            rgb = self._labeled.image(int(sample_id))
            depth = self._labeled.raw_depth(int(sample_id))
        except NYUFileError as exc:
            raise BenchmarkError(str(exc)) from exc
        source = f"{self.path(LABELED)}:rawDepths[{sample_id}]"
        check_size(rgb, depth, source)
        return BenchmarkSample(sample_id, rgb, source, depth=depth, valid=depth > 0)
