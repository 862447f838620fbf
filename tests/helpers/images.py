"""The bytes of the image and array files datasets ship, encoded in memory for the tests' tiny trees.

Pillow writes the PNG and JPEG files, NumPy the .npy files: independent of the product's decoders, which the
tests read them with. PFM and 16-bit PNG are written with the product's own writers
(``ingest.formats.pfm.write_pfm``, ``ingest.formats.png.write_png16``); tests/test_formats.py checks those
against real files.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def _pillow(array: np.ndarray, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, **options)
    return buf.getvalue()


def png(array: np.ndarray) -> bytes:
    """PNG bytes of uint8 ``[H, W]`` (grey) or ``[H, W, 3]`` (RGB), or uint16 ``[H, W]`` (16-bit grey)."""
    return _pillow(array, "PNG")


def jpeg(array: np.ndarray, quality: int = 95, **options) -> bytes:
    """JPEG bytes of uint8 ``[H, W, 3]``; ``options`` are Pillow's (e.g. ``subsampling=0``)."""
    return _pillow(array, "JPEG", quality=quality, **options)


def encode(array: np.ndarray, fmt: str = "PNG") -> bytes:
    """:func:`png` or :func:`jpeg` by format name, ``"PNG"`` or ``"JPEG"``: the adapter trees' shorthand."""
    return {"PNG": png, "JPEG": jpeg}[fmt](array)


def palette_png(indices: np.ndarray) -> bytes:
    """A palette ("P" mode) PNG of uint8 ``[H, W]`` indices whose colours are not the indices: a label map
    as ADE20K and other datasets ship it, which a reader must read as indices, not as grey."""
    img = Image.fromarray(indices, mode="P")
    img.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def npy(array: np.ndarray) -> bytes:
    """``.npy`` bytes of ``array`` as ``np.save`` writes them (an object array is pickled)."""
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()
