"""NumPy ``.npy`` targets (TartanAir ``depth_left/*_left_depth.npy``: float32 metres)."""

from __future__ import annotations

import io

import numpy as np

from ingest.bad_input import BadInput


def read_npy_2d(data: bytes) -> np.ndarray:
    """A 2-D numeric ``.npy`` array as float32 ``[H, W]``; pickled objects are never loaded."""
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as exc:  # ValueError for pickles and bad headers, EOFError for truncation
        raise BadInput(f"unreadable or truncated .npy file ({exc})") from exc
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.number):
        raise BadInput(f"unknown .npy layout: {array.dtype} {list(array.shape)}, expected a 2-D numeric array")
    return array.astype(np.float32, copy=False)
