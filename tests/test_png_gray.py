"""The filter-free greyscale PNG writer of shard masks: valid PNG, exact round trip, size close to Pillow's."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from pipeline.png_gray import encode_gray8


def _pillow_png(image: np.ndarray) -> bytes:
    """What the masks were before: Pillow with its per-row filter search, level 1, run-length strategy."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1, compress_type=zlib.Z_RLE)
    return buf.getvalue()


def _masks(h: int = 480, w: int = 640) -> dict[str, np.ndarray]:
    ys, xs = np.mgrid[0:h, 0:w]
    band = ys >= 20  # a depth sensor's missing top rows
    holes = np.random.default_rng(0).uniform(size=(h, w)) > 0.05  # speckle of dropped measurements
    blob = ((ys - h / 2) ** 2 + (xs - w / 2) ** 2 > (h / 3) ** 2) & (np.sin(xs / 17) + np.cos(ys / 23) > -1.2)
    return {"band": band, "holes": holes, "blob": blob}


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (9, 1), (37, 53), (480, 640)])
def test_round_trip_through_pillow_is_exact(shape):
    image = np.random.default_rng(shape[0]).integers(0, 256, shape, dtype=np.uint8)
    png = encode_gray8(image)
    decoded = Image.open(io.BytesIO(png))
    assert decoded.format == "PNG" and decoded.mode == "L" and decoded.size == (shape[1], shape[0])
    np.testing.assert_array_equal(np.asarray(decoded), image)


def test_chunks_and_crcs_follow_the_specification():
    png = encode_gray8(np.full((3, 4), 255, np.uint8))
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, pos = [], 8
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos:pos + 4])
        kind, data = png[pos + 4:pos + 8], png[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", png[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(kind + data), kind
        chunks.append((kind, data))
        pos += 12 + length
    assert [k for k, _ in chunks] == [b"IHDR", b"IDAT", b"IEND"]
    assert struct.unpack(">IIBBBBB", chunks[0][1]) == (4, 3, 8, 0, 0, 0, 0)  # 8-bit greyscale, no interlace
    rows = zlib.decompress(chunks[1][1])
    assert rows == b"\x00\xff\xff\xff\xff" * 3  # filter type 0 before every row
    Image.open(io.BytesIO(png)).verify()  # Pillow's own check of the chunk CRCs


@pytest.mark.parametrize("name", ["band", "holes", "blob"])
def test_masks_are_about_as_small_as_with_pillows_filter_search(name):
    mask = np.where(_masks()[name], 255, 0).astype(np.uint8)
    ours, pillow = len(encode_gray8(mask)), len(_pillow_png(mask))
    assert ours <= 1.2 * pillow, (name, ours, pillow)


@pytest.mark.parametrize("bad", [np.zeros((4, 4), np.uint16), np.zeros((4, 4, 1), np.uint8), np.zeros((0, 4), np.uint8)])
def test_refuses_what_it_cannot_write(bad):
    with pytest.raises(ValueError, match=r"uint8 \[H, W\]|sides"):
        encode_gray8(bad)
