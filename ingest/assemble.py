"""One input sample -> one contract ``Sample``: read through the adapter, check, convert to disparity.

This is where every per-sample reject reason is decided (the adapter raises for unreadable files; here:
size mismatch, bad values, too few valid pixels), so the ingest job only has to catch
:class:`RejectedSample` and record ``str(exc)``.
"""

from __future__ import annotations

from ingest.conversion import InvalidTarget, to_disparity
from ingest.sources.base import SampleReadError, SampleRef, SourceAdapter
from pipeline.shards import Sample, make_key


class RejectedSample(ValueError):
    """This input is not written; ``str(exc)`` is the reason recorded in rejects.parquet."""


def assemble_sample(adapter: SourceAdapter, ref: SampleRef, split: str, min_valid_fraction: float = 0.01) -> Sample:
    """Read ``ref`` through ``adapter`` and return a contract sample of split ``split``.

    Raises :class:`RejectedSample` naming the reason: unreadable image or target, image/target size
    mismatch, NaN/Inf/negative values where valid, or fewer than ``min_valid_fraction`` valid pixels.
    """
    try:
        rgb = adapter.read_rgb(ref)
        target, valid = adapter.read_target(ref)
        if rgb.pixels.shape[:2] != target.shape:
            raise RejectedSample(f"image is {list(rgb.pixels.shape[:2])} but target is {list(target.shape)}")
        disparity, valid = to_disparity(target, valid, adapter.kind)
        meta = adapter.metadata(ref)
    except (SampleReadError, InvalidTarget) as exc:
        raise RejectedSample(str(exc)) from exc
    fraction = float(valid.mean()) if valid.size else 0.0
    if fraction < min_valid_fraction:
        raise RejectedSample(f"only {fraction:.2%} of target pixels are valid (minimum {min_valid_fraction:.2%})")
    h, w = disparity.shape
    meta = {**meta, "source": adapter.name, "id": ref.id, "split": split, "kind": adapter.kind.value,
            "group": ref.group, "height": h, "width": w}
    return Sample(make_key(adapter.name, ref.id), rgb.pixels, disparity, valid, meta, rgb.encoded, rgb.format)
