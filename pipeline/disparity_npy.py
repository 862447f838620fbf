"""The ``<key>.disp.npy`` member: disparity with 0 outside the mask, as float32 or float16 ``.npy`` bytes.

The bytes are exactly what ``np.save`` writes (format 1.0 header, C order; a test compares them), built
with less copying: the header goes into a buffer of the final size and the masked values are computed
straight into the rest, instead of ``np.where`` -> a chunked copy into ``io.BytesIO`` -> ``getvalue``
(three passes over 1.2 MB for a 640x480 float32 disparity, ~0.4 ms of a sample's encoding).

float16 halves the bytes to hash, write and flush. numpy casts float32 -> float16 one element at a
time in software (numpy issue #28753: 1.1 ms for 640x480 here, as long as hashing and writing the
bytes it saves), while torch's cast uses the CPU's conversion instructions (F16C: ~0.05 ms); both round
to nearest even, so the bytes are the same. torch is imported only for a float16 sample of 64K values
or more.
"""

from __future__ import annotations

import io

import numpy as np

DISPARITY_DTYPES = ("float16", "float32")
# float16 rounds to nearest: a value in its normal range [2**-14, 65504] within 2**-11 of itself, a smaller
# one within 2**-25 absolute (subnormal steps); from 65520 up a value becomes inf.
FLOAT16_SMALLEST_NORMAL = 2.0**-14
FLOAT16_OVERFLOW = 65520.0
# Below this many values numpy's cast costs less than importing torch once (~3 s) would be worth.
_TORCH_CAST_FROM = 1 << 16


def _cast_float16(values: np.ndarray, out: np.ndarray) -> None:
    if values.size < _TORCH_CAST_FROM:
        out[...] = values
        return
    import torch  # here only: an ingest worker that writes float32 or small samples never imports it

    torch.from_numpy(out).copy_(torch.from_numpy(values))


def fits_float16(masked: np.ndarray) -> bool:
    """True when float16 keeps every value of ``masked`` within 2**-11 of the largest one.

    Disparity is a target up to scale (and shift), so the sample's largest value sets the precision
    that matters: with it in [2**-14, 65520) every value is stored within 2**-11 relative (normal range)
    or 2**-25 absolute, i.e. at most 2**-11 of that largest value. A sample that is all tiny disparities
    (depth of an arbitrary, large scale) or one with values that would overflow is kept as float32.
    """
    high = float(masked.max()) if masked.size else 0.0
    return high == 0.0 or FLOAT16_SMALLEST_NORMAL <= high < FLOAT16_OVERFLOW


def _npy(shape: tuple[int, ...], dtype: str) -> tuple[bytearray, np.ndarray]:
    """A buffer holding the ``.npy`` header and room for the values, and the array view of that room."""
    stored = np.dtype(dtype).newbyteorder("<")  # .npy members are little-endian whatever the machine
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        head, {"descr": np.lib.format.dtype_to_descr(stored), "fortran_order": False, "shape": shape})
    header = head.getvalue()
    out = bytearray(len(header) + int(np.prod(shape)) * stored.itemsize)
    out[:len(header)] = header
    return out, np.frombuffer(out, stored, offset=len(header)).reshape(shape)


def encode_disparity(disparity: np.ndarray, mask: np.ndarray, dtype: str = "float32") -> bytearray:
    """float32 ``[H, W]`` disparity (finite, >= 0; checked by the caller) and bool ``[H, W]`` mask ->
    ``.npy`` bytes of ``disparity`` where ``mask`` is True and 0 elsewhere.

    ``dtype`` float32 stores the values exactly. float16 stores them within 2**-11 of the sample's
    largest value (see :func:`fits_float16`); a sample it cannot hold that well is stored as float32
    instead, so that no sample is lost or coarsened (the contract allows either, sample by sample).
    """
    if dtype not in DISPARITY_DTYPES:
        raise ValueError(f"disparity dtype must be one of {', '.join(DISPARITY_DTYPES)}, not {dtype!r}")
    if dtype == "float32":
        out, values = _npy(disparity.shape, "float32")
        # Multiplying by the mask (True = 1, False = 0) zeroes invalid pixels; for finite x >= 0, x * 0 = +0.
        np.multiply(disparity, mask, out=values)
        return out
    masked = np.multiply(disparity, mask, dtype=np.float32)
    out, values = _npy(disparity.shape, "float16" if fits_float16(masked) else "float32")
    if values.dtype.itemsize == 4:
        values[...] = masked
    else:
        _cast_float16(masked, values)
    return out
