"""OpenEXR float maps (IRS disparity ``d_*.exr``), read and written in memory with the ``OpenEXR`` package.

A target map is one channel: a file with exactly one channel (whatever its name) gives that channel; a
file with ``R``, ``G``, ``B`` channels that are all equal (a gray map saved as colour) gives ``R``; a
``channel`` may be named explicitly; anything else is an unknown layout.
"""

from __future__ import annotations

import io

import numpy as np

from ingest.bad_input import BadInput


def read_exr(data: bytes, channel: str | None = None) -> np.ndarray:
    """Decode EXR bytes to one float32 ``[H, W]`` channel (see the module docstring for which)."""
    import OpenEXR

    try:
        with OpenEXR.File(io.BytesIO(data), separate_channels=True) as exr:
            channels = {name: np.array(ch.pixels) for name, ch in exr.channels().items()}
    except Exception as exc:  # the bindings raise RuntimeError/ValueError for broken files
        raise BadInput(f"unreadable or truncated EXR ({exc})") from exc
    return _pick_channel(channels, channel).astype(np.float32)


def _pick_channel(channels: dict[str, np.ndarray], channel: str | None) -> np.ndarray:
    names = sorted(channels)
    if channel is not None:
        if channel not in channels:
            raise BadInput(f"unknown EXR layout: no channel {channel!r} (channels: {', '.join(names)})")
        picked = channels[channel]
    elif len(channels) == 1:
        picked = channels[names[0]]
    elif {"R", "G", "B"} <= set(channels) and all(
        np.array_equal(channels["R"], channels[c], equal_nan=True) for c in "GB"
    ):
        picked = channels["R"]
    else:
        raise BadInput(f"unknown EXR layout: expected one channel, found {', '.join(names)}")
    if picked.ndim != 2:
        raise BadInput(f"unknown EXR layout: channel has shape {list(picked.shape)}")
    return picked


def write_exr(channels: dict[str, np.ndarray]) -> bytes:
    """Encode named float32 ``[H, W]`` channels as EXR bytes (for tests and conversions)."""
    import OpenEXR

    arrays = {name: np.ascontiguousarray(a, dtype=np.float32) for name, a in channels.items()}
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    buf = io.BytesIO()
    with OpenEXR.File(header, arrays) as exr:
        exr.write(buf)
    return buf.getvalue()
