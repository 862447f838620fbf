"""NYU Depth v2's labeled set (Silberman et al. 2012) as released, read the same way by ingest (the ``nyu``
source, for fine-tuning) and evaluation (the ``nyu`` benchmark)::

    nyu_depth_v2_labeled.mat   MATLAB v7.3 (HDF5 behind a 512-byte MATLAB header): 1,449 frames
    splits.mat                 MATLAB v5: trainNdxs (795 frames), testNdxs (654), numbered from 1

HDF5 stores MATLAB's column-major arrays transposed: ``images`` is ``[N, 3, W, H]`` uint8 and ``rawDepths``
``[N, W, H]`` on disk, read back here as ``[H, W, 3]`` and ``[H, W]`` (480 x 640). ``rawDepths`` is the Kinect
depth projected onto the RGB frame, in metres, 0 = no measurement; ``depths`` is the same after the NYU
toolbox's colourisation in-filling (dense, partly invented), which neither stage reads. ``scenes`` is a cell
array of scene names (``kitchen_0028b``): HDF5 object references to uint16 character arrays.

Frames are numbered from 1, as in MATLAB and in ``splits.mat``. The ``.mat`` (2.8 GB) is opened by path
because HDF5 needs random access: on ``s3://`` it is downloaded once per machine (:mod:`pipeline.local_copy`).
Every problem with either file raises :class:`NYUFileError`, one line naming the file.

:func:`write_labeled` and :func:`write_splits` write the two files in this layout (the generated sample data of
:mod:`pipeline.sample_data` and the tests' small trees), so that the layout is stated once, here.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np

from pipeline import storage
from pipeline.local_copy import local_copy

LABELED = "nyu_depth_v2_labeled.mat"
SPLITS = "splits.mat"
# split name -> the index array of splits.mat that lists its frames
SPLIT_ARRAYS = {"train": "trainNdxs", "test": "testNdxs"}
REQUIRED_ARRAYS = ("images", "rawDepths")
# A MATLAB v7.3 file is HDF5 behind a 512-byte userblock: 116 bytes of text, 8 of subsystem offset (unused), the
# version 0x0200 and the endian indicator "IM" (little-endian), as MATLAB's own files begin.
MATLAB_HEADER = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Tue Oct  4 12:00:00 2011 HDF5 schema 1.00 ."
MATLAB_USERBLOCK = 512


class NYUFileError(ValueError):
    """``nyu_depth_v2_labeled.mat`` or ``splits.mat`` is unreadable or not laid out as released."""


def read_splits(url: str, options: storage.S3Options | None = None) -> dict[str, list[int]]:
    """``{"train": trainNdxs, "test": testNdxs}`` of ``splits.mat``: 1-based frame numbers, in file order."""
    import scipy.io
    from scipy.io.matlab import MatReadError

    data = storage.read_bytes(url, options)  # small (a few kB): no local copy needed
    try:
        arrays = scipy.io.loadmat(io.BytesIO(data))
    except (MatReadError, ValueError, TypeError, NotImplementedError) as exc:  # not MATLAB v5 (v7.3: NotImplemented)
        raise NYUFileError(f"{url}: not a readable MATLAB v5 file ({exc})") from exc
    splits = {}
    for split, key in SPLIT_ARRAYS.items():
        if key not in arrays:
            raise NYUFileError(f"{url}: no readable {key}")
        numbers = np.asarray(arrays[key]).ravel()
        if not np.issubdtype(numbers.dtype, np.number) or (numbers != np.round(numbers)).any():
            raise NYUFileError(f"{url}: {key} holds values that are not frame numbers")
        splits[split] = [int(n) for n in numbers]
    return splits


class LabeledSet:
    """One ``nyu_depth_v2_labeled.mat``, opened on first use and kept open in this process.

    A pickled ``LabeledSet`` (sent to a Ray worker) carries its URL only and opens the file again there.
    """

    def __init__(self, url: str, options: storage.S3Options | None = None):
        self.url, self.options = url, options
        self._file = None

    def __getstate__(self):
        return {**self.__dict__, "_file": None}  # an open HDF5 file cannot be pickled

    def _open(self):
        if self._file is None:
            import h5py

            path = local_copy(self.url, self.options)
            try:
                file = h5py.File(path, "r")
            except OSError as exc:
                raise NYUFileError(f"{self.url}: not a MATLAB v7.3 (HDF5) file ({exc})") from exc
            for key in REQUIRED_ARRAYS:
                if key not in file:
                    file.close()
                    raise NYUFileError(f"{self.url}: has no '{key}' array")
            self._file = file
        return self._file

    def frames(self) -> int:
        """How many frames the file holds (1,449 in the release)."""
        return int(self._open()["images"].shape[0])

    def _index(self, number: int) -> int:
        frames = self.frames()
        if not 1 <= number <= frames:
            raise NYUFileError(f"{self.url}: frame {number} outside 1..{frames}")
        return number - 1

    def image(self, number: int) -> np.ndarray:
        """Frame ``number`` (from 1): uint8 RGB ``[H, W, 3]``."""
        stored = np.asarray(self._open()["images"][self._index(number)])  # [3, W, H]
        if stored.ndim != 3 or stored.shape[0] != 3:
            raise NYUFileError(f"{self.url}: images[{number}] is {list(stored.shape)}, expected [3, W, H]")
        return np.ascontiguousarray(stored.transpose(2, 1, 0)).astype(np.uint8, copy=False)

    def raw_depth(self, number: int) -> np.ndarray:
        """Frame ``number`` (from 1): ``rawDepths`` float32 ``[H, W]``, metres, 0 = no measurement."""
        stored = np.asarray(self._open()["rawDepths"][self._index(number)], np.float32)  # [W, H]
        if stored.ndim != 2:
            raise NYUFileError(f"{self.url}: rawDepths[{number}] is {list(stored.shape)}, expected [W, H]")
        return np.ascontiguousarray(stored.T)

    def scenes(self) -> list[str] | None:
        """The scene name of every frame (``scenes``), or None when the file has no such array."""
        file = self._open()
        if "scenes" not in file:
            return None
        try:
            return ["".join(map(chr, np.asarray(file[ref]).ravel())) for ref in np.asarray(file["scenes"]).ravel()]
        except (TypeError, ValueError, KeyError) as exc:  # not a cell array of strings
            raise NYUFileError(f"{self.url}: 'scenes' is not a cell array of names ({exc})") from exc


def write_labeled(url: str, images: Sequence[np.ndarray], raw_depths: Sequence[np.ndarray],
                  depths: Sequence[np.ndarray] | None = None, scenes: Sequence[str] = ()) -> None:
    """Write ``nyu_depth_v2_labeled.mat`` at ``url`` as released (MATLAB v7.3: HDF5 behind the MATLAB userblock,
    each array stored transposed). ``images``: uint8 ``[H, W, 3]`` per frame; ``raw_depths``: ``[H, W]`` metres,
    0 = no measurement; ``depths``: the in-filled ``[H, W]`` metres (not read by this project; written when given);
    ``scenes``: one name a frame (or none), a cell array of strings as MATLAB writes it (HDF5 references to uint16
    character arrays)."""
    import tempfile

    import h5py

    with tempfile.TemporaryDirectory() as tmp:  # h5py writes a local file; storage copies it to url
        path = f"{tmp}/{LABELED}"
        with h5py.File(path, "w", userblock_size=MATLAB_USERBLOCK) as f:
            stored = np.stack([np.asarray(image, np.uint8).transpose(2, 1, 0) for image in images])  # [N, 3, W, H]
            f.create_dataset("images", data=stored).attrs["MATLAB_class"] = np.bytes_("uint8")
            raw = np.stack([np.asarray(d, np.float32).T for d in raw_depths])  # [N, W, H]
            f.create_dataset("rawDepths", data=raw).attrs["MATLAB_class"] = np.bytes_("single")
            if depths is not None:
                filled = np.stack([np.asarray(d, np.float32).T for d in depths])
                f.create_dataset("depths", data=filled).attrs["MATLAB_class"] = np.bytes_("single")
            if scenes:
                names = [f.create_dataset(f"#refs#/{i}", data=np.array([[ord(c) for c in name]], np.uint16).T)
                         for i, name in enumerate(scenes)]
                f.create_dataset("scenes", data=np.array([[n.ref for n in names]], dtype=h5py.ref_dtype))
        with open(path, "r+b") as f:
            f.write(MATLAB_HEADER.ljust(116) + b"\x00" * 8 + b"\x00\x02IM")
        with open(path, "rb") as f:
            storage.write_bytes(url, f.read())


def write_splits(url: str, train: Sequence[int], test: Sequence[int]) -> None:
    """Write ``splits.mat`` at ``url`` (MATLAB v5): ``trainNdxs`` and ``testNdxs``, 1-based frame numbers as
    double column vectors, as released."""
    import scipy.io

    buf = io.BytesIO()
    scipy.io.savemat(buf, {"testNdxs": np.array(test, float).reshape(-1, 1),
                           "trainNdxs": np.array(train, float).reshape(-1, 1)})
    storage.write_bytes(url, buf.getvalue())
