"""Decode a target map (depth, disparity) from the file formats datasets release them in.

Every reader takes the file's bytes and its name (for messages) and returns float32 ``[H, W]`` in the
file's own stored units (an integer PNG gives its raw integer values; the caller divides by the source's
documented divisor). A file that is not the layout we understand raises :class:`SampleReadError` naming
it, which the ingest job records as the reject reason.

=========  ====================================================================================
encoding   layout
=========  ====================================================================================
``png``    8- or 16-bit single-channel PNG (or TIFF): raw integer values
``npy``    NumPy ``.npy`` of shape ``[H, W]`` or ``[H, W, 1]``, any real dtype (never pickled)
``pfm``    Portable Float Map ``Pf`` (one channel): text header, scale < 0 = little endian, rows
           stored bottom-up
``exr``    OpenEXR with one channel (or a channel named ``Y``, ``Z``, ``R``, ``depth``), float
=========  ====================================================================================
"""

from __future__ import annotations

import io
import re

import numpy as np
from PIL import Image

from ingest.sources.base import SampleReadError

ENCODINGS = ("png", "npy", "pfm", "exr")
_BY_EXTENSION = {".png": "png", ".tif": "png", ".tiff": "png", ".npy": "npy", ".pfm": "pfm", ".exr": "exr"}


def encoding_from_name(name: str) -> str:
    """The encoding a file name's extension implies; raises naming the file when none does."""
    lower = name.lower()
    for ext, encoding in _BY_EXTENSION.items():
        if lower.endswith(ext):
            return encoding
    raise SampleReadError(f"{name}: cannot tell the target encoding from the extension (use one of {list(ENCODINGS)})")


def read_png(data: bytes, name: str) -> np.ndarray:
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except Exception as exc:  # PIL raises many exception types for broken files
        raise SampleReadError(f"{name}: unreadable or truncated target image ({exc})") from exc
    array = np.asarray(img)
    if array.ndim != 2:
        raise SampleReadError(f"{name}: target image must have one channel, has mode {img.mode} {list(array.shape)}")
    return array.astype(np.float32)


def read_npy(data: bytes, name: str) -> np.ndarray:
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as exc:  # ValueError for pickled or corrupt files, EOFError when truncated
        raise SampleReadError(f"{name}: unreadable .npy ({exc})") from exc
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise SampleReadError(f"{name}: .npy must hold a real [H, W] array, has {array.dtype} {list(array.shape)}")
    return array.astype(np.float32)


_PFM_HEADER = re.compile(rb"^(P[Ff])\s+(\d+)\s+(\d+)\s+([-+0-9.eE]+)\s")


def read_pfm(data: bytes, name: str) -> np.ndarray:
    """Portable Float Map: ``Pf`` (grey) only; a negative scale means little-endian; rows are bottom-up."""
    match = _PFM_HEADER.match(data[:256])
    if match is None:
        raise SampleReadError(f"{name}: not a PFM file (header must be 'Pf|PF <width> <height> <scale>')")
    if match.group(1) == b"PF":
        raise SampleReadError(f"{name}: 3-channel PFM (PF) is not a depth or disparity map; expected Pf")
    width, height, scale = int(match.group(2)), int(match.group(3)), float(match.group(4))
    dtype = "<f4" if scale < 0 else ">f4"
    body = data[match.end():]
    if len(body) < width * height * 4:
        raise SampleReadError(f"{name}: truncated PFM ({len(body)} bytes of data, {width * height * 4} expected)")
    array = np.frombuffer(body, dtype=dtype, count=width * height).reshape(height, width)
    return np.flipud(array).astype(np.float32)


def read_exr(data: bytes, name: str) -> np.ndarray:
    import OpenEXR

    try:
        with OpenEXR.File(io.BytesIO(data)) as exr:
            channels = {name: np.array(channel.pixels) for name, channel in exr.channels().items()}
    except Exception as exc:  # the OpenEXR binding raises RuntimeError or ValueError
        raise SampleReadError(f"{name}: unreadable OpenEXR ({exc})") from exc
    names = list(channels)
    chosen = names[0] if len(names) == 1 else next((c for c in ("Y", "Z", "R", "depth") if c in names), None)
    if chosen is None:
        raise SampleReadError(f"{name}: OpenEXR has channels {names}; expected one, or one named Y, Z, R or depth")
    array = channels[chosen]
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim != 2:
        raise SampleReadError(f"{name}: OpenEXR channel {chosen} is {list(array.shape)}, expected [H, W]")
    return array.astype(np.float32)


READERS = {"png": read_png, "npy": read_npy, "pfm": read_pfm, "exr": read_exr}


def read_target_map(data: bytes, name: str, encoding: str = "auto") -> np.ndarray:
    """Decode ``data`` (the file ``name``) as ``encoding`` ("auto": from the extension) -> float32 ``[H, W]``."""
    encoding = encoding_from_name(name) if encoding == "auto" else encoding
    if encoding not in READERS:
        raise ValueError(f"unknown target encoding {encoding!r}; known: auto, {', '.join(ENCODINGS)}")
    return READERS[encoding](data, name)
