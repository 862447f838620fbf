"""NYU Depth v2 (Silberman et al. 2012), the labeled set and its official split, as released::

    nyu/nyu_depth_v2_labeled.mat   MATLAB v7.3 (HDF5): images, rawDepths, ... for 1,449 frames
    nyu/splits.mat                 MATLAB v5: testNdxs (654), trainNdxs (795), 1-based indices

Split: the official 654 test frames (``testNdxs``). Ground truth: ``rawDepths``, the Kinect depth
projected onto the RGB frame without the toolbox's colourisation in-filling (``depths``), as the
issue's protocol asks ("raw depth"); metres, 0 = no measurement; valid where 0 < d < 10 (protocol).
Cap: 10 m. Crop: the papers are silent; we use the Eigen crop (rows 45-470, columns 41-600 of 480 x 640),
the convention of NYU evaluations since Eigen et al. 2014, because the labeled images carry a border
where the RGB was undistorted and the projected depth is unreliable (set in :mod:`evaluation.protocol`).

HDF5 stores MATLAB's column-major arrays transposed: ``images`` is ``[N, 3, W, H]`` and ``rawDepths``
``[N, W, H]`` on disk; both are transposed back to ``[H, W, ...]`` here. On ``s3://`` the 2.8 GB ``.mat``
is downloaded once per node into the local cache (HDF5 needs random access).
"""

from __future__ import annotations

import numpy as np

from evaluation.benchmarks.base import BenchmarkError, BenchmarkReader, BenchmarkSample, check_size, local_copy

LABELED = "nyu_depth_v2_labeled.mat"
SPLITS = "splits.mat"


def read_test_indices(path: str) -> list[int]:
    """``testNdxs`` of the official ``splits.mat`` (1-based frame numbers)."""
    import scipy.io

    try:
        indices = scipy.io.loadmat(path)["testNdxs"]
    except (KeyError, ValueError, OSError) as exc:
        raise BenchmarkError(f"{path}: no readable testNdxs ({exc})") from exc
    return [int(i) for i in np.asarray(indices).ravel()]


class NYUReader(BenchmarkReader):
    name = "nyu"

    def __init__(self, root: str):
        super().__init__(root)
        self._file = None  # the open HDF5 file, per process (never pickled)

    def __getstate__(self):
        return {**self.__dict__, "_file": None}

    def _labeled(self):
        if self._file is None:
            import h5py

            path = local_copy(self.path(LABELED))
            try:
                self._file = h5py.File(path, "r")
            except OSError as exc:
                raise BenchmarkError(f"{self.path(LABELED)}: not a MATLAB v7.3 (HDF5) file ({exc})") from exc
            for key in ("images", "rawDepths"):
                if key not in self._file:
                    raise BenchmarkError(f"{self.path(LABELED)}: has no '{key}' array")
        return self._file

    def list_samples(self) -> list[str]:
        self.require_root()
        indices = read_test_indices(local_copy(self.path(SPLITS)))
        frames = self._labeled()["images"].shape[0]
        bad = [i for i in indices if not 1 <= i <= frames]
        if bad:
            raise BenchmarkError(f"{self.path(SPLITS)}: test indices {bad[:5]} outside 1..{frames}")
        return [f"{i:04d}" for i in indices]

    def load(self, sample_id: str) -> BenchmarkSample:
        labeled = self._labeled()
        index = int(sample_id) - 1
        rgb = np.ascontiguousarray(np.asarray(labeled["images"][index]).transpose(2, 1, 0)).astype(np.uint8)
        depth = np.ascontiguousarray(np.asarray(labeled["rawDepths"][index], np.float32).T)
        source = f"{self.path(LABELED)}:rawDepths[{sample_id}]"
        check_size(rgb, depth, source)
        return BenchmarkSample(sample_id, rgb, source, depth=depth, valid=depth > 0)
