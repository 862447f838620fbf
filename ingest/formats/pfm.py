"""Portable Float Map (PFM): the float format of Middlebury, SceneFlow, BlendedMVS and many stereo tools.

Layout (http://www.pauldebevec.com/Research/HDR/PFM/ and the Middlebury SDK): three ASCII header lines,
then raw 32-bit floats.

1. ``PF`` (3 channels, RGB) or ``Pf`` (1 channel, grayscale)
2. ``<width> <height>``
3. ``<scale>``: its sign is the byte order (negative = little-endian, positive = big-endian); its
   magnitude is a scale factor that depth and disparity writers leave at 1 and readers ignore
4. ``width * height * channels`` floats, rows stored **bottom-to-top**

Writers differ in whitespace: SceneFlow's files carry trailing spaces (``"Pf \\n960 540 \\n-1.0\\n"``) and
some put width and height on separate lines, so the header is read line by line and each line stripped.
Non-finite values are kept as they are (Middlebury marks unknown disparity with ``inf``); what they mean
is the adapter's business.
"""

from __future__ import annotations

import numpy as np

from ingest.bad_input import BadInput

_MAX_SIDE = 1 << 16


def _header_line(data: bytes, pos: int) -> tuple[str, int]:
    end = data.find(b"\n", pos)
    if end < 0 or end - pos > 256:
        raise BadInput("truncated or not a PFM file (header line not terminated)")
    try:
        return data[pos:end].decode("ascii").strip(), end + 1
    except UnicodeDecodeError:
        raise BadInput("not a PFM file (binary bytes in the header)") from None


def read_pfm(data: bytes) -> np.ndarray:
    """Decode PFM bytes to float32 ``[H, W]`` (``Pf``) or ``[H, W, 3]`` (``PF``), top row first."""
    kind, pos = _header_line(data, 0)
    if kind not in ("Pf", "PF"):
        raise BadInput(f"not a PFM file (first line {kind[:16]!r}, expected 'Pf' or 'PF')")
    channels = 3 if kind == "PF" else 1
    dims, pos = _header_line(data, pos)
    tokens = dims.split()
    if len(tokens) == 1:  # width and height on two lines
        more, pos = _header_line(data, pos)
        tokens += more.split()
    scale_line, pos = _header_line(data, pos)
    try:
        width, height = (int(t) for t in tokens)
        scale = float(scale_line)
    except ValueError:
        raise BadInput(f"unknown PFM header layout (size {dims!r}, scale {scale_line!r})") from None
    if not (0 < width < _MAX_SIDE and 0 < height < _MAX_SIDE) or scale == 0 or not np.isfinite(scale):
        raise BadInput(f"unknown PFM header layout (size {width}x{height}, scale {scale})")
    expected = width * height * channels * 4
    payload = len(data) - pos
    if payload < expected:
        raise BadInput(f"truncated PFM: {payload} of {expected} data bytes for {width}x{height}x{channels}")
    if payload > expected:
        raise BadInput(f"unknown PFM layout: {payload - expected} bytes after the {width}x{height}x{channels} floats")
    dtype = "<f4" if scale < 0 else ">f4"
    array = np.frombuffer(data, dtype=dtype, count=width * height * channels, offset=pos)
    shape = (height, width) if channels == 1 else (height, width, 3)
    return np.ascontiguousarray(array.reshape(shape)[::-1], dtype=np.float32)


def write_pfm(array: np.ndarray, little_endian: bool = True) -> bytes:
    """Encode float ``[H, W]`` or ``[H, W, 3]`` (top row first) as PFM bytes, rows bottom-to-top."""
    array = np.asarray(array, dtype=np.float32)
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] != 3):
        raise ValueError(f"PFM holds [H, W] or [H, W, 3] arrays, not {list(array.shape)}")
    kind = "Pf" if array.ndim == 2 else "PF"
    height, width = array.shape[:2]
    header = f"{kind}\n{width} {height}\n{-1.0 if little_endian else 1.0}\n".encode("ascii")
    body = np.ascontiguousarray(array[::-1]).astype("<f4" if little_endian else ">f4").tobytes()
    return header + body
