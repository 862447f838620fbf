"""The disp.npy member: np.save's exact bytes, 0 outside the mask, float16 rounded like numpy's cast."""

from __future__ import annotations

import io

import numpy as np
import pytest

from pipeline.disparity_npy import encode_disparity


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


def _stored(data: bytearray) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def test_float16_falls_back_to_float32_for_a_sample_it_cannot_hold():
    mask = np.ones((2, 3), bool)
    near_max = np.full((2, 3), 65519, np.float32)  # rounds down to 65504, within 2**-11
    assert _stored(encode_disparity(near_max, mask, "float16")).dtype == np.float16
    # Would become inf in float16: the whole sample stays float32, exact.
    overflow = np.array([[65520, 1, 2], [3, 4, 5]], np.float32)
    stored = _stored(encode_disparity(overflow, mask, "float16"))
    assert stored.dtype == np.float32 and np.array_equal(stored, overflow)
    # All tiny (depth of a large arbitrary scale): subnormal steps would be coarse next to its range.
    tiny = np.array([[1e-5, 2e-7, 3e-6], [4e-8, 5e-5, 6e-5]], np.float32)
    stored = _stored(encode_disparity(tiny, mask, "float16"))
    assert stored.dtype == np.float32 and np.array_equal(stored, tiny)
    # Tiny values next to a larger one are fine: the error is at most 2**-11 of the sample's largest value.
    mixed = np.array([[1e-7, 3e-6, 1e-3], [0.5, 2.0, 7.0]], np.float32)
    stored = _stored(encode_disparity(mixed, mask, "float16"))
    assert stored.dtype == np.float16 and np.max(np.abs(stored.astype(np.float64) - mixed)) <= 2.0**-11 * 7.0
    # A huge value outside the mask is not stored, so it does not count.
    outside = np.full((2, 3), 1e9, np.float32)
    stored = _stored(encode_disparity(outside, ~mask, "float16"))
    assert stored.dtype == np.float16 and not stored.any()


def test_bad_dtype():
    with pytest.raises(ValueError, match="one of float16, float32, not 'float64'"):
        encode_disparity(np.ones((2, 2), np.float32), np.ones((2, 2), bool), "float64")
