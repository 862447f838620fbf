"""The disp.npy member: np.save's exact bytes, 0 outside the mask, float16 rounded like numpy's cast."""

from __future__ import annotations

import io

import numpy as np
import pytest

from pipeline.disparity_npy import DisparityOverflow, encode_disparity


def _reference(disparity: np.ndarray, mask: np.ndarray, dtype: str) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.where(mask, disparity, np.float32(0)).astype(dtype), allow_pickle=False)
    return buf.getvalue()


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (480, 640)])
def test_bytes_are_what_np_save_writes(dtype, shape):
    rng = np.random.default_rng(shape[1])
    # Spans float16's subnormals, normals and its largest finite values, where rounding matters most.
    disparity = np.exp(rng.uniform(np.log(1e-7), np.log(65500), shape)).astype(np.float32)
    mask = rng.uniform(size=shape) > 0.3
    data = encode_disparity(disparity, mask, dtype)
    assert bytes(data) == _reference(disparity, mask, dtype)
    stored = np.load(io.BytesIO(data), allow_pickle=False)
    assert stored.dtype == np.dtype(dtype) and stored.shape == shape
    assert (stored[~mask] == 0).all()


def test_strided_input_and_exact_zeros():
    base = np.arange(48, dtype=np.float32).reshape(6, 8)
    disparity = base[::2, 1::3]  # not contiguous
    mask = np.ones(disparity.shape, bool)
    mask[0, 0] = False
    stored = np.load(io.BytesIO(encode_disparity(disparity, mask)))
    np.testing.assert_array_equal(stored, np.where(mask, disparity, 0))
    assert not np.signbit(stored[0, 0])  # +0, as np.where writes


def test_float16_overflow_and_bad_dtype():
    mask = np.ones((2, 2), bool)
    assert np.load(io.BytesIO(encode_disparity(np.full((2, 2), 65519, np.float32), mask, "float16"))).max() == 65504
    with pytest.raises(DisparityOverflow, match="65520.0 overflows float16"):
        encode_disparity(np.full((2, 2), 65520, np.float32), mask, "float16")
    # An overflowing value outside the mask is not stored, so it does not count.
    outside = np.full((2, 2), 1e9, np.float32)
    assert not np.load(io.BytesIO(encode_disparity(outside, ~mask, "float16"))).any()
    with pytest.raises(ValueError, match="one of float16, float32, not 'float64'"):
        encode_disparity(np.ones((2, 2), np.float32), mask, "float64")
