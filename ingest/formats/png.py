"""Single-channel PNG targets: 16-bit depth or disparity maps (DIML, ApolloScape, KITTI-style) and 8-bit
relative-depth maps (ReDWeb, HRWSI).

PIL opens a 16-bit grayscale PNG in mode ``I;16`` (or ``I`` in older releases); the raw integer values
are returned untouched, the adapter applies its documented divisor and invalid code.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from ingest.bad_input import BadInput


def _open(data: bytes) -> Image.Image:
    try:
        img = Image.open(io.BytesIO(data))
        if img.format != "PNG":
            raise BadInput(f"not a PNG file ({img.format} image)")
        img.load()
        return img
    except BadInput:
        raise
    except Exception as exc:  # PIL raises many types for broken files
        raise BadInput(f"unreadable or truncated PNG ({exc})") from exc


def _gray16(img: Image.Image) -> np.ndarray:
    """The uint16 ``[H, W]`` values of an opened 16-bit grayscale image."""
    if img.mode not in ("I;16", "I;16B", "I;16L", "I"):
        raise BadInput(f"expected a 16-bit grayscale PNG, found mode {img.mode}")
    array = np.asarray(img)
    if array.dtype != np.uint16:
        if array.min(initial=0) < 0 or array.max(initial=0) > 65535:
            raise BadInput(f"16-bit PNG holds values outside 0..65535 ({array.min()}..{array.max()})")
        array = array.astype(np.uint16)
    return array


def read_png16(data: bytes) -> np.ndarray:
    """Decode a 16-bit grayscale PNG to uint16 ``[H, W]`` raw values."""
    return _gray16(_open(data))


def read_png_gray(data: bytes) -> np.ndarray:
    """Decode an 8- or 16-bit grayscale PNG to uint8 or uint16 ``[H, W]`` raw values (decoded once).

    An RGB PNG whose three channels are equal (a gray map saved in colour) is accepted as its first
    channel; one with different channels is not a single-channel map and raises :class:`~ingest.bad_input.BadInput`.
    """
    return _gray(_open(data))


def _gray(img: Image.Image) -> np.ndarray:
    if img.mode == "L":
        return np.asarray(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        return _gray16(img)
    if img.mode in ("RGB", "RGBA"):
        rgb = np.asarray(img)[..., :3]
        if (rgb == rgb[..., :1]).all():
            return np.ascontiguousarray(rgb[..., 0])
        raise BadInput("expected a single-channel map, found a colour PNG with different channels")
    raise BadInput(f"expected a grayscale PNG, found mode {img.mode}")


def read_png_labels(data: bytes) -> np.ndarray:
    """Decode a label-map PNG to its integer class ids ``[H, W]`` (uint8, or uint16 for 16-bit maps).

    Grayscale (``L``, 16-bit) values are the ids; a palette PNG (``P``, as VOC-style datasets save their
    masks) holds the ids as its palette indices, so the indices are returned, never the colours.
    """
    img = _open(data)
    if img.mode == "P":
        return np.asarray(img)
    return _gray(img)


def write_png16(array: np.ndarray) -> bytes:
    """Encode uint16 ``[H, W]`` as a 16-bit grayscale PNG."""
    array = np.asarray(array)
    if array.dtype != np.uint16 or array.ndim != 2:
        raise ValueError(f"write_png16 takes uint16 [H, W], not {array.dtype} {list(array.shape)}")
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()
