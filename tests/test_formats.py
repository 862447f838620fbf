"""ingest.formats: PFM (against the real Middlebury file), 16-bit PNG, EXR, H5, NPY readers."""

import io

import numpy as np
import pytest

from ingest.bad_input import BadInput
from ingest.formats.exr import read_exr, write_exr
from ingest.formats.h5 import read_h5, write_h5
from ingest.formats.npy import read_npy_2d
from ingest.formats.pfm import read_pfm, write_pfm
from ingest.formats.png import read_png16, read_png_gray, write_png16
from tests.helpers.adapter_tools import rgb
from tests.helpers.images import encode

MIDDLEBURY = "middlebury2014/trainingQ/Motorcycle/disp0GT.pfm"


def test_pfm_real_middlebury_file(shared_fixtures):
    data = (shared_fixtures / MIDDLEBURY).read_bytes()
    assert data.startswith(b"Pf\n741 497\n-0.003922")  # little-endian (negative scale)
    disp = read_pfm(data)
    assert disp.shape == (497, 741) and disp.dtype == np.float32
    finite = np.isfinite(disp)
    assert np.isinf(disp[~finite]).all()  # unknown disparity is inf
    assert round(100 * (~finite).mean(), 2) == 2.09
    assert disp[finite].min() == pytest.approx(9.18, abs=0.005)
    assert disp[finite].max() == pytest.approx(62.88, abs=0.005)
    # Rows are stored bottom-to-top: the first stored row is the image's last one.
    first_stored = np.frombuffer(data, "<f4", count=741, offset=len(data) - 497 * 741 * 4)
    np.testing.assert_array_equal(disp[-1], first_stored)
    # Our writer round-trips it in both byte orders.
    for little in (True, False):
        np.testing.assert_array_equal(read_pfm(write_pfm(disp, little_endian=little)), disp)


def test_pfm_header_quirks_and_colour():
    values = np.arange(6, dtype=np.float32).reshape(2, 3)
    body = values[::-1].astype(">f4").tobytes()
    # SceneFlow-style trailing spaces; big-endian (positive scale); width and height on two lines.
    np.testing.assert_array_equal(read_pfm(b"Pf \n3 2 \n1.0\n" + body), values)
    np.testing.assert_array_equal(read_pfm(b"Pf\n3\n2\n1.0\n" + body), values)
    colour = np.random.default_rng(0).normal(size=(2, 3, 3)).astype(np.float32)
    np.testing.assert_array_equal(read_pfm(write_pfm(colour)), colour)


@pytest.mark.parametrize("data, reason", [
    (b"P6\n3 2\n255\n" + bytes(18), "not a PFM file"),
    (b"Pf\n3 2\n-1.0\n" + bytes(20), "truncated PFM: 20 of 24"),
    (b"Pf\n3 2\n-1.0\n" + bytes(28), "4 bytes after"),
    (b"Pf\nthree 2\n-1.0\n" + bytes(24), "unknown PFM header layout"),
    (b"Pf\n3 2\n0\n" + bytes(24), "unknown PFM header layout"),
    (b"Pf", "header line not terminated"),
])
def test_pfm_bad_files(data, reason):
    with pytest.raises(BadInput, match=reason):
        read_pfm(data)


def test_png16_and_gray():
    raw = np.array([[0, 1, 65535], [256, 1000, 40000]], np.uint16)
    assert read_png16(write_png16(raw)).tolist() == raw.tolist()
    assert read_png_gray(write_png16(raw)).dtype == np.uint16
    gray8 = np.array([[0, 7, 255]], np.uint8)
    assert read_png_gray(encode(gray8)).tolist() == gray8.tolist()
    assert read_png_gray(encode(np.repeat(gray8[..., None], 3, -1))).tolist() == gray8.tolist()
    with pytest.raises(BadInput, match="expected a 16-bit grayscale PNG, found mode L"):
        read_png16(encode(gray8))
    with pytest.raises(BadInput, match="colour PNG with different channels"):
        read_png_gray(encode(rgb()))
    with pytest.raises(BadInput, match="truncated PNG"):
        read_png16(write_png16(np.tile(raw, (40, 40)))[:150])
    with pytest.raises(BadInput, match="not a PNG file"):
        read_png_gray(encode(rgb(), "JPEG"))


def test_exr_layouts():
    a = np.linspace(0, 5, 96, dtype=np.float32).reshape(8, 12)
    np.testing.assert_array_equal(read_exr(write_exr({"Y": a})), a)
    np.testing.assert_array_equal(read_exr(write_exr({"R": a, "G": a, "B": a})), a)
    np.testing.assert_array_equal(read_exr(write_exr({"R": a, "Z": a * 2}), channel="Z"), a * 2)
    with pytest.raises(BadInput, match="unknown EXR layout: expected one channel, found G, R"):
        read_exr(write_exr({"R": a, "G": a + 1}))
    with pytest.raises(BadInput, match="no channel 'D'"):
        read_exr(write_exr({"Y": a}), channel="D")
    with pytest.raises(BadInput, match="unreadable or truncated EXR"):
        read_exr(write_exr({"Y": a})[:200])


def test_h5_and_npy():
    depth = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(read_h5(write_h5({"depth": depth}), "depth"), depth)
    with pytest.raises(BadInput, match="no dataset 'depth' \\(has: target\\)"):
        read_h5(write_h5({"target": depth}), "depth")
    with pytest.raises(BadInput, match="expected a 2-D array"):
        read_h5(write_h5({"depth": depth[None]}), "depth")
    with pytest.raises(BadInput, match="unreadable or truncated H5"):
        read_h5(write_h5({"depth": depth})[:100], "depth")

    buf = io.BytesIO()
    np.save(buf, depth)
    np.testing.assert_array_equal(read_npy_2d(buf.getvalue()), depth)
    with pytest.raises(BadInput, match="truncated .npy"):
        read_npy_2d(buf.getvalue()[:-8])
    pickled = io.BytesIO()
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(BadInput, match="unreadable"):
        read_npy_2d(pickled.getvalue())


def test_the_readers_are_the_lowest_layer_and_import_no_adapter():
    import subprocess
    import sys

    code = ("import sys, ingest.formats.exr, ingest.formats.h5, ingest.formats.npy, ingest.formats.pfm, "
            "ingest.formats.png; print(sorted(m for m in sys.modules if m.startswith('ingest.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert eval(out.stdout) == ["ingest.bad_input", "ingest.formats", "ingest.formats.exr", "ingest.formats.h5",
                                "ingest.formats.npy", "ingest.formats.pfm", "ingest.formats.png"]
