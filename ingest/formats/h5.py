"""HDF5 targets (MegaDepth ``depths/*.h5`` with a float32 dataset ``depth``), read with h5py from memory."""

from __future__ import annotations

import io

import numpy as np

from ingest.bad_input import BadInput


def read_h5(data: bytes, dataset: str) -> np.ndarray:
    """The 2-D dataset ``dataset`` of an HDF5 file, as float32 ``[H, W]``."""
    import h5py

    try:
        with h5py.File(io.BytesIO(data), "r") as f:
            if dataset not in f:
                raise BadInput(f"unknown H5 layout: no dataset {dataset!r} (has: {', '.join(sorted(f)) or 'nothing'})")
            node = f[dataset]
            if not isinstance(node, h5py.Dataset) or node.ndim != 2:
                shape = list(node.shape) if isinstance(node, h5py.Dataset) else "a group"
                raise BadInput(f"unknown H5 layout: {dataset!r} is {shape}, expected a 2-D array")
            return np.asarray(node[()], dtype=np.float32)
    except BadInput:
        raise
    except Exception as exc:  # h5py raises OSError for truncated or non-HDF5 bytes
        raise BadInput(f"unreadable or truncated H5 file ({exc})") from exc


def write_h5(arrays: dict[str, np.ndarray]) -> bytes:
    """HDF5 bytes holding the given named datasets (for tests and conversions)."""
    import h5py

    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        for name, array in arrays.items():
            f.create_dataset(name, data=array)
    return buf.getvalue()
